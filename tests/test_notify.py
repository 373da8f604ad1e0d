"""Notifications: content (plain + HTML), and the durable outbox against a real aiosmtpd sink on 127.0.0.1."""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from regfd.compliance import outbox as outbox_module
from regfd.compliance.executor import Workflow
from regfd.compliance.outbox import Outbox, SmtpTransport, backoff
from regfd.compliance.render import highlight_html, highlight_text
from regfd.config import Config, load_config
from regfd.store.redis_store import RedisStore
from tests.builders import MATERIAL, T0, FixedClock, facts_for, make_verdict
from tests.conftest import free_port


def body_of(msg: email.message.EmailMessage, subtype: str) -> str:
    """The text of the message's plain or HTML alternative (the notifications always have the plain one)."""
    part = msg.get_body((subtype,))
    assert part is not None, f"no text/{subtype} part"
    return str(part.get_content())


class Sink:
    """An aiosmtpd server recording each message with its envelope."""

    def __init__(self, port: int) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[tuple[str, list[str], bytes]] = []
        self.lock = threading.Lock()
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                with sink.lock:
                    sink.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=port)
        self.controller.start()

    def parsed(self) -> list[email.message.EmailMessage]:
        """The received messages, parsed with the modern email policy."""
        return [email.message_from_bytes(m[2], policy=email.policy.default) for m in self.messages]

    def stop(self) -> None:
        """Stop the aiosmtpd controller thread."""
        self.controller.stop()


@pytest.fixture
def port() -> int:
    """A free port for this test's own SMTP sink."""
    return free_port()


@pytest.fixture
def sink(port: int) -> Iterator[Sink]:
    """An SMTP sink for this test only, so notifications from other tests never reach it."""
    s = Sink(port)
    yield s
    s.stop()


@pytest.fixture
def config(regfd: Any, port: int) -> Config:
    """The test config, relaying to this test's sink with short retry times."""
    regfd.write_config(smtp_port=port, extra="[notify]\nretry_initial = 5.0\nretry_max = 60.0\n")
    return load_config(regfd.config)


def test_highlighting() -> None:
    assert highlight_text("we expect Record Revenue now", "record revenue") == "we expect »Record Revenue« now"
    assert highlight_html("a <b> & record revenue", "record revenue") == "a &lt;b&gt; &amp; <mark>record revenue</mark>"
    assert "matched: »x y«" in highlight_text("nothing here", "x y")


def test_backoff_doubles_up_to_max() -> None:
    assert [backoff(n, 5, 60) for n in (1, 2, 3, 4, 5, 6)] == [5, 10, 20, 40, 60, 60]


def test_hold_notification_content_at_the_sink(store: RedisStore, config: Config, sink: Sink) -> None:
    clock = FixedClock(T0)
    wf = Workflow(store, config, clock)
    v = make_verdict(config, findings=(MATERIAL,))
    wf.on_decision(v, facts_for(v))
    wf.follow_up()
    [entry] = wf.quarantine.list()
    report = Outbox(store, config, clock=clock).deliver_due()
    assert len(report.sent) == 2 and not report.failed
    by_rcpt = {tuple(m[1]): m for m in sink.messages}
    mail_from, _rcpts, _raw = by_rcpt[("corpsec@allient.com",)]
    assert mail_from == "regfd@allient.com"  # the `system` sender: never scanned by the milter
    msg = [m for m in sink.parsed() if m["To"] == "corpsec@allient.com"][0]
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["From"] == "regfd@allient.com" and msg["Auto-Submitted"] == "auto-generated"
    assert msg["Subject"].startswith(f"[RegFD] HOLD {entry.id}: alice@allient.com to bob@bank.com (material)")
    text = body_of(msg, "plain")
    html = body_of(msg, "html")
    assert "HELD for your review" in text
    assert "alice@allient.com (employee)" in text
    assert "bob@bank.com (analyst, Big Bank)" in text
    assert "material (earnings) in body" in text
    assert "we now expect »record revenue« for the quarter" in text
    assert f'regfd quarantine release {entry.id} --by YOU@company --reason "' in text
    assert f'regfd quarantine reject {entry.id} --by YOU@company --reason "' in text
    assert "<mark>record revenue</mark>" in html and f"regfd quarantine release {entry.id}" in html
    sender_msg = [m for m in sink.parsed() if m["To"] == "alice@allient.com"][0]
    assert "held for review" in sender_msg.get_content() and "record revenue" not in sender_msg.get_content()


def test_tag_notification_names_the_deadline(store: RedisStore, config: Config, sink: Sink) -> None:
    clock = FixedClock(T0)
    v = make_verdict(config, officer=True, findings=(MATERIAL,))
    wf = Workflow(store, config, clock)
    wf.on_decision(v, facts_for(v))
    wf.follow_up()
    Outbox(store, config, clock=clock).deliver_due()
    [msg] = sink.parsed()
    text = body_of(msg, "plain")
    [d] = wf.disclosures.list()
    assert "DELIVERED and tagged" in text
    assert f"PUBLIC DISCLOSURE DUE BY: Wed 2026-11-18 10:00 EST (follow-up {d.id})" in text
    assert f'regfd disclosures close {d.id} --by YOU@company --reference "' in text


def test_relay_down_then_up_delivers_each_once(store: RedisStore, config: Config, port: int) -> None:
    clock = FixedClock(T0)
    wf = Workflow(store, config, clock)
    for i in range(3):
        v = make_verdict(config, findings=(MATERIAL,), queue_id=f"4ABCDEF12{i}")
        wf.on_decision(v, facts_for(v))
        wf.follow_up()
    outbox = Outbox(store, config, clock=clock)
    report = outbox.deliver_due()  # nothing listens on `port`
    assert len(report.failed) == 6 and not report.sent
    pending = outbox.pending()
    assert len(pending) == 6 and all(n.attempts == 1 and n.last_error for n in pending)
    assert all(n.next_at == (T0 + timedelta(seconds=5)).isoformat() for n in pending)
    assert outbox.deliver_due().failed == []  # not due yet: nothing attempted
    clock.advance(seconds=5)
    assert len(outbox.deliver_due().failed) == 6  # second attempt, still down
    assert {n.next_at for n in outbox.pending()} == {(clock.t + timedelta(seconds=10)).isoformat()}
    sink = Sink(port)
    try:
        clock.advance(seconds=10)
        report = outbox.deliver_due()
        assert len(report.sent) == 6 and not report.failed
        assert outbox.deliver_due().sent == []
        assert len(sink.messages) == 6
        assert len({m["Message-ID"] for m in sink.parsed()}) == 6
        assert outbox.pending() == []
    finally:
        sink.stop()


def test_concurrent_workers_send_each_notification_once(store: RedisStore, config: Config, sink: Sink) -> None:
    clock = FixedClock(T0)
    wf = Workflow(store, config, clock)
    for i in range(20):
        v = make_verdict(config, officer=True, findings=(MATERIAL,), queue_id=f"4ABCDE{i:04d}")
        wf.on_decision(v, facts_for(v))
        wf.follow_up()
    workers = [Outbox(store, config, SmtpTransport("127.0.0.1", sink.controller.port), clock) for _ in range(4)]
    reports: list[Any] = []
    threads = [threading.Thread(target=lambda w=w: reports.append(w.deliver_due())) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(len(r.sent) for r in reports) == 20
    assert len(sink.messages) == 20
    assert len({m["Message-ID"] for m in sink.parsed()}) == 20


def test_expired_lease_is_delivered_again(store: RedisStore, config: Config, sink: Sink) -> None:
    clock = FixedClock(T0)
    v = make_verdict(config, officer=True, findings=(MATERIAL,))
    wf = Workflow(store, config, clock)
    wf.on_decision(v, facts_for(v))
    wf.follow_up()
    outbox = Outbox(store, config, clock=clock)
    [claimed] = outbox.claim(clock.t)  # a worker took it and died
    assert outbox.deliver_due().sent == []  # leased: nobody else sends it
    clock.advance(minutes=11)
    assert outbox.deliver_due().sent == [claimed.id]
    assert len(sink.messages) == 1


def test_a_dead_claimants_notifications_are_resent_within_a_minute(store: RedisStore, config: Config,
                                                                   sink: Sink) -> None:
    """A worker that claims and dies (claims, never sends) holds only a few, and only for a short lease."""
    clock = FixedClock(T0)
    wf = Workflow(store, config, clock)
    for i in range(12):
        v = make_verdict(config, officer=True, findings=(MATERIAL,), queue_id=f"4DEAD{i:05d}")
        wf.on_decision(v, facts_for(v))
        wf.follow_up()
    dead = Outbox(store, config, clock=clock)
    held = {n.id for n in dead.claim(clock.t)}  # its process is SIGKILLed now
    assert 0 < len(held) <= 5, f"one worker claimed {len(held)} at once"
    alive = Outbox(store, config, SmtpTransport("127.0.0.1", sink.controller.port), clock)
    first = alive.deliver_due()
    assert len(first.sent) == 12 - len(held) and not held & set(first.sent)  # the rest went at once
    clock.advance(seconds=20)
    assert alive.deliver_due().sent == []  # the dead worker's lease still stands
    clock.advance(seconds=40)  # a minute after the crash
    assert set(alive.deliver_due().sent) == held
    assert len(sink.messages) == 12 and len({m["Message-ID"] for m in sink.parsed()}) == 12
    assert alive.pending() == []


class SlowTransport:
    """Records each send after `delay` seconds (a relay slower than the lease); never refuses."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.sent: list[str] = []
        self.sending = threading.Event()

    def send(self, message: email.message.EmailMessage, sender: str, recipients: tuple[str, ...]) -> dict[str, Any]:
        self.sending.set()
        time.sleep(self.delay)
        self.sent.append(str(message["Message-ID"]))
        return {}


def test_a_slow_live_sender_keeps_its_lease_and_nothing_is_sent_twice(store: RedisStore, config: Config,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Each send takes longer than the lease, the second waits longer than it too: renewed, never taken over."""
    monkeypatch.setattr(outbox_module, "LEASE_SECONDS", 1.0)
    wf = Workflow(store, config)
    for i in range(2):
        v = make_verdict(config, officer=True, findings=(MATERIAL,), queue_id=f"4SLOW{i:05d}")
        wf.on_decision(v, facts_for(v))
        wf.follow_up()
    slow, eager = SlowTransport(1.5), SlowTransport(0.0)
    reports: list[Any] = []
    worker = threading.Thread(target=lambda: reports.append(Outbox(store, config, slow).deliver_due()))
    worker.start()
    assert slow.sending.wait(10)  # it has claimed both and is sending the first
    other = Outbox(store, config, eager)
    polls = 0
    while worker.is_alive():  # another worker polls all along, as run_forever would
        other.deliver_due()
        polls += 1
        time.sleep(0.05)
    worker.join()
    assert polls > 20
    assert eager.sent == [], "a live worker's notification was taken over and sent a second time"
    assert len(slow.sent) == len(set(slow.sent)) == 2 and len(reports[0].sent) == 2
    assert other.pending() == []


def test_outbox_cli(store: RedisStore, config: Config, regfd: Any, port: int) -> None:
    v = make_verdict(config, officer=True, findings=(MATERIAL,))
    wf = Workflow(store, config, FixedClock(T0))
    wf.on_decision(v, facts_for(v))
    wf.follow_up()
    r = regfd("outbox", "--json")
    [row] = json.loads(r.out)
    assert row["kind"] == "decision" and row["attempts"] == 0
    r = regfd("outbox", "flush")  # relay down
    assert r.rc == 1 and "sent 0, failed 1" in r.out
    assert json.loads(regfd("outbox", "--json").out)[0]["attempts"] == 1
    sink = Sink(port)
    try:
        r = regfd("outbox", "flush")  # flush ignores the backoff schedule
        assert r.rc == 0 and "sent 1, failed 0" in r.out
        assert len(sink.messages) == 1
        assert regfd("outbox").out.strip() == "outbox is empty"
        assert "decision" in regfd("outbox", "--sent").out
    finally:
        sink.stop()


def test_run_forever_worker_thread(store: RedisStore, config: Config, sink: Sink) -> None:
    v = make_verdict(config, officer=True, findings=(MATERIAL,))
    wf = Workflow(store, config)
    wf.on_decision(v, facts_for(v))
    wf.follow_up()
    stop = threading.Event()
    calls: list[Any] = []
    t = threading.Thread(target=Outbox(store, config).run_forever, args=(stop, 0.05, [calls.append]))
    t.start()
    try:
        for _ in range(100):
            if sink.messages:
                break
            stop.wait(0.05)
    finally:
        stop.set()
        t.join(10)
    assert len(sink.messages) == 1 and calls
