"""The console's ASGI application: routes by concept, security headers, errors as pages (or JSON under /api).

`create_app(config, store)` is all a server (cli/web.py: uvicorn) or a test
(Starlette's TestClient) needs. The app shares the Redis store and the
compliance services with the CLI; it never runs inside the milter.

Every response carries a strict Content-Security-Policy: scripts only from
this origin (htmx, a static file; no inline script, no eval), no frames, no
plugins, forms only to this origin, no remote images or fonts. Held mail is
shown as escaped text, and the policy is the second wall should anything
slip through.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from regfd.config import Config
from regfd.core.clock import now as utcnow
from regfd.errors import StoreUnavailable
from regfd.store.redis_store import RedisStore
from regfd.web import api, auth, bulk, decisions, directory, disclosures, message, oidc, queue, records
from regfd.web.console import HERE, Console

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds the security headers to every response, and `Cache-Control: no-store` to all but static files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                headers = [h for h in msg.get("headers", []) if h[0].lower() not in {k for k, _ in SECURITY_HEADERS}]
                headers += SECURITY_HEADERS
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                msg["headers"] = headers
            await send(msg)

        await self.app(scope, receive, with_headers)


class AccessLog:
    """One JSON log line per request: method, path (never the query string: an OpenID Connect callback
    carries its code there), status and milliseconds."""

    def __init__(self, app: ASGIApp) -> None:
        import structlog

        self.app = app
        self.log = structlog.get_logger("regfd.web")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        status = 500

        async def seen(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = int(msg["status"])
            await send(msg)

        try:
            await self.app(scope, receive, seen)
        finally:
            self.log.info("web.request", method=scope.get("method"), path=scope.get("path"), status=status,
                          ms=round((time.monotonic() - start) * 1000, 1))


async def refused(request: Request, exc: Exception) -> Response:
    """401 -> sign-in page (browsers) or JSON (API); 403/404 -> a page saying why, or JSON."""
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code,
                            headers={"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None)
    if exc.status_code == 401 and request.method == "GET":
        return auth.login_redirect(request)
    c: Console = request.app.state.console
    user = None if exc.status_code == 401 else auth.current_user(request)
    return c.page(request, "refused.html", user, status=exc.status_code, detail=exc.detail)


async def store_down(request: Request, exc: Exception) -> Response:
    """Redis unreachable: 503, said plainly."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": str(exc)}, status_code=503)
    return Response(f"regfd: the store is unreachable ({exc}); try again shortly", status_code=503,
                    media_type="text/plain")


def create_app(config: Config, store: RedisStore, clock: Callable[[], datetime] = utcnow,
               agent_timeout: float = 30.0) -> Starlette:
    """The console over `store`; `clock` and `agent_timeout` are for tests."""
    routes: list[Any] = []
    for module in (auth, oidc, queue, message, decisions, bulk, records, disclosures, directory, api):
        routes += module.routes()
    routes.append(Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"))
    app = Starlette(routes=routes, exception_handlers={HTTPException: refused, StoreUnavailable: store_down})
    app.state.console = Console(config, store, clock, agent_timeout)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(AccessLog)
    return app
