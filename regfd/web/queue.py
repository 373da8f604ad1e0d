"""The held queue and the dashboard line: every held message across all MTA hosts, filtered server-side.

The filters are URL query parameters (a filtered view can be bookmarked or
sent to a colleague): sender, recipient, firm, category (a Specified
Person's registry category or a finding's kind or category), since/until
(dates in the company's time zone, until inclusive) and state.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from regfd.compliance.approvals import AWAITING
from regfd.compliance.quarantine import QuarantineEntry
from regfd.core.clock import parse_instant
from regfd.core.vocabulary import QuarantineState
from regfd.web.auth import require
from regfd.web.console import Console, console

STATES = {  # the state filter's values -> what they select
    "open": "open (needs a decision)",
    "review": "needs review",
    "awaiting": AWAITING,
    "progress": "being released or rejected at the MTA",
    "released": "released",
    "rejected": "rejected",
    "all": "every state",
}
FILTERS = ("sender", "recipient", "firm", "category", "since", "until", "state")


@dataclass(frozen=True)
class Row:
    """One held message as the queue lists it."""

    entry: QuarantineEntry
    state: str  # as people read it
    state_key: str  # one of STATES
    claimed_by: str
    findings: list[tuple[str, str, str, int]]  # (kind, category, severity, count)

    @property
    def id(self) -> str:
        """The quarantine id (links and forms)."""
        return self.entry.id


def row(entry: QuarantineEntry, pending: dict[str, Any] | None, claim: dict[str, Any] | None = None) -> Row:
    """The queue's view of an entry: its state in words, who has it in hand, its findings counted."""
    s = entry.state
    claimed = ""
    if s == QuarantineState.HELD and pending:
        label, key, claimed = AWAITING, "awaiting", pending.get("by", "")
    elif s == QuarantineState.HELD:
        label, key, claimed = "needs review", "review", (claim or {}).get("by", "")
    elif s in (QuarantineState.RELEASING, QuarantineState.REJECTING):
        label, key = f"{s} at the MTA", "progress"
        claimed = (entry.request or {}).get("by", "")
    else:
        label, key, claimed = str(s), str(s), entry.decided_by
    counts = Counter((f.kind, f.category, f.severity) for f in entry.record.findings)
    return Row(entry, label, key, claimed, [(k, c, sev, n) for (k, c, sev), n in sorted(counts.items())])


def _date(text: str, c: Console, end: bool) -> datetime | None:
    if not text.strip():
        return None
    try:
        return parse_instant(text.strip(), c.config.tz, end_of_day=end)
    except ValueError:
        return None


def matches(r: Row, q: dict[str, str], c: Console) -> bool:
    """Whether a row passes every filter in `q` (empty filters pass)."""
    e, rec = r.entry, r.entry.record
    state = q.get("state") or "open"
    if state == "open" and r.state_key not in ("review", "awaiting", "progress"):
        return False
    if state not in ("open", "all") and r.state_key != state:
        return False
    sender = q.get("sender", "").strip().lower()
    if sender and sender not in rec.sender.lower():
        return False
    rcpt = q.get("recipient", "").strip().lower()
    everyone = [x.address for x in rec.recipients] + [o.address for o in rec.other_recipients]
    if rcpt and not any(rcpt in a.lower() for a in everyone):
        return False
    firm = q.get("firm", "").strip().lower()
    if firm and not any(firm in x.firm.lower() for x in rec.recipients):
        return False
    cat = q.get("category", "").strip().lower()
    if cat and cat not in {x.category for x in rec.recipients} | {f.category for f in rec.findings} \
            | {f.kind for f in rec.findings}:
        return False
    since, until = _date(q.get("since", ""), c, False), _date(q.get("until", ""), c, True)
    if since and e.created_at < since:
        return False
    return not (until and e.created_at > until)


def rows(c: Console, q: dict[str, str]) -> list[Row]:
    """Every entry in the store passing the filters, oldest first.

    Decided entries are read only when the state filter asks for them: the
    open queue reads just the undecided index, however long the history.
    """
    pending, claims = c.users.approvals(), c.users.claims()
    decided = (q.get("state") or "open") in ("released", "rejected", "all")
    return [r for r in (row(e, pending.get(e.id), claims.get(e.id))
                        for e in c.quarantine.list(include_decided=decided)) if matches(r, q, c)]


def dashboard(c: Console) -> dict[str, Any]:
    """The dashboard line: how many are held, the oldest, the decisions made today (company time zone).

    Today's decisions are counted in the audit stream from local midnight (a range read), not by
    reading every decided entry."""
    now = c.clock()
    held = c.quarantine.list(include_decided=False)
    local = now.astimezone(c.config.tz)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    actions = Counter(e.action for e in c.store.audit_list(since=midnight)
                      if e.action in ("quarantine.release", "quarantine.reject"))
    oldest = held[0] if held else None
    age = now - oldest.created_at if oldest else None
    return {"held": len(held), "oldest": oldest, "oldest_age": age_text(age) if age is not None else "",
            "awaiting": len(c.users.approvals()), "decided_today": sum(actions.values()),
            "released_today": actions["quarantine.release"], "rejected_today": actions["quarantine.reject"]}


def age_text(d: timedelta) -> str:
    """'3 d 4 h', '2 h 5 min', '7 min': how long a message has waited."""
    mins = int(d.total_seconds() // 60)
    if mins >= 24 * 60:
        return f"{mins // 1440} d {(mins % 1440) // 60} h"
    if mins >= 60:
        return f"{mins // 60} h {mins % 60} min"
    return f"{max(mins, 0)} min"


def age_of(c: Console, e: QuarantineEntry) -> str:
    """How long `e` has been (or was) held."""
    return age_text((e.decided_at or c.clock()) - e.created_at)


async def queue_page(request: Request) -> Response:
    """The held queue with its filters and the dashboard line (every role)."""
    user = require(request, "auditor")
    c = console(request)
    q = {k: request.query_params.get(k, "") for k in FILTERS}
    found = rows(c, q)
    return c.page(request, "queue.html", user, rows=found, q=q, states=STATES, dash=dashboard(c),
                  age=lambda e: age_of(c, e))


async def dashboard_page(request: Request) -> Response:
    """The dashboard: the line, what is held by finding and by firm, the disclosure clock."""
    user = require(request, "auditor")
    c = console(request)
    held = rows(c, {"state": "open"})
    by_finding = Counter(f"{k}: {cat}" for r in held for k, cat, _s, _n in r.findings)
    by_firm = Counter(x.firm or x.category for r in held for x in r.entry.record.recipients)
    from regfd.web.disclosures import listing

    return c.page(request, "dashboard.html", user, dash=dashboard(c), by_finding=by_finding.most_common(),
                  by_firm=by_firm.most_common(), open_disclosures=listing(c, "open"))


def routes() -> list[Route]:
    """The queue is the console's home page; the dashboard is one click away."""
    return [Route("/", queue_page, methods=["GET"]), Route("/dashboard", dashboard_page, methods=["GET"])]
