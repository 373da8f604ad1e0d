"""Release, reject and approve from the message page: the same agent path as `regfd quarantine release/reject`.

Each form needs the session's CSRF token and a written reason; the page
shown afterwards says what happened (delivered, rejected, awaiting a second
approval, or the MTA's words when it failed).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from regfd.compliance.quarantine import Outcome
from regfd.errors import InvalidInput
from regfd.web.auth import User, form_for
from regfd.web.console import console
from regfd.web.message import show


async def release(request: Request) -> Response:
    """A reviewer releases (one approval) or requests a release (two)."""
    user, form = await form_for(request, "reviewer")
    c = console(request)
    return await _act(request, lambda: c.decisions.release(request.path_params["qid"], user.name,
                                                           form.get("reason", "")), user)


async def reject(request: Request) -> Response:
    """A reviewer rejects: the MTA deletes the message and the sender is told."""
    user, form = await form_for(request, "reviewer")
    c = console(request)
    return await _act(request, lambda: c.decisions.reject(request.path_params["qid"], user.name,
                                                          form.get("reason", ""), form.get("sender_text", "")), user)


async def approve(request: Request) -> Response:
    """An approver other than the requester gives the second approval; the release goes to the agent."""
    user, _form = await form_for(request, "approver")
    c = console(request)
    return await _act(request, lambda: c.decisions.approve(request.path_params["qid"], user.name), user)


async def _act(request: Request, fn: Callable[[], Outcome], user: User) -> Response:
    try:  # the agent answers within seconds; waiting must not block the event loop
        out = await run_in_threadpool(fn)
    except InvalidInput as exc:
        return show(request, user, error=str(exc), status=409)
    if not out.ok:
        return show(request, user, error=out.message, status=502)
    return show(request, user, outcome=out.message)


def routes() -> list[Route]:
    """The three decisions."""
    return [Route("/message/{qid}/release", release, methods=["POST"]),
            Route("/message/{qid}/reject", reject, methods=["POST"]),
            Route("/message/{qid}/approve", approve, methods=["POST"])]
