"""End to end: a real Postfix on loopback with `regfd milter` as smtpd_milters.

One Postfix instance, one milter subprocess and one sink for the session
(tests/mta.py); each test uses its own addresses, so tests never interfere.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.mta import MilterProcess, make_message, queue_id_of, wait_until

pytestmark = pytest.mark.e2e

MATERIAL = "Between us, we will miss the quarter and the guidance will be lowered next week."
EMBARGO = "Attached is the draft press release, embargoed until Thursday 8:00."


@pytest.fixture(scope="module")
def world(mta_regfd: Any, postfix: Any) -> Any:
    """The directory every test here relies on (session prefix shared with the milter)."""
    for args in (("registry", "add", "bank.com", "--category", "analyst"),
                 ("registry", "add", "fund.example", "--category", "institutional-investor"),
                 ("officer", "add", "ceo@allient.com", "--role", "CEO")):
        r = mta_regfd(*args)
        assert r.rc == 0, r.err
    return postfix


def uniq(local: str, domain: str) -> str:
    """A fresh address, so tests sharing the session's Postfix and sink never see each other's mail."""
    return f"{local}.{uuid.uuid4().hex[:8]}@{domain}"


def test_accepted_message_arrives_unchanged(world, smtp_sink):  # type: ignore[no-untyped-def]
    sender, rcpt = uniq("bob", "allient.com"), uniq("friend", "example.org")
    msg = make_message(sender, rcpt, "Lunch", "Shall we have lunch on Friday?")
    code, text = world.send(sender, [rcpt], msg)
    assert code == 250, text
    got, = smtp_sink.wait_for(rcpt)
    assert got.mail_from == sender
    assert "X-RegFD-Action" not in got.msg
    assert got.msg["Subject"] == "Lunch" and "lunch on Friday" in got.msg.get_content()


def test_tagged_message_has_headers_without_matched_text(world, smtp_sink, regfd_milter):  # type: ignore[no-untyped-def]
    sender, rcpt = "ceo@allient.com", uniq("analyst", "bank.com")
    code, text = world.send(sender, [rcpt], make_message(sender, rcpt, "Update", MATERIAL))
    assert code == 250, text
    got, = smtp_sink.wait_for(rcpt)
    assert got.msg["X-RegFD-Action"] == "tag"
    reasons = got.msg["X-RegFD-Reasons"]
    assert "material" in reasons
    for word in ("miss the quarter", "between us", "lowered", "next week"):  # matched text, not categories
        assert word not in reasons.lower()
    d = next(d for d in reversed(regfd_milter.decisions()) if rcpt in d.get("specified", []))
    assert d["action"] == "tag" and d["queue_id"] == queue_id_of(text)


def test_held_message_waits_in_the_hold_queue(world, smtp_sink, regfd_milter):  # type: ignore[no-untyped-def]
    sender, rcpt = uniq("bob", "allient.com"), uniq("analyst", "bank.com")
    code, text = world.send(sender, [rcpt], make_message(sender, rcpt, "Numbers", MATERIAL))
    assert code == 250, text  # hold is invisible to the sender's client
    decision = regfd_milter.decision_for(sender)
    assert decision["action"] == "hold"
    qid = decision["queue_id"]
    assert qid and qid == queue_id_of(text)
    held = wait_until(lambda: [q for q in world.held() if q["queue_id"] == qid], 10, what="the hold queue")
    assert held[0]["sender"] == sender
    assert [r["address"] for r in held[0]["recipients"]] == [rcpt]
    assert smtp_sink.to(rcpt) == []
    assert "hold" in world.maillog.read_text() and qid in world.maillog.read_text()


def test_rejected_message_gets_550_at_the_client(world, smtp_sink):  # type: ignore[no-untyped-def]
    sender, rcpt = uniq("carol", "allient.com"), uniq("pm", "fund.example")
    code, text = world.send(sender, [rcpt], make_message(sender, rcpt, "Draft", EMBARGO))
    assert code == 550
    assert text.startswith("5.7.1") and "Corporate Secretary" in text
    assert smtp_sink.to(rcpt) == []


def test_inbound_mail_passes_untouched(world, smtp_sink, regfd_milter):  # type: ignore[no-untyped-def]
    sender, rcpt = uniq("analyst", "bank.com"), uniq("ir", "allient.com")
    msg = make_message(sender, rcpt, "Question", EMBARGO + " " + MATERIAL)
    code, text = world.send(sender, [rcpt], msg)
    assert code == 250, text
    got, = smtp_sink.wait_for(rcpt)
    assert "X-RegFD-Action" not in got.msg
    assert regfd_milter.decision_for(sender)["stage"] == "mail"


def test_local_submission_goes_through_non_smtpd_milters(world, smtp_sink, regfd_milter):  # type: ignore[no-untyped-def]
    sender, rcpt = uniq("dave", "allient.com"), uniq("analyst", "bank.com")
    r = world.sendmail(sender, [rcpt], make_message(sender, rcpt, "Heads up", MATERIAL))
    assert r.returncode == 0, r.stderr
    decision = regfd_milter.decision_for(sender, timeout=20)
    assert decision["action"] == "hold"
    wait_until(lambda: [q for q in world.held() if q["queue_id"] == decision["queue_id"]], 10,
               what="the locally submitted message in hold")
    assert smtp_sink.to(rcpt) == []


@pytest.mark.parametrize("engine", ["libmilter", "asyncio"])
def test_redis_down_tempfails_then_retry_gets_its_verdict(world: Any, smtp_sink: Any, mta_dir: Path,
                                                          tmp_path: Path, engine: str) -> None:
    """A DEDICATED redis-server and milter (on the instance's second listener) so stopping Redis
    touches no other test."""
    from tests.conftest import Regfd, start_redis, stop_redis

    server = start_redis(tmp_path / "redis")
    runner = Regfd(tmp_path, server.url, "down:", smtp_port=smtp_sink.port)
    assert runner("registry", "add", "bank.com", "--category", "analyst").rc == 0
    port = world.ports["dedicated"]
    milter = MilterProcess.start(runner.config, world.sockets["dedicated"], runner.env, tmp_path / "milter.log",
                                 engine=engine)
    try:
        sender, rcpt = uniq("erin", "allient.com"), uniq("analyst", "bank.com")
        msg = make_message(sender, rcpt, "Numbers", MATERIAL)
        stop_redis(server)
        code, text = world.send(sender, [rcpt], msg, port=port)
        assert code == 451 and text.startswith("4.7.1"), (code, text)
        assert smtp_sink.to(rcpt) == []
        assert not [q for q in world.queue() if q["sender"] == sender]  # refused, not queued: nothing lost
        server = start_redis(tmp_path / "redis")  # same socket path; the directory is gone with it
        assert runner("registry", "add", "bank.com", "--category", "analyst").rc == 0
        code, text = world.send(sender, [rcpt], msg, port=port)  # what the client's retry does
        assert code == 250, text
        decision = milter.decision_for(sender)
        assert decision["action"] == "hold"
        wait_until(lambda: [q for q in world.held() if q["queue_id"] == decision["queue_id"]], 10,
                   what="the retried message in hold")
    finally:
        milter.stop()
        stop_redis(server)


@pytest.mark.parametrize("engine", ["libmilter", "asyncio"])
def test_sigterm_lets_the_message_in_flight_finish(world: Any, smtp_sink: Any, mta_regfd: Any,
                                                   tmp_path: Path, engine: str) -> None:
    """SIGTERM arrives between RCPT and DATA: regfd stops listening but still decides that message."""
    import signal
    import smtplib

    from tests.conftest import Regfd

    runner = Regfd(tmp_path, mta_regfd.redis_url, f"drain{uuid.uuid4().hex[:6]}:", smtp_port=smtp_sink.port)
    assert runner("registry", "add", "bank.com", "--category", "analyst").rc == 0
    milter = MilterProcess.start(runner.config, world.sockets["dedicated"], runner.env, tmp_path / "milter.log",
                                 engine=engine)
    try:
        sender, rcpt = uniq("frank", "allient.com"), uniq("analyst", "bank.com")
        with smtplib.SMTP("127.0.0.1", world.ports["dedicated"], timeout=60) as smtp:
            smtp.ehlo("client.test")
            assert smtp.mail(sender)[0] == 250
            assert smtp.rcpt(rcpt)[0] == 250  # the milter has seen MAIL and RCPT: the message is in flight
            milter.proc.send_signal(signal.SIGTERM)
            wait_until(lambda: "milter.stopping" in milter.log.read_text(), 15, what="the milter to stop listening")
            assert milter.proc.poll() is None  # still running: it waits for the message in flight
            try:
                code, text = smtp.data(make_message(sender, rcpt, "Numbers", MATERIAL))
            except smtplib.SMTPDataError as exc:
                raise AssertionError(milter.log.read_text()[-3000:]) from exc
        assert code == 250, text
        assert milter.decision_for(sender)["action"] == "hold"
        assert milter.proc.wait(40) == 0
        events = {e["event"]: e for e in map(json.loads, filter(lambda line: line.startswith("{"),
                                                               milter.log.read_text().splitlines()))}
        assert events["milter.stopping"]["inflight"] == 1  # the signal came with a message in flight
        assert "milter.stop_with_inflight" not in events and "milter.stopped" in events
    finally:
        milter.stop()


@pytest.mark.parametrize("sender_local,body", [("ceo", MATERIAL), ("bob", MATERIAL), ("bob", "Lunch on Friday?"),
                                               ("dana", EMBARGO)])
def test_check_takes_the_milter_decision(world: Any, smtp_sink: Any, regfd_milter: Any, mta_regfd: Any,
                                         tmp_path: Path, sender_local: str, body: str) -> None:
    """`regfd check` on the same message and envelope gives the milter's verdict (same core, same directory)."""
    sender = "ceo@allient.com" if sender_local == "ceo" else uniq(sender_local, "allient.com")
    rcpt = uniq("analyst", "bank.com")
    msg = make_message(sender, rcpt, "Follow-up", body)
    world.send(sender, [rcpt], msg)
    decision = next(d for d in wait_until(lambda: [d for d in regfd_milter.decisions()
                                                   if rcpt in d.get("specified", [])], 10, what="the decision"))
    eml = tmp_path / "m.eml"
    eml.write_bytes(msg)
    r = mta_regfd("check", eml, "--from", sender, "--to", rcpt, "--json")
    assert r.rc == 0, r.err
    verdict = json.loads(r.out)
    assert verdict["action"] == decision["action"]
    assert verdict["reasons"] == decision["reasons"]
    assert verdict["rule"] is not None and verdict["rule"]["number"] == decision["rule"]
    assert f"policy rule {decision['rule']}" in " ".join(decision["reasons"])  # the row that decided, with its why
    assert sorted({f"{f['kind']}:{f['category']}" for f in verdict["findings"]}) == decision["findings"]
