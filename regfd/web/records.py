"""The record of communications with Specified Persons: search and CSV export (every role: it is metadata).

The CSV is the `regfd records --csv` format (compliance/records.to_csv), so
a spreadsheet made from the console and one made from the CLI agree.
"""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from regfd.compliance.records import Record, to_csv
from regfd.core.clock import parse_instant
from regfd.web.auth import require
from regfd.web.console import Console, console

FILTERS = ("q", "since", "until", "action")


def search(c: Console, q: dict[str, str]) -> list[Record]:
    """Records between since and until (company dates, until inclusive), optionally by action and words.

    `q` matches the sender, a recipient, a firm, the subject, the queue id
    or a finding's category, case-insensitively. Newest first.
    """
    def when(text: str, end: bool) -> datetime | None:
        try:
            return parse_instant(text.strip(), c.config.tz, end_of_day=end) if text.strip() else None
        except ValueError:
            return None

    rows = c.records.list(when(q.get("since", ""), False), when(q.get("until", ""), True))
    words = q.get("q", "").strip().lower()
    action = q.get("action", "").strip().lower()
    out = []
    for r in rows:
        if action and r.action != action:
            continue
        if words:
            hay = " ".join([r.sender, r.subject, r.queue_id, *(x.line() for x in r.recipients),
                            *(f"{f.kind} {f.category}" for f in r.findings)]).lower()
            if words not in hay:
                continue
        out.append(r)
    return out[::-1]


async def records_page(request: Request) -> Response:
    """The search form and the matching records."""
    user = require(request, "auditor")
    c = console(request)
    q = {k: request.query_params.get(k, "") for k in FILTERS}
    return c.page(request, "records.html", user, rows=search(c, q), q=q)


async def records_csv(request: Request) -> Response:
    """The same search as CSV (oldest first, as `regfd records --csv`)."""
    user = require(request, "auditor")
    c = console(request)
    q = {k: request.query_params.get(k, "") for k in FILTERS}
    c.audit(user.name, "web.export.records", "records", {k: v for k, v in q.items() if v})
    return Response(to_csv(search(c, q)[::-1]), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": "attachment; filename=regfd-records.csv"})


def routes() -> list[Route]:
    """Records and their export."""
    return [Route("/records", records_page, methods=["GET"]), Route("/records.csv", records_csv, methods=["GET"])]
