"""Bulk decisions from the held queue, with a confirmation step.

A reviewer ticks messages in the queue and chooses release or reject; the
console shows exactly what was chosen and asks for the one reason that will
be recorded for each; only the confirmation acts. Each message then goes
through the same path as a single decision (compliance/approvals.py): with
two approvals each release becomes a request awaiting its second approval;
every outcome, good or not, is listed.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from regfd.compliance.quarantine import Outcome
from regfd.core.vocabulary import Review
from regfd.errors import InvalidInput
from regfd.web.auth import Refused, checked_form
from regfd.web.console import console
from regfd.web.queue import row

MAX_BULK = 200


def _chosen(ids: list[str], action: str) -> tuple[list[str], str]:
    if action not in (Review.RELEASE, Review.REJECT):
        raise Refused(400, "choose release or reject")
    ids = list(dict.fromkeys(i for i in ids if i))
    if not ids:
        raise Refused(400, "no message was selected")
    if len(ids) > MAX_BULK:
        raise Refused(400, f"at most {MAX_BULK} messages at once")
    return ids, action


async def bulk(request: Request) -> Response:
    """Step 1: what was ticked, and the reason to give; nothing is done yet."""
    user, form = await checked_form(request, "reviewer")
    c = console(request)
    ids, action = _chosen([str(v) for v in form.getlist("id")], str(form.get("action", "")))
    pending = c.users.approvals()
    rows = []
    for qid in ids:
        try:
            e = c.quarantine.get(qid)
        except InvalidInput:
            continue
        rows.append(row(e, pending.get(e.id)))
    return c.page(request, "bulk.html", user, rows=rows, action=action, results=None, error="")


async def bulk_confirm(request: Request) -> Response:
    """Step 2: act on each message once, in order; list every outcome."""
    user, form = await checked_form(request, "reviewer")
    c = console(request)
    ids, action = _chosen([str(v) for v in form.getlist("id")], str(form.get("action", "")))
    reason = str(form.get("reason", ""))
    if not " ".join(reason.split()):
        pending = c.users.approvals()
        rows = [row(c.quarantine.get(i), pending.get(i)) for i in ids]
        return c.page(request, "bulk.html", user, status=409, rows=rows, action=action, results=None,
                      error="a reason is required")
    d = c.decisions

    def run() -> list[tuple[str, bool, str]]:
        out: list[tuple[str, bool, str]] = []
        for qid in ids:
            try:
                res: Outcome = (d.release if action == Review.RELEASE else d.reject)(qid, user.name, reason)
                out.append((qid, res.ok, res.message))
            except InvalidInput as exc:
                out.append((qid, False, str(exc)))
        return out

    results = await run_in_threadpool(run)
    return c.page(request, "bulk.html", user, rows=[], action=action, results=results, error="")


def routes() -> list[Route]:
    """The two steps."""
    return [Route("/bulk", bulk, methods=["POST"]), Route("/bulk/confirm", bulk_confirm, methods=["POST"])]
