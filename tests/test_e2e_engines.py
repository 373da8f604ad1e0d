"""Both milter engines through the same real Postfix and the same end-to-end cases.

`libmilter` is `regfd milter --engine libmilter` on the instance's
`libmilter` listener (unix socket); `asyncio-unix` and `asyncio-inet` are
`regfd milter --engine asyncio` on its `asyncio` and `asyncio-inet`
listeners (tests/mta.py), on the same directory and key prefix as the
session's `regfd_milter` (the default engine, asyncio, on the main smtpd). Redis down and the graceful stop run the
asyncio engine on the `dedicated` listener with its own Redis, as
test_e2e_postfix.py does for libmilter.
"""

from __future__ import annotations

import smtplib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.mta import ASYNCIO_INET_PORT, MilterProcess, make_message, queue_id_of, wait_until

pytestmark = pytest.mark.e2e

MATERIAL = "Between us, we will miss the quarter and the guidance will be lowered next week."
EMBARGO = "Attached is the draft press release, embargoed until Thursday 8:00."


@dataclass
class Via:
    """Where a test sends: the Postfix listener whose milter is `milter`."""

    name: str
    port: int
    milter: MilterProcess


@pytest.fixture(scope="module")
def world(mta_regfd: Any, postfix: Any) -> Any:
    """The directory every test here relies on (session prefix shared with the milters)."""
    for args in (("registry", "add", "bank.com", "--category", "analyst"),
                 ("registry", "add", "fund.example", "--category", "institutional-investor"),
                 ("officer", "add", "ceo@allient.com", "--role", "CEO")):
        r = mta_regfd(*args)
        assert r.rc == 0, r.err
    return postfix


@pytest.fixture(scope="module", params=["libmilter", "asyncio-unix", "asyncio-inet"])
def via(request: Any, world: Any, mta_regfd: Any, mta_dir: Path) -> Iterator[Via]:
    """Each engine in turn, behind its own smtpd listener of the session's Postfix."""
    listener = {"libmilter": "libmilter", "asyncio-unix": "asyncio", "asyncio-inet": "asyncio-inet"}[request.param]
    sock: Path | str = world.sockets[listener] if listener != "asyncio-inet" else f"inet:{ASYNCIO_INET_PORT}@127.0.0.1"
    m = MilterProcess.start(mta_regfd.config, sock, mta_regfd.env, mta_dir / f"{listener}-milter.log",
                            engine="libmilter" if listener == "libmilter" else "asyncio")
    try:
        yield Via(request.param, world.ports[listener], m)
    finally:
        assert m.stop() == 0


def uniq(local: str, domain: str) -> str:
    """A fresh address, so tests sharing the session's Postfix and sink never see each other's mail."""
    return f"{local}.{uuid.uuid4().hex[:8]}@{domain}"


def test_accepted_message_arrives_unchanged(world: Any, smtp_sink: Any, via: Via) -> None:
    sender, rcpt = uniq("bob", "allient.com"), uniq("friend", "example.org")
    code, text = world.send(sender, [rcpt], make_message(sender, rcpt, "Lunch", "Shall we have lunch on Friday?"),
                            port=via.port)
    assert code == 250, text
    got, = smtp_sink.wait_for(rcpt)
    assert got.mail_from == sender and "X-RegFD-Action" not in got.msg
    assert got.msg["Subject"] == "Lunch" and "lunch on Friday" in got.msg.get_content()
    assert via.milter.decision_for(sender)["stage"] == "data"


def test_tagged_message_has_headers_without_matched_text(world: Any, smtp_sink: Any, via: Via) -> None:
    sender, rcpt = "ceo@allient.com", uniq("analyst", "bank.com")
    code, text = world.send(sender, [rcpt], make_message(sender, rcpt, "Update", MATERIAL), port=via.port)
    assert code == 250, text
    got, = smtp_sink.wait_for(rcpt)
    assert got.msg["X-RegFD-Action"] == "tag"
    reasons = got.msg["X-RegFD-Reasons"]
    assert "material" in reasons
    for word in ("miss the quarter", "between us", "lowered", "next week"):
        assert word not in reasons.lower()
    d = wait_until(lambda: [d for d in via.milter.decisions() if rcpt in d.get("specified", [])], 10,
                   what="the decision")[-1]
    assert d["action"] == "tag" and d["queue_id"] == queue_id_of(text)


def test_held_message_waits_in_the_hold_queue(world: Any, smtp_sink: Any, via: Via) -> None:
    sender, rcpt = uniq("bob", "allient.com"), uniq("analyst", "bank.com")
    code, text = world.send(sender, [rcpt], make_message(sender, rcpt, "Numbers", MATERIAL), port=via.port)
    assert code == 250, text
    decision = via.milter.decision_for(sender)
    assert decision["action"] == "hold"
    qid = decision["queue_id"]
    assert qid and qid == queue_id_of(text)
    held = wait_until(lambda: [q for q in world.held() if q["queue_id"] == qid], 10, what="the hold queue")
    assert held[0]["sender"] == sender
    assert [r["address"] for r in held[0]["recipients"]] == [rcpt]
    assert smtp_sink.to(rcpt) == []


def test_a_big_message_is_scanned_in_a_child_and_held(world: Any, smtp_sink: Any, via: Via) -> None:
    # 1.2 MB: over [limits] isolate_over (1 MB), so the engine's decision thread forks the scan (scan/isolation.py)
    sender, rcpt = uniq("bob", "allient.com"), uniq("analyst", "bank.com")
    filler = "The parking garage closes early on Friday for maintenance.\n" * 20_000
    code, text = world.send(sender, [rcpt], make_message(sender, rcpt, "Notes", MATERIAL + "\n\n" + filler),
                            port=via.port)
    assert code == 250, text
    decision = via.milter.decision_for(sender)
    assert decision["action"] == "hold"
    assert any(f.startswith("material") for f in decision["findings"]), decision["findings"]
    qid = decision["queue_id"]
    wait_until(lambda: [q for q in world.held() if q["queue_id"] == qid], 10, what="the hold queue")
    assert smtp_sink.to(rcpt) == []


def test_rejected_message_gets_550_at_the_client(world: Any, smtp_sink: Any, via: Via) -> None:
    sender, rcpt = uniq("carol", "allient.com"), uniq("pm", "fund.example")
    code, text = world.send(sender, [rcpt], make_message(sender, rcpt, "Draft", EMBARGO), port=via.port)
    assert code == 550
    assert text.startswith("5.7.1") and "Corporate Secretary" in text
    assert smtp_sink.to(rcpt) == []
    assert via.milter.decision_for(sender)["action"] == "reject"


def test_inbound_mail_passes_untouched(world: Any, smtp_sink: Any, via: Via) -> None:
    sender, rcpt = uniq("analyst", "bank.com"), uniq("ir", "allient.com")
    code, text = world.send(sender, [rcpt], make_message(sender, rcpt, "Question", EMBARGO + " " + MATERIAL),
                            port=via.port)
    assert code == 250, text
    got, = smtp_sink.wait_for(rcpt)
    assert "X-RegFD-Action" not in got.msg
    assert via.milter.decision_for(sender)["stage"] == "mail"


def test_several_messages_on_one_smtp_session(world: Any, smtp_sink: Any, via: Via) -> None:
    """One milter connection, three messages (RSET between): each gets its own verdict."""
    sender = uniq("gail", "allient.com")
    rcpts = [uniq("friend", "example.org"), uniq("analyst", "bank.com"), uniq("pm", "fund.example")]
    with smtplib.SMTP("127.0.0.1", via.port, timeout=30) as s:
        s.ehlo("client.regfd.test")
        assert s.sendmail(sender, [rcpts[0]], make_message(sender, rcpts[0], "Lunch", "Lunch?")) == {}
        assert s.sendmail(sender, [rcpts[1]], make_message(sender, rcpts[1], "Numbers", MATERIAL)) == {}
        with pytest.raises(smtplib.SMTPDataError) as exc:
            s.sendmail(sender, [rcpts[2]], make_message(sender, rcpts[2], "Draft", EMBARGO))
        assert exc.value.smtp_code == 550
    smtp_sink.wait_for(rcpts[0])
    actions = wait_until(lambda: [d["action"] for d in via.milter.decisions() if d.get("sender") == sender][-3:]
                         if len([d for d in via.milter.decisions() if d.get("sender") == sender]) >= 3 else None,
                         10, what="three decisions")
    assert actions == ["accept", "hold", "reject"]


# Redis down and SIGTERM with a message in flight: tests/test_e2e_postfix.py runs both for each engine.
