"""Sign-in, sessions, roles and CSRF for the console.

Who is asking, in this order:
1. trusted reverse-proxy mode (opt-in): `[web] proxy_user_header` names a
   local user, and is believed only when the TCP peer is one of
   `trusted_proxies` (a header from anyone else is ignored);
2. a session cookie: a random id (256 bits) whose SHA-256 keys the session
   in Redis with its expiry (store/users_store.py); the cookie is HttpOnly,
   SameSite=Strict and Secure (unless `secure_cookies = false` for plain-http
   tests on loopback);
3. for /api/v1 only, `Authorization: Bearer TOKEN` (`regfd user token NAME`).

Passwords are Argon2id hashes (argon2-cffi's defaults); an optional TOTP
code (pyotp) is asked for users who have one. Failed sign-ins are counted per
name and per client address; past `login_attempts` within `login_window`
the console refuses to check any password for that name or address until
the window ends. Every state-changing form carries the session's CSRF
token (checked in constant time); the sign-in form a double-submit token.

Roles rank auditor < reviewer < approver < admin: each may do what the ones
below it may. auditor: metadata only; reviewer: message content, release
(or request it) and reject; approver: the second approval; admin: the
directory.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from urllib.parse import quote

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from regfd.core.clock import to_iso
from regfd.errors import InvalidInput
from regfd.web.console import Console, console

ROLES = ("auditor", "reviewer", "approver", "admin")
SESSION_COOKIE = "regfd_session"
LOGIN_CSRF_COOKIE = "regfd_login_csrf"
_hasher = PasswordHasher()  # Argon2id, argon2-cffi's recommended parameters


@functools.cache
def _dummy_hash() -> str:
    """Checked for unknown names, so they cost the same work as known ones (no user enumeration)."""
    return _hasher.hash("regfd: a password nobody has")


@dataclass(frozen=True)
class User:
    """Someone signed in (or an API client acting as its user)."""

    name: str
    role: str
    via: str  # "password", "proxy" or "token"
    csrf: str = ""

    def can(self, role: str) -> bool:
        """Whether this user's role ranks at least `role`."""
        return ROLES.index(self.role) >= ROLES.index(role)


def hash_password(password: str) -> str:
    """An Argon2id hash string (parameters and salt inside)."""
    return _hasher.hash(password)


def check_password(stored: str, password: str) -> bool:
    """Whether `password` matches `stored`; a malformed hash never matches."""
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def parse_role(text: str) -> str:
    """One of ROLES, or InvalidInput naming them."""
    role = text.strip().lower()
    if role not in ROLES:
        raise InvalidInput(f"unknown role {text!r} (expected one of: {', '.join(ROLES)})")
    return role


def parse_name(text: str) -> str:
    """A user name: 1 to 64 printable characters without spaces (an email address is a good choice)."""
    name = text.strip()
    if not 0 < len(name) <= 64 or any(c.isspace() or not c.isprintable() for c in name):
        raise InvalidInput(f"bad user name {text!r} (1 to 64 characters, no spaces)")
    return name


# ---------------------------------------------------------------- who is asking
def _peer(request: Request) -> str:
    return request.client.host if request.client else ""


def _trusted_peer(c: Console, request: Request) -> bool:
    try:
        peer = ipaddress.ip_address(_peer(request))
    except ValueError:
        return False
    return any(peer in ipaddress.ip_network(n, strict=False) for n in c.config.web.trusted_proxies)


def current_user(request: Request) -> User | None:
    """The signed-in user (proxy header, session cookie, or API bearer token), None when anonymous."""
    if "regfd_user" in request.scope:
        cached: User | None = request.scope["regfd_user"]
        return cached
    c = console(request)
    user = _find_user(c, request)
    request.scope["regfd_user"] = user
    return user


def _find_user(c: Console, request: Request) -> User | None:
    web = c.config.web
    if web.proxy_user_header and _trusted_peer(c, request):
        name = request.headers.get(web.proxy_user_header, "").strip()
        row = c.users.get(name) if name else None
        if row:  # no session of our own: the CSRF token is derived from the name with the store's secret
            csrf = hmac.new(c.users.secret(), f"csrf:{row['name']}".encode(), "sha256").hexdigest()
            return User(row["name"], row["role"], "proxy", csrf)
    if request.url.path.startswith("/api/"):
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            tok = c.users.token_get(auth[7:].strip())
            row = c.users.get(tok["user"]) if tok else None
            return User(row["name"], row["role"], "token") if row else None
    sid = request.cookies.get(SESSION_COOKIE, "")
    if not sid:
        return None
    session = c.users.session_get(sid)
    if session is None:
        return None
    row = c.users.get(session["user"])  # a removed user's sessions stop working at once
    if row is None:
        return None
    return User(row["name"], row["role"], session.get("via", "password"), session["csrf"])


def csrf_token(request: Request) -> str:
    """The token forms must send back: the session's, or the sign-in form's double-submit cookie."""
    user = current_user(request)
    if user and user.csrf:
        return user.csrf
    return str(request.scope.get("regfd_login_csrf") or request.cookies.get(LOGIN_CSRF_COOKIE, ""))


class Refused(HTTPException):
    """A request this user may not make; app.py turns it into a page, a redirect or JSON."""


def require(request: Request, role: str) -> User:
    """The user, if their role ranks at least `role`; else 401 (anonymous) or 403."""
    user = current_user(request)
    if user is None:
        raise Refused(401, "sign in first")
    if not user.can(role):
        raise Refused(403, f"your role ({user.role}) may not do this; it needs {role}")
    return user


async def checked_form(request: Request, role: str) -> tuple[User, FormData]:
    """A state-changing form: the user must rank `role` and send the session's CSRF token (else 403)."""
    user = require(request, role)
    form = await request.form()
    sent = form.get("csrf") or request.headers.get("x-csrf-token", "")
    if not user.csrf or not isinstance(sent, str) or not sent or not hmac.compare_digest(sent, user.csrf):
        raise Refused(403, "the form's security token is missing or stale; reload the page and try again")
    return user, form


async def form_for(request: Request, role: str) -> tuple[User, dict[str, str]]:
    """`checked_form` with single-valued text fields."""
    user, form = await checked_form(request, role)
    return user, {k: v for k, v in form.items() if isinstance(v, str)}


def start_session(c: Console, response: Response, name: str, via: str) -> None:
    """A fresh session id (never reused from before sign-in) in a hardened cookie."""
    sid = secrets.token_urlsafe(32)
    ttl = int(c.config.web.session_minutes * 60)
    c.users.session_put(sid, {"user": name, "csrf": secrets.token_urlsafe(32), "at": to_iso(c.clock()),
                              "via": via}, ttl)
    response.set_cookie(SESSION_COOKIE, sid, max_age=ttl, path="/", secure=c.config.web.secure_cookies,
                        httponly=True, samesite="strict")


# ---------------------------------------------------------------- routes
def _safe_next(target: str) -> str:
    """Only a local path: a sign-in never redirects to another site."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


async def login_page(request: Request) -> Response:
    """The sign-in form, with a fresh double-submit CSRF token."""
    c = console(request)
    token = secrets.token_urlsafe(32)
    request.scope["regfd_login_csrf"] = token
    resp = c.page(request, "login.html", None, next=_safe_next(request.query_params.get("next", "/")), error="")
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, path="/login", secure=c.config.web.secure_cookies, httponly=True,
                    samesite="strict")
    return resp


async def login(request: Request) -> Response:
    """Check the double-submit token, the rate limit, the password (and TOTP code); then start a session."""
    c = console(request)
    web = c.config.web
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(form.get("csrf", ""), cookie):
        raise Refused(403, "the sign-in form's security token is missing or stale; reload the page")
    name, nxt = form.get("name", "").strip(), _safe_next(form.get("next", "/"))
    keys = (f"name:{name.lower()}", f"addr:{_peer(request)}")

    def again(error: str, status: int) -> Response:
        request.scope["regfd_login_csrf"] = cookie
        return c.page(request, "login.html", None, status=status, next=nxt, error=error, name=name)

    if any(c.users.failures(k) >= web.login_attempts for k in keys):
        return again(f"Too many failed sign-ins: try again in {int(web.login_window // 60)} minutes.", 429)
    row = c.users.get(name) if name else None
    ok = check_password(row["hash"] if row else _dummy_hash(), form.get("password", "")) and row is not None
    if ok and row is not None and row.get("totp"):
        import pyotp

        ok = pyotp.TOTP(row["totp"]).verify(form.get("code", "").strip(), valid_window=1)
    if not ok or row is None:
        for k in keys:
            c.users.failed(k, int(web.login_window))
        c.audit(name or "?", "web.login.failed", name, {"peer": _peer(request)})
        return again("Wrong name, password or code.", 401)
    c.users.clear_failures(keys[0])
    resp = RedirectResponse(nxt, status_code=303)
    start_session(c, resp, row["name"], "password")
    resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    c.audit(row["name"], "web.login", row["name"], {"peer": _peer(request)})
    return resp


async def logout(request: Request) -> Response:
    """End the session (CSRF-checked, so another site cannot sign a user out)."""
    c = console(request)
    await form_for(request, "auditor")
    sid = request.cookies.get(SESSION_COOKIE, "")
    if sid:
        c.users.session_end(sid)
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


def login_redirect(request: Request) -> Response:
    """Where an anonymous browser is sent: the sign-in page, then back."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target)}", status_code=303)


def routes() -> list[Route]:
    """Sign-in and sign-out."""
    return [Route("/login", login_page, methods=["GET"]), Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"])]
