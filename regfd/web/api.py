"""The JSON API under /api/v1 for integrations (ticketing, SIEM): bearer tokens, the console's roles.

A token (`regfd user token NAME`) acts as its user with that user's role;
browser sessions are not accepted here, so no cookie can be replayed
against the API and no CSRF token is needed. Errors are JSON
`{"error": "..."}` with 401 (no or unknown token), 403 (role), 404 or 409
(refused: already decided, no reason, no agent). The OpenAPI document at
/api/v1/openapi.json describes every route.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from regfd.compliance.quarantine import QuarantineEntry
from regfd.errors import InvalidInput
from regfd.web.auth import Refused, User, current_user
from regfd.web.console import console
from regfd.web.queue import FILTERS, row, rows
from regfd.web.records import FILTERS as RECORD_FILTERS
from regfd.web.records import search


def _client(request: Request, role: str) -> User:
    user = current_user(request)
    if user is None or user.via != "token":
        raise Refused(401, "a bearer token is required (regfd user token NAME)")
    if not user.can(role):
        raise Refused(403, f"the token's role ({user.role}) may not do this; it needs {role}")
    return user


def _entry(request: Request) -> QuarantineEntry:
    try:
        return console(request).quarantine.get(request.path_params["qid"])
    except InvalidInput:
        raise Refused(404, "no such held message") from None


def _summary(e: QuarantineEntry, pending: dict[str, Any] | None) -> dict[str, Any]:
    r = row(e, pending)
    return {**e.summary(), "state_label": r.state, "claimed_by": r.claimed_by,
            "recipients": [x.to_json() for x in e.record.recipients],
            "findings": [{"kind": k, "category": c, "severity": s, "count": n} for k, c, s, n in r.findings],
            "awaiting_approval": pending}


async def held(request: Request) -> Response:
    """GET /api/v1/held: the queue with the console's filters as query parameters."""
    _client(request, "auditor")
    c = console(request)
    pending = c.users.approvals()
    q = {k: request.query_params.get(k, "") for k in FILTERS}
    return JSONResponse([_summary(r.entry, pending.get(r.id)) for r in rows(c, q)])


async def held_one(request: Request) -> Response:
    """GET /api/v1/held/{qid}: metadata for every role; the record's findings with excerpts for reviewers."""
    user = _client(request, "auditor")
    c = console(request)
    e = _entry(request)
    body = _summary(e, c.users.approval_get(e.id))
    if user.can("reviewer"):
        c.audit(user.name, "web.view", e.id, {"via": "api"})
        body["record"] = e.record.to_json()
    return JSONResponse(body)


async def _decide(request: Request, role: str, action: str) -> Response:
    user = _client(request, role)
    c = console(request)
    e = _entry(request)
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError:
        return JSONResponse({"error": "the body must be JSON"}, status_code=400)
    reason = str(data.get("reason", "")) if isinstance(data, dict) else ""
    d = c.decisions
    text = str(data.get("sender_text", "")) if isinstance(data, dict) else ""
    fn = {"release": lambda: d.release(e.id, user.name, reason),
          "reject": lambda: d.reject(e.id, user.name, reason, text),
          "approve": lambda: d.approve(e.id, user.name)}[action]
    try:
        out = await run_in_threadpool(fn)
    except InvalidInput as exc:
        return JSONResponse({"error": str(exc)}, status_code=409)
    return JSONResponse(out.to_json(), status_code=200 if out.ok else 502)


async def release(request: Request) -> Response:
    """POST /api/v1/held/{qid}/release {"reason": "..."}."""
    return await _decide(request, "reviewer", "release")


async def reject(request: Request) -> Response:
    """POST /api/v1/held/{qid}/reject {"reason": "..."}."""
    return await _decide(request, "reviewer", "reject")


async def approve(request: Request) -> Response:
    """POST /api/v1/held/{qid}/approve: the second approval."""
    return await _decide(request, "approver", "approve")


async def records(request: Request) -> Response:
    """GET /api/v1/records: the records search (q, since, until, action), newest first."""
    _client(request, "auditor")
    c = console(request)
    q = {k: request.query_params.get(k, "") for k in RECORD_FILTERS}
    return JSONResponse([r.to_json() for r in search(c, q)])


async def disclosures(request: Request) -> Response:
    """GET /api/v1/disclosures?open=1: the follow-ups."""
    _client(request, "auditor")
    c = console(request)
    only = request.query_params.get("open", "") in ("1", "true", "yes")
    return JSONResponse([d.summary() for d in c.disclosures.list(open_only=only)])


def openapi(request: Request) -> Response:
    """GET /api/v1/openapi.json: this API described (no token needed: it holds no data)."""
    return JSONResponse(OPENAPI)


def _op(summary: str, role: str, params: tuple[str, ...] = (), body: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "description": f"Role: {role} or above.",
                          "security": [{"bearer": []}],
                          "responses": {"200": {"description": "OK"}, "401": {"$ref": "#/components/responses/E"},
                                        "403": {"$ref": "#/components/responses/E"}}}
    if params:
        op["parameters"] = [{"name": p, "in": "query", "required": False, "schema": {"type": "string"}}
                            for p in params]
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["reason"], "properties": {"reason": {"type": "string"}}}}}}
        op["responses"]["409"] = {"$ref": "#/components/responses/E"}
        op["responses"]["502"] = {"description": "the MTA refused; the message is held again"}
    return op


_QID = [{"name": "qid", "in": "path", "required": True, "schema": {"type": "string"}}]
OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "regfd compliance console API", "version": "1"},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "responses": {"E": {"description": "refused", "content": {"application/json": {"schema": {
            "type": "object", "properties": {"error": {"type": "string"}}}}}}},
    },
    "paths": {
        "/api/v1/held": {"get": _op("Held messages (filters as in the console)", "auditor", FILTERS)},
        "/api/v1/held/{qid}": {"parameters": _QID, "get": _op("One held message", "auditor")},
        "/api/v1/held/{qid}/release": {"parameters": _QID, "post": _op(
            "Release (or, with two approvals, request the release)", "reviewer", body=True)},
        "/api/v1/held/{qid}/reject": {"parameters": _QID, "post": _op(
            "Reject (optional sender_text: what the sender is told instead of the reason)", "reviewer", body=True)},
        "/api/v1/held/{qid}/approve": {"parameters": _QID, "post": _op("Second approval of a release", "approver")},
        "/api/v1/records": {"get": _op("Records of communications with Specified Persons", "auditor",
                                       RECORD_FILTERS)},
        "/api/v1/disclosures": {"get": _op("Disclosure follow-ups", "auditor", ("open",))},
    },
}


def routes() -> list[Route]:
    """Every API route."""
    return [Route("/api/v1/openapi.json", openapi, methods=["GET"]),
            Route("/api/v1/held", held, methods=["GET"]),
            Route("/api/v1/held/{qid}", held_one, methods=["GET"]),
            Route("/api/v1/held/{qid}/release", release, methods=["POST"]),
            Route("/api/v1/held/{qid}/reject", reject, methods=["POST"]),
            Route("/api/v1/held/{qid}/approve", approve, methods=["POST"]),
            Route("/api/v1/records", records, methods=["GET"]),
            Route("/api/v1/disclosures", disclosures, methods=["GET"])]
