"""OpenID Connect sign-in against a stand-in identity provider on loopback.

No real identity provider can run here, so this module serves a small one
(discovery document, authorize, token and JWKS endpoints, RS256-signed ID
tokens, PKCE and client-secret checks) with uvicorn on 127.0.0.1; the
console talks to it over real HTTP exactly as it would to a company's SSO.
The provider "signs in" whoever the test names (`Idp.user`) and can be told
to misbehave (wrong audience, wrong nonce) to show the console refuses.
"""

from __future__ import annotations

import base64
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import httpx2
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from regfd.config import load_config
from regfd.store.client import client_from_url
from regfd.store.redis_store import RedisStore
from regfd.store.users_store import UsersStore
from regfd.web.app import create_app
from tests.conftest import RedisServer, Regfd, free_port
from tests.mta import wait_until

CLIENT_ID, SECRET = "regfd-console", "s3cret-for-tests"


@dataclass
class Idp:
    """The stand-in provider's state: who signs in, issued codes, and what to get wrong on purpose."""

    issuer: str
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"}))
    user: str = "rita@allient.com"
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    aud: str = CLIENT_ID
    nonce: str = ""  # non-empty: put this nonce in the ID token instead of the one asked for

    def app(self) -> Starlette:
        async def config(request: Request) -> Response:
            return JSONResponse({"issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
                                 "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks"})

        async def authorize(request: Request) -> Response:
            q = request.query_params
            assert q["client_id"] == CLIENT_ID and q["code_challenge_method"] == "S256" and "openid" in q["scope"]
            code = secrets.token_urlsafe(16)
            self.codes[code] = {"nonce": q["nonce"], "challenge": q["code_challenge"],
                                "redirect_uri": q["redirect_uri"]}
            return RedirectResponse(f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q['state']})}", 303)

        async def token(request: Request) -> Response:
            form = await request.form()
            basic = base64.b64decode(request.headers.get("authorization", "Basic ").split()[1] or b"").decode()
            if basic != f"{CLIENT_ID}:{SECRET}":
                return JSONResponse({"error": "invalid_client"}, 401)
            got = self.codes.pop(str(form.get("code")), None)
            if got is None or create_s256_code_challenge(str(form.get("code_verifier"))) != got["challenge"] \
                    or form.get("redirect_uri") != got["redirect_uri"]:
                return JSONResponse({"error": "invalid_grant"}, 400)
            now = int(time.time())
            claims = {"iss": self.issuer, "aud": self.aud, "sub": uuid.uuid4().hex, "email": self.user,
                      "nonce": self.nonce or got["nonce"], "iat": now, "exp": now + 300}
            return JSONResponse({"access_token": "x", "token_type": "Bearer",
                                 "id_token": jwt.encode({"alg": "RS256", "kid": "k1"}, claims, self.key)})

        async def jwks(request: Request) -> Response:
            return JSONResponse(KeySet([self.key]).as_dict(private=False))

        return Starlette(routes=[Route("/.well-known/openid-configuration", config), Route("/authorize", authorize),
                                 Route("/token", token, methods=["POST"]), Route("/jwks", jwks)])


@pytest.fixture(scope="module")
def idp() -> Iterator[Idp]:
    """The provider, served by uvicorn on a loopback port."""
    import uvicorn

    port = free_port()
    provider = Idp(f"http://127.0.0.1:{port}")
    server = uvicorn.Server(uvicorn.Config(provider.app(), host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    wait_until(lambda: server.started, 15, what="the identity provider")
    yield provider
    server.should_exit = True
    t.join(10)


@pytest.fixture
def console(idp: Idp, redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[TestClient, RedisStore]]:
    """The console configured for the provider, with rita (reviewer, SSO only) as a local user."""
    (tmp_path / "secret").write_text(SECRET + "\n")
    r = Regfd(tmp_path, redis_server.url, f"o{uuid.uuid4().hex[:10]}:",
              extra=f'[web]\nsecure_cookies = false\nbase_url = "http://127.0.0.1"\noidc_issuer = "{idp.issuer}"\n'
                    f'oidc_client_id = "{CLIENT_ID}"\noidc_client_secret_file = "{tmp_path / "secret"}"\n')
    store = RedisStore(client_from_url(r.redis_url), r.prefix)
    UsersStore(store).put({"name": "rita@allient.com", "role": "reviewer", "hash": "", "totp": ""}, "t", "add")
    idp.user, idp.aud, idp.nonce = "rita@allient.com", CLIENT_ID, ""
    c = TestClient(create_app(load_config(r.config), store), base_url="http://127.0.0.1", follow_redirects=False)
    yield c, store
    c.close()
    store.r.close()


def sso(c: TestClient, next_path: str = "/records") -> tuple[httpx2.Response, str]:
    """Start at the console, go through the provider over HTTP, come back; the callback's answer and its URL."""
    r = c.get(f"/login/oidc?next={next_path}")
    assert r.status_code == 303
    at_idp = httpx.get(r.headers["location"], follow_redirects=False)
    assert at_idp.status_code == 303
    back = urlsplit(at_idp.headers["location"])
    assert back.path == "/login/oidc/callback"
    return c.get(f"{back.path}?{back.query}"), f"{back.path}?{back.query}"


def test_sso_signs_in_the_local_user_with_their_role(console: tuple[TestClient, RedisStore]) -> None:
    c, store = console
    assert "Sign in with single sign-on" in c.get("/login").text
    r, callback = sso(c)
    assert r.status_code == 303 and r.headers["location"] == "/records"
    assert "HttpOnly" in r.headers["set-cookie"]
    page = c.get("/records")
    assert page.status_code == 200 and "rita@allient.com" in page.text and "reviewer" in page.text
    assert [e.detail.get("via") for e in store.audit_list() if e.action == "web.login"] == ["oidc"]
    # the same callback again (a replay) finds no sign-in under way
    c.cookies.clear()
    again = c.get(callback)
    assert again.status_code == 401 and "unknown or expired sign-in" in again.text


def test_sso_refuses_unknown_users_wrong_audience_and_wrong_nonce(idp: Idp,
                                                                   console: tuple[TestClient, RedisStore]) -> None:
    c, _store = console
    idp.user = "mallory@elsewhere.example"
    r, _ = sso(c)
    assert r.status_code == 401 and "not a console user" in r.text and "set-cookie" not in r.headers
    idp.user, idp.aud = "rita@allient.com", "another-client"
    r, _ = sso(c)
    assert r.status_code == 401 and "ID token was refused" in r.text
    idp.aud, idp.nonce = CLIENT_ID, "not-the-nonce-asked-for"
    r, _ = sso(c)
    assert r.status_code == 401 and "ID token was refused" in r.text
    assert c.get("/").status_code == 303  # never signed in


def test_sso_only_users_have_no_password(console: tuple[TestClient, RedisStore]) -> None:
    c, _store = console
    page = c.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token
    r = c.post("/login", data={"csrf": token.group(1), "name": "rita@allient.com", "password": ""})
    assert r.status_code == 401
