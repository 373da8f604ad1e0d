"""The console's routes: every route for every role (allowed and refused), CSRF, sign-in, decisions, the API.

Starlette's TestClient drives the real application over a real private
redis-server (tests/conftest.py). Held messages come from the real workflow
(Workflow.on_decision, as the milter registers them). The MTA is the one
stand-in: `FakeMta` from tests/test_quarantine.py behind a real
QuarantineAgent thread, because these tests are about the console and must
not need a running Postfix; tests/test_web_browser.py releases a message
that a real Postfix held.
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from argon2 import PasswordHasher
from starlette.testclient import TestClient

from regfd.compliance.agent import QuarantineAgent
from regfd.compliance.executor import Workflow
from regfd.config import Config, load_config
from regfd.core.finding import Finding
from regfd.store.client import client_from_url
from regfd.store.redis_store import RedisStore
from regfd.store.users_store import UsersStore
from regfd.web.app import create_app
from regfd.web.auth import ROLES, hash_password
from tests.builders import MATERIAL, T0, FixedClock, facts_for, make_verdict, outbox_items
from tests.conftest import RedisServer, Regfd
from tests.test_quarantine import FakeMta, QuietLog

HOST = "mta1.test"
PASSWORD = "correct horse battery staple"
# Real Argon2id, with light parameters (they travel inside the hash string, so the console verifies with
# them): the production defaults cost seconds per hash on a loaded two-core machine.
HASH = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
SCRIPT = Finding("material", "guidance", "lower the guidance",
                 "<script>window.__pwned=1</script> we will lower the guidance", "body")


@dataclass
class Site:
    """One console over its own key prefix: users of every role, one held message, an agent over FakeMta."""

    regfd: Regfd
    config: Config
    store: RedisStore
    clock: FixedClock
    mta: FakeMta
    held: str = ""
    clients: dict[str, TestClient] = field(default_factory=dict)

    def app(self) -> Any:
        return create_app(self.config, self.store, self.clock, agent_timeout=10)

    def client(self, role: str | None) -> TestClient:
        """A browser signed in as the user of `role` (None: anonymous), signed in once per site."""
        key = role or "anonymous"
        if key not in self.clients:
            c = TestClient(self.app(), base_url="http://127.0.0.1", follow_redirects=False)
            if role:
                r = login(c, role)
                assert r.status_code == 303, r.text
            self.clients[key] = c
        return self.clients[key]

    def hold(self, findings: tuple[Finding, ...] = (MATERIAL,), subject: str = "Q4 update") -> str:
        """A message the workflow holds for HOST, its notices queued as the milter's worker does; its quarantine id."""
        v = make_verdict(self.config, findings=findings, queue_id=uuid.uuid4().hex[:10].upper())
        wf = Workflow(self.store, self.config, self.clock)
        wf.on_decision(v, facts_for(v, host=HOST, subject=subject))
        wf.follow_up()
        return next(e.id for e in wf.quarantine.list(include_decided=True) if e.queue_id == v.envelope.queue_id)


def login(c: TestClient, name: str, password: str = PASSWORD, code: str = "") -> Any:
    """Sign in through the real form (its double-submit CSRF token included)."""
    page = c.get("/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token, page.text
    return c.post("/login", data={"csrf": token.group(1), "name": name, "password": password, "code": code,
                                  "next": "/"})


def csrf_of(c: TestClient, path: str = "/") -> str:
    """The session's CSRF token, as a page's forms carry it."""
    m = re.search(r'name="csrf" value="([^"]+)"', c.get(path).text)
    assert m
    return m.group(1)


def make_site(redis_server: RedisServer, tmp: Path, approvals: int = 1, extra_web: str = "",
              secure: bool = False) -> Iterator[Site]:
    """A site with one user per role (named after it), a held message and an agent thread."""
    r = Regfd(tmp, redis_server.url, f"w{uuid.uuid4().hex[:10]}:",
              extra=f"[web]\nsecure_cookies = {str(secure).lower()}\napprovals = {approvals}\n{extra_web}")
    config = load_config(r.config)
    store = RedisStore(client_from_url(r.redis_url), r.prefix)
    users = UsersStore(store)
    for role in ROLES:
        users.put({"name": role, "role": role, "hash": HASH, "totp": ""}, "test", "web.user.add")
    users.put({"name": "approver2", "role": "approver", "hash": HASH, "totp": ""}, "t", "add")
    mta = FakeMta()
    site = Site(r, config, store, FixedClock(T0 + timedelta(hours=2)), mta)
    site.held = site.hold()
    stop = threading.Event()
    agent = QuarantineAgent(store, config, mta, HOST)
    t = threading.Thread(target=agent.run_forever, args=(stop, QuietLog()), daemon=True)
    t.start()
    for _ in range(200):
        if store.quarantine.agent_alive(HOST):
            break
        stop.wait(0.02)
    yield site
    stop.set()
    t.join(10)
    for c in site.clients.values():
        c.close()
    store.r.close()


@pytest.fixture(scope="module")
def site(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One site for the access matrix: its requests change nothing (refused or reason-less)."""
    yield from make_site(redis_server, tmp_path_factory.mktemp("web"))


@pytest.fixture
def fresh(redis_server: RedisServer, tmp_path: Path) -> Iterator[Site]:
    """A site of its own, for tests that decide or sign in and out."""
    yield from make_site(redis_server, tmp_path)


@pytest.fixture
def two(redis_server: RedisServer, tmp_path: Path) -> Iterator[Site]:
    """A site where releases need two people."""
    yield from make_site(redis_server, tmp_path, approvals=2)


# ---------------------------------------------------------------- the access matrix
HELD = "{held}"
GETS = [  # (path, least role)
    ("/", "auditor"), ("/dashboard", "auditor"), ("/records", "auditor"), ("/records.csv", "auditor"),
    ("/disclosures", "auditor"), ("/disclosures.csv", "auditor"), ("/directory", "auditor"),
    (f"/message/{HELD}", "auditor"), (f"/message/{HELD}/raw", "reviewer"),
]
POSTS = [  # (path, least role, form that passes access but is refused on its merits, the status then)
    (f"/message/{HELD}/release", "reviewer", {}, 409),
    (f"/message/{HELD}/reject", "reviewer", {}, 409),
    (f"/message/{HELD}/approve", "approver", {}, 409),  # nothing awaits approval
    (f"/message/{HELD}/claim", "reviewer", {"unclaim": "1"}, 303),
    ("/disclosures/dnone/close", "reviewer", {"reference": "8-K"}, 409),
    ("/directory/registry/add", "admin", {"pattern": "not a pattern!", "category": "analyst"}, 400),
    ("/directory/registry/remove", "admin", {"pattern": "nobody.example"}, 400),
    ("/directory/officer/add", "admin", {"address": "cfo@allient.com", "role": "janitor"}, 400),
    ("/directory/officer/remove", "admin", {"address": "nobody@allient.com"}, 400),
    ("/directory/exempt/add", "admin", {"pattern": "lawfirm.example", "kind": "friend"}, 400),
    ("/directory/exempt/remove", "admin", {"pattern": "nobody.example"}, 400),
    ("/directory/quiet/add", "admin", {"start": "2027-02-01", "end": "2027-01-01"}, 400),
    ("/directory/quiet/remove", "admin", {"id": "999"}, 400),
    ("/directory/delegate/add", "admin", {"address": "ir@allient.com", "by": "nobody@allient.com"}, 400),
    ("/directory/delegate/revoke", "admin", {"address": "nobody@allient.com"}, 400),
    ("/directory/registry/import", "admin", {}, 400),  # no file: "empty file"
    ("/directory/registry/import/apply", "admin", {"csv": "pattern\n"}, 400),
    ("/bulk", "reviewer", {"action": "release"}, 400),  # nothing selected
    ("/bulk/confirm", "reviewer", {"action": "reject"}, 400),
]
APIS = [  # (method, path, least role)
    ("GET", "/api/v1/held", "auditor"), ("GET", f"/api/v1/held/{HELD}", "auditor"),
    ("GET", "/api/v1/records", "auditor"), ("GET", "/api/v1/disclosures", "auditor"),
    ("POST", f"/api/v1/held/{HELD}/release", "reviewer"), ("POST", f"/api/v1/held/{HELD}/reject", "reviewer"),
    ("POST", f"/api/v1/held/{HELD}/approve", "approver"),
]
WHO = [None, *ROLES]


def allowed(role: str | None, least: str) -> bool:
    return role is not None and ROLES.index(role) >= ROLES.index(least)


@pytest.mark.parametrize("role", WHO, ids=lambda r: r or "anonymous")
@pytest.mark.parametrize(("path", "least"), GETS, ids=[p for p, _ in GETS])
def test_get_routes_by_role(site: Site, role: str | None, path: str, least: str) -> None:
    r = site.client(role).get(path.format(held=site.held))
    if role is None:
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    elif allowed(role, least):
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 403 and "may not" in r.text


@pytest.mark.parametrize("role", WHO, ids=lambda r: r or "anonymous")
@pytest.mark.parametrize(("path", "least", "form", "status"), POSTS, ids=[p for p, *_ in POSTS])
def test_post_routes_by_role(site: Site, role: str | None, path: str, least: str, form: dict[str, str],
                             status: int) -> None:
    c = site.client(role)
    url = path.format(held=site.held)
    token = csrf_of(c) if role else "forged"
    r = c.post(url, data={**form, "csrf": token})
    if role is None:
        assert r.status_code == 401
    elif allowed(role, least):
        assert r.status_code == status, r.text
        # without the token the same request is refused before anything happens
        assert c.post(url, data=form).status_code == 403
        assert c.post(url, data={**form, "csrf": token[:-2] + "xx"}).status_code == 403
    else:
        assert r.status_code == 403
    assert site.mta.calls == []  # nothing in the matrix reached the MTA


@pytest.mark.parametrize("role", WHO, ids=lambda r: r or "anonymous")
@pytest.mark.parametrize(("method", "path", "least"), APIS, ids=[p for _, p, _ in APIS])
def test_api_routes_by_role(site: Site, role: str | None, method: str, path: str, least: str) -> None:
    tokens = site.__dict__.setdefault("tokens", {})
    if role and role not in tokens:
        tokens[role] = f"rfd_{uuid.uuid4().hex}"
        UsersStore(site.store).token_add(tokens[role], role, "test", "", "test")
    headers = {"Authorization": f"Bearer {tokens[role]}"} if role else {}
    c = TestClient(site.app(), base_url="http://127.0.0.1")
    r = c.request(method, path.format(held=site.held), headers=headers, json={} if method == "POST" else None)
    if role is None:
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    elif allowed(role, least):
        assert r.status_code == (409 if method == "POST" else 200), r.text  # POSTs: no reason / nothing to approve
    else:
        assert r.status_code == 403 and "may not" in r.json()["error"]
    assert site.mta.calls == []


def test_api_refuses_browser_sessions_and_unknown_tokens(site: Site) -> None:
    assert site.client("admin").get("/api/v1/held").status_code == 401
    c = TestClient(site.app(), base_url="http://127.0.0.1")
    assert c.get("/api/v1/held", headers={"Authorization": "Bearer rfd_nope"}).status_code == 401


def test_openapi_document_lists_every_api_route(site: Site) -> None:
    doc = TestClient(site.app()).get("/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert {p.replace(HELD, "{qid}") for _m, p, _l in APIS} == set(doc["paths"])


# ---------------------------------------------------------------- what pages show, and to whom
def test_security_headers_and_cookie_flags(redis_server: RedisServer, tmp_path: Path) -> None:
    gen = make_site(redis_server, tmp_path, secure=True)
    site = next(gen)
    c = TestClient(site.app(), base_url="https://127.0.0.1", follow_redirects=False)
    r = login(c, "reviewer")
    cookie = r.headers["set-cookie"]
    assert "regfd_session=" in cookie and "HttpOnly" in cookie and "Secure" in cookie
    assert "samesite=strict" in cookie.lower()
    page = c.get("/")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    assert page.text.count("<script") == 1 and '<script src="/static/htmx.min.js" defer></script>' in page.text
    # over plain http the browser does not send a Secure cookie back: no session there
    plain = TestClient(site.app(), base_url="http://127.0.0.1", follow_redirects=False)
    login(plain, "reviewer")
    assert plain.get("/").status_code == 303
    for _ in gen:
        pass


def test_auditor_sees_metadata_only_and_reviewer_reading_is_audited(site: Site) -> None:
    url = f"/message/{site.held}"
    a = site.client("auditor").get(url).text
    assert "alice@allient.com" in a and "material: earnings" in a and "Q4 update" in a
    assert "record revenue" not in a and 'action="/message/' not in a  # no words of the message, no buttons
    before = [e for e in site.store.audit_list() if e.action == "web.view"]
    r = site.client("reviewer").get(url).text
    assert "<mark" in r and "record revenue</mark>" in r and 'action="/message/' in r
    seen = [e for e in site.store.audit_list() if e.action == "web.view"]
    assert len(seen) == len(before) + 1 and seen[-1].who == "reviewer" and seen[-1].target == site.held


def test_message_text_is_escaped_and_html_never_rendered(fresh: Site) -> None:
    qid = fresh.hold(findings=(SCRIPT,), subject="<img src=x onerror=alert(1)>")
    raw = (b"From: alice@allient.com\r\nTo: bob@bank.com\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/html; charset=utf-8\r\n\r\n<html><head><script>window.__pwned=1</script></head>"
           b"<body><p>We will <b>lower the guidance</b>.</p><img src='https://evil.example/p.png'></body></html>")
    fresh.store.r.hset(fresh.store.k("quarantine:raw"), qid, raw)
    page = fresh.client("reviewer").get(f"/message/{qid}").text
    assert "<script>window.__pwned" not in page and "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "evil.example" not in page  # the HTML's remote image is not even mentioned as markup
    assert "lower the guidance</mark>" in page and "shown as text, never rendered" in page
    raw_page = fresh.client("reviewer").get(f"/message/{qid}/raw")
    assert raw_page.headers["content-type"].startswith("text/plain")


def test_queue_filters_are_url_parameters(fresh: Site) -> None:
    other = fresh.hold(subject="Board dinner")
    c = fresh.client("auditor")
    assert "Board dinner" in c.get("/").text and "Q4 update" in c.get("/").text
    assert "Board dinner" not in c.get("/?firm=nobank").text
    assert "Board dinner" in c.get("/?firm=big+bank&category=analyst&sender=alice").text
    assert "No held message matches" in c.get("/?category=embargo").text
    assert "No held message matches" in c.get("/?since=2026-11-18").text  # held on 2026-11-17
    assert "Board dinner" in c.get("/?since=2026-11-17&until=2026-11-17").text
    assert other in c.get("/?state=review").text and "No held message matches" in c.get("/?state=released").text
    assert "2</strong> held" in c.get("/").text  # the dashboard line


def test_release_with_one_approval_goes_through_the_agent_once(fresh: Site) -> None:
    c = fresh.client("reviewer")
    url = f"/message/{fresh.held}"
    r = c.post(url + "/release", data={"csrf": csrf_of(c), "reason": "public since the 8-K"})
    assert r.status_code == 200, r.text
    assert f"released {fresh.held}" in r.text and [x[0] for x in fresh.mta.calls] == ["release"]
    again = c.post(url + "/release", data={"csrf": csrf_of(c), "reason": "again"})
    assert again.status_code == 409 and "already released by reviewer" in again.text
    assert len(fresh.mta.calls) == 1
    audit = [e for e in fresh.store.audit_list() if e.action == "quarantine.release"]
    assert [(e.who, e.detail["reason"]) for e in audit] == [("reviewer", "public since the 8-K")]
    assert "1</strong> decided today (1 released, 0 rejected)" in c.get("/").text
    assert f"/message/{fresh.held}" in c.get("/?state=released").text and "No held message" in c.get("/").text


def test_reject_needs_a_reason_and_is_final(fresh: Site) -> None:
    c = fresh.client("reviewer")
    url = f"/message/{fresh.held}/reject"
    r = c.post(url, data={"csrf": csrf_of(c), "reason": "   "})
    assert r.status_code == 409 and "a reason is required" in r.text and fresh.mta.calls == []
    r = c.post(url, data={"csrf": csrf_of(c), "reason": "guidance is not public"})
    assert r.status_code == 200 and "rejected" in r.text
    assert [x[0] for x in fresh.mta.calls] == ["delete"]


def test_two_person_rule(two: Site) -> None:
    rev, appr, appr2 = two.client("reviewer"), two.client("approver"), two.client("approver2")
    url = f"/message/{two.held}"
    r = rev.post(url + "/release", data={"csrf": csrf_of(rev), "reason": "public since 9:00"})
    assert r.status_code == 200 and "awaiting second approval" in r.text
    assert two.mta.calls == []  # nothing reaches the MTA on one person's word
    assert "awaiting second approval" in appr.get("/").text and "reviewer" in appr.get("/").text
    # a second request while one waits is refused
    r = appr.post(url + "/release", data={"csrf": csrf_of(appr), "reason": "me too"})
    assert r.status_code == 409 and "already awaits" in r.text
    assert "Approve the release" in appr.get(url).text and "Approve the release" not in rev.get(url).text
    r = appr.post(url + "/approve", data={"csrf": csrf_of(appr, url)})
    assert r.status_code == 200 and "released" in r.text, r.text
    assert [x[0] for x in two.mta.calls] == ["release"]
    r = appr2.post(url + "/approve", data={"csrf": csrf_of(appr2)})
    assert r.status_code == 409 and len(two.mta.calls) == 1
    entry = two.store.quarantine.get(two.held)
    assert entry is not None and entry["decided_by"] == "reviewer (requested) + approver (approved)"
    assert entry["reason"] == "public since 9:00"


def test_two_person_rule_refuses_the_requester(two: Site) -> None:
    boss = two.client("approver")  # an approver may request a release, but not approve it too
    url = f"/message/{two.held}"
    assert boss.post(url + "/release", data={"csrf": csrf_of(boss), "reason": "ok"}).status_code == 200
    r = boss.post(url + "/approve", data={"csrf": csrf_of(boss)})
    assert r.status_code == 409 and "someone other than the requester" in r.text and two.mta.calls == []


def test_login_rate_limit_and_wrong_password(fresh: Site) -> None:
    c = TestClient(fresh.app(), base_url="http://127.0.0.1", follow_redirects=False)
    for _ in range(fresh.config.web.login_attempts):
        assert login(c, "reviewer", "wrong password!").status_code == 401
    r = login(c, "reviewer")  # the right password, too late
    assert r.status_code == 429 and "Too many failed sign-ins" in r.text
    assert [e.who for e in fresh.store.audit_list() if e.action == "web.login.failed"].count("reviewer") == 5


def test_login_needs_the_forms_token_and_redirects_only_locally(fresh: Site) -> None:
    c = TestClient(fresh.app(), base_url="http://127.0.0.1", follow_redirects=False)
    assert c.post("/login", data={"name": "reviewer", "password": PASSWORD}).status_code == 403
    c.get("/login")
    tok = c.cookies.get("regfd_login_csrf")
    r = c.post("/login", data={"csrf": tok, "name": "reviewer", "password": PASSWORD, "next": "//evil.example/"})
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_sign_out_ends_the_session(fresh: Site) -> None:
    c = fresh.client("reviewer")
    assert c.get("/").status_code == 200
    assert c.post("/logout", data={"csrf": csrf_of(c)}).status_code == 303
    c.cookies.clear()
    assert c.get("/").status_code == 303


def test_totp_when_the_user_has_one(fresh: Site) -> None:
    secret = pyotp.random_base32()
    UsersStore(fresh.store).put({"name": "otp", "role": "reviewer", "hash": HASH,
                                 "totp": secret}, "t", "add")
    c = TestClient(fresh.app(), base_url="http://127.0.0.1", follow_redirects=False)
    assert login(c, "otp").status_code == 401
    assert login(c, "otp", code=pyotp.TOTP(secret).now()).status_code == 303


def test_trusted_proxy_header_only_from_trusted_addresses(redis_server: RedisServer, tmp_path: Path) -> None:
    gen = make_site(redis_server, tmp_path, extra_web='proxy_user_header = "X-Remote-User"\n'
                                                      'trusted_proxies = ["127.0.0.0/8"]\n')
    site = next(gen)
    trusted = TestClient(site.app(), base_url="http://127.0.0.1", follow_redirects=False, client=("127.0.0.1", 5))
    page = trusted.get("/", headers={"X-Remote-User": "approver"})
    assert page.status_code == 200 and "approver" in page.text
    outsider = TestClient(site.app(), base_url="http://127.0.0.1", follow_redirects=False, client=("10.1.2.3", 5))
    assert outsider.get("/", headers={"X-Remote-User": "approver"}).status_code == 303
    assert trusted.get("/", headers={"X-Remote-User": "nobody"}).status_code == 303
    tok = re.search(r'name="csrf" value="([^"]+)"',
                    trusted.get(f"/message/{site.held}", headers={"X-Remote-User": "approver"}).text)
    assert tok
    r = trusted.post(f"/message/{site.held}/reject", headers={"X-Remote-User": "approver"},
                     data={"csrf": tok.group(1), "reason": "not public"})
    assert r.status_code == 200 and [x[0] for x in site.mta.calls] == ["delete"]
    for _ in gen:
        pass


def test_records_and_disclosures_export(fresh: Site) -> None:
    c = fresh.client("auditor")
    rows = list(csv.reader(io.StringIO(c.get("/records.csv").text)))
    assert rows[0][:3] == ["at", "queue_id", "message_id"] and len(rows) == 2 and rows[1][4] == "alice@allient.com"
    assert "Q4 update" in c.get("/records?q=big+bank").text
    assert "No record matches" in c.get("/records?q=nothing-like-this").text
    # a release of material information opens a disclosure follow-up with its deadline
    rev = fresh.client("reviewer")
    rev.post(f"/message/{fresh.held}/release", data={"csrf": csrf_of(rev), "reason": "ok"})
    page = c.get("/disclosures").text
    assert "Q4 update" in page and " left" in page
    assert 'action="/disclosures/' not in page  # an auditor cannot close one
    did = fresh.store.quarantine.get(fresh.held)["disclosure_id"]  # type: ignore[index]
    r = rev.post(f"/disclosures/{did}/close", data={"csrf": csrf_of(rev), "reference": "8-K filed"})
    assert r.status_code == 303
    assert "8-K filed" in c.get("/disclosures?state=closed").text
    assert "8-K filed" in c.get("/disclosures.csv").text


def test_directory_edits_use_the_cli_rules_and_are_audited(fresh: Site) -> None:
    c = fresh.client("admin")
    r = c.post("/directory/registry/add", data={"csrf": csrf_of(c), "pattern": "Analyst@Fund.EXAMPLE",
                                                "category": "money-manager", "firm": "Fund"})
    assert r.status_code == 303
    assert [e.pattern for e in fresh.store.registry_list()] == ["analyst@fund.example"]
    r = c.post("/directory/registry/add", data={"csrf": csrf_of(c), "pattern": "x@fund.example",
                                                "category": "friend"})
    assert r.status_code == 400 and "unknown category" in r.text
    assert [e.who for e in fresh.store.audit_list() if e.action == "registry.add"] == ["admin"]
    assert "analyst@fund.example" in fresh.client("auditor").get("/directory").text


def test_api_release_and_read(fresh: Site) -> None:
    users = UsersStore(fresh.store)
    users.token_add("rfd_rev", "reviewer", "ticketing", "", "test")
    c = TestClient(fresh.app(), base_url="http://127.0.0.1")
    h = {"Authorization": "Bearer rfd_rev"}
    [row] = c.get("/api/v1/held", headers=h).json()
    assert row["id"] == fresh.held and row["recipients"][0]["firm"] == "Big Bank"
    assert c.get(f"/api/v1/held/{fresh.held}", headers=h).json()["record"]["findings"][0]["text"] == "record revenue"
    r = c.post(f"/api/v1/held/{fresh.held}/release", headers=h, json={"reason": "public"})
    assert r.status_code == 200 and r.json()["state"] == "released"
    assert c.get("/api/v1/held", headers=h).json() == []
    assert json.loads(c.get("/api/v1/records", headers=h).text)[0]["sender"] == "alice@allient.com"


def test_user_commands(regfd: Regfd, store: RedisStore) -> None:
    r = regfd.subprocess("user", "add", "ann@allient.com", "--role", "Reviewer", "--password-stdin",
                         input="a long enough password\n")
    assert r.rc == 0 and "added ann@allient.com (reviewer)" in r.out, r.err
    row = UsersStore(store).get("ann@allient.com")
    assert row is not None and row["hash"].startswith("$argon2id$") and "a long enough" not in json.dumps(row)
    assert hash_password("x" * 12).startswith("$argon2id$")
    short = regfd.subprocess("user", "add", "bob", "--role", "auditor", "--password-stdin", input="short\n")
    assert short.rc == 1 and "at least 12 characters" in short.err and UsersStore(store).get("bob") is None
    assert regfd("user", "add", "bob", "--role", "boss").rc == 1
    again = regfd.subprocess("user", "add", "ann@allient.com", "--role", "admin", "--password-stdin",
                             input="another long password\n")
    assert again.rc == 1 and "exists already" in again.err
    tok = regfd("user", "token", "ann@allient.com", "--client", "siem")
    assert tok.rc == 0 and tok.out.startswith("rfd_")
    got = UsersStore(store).token_get(tok.out.strip())
    assert got is not None and (got["user"], got["client"]) == ("ann@allient.com", "siem")
    assert tok.out.strip() not in json.dumps(store.r.hgetall(store.k("web:tokens")).__repr__())  # only its digest
    assert regfd("user", "token", "nobody").rc == 1
    listed = json.loads(regfd("user", "list", "--json").out)
    assert [(u["name"], u["role"]) for u in listed] == [("ann@allient.com", "reviewer")]
    assert regfd("user", "remove", "ann@allient.com").rc == 0
    assert UsersStore(store).token_get(tok.out.strip()) is None


def test_notifications_link_to_the_console_when_base_url_is_set(redis_server: RedisServer, tmp_path: Path) -> None:
    gen = make_site(redis_server, tmp_path, extra_web='base_url = "https://regfd.allient.com/"\n')
    site = next(gen)
    [note] = [n for n in outbox_items(site.store) if n["kind"] == "decision"]
    link = f"https://regfd.allient.com/message/{site.held}"
    assert f"Open it in the compliance console:\n  {link}" in note["text"]
    assert f'<a href="{link}">' in note["html"]
    for _ in gen:
        pass
    (tmp_path / "plain").mkdir()
    gen = make_site(redis_server, tmp_path / "plain")
    plain = next(gen)
    assert [n for n in outbox_items(plain.store) if n["kind"] == "decision"]
    assert all("/message/" not in n["text"] for n in outbox_items(plain.store))
    for _ in gen:
        pass


def test_attachments_download_for_reviewers_only(fresh: Site) -> None:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@allient.com", "bob@bank.com", "deck"
    msg.set_content("see attached")
    msg.add_attachment(b"<html><script>alert(1)</script></html>", maintype="text", subtype="html",
                       filename="deck.html")
    fresh.store.r.hset(fresh.store.k("quarantine:raw"), fresh.held, msg.as_bytes())
    page = fresh.client("reviewer").get(f"/message/{fresh.held}").text
    assert f'/message/{fresh.held}/attachment/0">deck.html</a>' in page
    r = fresh.client("reviewer").get(f"/message/{fresh.held}/attachment/0")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"].startswith("attachment;") and b"<script>" in r.content
    assert fresh.client("reviewer").get(f"/message/{fresh.held}/attachment/1").status_code == 404
    assert fresh.client("auditor").get(f"/message/{fresh.held}/attachment/0").status_code == 403
    assert [e.detail["name"] for e in fresh.store.audit_list() if e.action == "web.view.attachment"] == ["deck.html"]


def test_bulk_decisions_confirm_before_acting(fresh: Site) -> None:
    other = fresh.hold(subject="Second one")
    c = fresh.client("reviewer")
    queue = c.get("/").text
    assert f'name="id" value="{fresh.held}"' in queue and f'name="id" value="{other}"' in queue
    assert 'name="id"' not in fresh.client("auditor").get("/").text
    r = c.post("/bulk", data={"csrf": csrf_of(c), "action": "reject", "id": [fresh.held, other]})
    assert r.status_code == 200 and "Confirm: reject 2 messages" in r.text and "Second one" in r.text
    assert fresh.mta.calls == []  # the first step does nothing
    form = {"csrf": csrf_of(c), "action": "reject", "id": [fresh.held, other]}
    r = c.post("/bulk/confirm", data={**form, "reason": " "})
    assert r.status_code == 409 and "a reason is required" in r.text and fresh.mta.calls == []
    r = c.post("/bulk/confirm", data={**form, "reason": "not public yet"})
    assert r.status_code == 200 and r.text.count("rejected") >= 2
    assert [x[0] for x in fresh.mta.calls] == ["delete", "delete"]
    r = c.post("/bulk/confirm", data={**form, "reason": "again"})
    assert "already rejected by reviewer" in r.text and len(fresh.mta.calls) == 2


def test_registry_csv_import_previews_before_applying(fresh: Site) -> None:
    from regfd.core.directory import RegistryEntry

    fresh.store.registry_add(RegistryEntry("bank.com", "analyst", "Big Bank"), "t")
    fresh.store.registry_add(RegistryEntry("old.example", "shareholder"), "t")
    c = fresh.client("admin")
    body = "pattern,category,firm\nbank.com,broker-dealer,Big Bank\nFund.example,money-manager,Fund\n"
    r = c.post("/directory/registry/import", data={"csrf": csrf_of(c), "replace": "1"},
               files={"file": ("reg.csv", body.encode(), "text/csv")})
    assert r.status_code == 200, r.text
    assert "1</strong> to add" in r.text and "1</strong> to change" in r.text and "1</strong> to remove" in r.text
    assert "analyst, Big Bank → <strong>broker-dealer, Big Bank" in r.text and "old.example" in r.text
    assert sorted(e.pattern for e in fresh.store.registry_list()) == ["bank.com", "old.example"]  # nothing yet
    csv_field = re.search(r'<textarea name="csv" hidden>(.*?)</textarea>', r.text, re.S)
    assert csv_field
    r = c.post("/directory/registry/import/apply", data={"csrf": csrf_of(c), "replace": "1", "name": "reg.csv",
                                                         "csv": body})
    assert r.status_code == 303
    assert {e.pattern: e.category for e in fresh.store.registry_list()} == {"bank.com": "broker-dealer",
                                                                          "fund.example": "money-manager"}
    assert [e.target for e in fresh.store.audit_list() if e.action == "registry.import"] == ["console:reg.csv"]
    bad = c.post("/directory/registry/import", data={"csrf": csrf_of(c)},
                 files={"file": ("bad.csv", b"pattern,category\nx@y.example,friend\n", "text/csv")})
    assert bad.status_code == 400 and "bad.csv:2: unknown category" in bad.text
    auditor = fresh.client("auditor")
    assert auditor.post("/directory/registry/import/apply",
                        data={"csrf": csrf_of(auditor), "csv": body}).status_code == 403


def test_regfd_web_serves_on_a_unix_socket_and_stops_on_sigterm(regfd: Regfd, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    import httpx

    sock = tmp_path / "web.sock"
    regfd.write_config(extra="[web]\nsecure_cookies = false\n")
    proc = subprocess.Popen([sys.executable, "-m", "regfd.cli", "web", "--listen", f"unix:{sock}"],
                            env={**os.environ, **regfd.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline, "regfd web did not listen"
            time.sleep(0.05)
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://console") as c:
            r = c.get("/login?next=/records&code=SECRET-CODE")
            assert r.status_code == 200 and "Sign in" in r.text
            assert "script-src 'self'" in r.headers["content-security-policy"] and "server" not in r.headers
            assert c.get("/").status_code == 303
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=20)
    # uvicorn shuts down gracefully, then re-raises SIGTERM: systemd counts that as a clean stop
    assert proc.returncode in (0, -15), err.decode()
    assert "serving the console on unix:" in err.decode() and "Application shutdown complete" in err.decode()
    logged = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    assert {"event": "web.request", "method": "GET", "path": "/login", "status": 200}.items() <= logged[0].items()
    assert "SECRET-CODE" not in err.decode()  # no query string (an SSO callback's code) in the log


@pytest.mark.parametrize(("table", "error"), [
    ({"approvals": 3}, "web.approvals: must be 1 or 2"),
    ({"listen": "8080"}, "web.listen: must be HOST:PORT or unix:PATH"),
    ({"listen": "unix:"}, "web.listen: unix: needs a path"),
    ({"proxy_user_header": "X-Remote-User"}, "web.proxy_user_header: set it together with web.trusted_proxies"),
    ({"proxy_user_header": "X-User", "trusted_proxies": ["proxy.example"]}, "web.trusted_proxies: 'proxy.example'"),
    ({"oidc_issuer": "https://sso.example"}, "web.oidc_client_id: is required"),
    ({"oidc_issuer": "https://sso.example", "oidc_client_id": "x"}, "web.base_url: is required with web.oidc"),
    ({"base_url": "regfd.example"}, "web.base_url: must start with https://"),
    ({"colour": "blue"}, "web.colour: unknown key"),
])
def test_web_config_refusals(table: dict[str, Any], error: str) -> None:
    from regfd.config import parse_config
    from regfd.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(error)):
        parse_config({"web": table}, base=Path("."))


def test_reject_can_tell_the_sender_a_chosen_text(fresh: Site) -> None:
    c = fresh.client("reviewer")
    r = c.post(f"/message/{fresh.held}/reject", data={"csrf": csrf_of(c), "reason": "MNPI: guidance not public",
                                                      "sender_text": "Please call the Corporate Secretary first."})
    assert r.status_code == 200 and "rejected" in r.text
    [told] = [n for n in outbox_items(fresh.store) if n["kind"] == "rejected-sender"]
    assert "Please call the Corporate Secretary first." in told["text"] and "MNPI" not in told["text"]
    [audit] = [e for e in fresh.store.audit_list() if e.action == "quarantine.reject"]
    assert audit.detail["reason"] == "MNPI: guidance not public"
    assert audit.detail["sender_text"] == "Please call the Corporate Secretary first."


def test_claiming_shows_who_has_a_message_in_hand(fresh: Site) -> None:
    c = fresh.client("reviewer")
    url = f"/message/{fresh.held}"
    assert c.post(url + "/claim", data={"csrf": csrf_of(c)}).status_code == 303
    assert '<td data-label="Claimed by">reviewer</td>' in fresh.client("auditor").get("/").text
    assert "give it back" in c.get(url).text and "take it in hand" in fresh.client("approver").get(url).text
    assert c.post(url + "/claim", data={"csrf": csrf_of(c), "unclaim": "1"}).status_code == 303
    assert '<td data-label="Claimed by"></td>' in c.get("/").text
    assert [e.action for e in fresh.store.audit_list() if e.action.endswith("claim")] == ["web.claim", "web.unclaim"]
    auditor = fresh.client("auditor")
    assert auditor.post(url + "/claim", data={"csrf": csrf_of(auditor)}).status_code == 403


def test_exemptions_quiet_periods_and_delegations_with_the_cli_rules(fresh: Site) -> None:
    from regfd.core.directory import Officer

    c = fresh.client("admin")

    def post(path: str, **form: str) -> Any:
        return c.post(path, data={"csrf": csrf_of(c), **form})

    # dates relative to the site's clock (T0 + 2 h), never today's
    assert post("/directory/exempt/add", pattern="LawFirm.example", kind="attorney", until="2026-12-31").status_code \
        == 303
    assert post("/directory/exempt/add", pattern="x.example", kind="friend").status_code == 400
    assert "is in the past" in post("/directory/exempt/add", pattern="y.example", kind="nda", until="2026-01-01").text
    assert [(e.pattern, e.kind) for e in fresh.store.exempt_list()] == [("lawfirm.example", "attorney")]
    assert post("/directory/quiet/add", start="2026-12-15", end="2027-01-20", label="Q4 quiet").status_code == 303
    assert "must be after START" in post("/directory/quiet/add", start="2027-02-01", end="2027-01-01").text
    [period] = fresh.store.quiet_list()
    assert period.label == "Q4 quiet"
    fresh.store.officer_add(Officer("ceo@allient.com", "CEO"), "t")
    r = post("/directory/delegate/add", address="ir@allient.com", by="cfo@allient.com", to="bank.com")
    assert r.status_code == 400 and "is not an authorized officer" in r.text
    r = post("/directory/delegate/add", address="ir@elsewhere.example", by="ceo@allient.com")
    assert r.status_code == 400 and "not in an internal domain" in r.text
    assert post("/directory/delegate/add", address="ir@allient.com", by="ceo@allient.com", to="bank.com, fund.example",
                until="2026-12-31", scope="Q4 follow-up").status_code == 303
    [d] = fresh.store.delegate_list()
    assert (d.address, d.by, d.to) == ("ir@allient.com", "ceo@allient.com", ("bank.com", "fund.example"))
    assert post("/directory/delegate/revoke", address="ir@allient.com").status_code == 303
    assert fresh.store.delegate_list()[0].revoked_at == fresh.clock()
    assert post("/directory/quiet/remove", id=period.id).status_code == 303 and fresh.store.quiet_list() == []
    assert post("/directory/exempt/remove", pattern="lawfirm.example").status_code == 303
    assert {e.who for e in fresh.store.audit_list() if e.action.startswith(("exempt.", "quiet.", "delegate."))} \
        == {"admin"}
    reviewer = fresh.client("reviewer")
    assert reviewer.post("/directory/quiet/add", data={"csrf": csrf_of(reviewer), "start": "2026-12-15",
                                                       "end": "2027-01-20"}).status_code == 403
