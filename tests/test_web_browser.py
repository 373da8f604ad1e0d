"""The console in a real browser: Debian's chromium driven by Playwright, against a real Postfix that held the mail.

Everything is real: the session's private Postfix (tests/mta.py) holds the
messages through `regfd milter`, whose quarantine agent runs postsuper; the
console is `create_app` served by uvicorn on a loopback port in a thread,
with `[web] approvals = 2`; the sink records what Postfix delivers.

A reviewer signs in, finds the held message with the queue's filter, reads
it with the findings marked, and requests the release; an approver signs in
and approves; the sink receives the message exactly once. An auditor sees
no action and a forged POST is refused. A held message whose HTML part
carries a script cannot run it in the console. Screenshots of the queue,
one message and the dashboard at 1280 px and 390 px go to
test-output/screenshots/ (their paths are printed).

Playwright is only the driver (`executable_path=/usr/bin/chromium`); its
own browser download (`playwright install`) is never used.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from regfd.config import load_config
from regfd.store.client import client_from_url
from regfd.store.redis_store import RedisStore
from regfd.store.users_store import UsersStore
from regfd.web.app import create_app
from tests.conftest import REPO, Regfd, free_port
from tests.mta import make_message, queue_id_of, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
MTA_HOST = "mta.regfd.test"
PASSWORD = "correct horse battery staple"
SHOTS = REPO / "test-output" / "screenshots"
MATERIAL = "Between us, we will miss the quarter and the guidance will be lowered next week."


def uniq(local: str, domain: str) -> str:
    return f"{local}.{uuid.uuid4().hex[:8]}@{domain}"


@pytest.fixture(scope="session")
def warm_lexicons(mta_regfd: Any) -> None:
    """Compile the lexicons into the milter's cache first, here without a time limit: on a loaded machine
    the compile can outlast the milter fixture's start-up wait (the milter then loads the cache)."""
    from regfd.service import Services

    _ = Services(load_config(mta_regfd.config)).lexicons


@pytest.fixture(scope="module")
def console_url(warm_lexicons: None, mta_regfd: Any, postfix: Any, smtp_sink: Any, regfd_milter: Any,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The console on the milter's store (approvals = 2), served by uvicorn on loopback; users of three roles."""
    import uvicorn

    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is missing: bash deploy/install-system-deps.sh test (as root)")
    tmp = tmp_path_factory.mktemp("web-browser")
    cli = Regfd(tmp, mta_regfd.redis_url, mta_regfd.prefix, smtp_port=smtp_sink.port,
                extra=f'[postfix]\nconfig_directory = "{postfix.config_dir}"\n'
                      "[web]\napprovals = 2\nsecure_cookies = false\n")
    for args in (("registry", "add", "bank.com", "--category", "analyst", "--firm", "Big Bank"),
                 ("officer", "add", "ceo@allient.com", "--role", "CEO")):
        assert cli(*args).rc == 0
    store = RedisStore(client_from_url(cli.redis_url), cli.prefix)
    wait_until(lambda: store.quarantine.agent_alive(MTA_HOST), 15, what="the milter's quarantine agent")
    # Real Argon2id with light parameters (they travel in the hash): the defaults cost seconds on a loaded machine.
    fast = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    users = UsersStore(store)
    for name, role in (("rita@allient.com", "reviewer"), ("alex@allient.com", "approver"),
                       ("audrey@allient.com", "auditor")):
        users.put({"name": name, "role": role, "hash": fast, "totp": ""}, "test", "web.user.add")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(load_config(cli.config), store), host="127.0.0.1",
                                           port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    wait_until(lambda: server.started, 15, what="uvicorn")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    t.join(10)
    store.r.close()


@pytest.fixture(scope="module")
def browser(console_url: str) -> Iterator[Any]:
    """Debian's chromium, headless, launched by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def hold(postfix: Any, regfd_milter: Any, message: bytes, sender: str, rcpt: str) -> str:
    """Send through the real Postfix; return the queue id once the milter has held it."""
    code, text = postfix.send(sender, [rcpt], message)
    assert code == 250, text
    qid = queue_id_of(text)
    assert regfd_milter.decision_for(sender)["action"] == "hold"
    wait_until(lambda: any(q["queue_id"] == qid for q in postfix.held()), 10, what="the hold queue")
    return qid


def sign_in(browser: Any, url: str, name: str) -> Any:
    """A fresh browser context (its own cookies) signed in as `name` through the sign-in page."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.goto(url + "/")
    assert "/login" in page.url  # anonymous: sent to sign in
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/")
    assert name in page.inner_text("header")
    return page


def shoot(page: Any, name: str) -> list[Path]:
    """Full-page screenshots at desktop and phone width; the paths are printed for the reader."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    out = []
    for width, height in ((1280, 900), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        path = SHOTS / f"{name}-{width}.png"
        page.screenshot(path=str(path), full_page=True)
        # readable at phone width: nothing wider than the screen but the message text's own box
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{name} at {width}px is {overflow}px wider than the screen"
        print(f"screenshot: {path}")
        out.append(path)
    page.set_viewport_size({"width": 1280, "height": 900})
    return out


def test_review_two_person_release_auditor_and_script(browser: Any, console_url: str, postfix: Any,
                                                      regfd_milter: Any, smtp_sink: Any) -> None:
    # two held messages: plain text, and an HTML one whose script must not run in the console
    sender, rcpt = uniq("bob", "allient.com"), uniq("analyst", "bank.com")
    subject = f"Quarter numbers {uuid.uuid4().hex[:6]}"
    qid = hold(postfix, regfd_milter, make_message(sender, rcpt, subject, MATERIAL), sender, rcpt)
    hsender, hrcpt = uniq("carol", "allient.com"), uniq("pm", "bank.com")
    hsubject = f"Update {uuid.uuid4().hex[:6]}"
    html = (f"<html><head><script>document.title='pwned';window.__pwned=1;</script></head><body>"
            f"<p>{MATERIAL}</p><img src=x onerror=\"window.__pwned=2\"></body></html>")
    hmsg = make_message(hsender, hrcpt, hsubject, html).replace(b"text/plain", b"text/html")
    hold(postfix, regfd_milter, hmsg, hsender, hrcpt)

    # the reviewer finds it with the queue's filter and reads it
    rita = sign_in(browser, console_url, "rita@allient.com")
    rita.fill("input[name=sender]", sender)
    rita.press("input[name=sender]", "Enter")
    rita.wait_for_url(re.compile(r"sender="))
    rows = rita.locator("table.queue tbody tr")
    wait_until(lambda: rows.count() == 1, 10, what="the filtered queue")
    row = rows.first.inner_text()
    assert "Big Bank" in row and "analyst" in row and "material" in row and qid in row and "needs review" in row
    rita.goto(console_url + "/")
    queue_shots = shoot(rita, "queue")
    rita.click(f"text={subject}")
    rita.wait_for_url(re.compile(r"/message/"))
    marks = rita.locator("pre.body mark")
    assert marks.count() >= 1
    assert any(w in " ".join(marks.all_inner_texts()).lower() for w in ("guidance", "quarter"))
    message_shots = shoot(rita, "message")
    rita.goto(console_url + "/dashboard")
    dashboard_shots = shoot(rita, "dashboard")
    assert "held" in rita.inner_text("#dash")
    rita.go_back()
    rita.wait_for_url(re.compile(r"/message/"))
    rita.fill("form[action$='/release'] textarea[name=reason]", "public since this morning's 8-K")
    rita.click("button[name=release]")
    rita.wait_for_load_state()
    assert "awaiting second approval" in rita.inner_text("#state")
    assert rita.locator("button[name=approve]").count() == 0  # the requester cannot approve
    message_url = rita.url.split("/release")[0]
    time.sleep(0.5)
    assert smtp_sink.to(rcpt) == []  # one person's word releases nothing

    # the approver approves; the message is delivered once
    alex = sign_in(browser, console_url, "alex@allient.com")
    alex.goto(message_url)
    alex.click("button[name=approve]")
    alex.wait_for_load_state()
    assert "released" in alex.inner_text("#state"), alex.inner_text("main")
    assert "rita@allient.com (requested) + alex@allient.com (approved)" in alex.inner_text("main")
    [got] = smtp_sink.wait_for(rcpt, 20)
    assert got.mail_from == sender and got.msg["Subject"] == subject
    time.sleep(1.0)
    assert len(smtp_sink.to(rcpt)) == 1

    # the auditor sees the HTML message's metadata, no action, and a forged POST is refused
    audrey = sign_in(browser, console_url, "audrey@allient.com")
    audrey.goto(console_url + f"/?sender={hsender}")
    audrey.click(f"text={hsubject}")
    audrey.wait_for_url(re.compile(r"/message/"))
    hurl = audrey.url
    assert audrey.locator("form[action$='/release'], form[action$='/reject'], button[name=approve]").count() == 0
    assert "material" in audrey.inner_text("main") and "miss the quarter" not in audrey.inner_text("main")
    token = audrey.locator("input[name=csrf]").first.get_attribute("value")
    for form in ({"reason": "forged", "csrf": token}, {"reason": "forged"}):
        r = audrey.request.post(hurl + "/release", form=form, max_redirects=0)
        assert r.status == 403
    assert hsubject not in " ".join(m.msg["Subject"] for m in smtp_sink.to(hrcpt))

    # the HTML message's script never runs in the reviewer's browser
    rita.goto(hurl)
    assert "shown as text, never rendered" in rita.inner_text("main")
    assert "miss the quarter" in rita.inner_text("pre.body") and "__pwned" not in rita.inner_text("pre.body")
    assert rita.evaluate("typeof window.__pwned") == "undefined"
    assert "pwned" not in rita.title()
    assert rita.locator("img").count() == 0

    for p in (*queue_shots, *message_shots, *dashboard_shots):
        assert p.stat().st_size > 5000
