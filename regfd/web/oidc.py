"""OpenID Connect sign-in: authorization code flow with PKCE, for companies with SSO.

/login/oidc sends the browser to the identity provider with a random
`state`, a `nonce` and a PKCE challenge (kept in Redis for ten minutes,
under the state's digest); /login/oidc/callback takes that record once
(a replayed callback finds nothing), exchanges the code at the token
endpoint (with the client secret when one is configured, and the PKCE
verifier), and accepts the ID token only if its signature verifies with the
provider's published keys and its issuer, audience, nonce and expiry are
right. The claim `oidc_user_claim` (default `email`) must name a local user:
SSO proves who someone is; their role stays the one `regfd user add` gave.

The provider's discovery document and keys are fetched with httpx and kept
for an hour. Authlib provides the PKCE helpers, its joserfc the JWT checks.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from regfd.web.auth import Refused, _safe_next, start_session
from regfd.web.console import Console, console

STATE_TTL = 600
CACHE_TTL = 3600.0
_cache: dict[str, tuple[float, Any]] = {}


def _get_json(url: str) -> Any:
    hit = _cache.get(url)
    if hit and time.monotonic() - hit[0] < CACHE_TTL:
        return hit[1]
    r = httpx.get(url, timeout=10.0)
    r.raise_for_status()
    data = r.json()
    _cache[url] = (time.monotonic(), data)
    return data


def discovery(issuer: str) -> dict[str, Any]:
    """The provider's discovery document (cached)."""
    doc = _get_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
    if not isinstance(doc, dict) or doc.get("issuer") != issuer:
        raise Refused(502, "the identity provider's discovery document names another issuer")
    return doc


def redirect_uri(c: Console) -> str:
    """Where the provider sends the browser back (register it with the provider)."""
    return c.config.web.base_url.rstrip("/") + "/login/oidc/callback"


def _fail(c: Console, request: Request, why: str) -> Response:
    c.audit("?", "web.login.failed", "oidc", {"why": why})
    return c.page(request, "refused.html", None, status=401, detail=f"single sign-on failed: {why}")


async def start(request: Request) -> Response:
    """Send the browser to the identity provider."""
    c = console(request)
    web = c.config.web
    if not web.oidc_issuer:
        raise Refused(404, "no such page: single sign-on is not configured")
    doc = await run_in_threadpool(discovery, web.oidc_issuer)
    state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
    c.users.oidc_put(state, {"nonce": nonce, "verifier": verifier,
                             "next": _safe_next(request.query_params.get("next", "/"))}, STATE_TTL)
    query = urlencode({"response_type": "code", "client_id": web.oidc_client_id, "redirect_uri": redirect_uri(c),
                       "scope": "openid email profile", "state": state, "nonce": nonce,
                       "code_challenge": create_s256_code_challenge(verifier), "code_challenge_method": "S256"})
    return RedirectResponse(f"{doc['authorization_endpoint']}?{query}", status_code=303)


def _secret(c: Console) -> str:
    f = c.config.web.oidc_client_secret_file
    return Path(f).read_text().strip() if f else ""


async def callback(request: Request) -> Response:
    """Check the provider's answer, then start a session for the local user the ID token names."""
    c = console(request)
    web = c.config.web
    if not web.oidc_issuer:
        raise Refused(404, "no such page: single sign-on is not configured")
    q = request.query_params
    if q.get("error"):
        return _fail(c, request, f"the identity provider said {q.get('error')}")
    pending = c.users.oidc_take(q.get("state", "")) if q.get("state") else None
    if pending is None:
        return _fail(c, request, "unknown or expired sign-in (start again)")
    doc = await run_in_threadpool(discovery, web.oidc_issuer)
    form = {"grant_type": "authorization_code", "code": q.get("code", ""), "redirect_uri": redirect_uri(c),
            "client_id": web.oidc_client_id, "code_verifier": pending["verifier"]}
    secret = _secret(c)
    try:
        async with httpx.AsyncClient(timeout=10.0) as http:
            if secret:
                r = await http.post(doc["token_endpoint"], data=form, auth=(web.oidc_client_id, secret))
            else:  # a public client: PKCE alone
                r = await http.post(doc["token_endpoint"], data=form)
        if r.status_code != 200:
            return _fail(c, request, f"the token endpoint answered {r.status_code}")
        id_token = r.json().get("id_token", "")
        keys = KeySet.import_key_set(await run_in_threadpool(_get_json, doc["jwks_uri"]))
        token = jwt.decode(id_token, keys, algorithms=["RS256", "ES256", "PS256", "EdDSA"])
        jwt.JWTClaimsRegistry(
            leeway=60, iss={"essential": True, "value": web.oidc_issuer},
            aud={"essential": True, "value": web.oidc_client_id},
            nonce={"essential": True, "value": pending["nonce"]}, exp={"essential": True},
        ).validate(token.claims)
    except (httpx.HTTPError, JoseError, ValueError, KeyError) as exc:
        return _fail(c, request, f"the ID token was refused ({type(exc).__name__}: {exc})")
    name = str(token.claims.get(web.oidc_user_claim, ""))
    row = c.users.get(name) if name else None
    if row is None:
        return _fail(c, request, f"{name or 'this account'} is not a console user (regfd user add NAME --role …)")
    resp = RedirectResponse(pending["next"], status_code=303)
    start_session(c, resp, row["name"], "oidc")
    c.audit(row["name"], "web.login", row["name"], {"via": "oidc"})
    return resp


def routes() -> list[Route]:
    """The two legs of the sign-in."""
    return [Route("/login/oidc", start, methods=["GET"]), Route("/login/oidc/callback", callback, methods=["GET"])]
