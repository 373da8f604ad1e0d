"""Disclosure follow-ups: open ones with their deadline and time left, closed ones with their reference.

Closing one (the information is now public: 8-K, press release) takes a
reviewer and goes through the same `Disclosures.close` as `regfd
disclosures close`.
"""

from __future__ import annotations

import csv
import io

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from regfd.compliance.disclosures import Disclosure
from regfd.errors import InvalidInput
from regfd.web.auth import form_for, require
from regfd.web.console import Console, console
from regfd.web.queue import age_text


def listing(c: Console, state: str) -> list[tuple[Disclosure, str]]:
    """(follow-up, time left or 'overdue by ...') for open, closed or all follow-ups, soonest deadline first."""
    now = c.clock()
    out = []
    for d in sorted(c.disclosures.list(open_only=state == "open"), key=lambda d: d.deadline):
        if state == "closed" and d.state == "open":
            continue
        if d.state != "open":
            left = ""
        elif d.deadline >= now:
            left = age_text(d.deadline - now) + " left"
        else:
            left = "OVERDUE by " + age_text(now - d.deadline)
        out.append((d, left))
    return out


async def disclosures_page(request: Request) -> Response:
    """Open follow-ups by default (`?state=closed|all` for the others)."""
    user = require(request, "auditor")
    c = console(request)
    state = request.query_params.get("state", "open")
    return c.page(request, "disclosures.html", user, rows=listing(c, state), state=state, error="")


async def disclosures_csv(request: Request) -> Response:
    """Every follow-up as CSV."""
    user = require(request, "auditor")
    c = console(request)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = ("id", "state", "deadline", "delivered_at", "sender", "recipients", "subject", "quarantine_id",
            "closed_by", "closed_at", "reference")
    w.writerow(cols)
    for d, _left in listing(c, "all"):
        s = d.summary()
        w.writerow([s.get(k, "") for k in cols])
    c.audit(user.name, "web.export.disclosures", "disclosures", {})
    return Response(buf.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": "attachment; filename=regfd-disclosures.csv"})


async def close(request: Request) -> Response:
    """Close a follow-up with its public reference (reviewer and above)."""
    user, form = await form_for(request, "reviewer")
    c = console(request)
    reference = " ".join(form.get("reference", "").split())
    try:
        if not reference:
            raise InvalidInput("a reference (8-K, press release ...) is required")
        c.disclosures.close(request.path_params["did"], user.name, reference)
    except InvalidInput as exc:
        return c.page(request, "disclosures.html", user, status=409, rows=listing(c, "open"), state="open",
                      error=str(exc))
    return RedirectResponse("/disclosures?state=all", status_code=303)


def routes() -> list[Route]:
    """Follow-ups, their export and closing one."""
    return [Route("/disclosures", disclosures_page, methods=["GET"]),
            Route("/disclosures.csv", disclosures_csv, methods=["GET"]),
            Route("/disclosures/{did}/close", close, methods=["POST"])]
