"""One held message: metadata for every role; headers, text, findings in place, raw and attachments for reviewers.

Opening a message's content is audited (`web.view`, `web.view.raw`,
`web.view.attachment`), as the CLI's actions are: who read what, when.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from regfd.compliance.quarantine import QuarantineEntry
from regfd.core.clock import to_iso
from regfd.errors import InvalidInput
from regfd.web import message_view
from regfd.web.auth import Refused, User, form_for, require
from regfd.web.console import console
from regfd.web.queue import age_of, row


def _entry_or_404(request: Request) -> QuarantineEntry:
    c = console(request)
    try:
        return c.quarantine.get(request.path_params["qid"])
    except InvalidInput:
        raise Refused(404, "no such held message") from None


async def message_page(request: Request) -> Response:
    """The message page; an auditor sees the metadata only (no text, no excerpts, no actions)."""
    return show(request, require(request, "auditor"))


def show(request: Request, user: User, outcome: str = "", error: str = "", status: int = 200) -> Response:
    """The message page, with the outcome of a decision just taken (or why it was refused)."""
    c = console(request)
    e = _entry_or_404(request)
    pending = c.users.approval_get(e.id)
    content = user.can("reviewer")
    view = None
    if content:
        c.audit(user.name, "web.view", e.id, {"queue_id": e.queue_id, "subject": e.record.subject})
        view = message_view.view(c.quarantine.raw(e.id), e.record.findings)
    ids = [x.id for x in c.quarantine.list(include_decided=False)]
    i = ids.index(e.id) if e.id in ids else -1
    prev_id = ids[i - 1] if i > 0 else ""
    next_id = ids[i + 1] if 0 <= i < len(ids) - 1 else ""
    claim = c.users.claims().get(e.id)
    return c.page(request, "message.html", user, e=e, r=row(e, pending, claim), pending=pending, content=content,
                  view=view, age=age_of(c, e), prev_id=prev_id, next_id=next_id,
                  findings=list(enumerate(e.record.findings, 1)), outcome=outcome, error=error, status=status)


async def raw_message(request: Request) -> Response:
    """The message as held, as plain text (never interpreted by the browser), for reviewers; audited."""
    user = require(request, "reviewer")
    c = console(request)
    e = _entry_or_404(request)
    c.audit(user.name, "web.view.raw", e.id, {"queue_id": e.queue_id})
    raw = c.quarantine.raw(e.id)
    return PlainTextResponse(raw.decode("utf-8", "replace") if raw else "(the message was not kept)",
                             headers={"Content-Disposition": "inline"})


async def attachment(request: Request) -> Response:
    """One attachment as a download (never shown inline), for reviewers; audited."""
    user = require(request, "reviewer")
    c = console(request)
    e = _entry_or_404(request)
    parts = message_view.attachments(c.quarantine.raw(e.id))
    n = int(request.path_params["n"])
    if not 0 <= n < len(parts):
        raise Refused(404, "no such attachment")
    name, _ctype, data = parts[n]
    c.audit(user.name, "web.view.attachment", e.id, {"name": name})
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"})


async def claim(request: Request) -> Response:
    """Take a held message in hand (the queue shows who), or give it back (`?release=1` / form field `unclaim`)."""
    user, form = await form_for(request, "reviewer")
    c = console(request)
    e = _entry_or_404(request)
    if form.get("unclaim"):
        c.users.claim(e.id, None, user.name)
    else:
        c.users.claim(e.id, {"by": user.name, "at": to_iso(c.clock())}, user.name)
    return RedirectResponse(f"/message/{e.id}", status_code=303)


def routes() -> list[Route]:
    """The message page, its raw form and its attachments."""
    return [Route("/message/{qid}", message_page, methods=["GET"]),
            Route("/message/{qid}/raw", raw_message, methods=["GET"]),
            Route("/message/{qid}/attachment/{n:int}", attachment, methods=["GET"]),
            Route("/message/{qid}/claim", claim, methods=["POST"])]
