"""Workflow.on_decision: one transaction that records, quarantines and leaves a follow-up;
follow_up notifies and starts the disclosure clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from regfd.compliance.agent import act_via_agent
from regfd.compliance.disclosures import disclosure_deadline
from regfd.compliance.executor import Reminders, Workflow
from regfd.config import Config, load_config
from regfd.errors import StoreUnavailable
from regfd.store.client import client_from_url
from regfd.store.redis_store import RedisStore
from tests.builders import EMBARGO, MATERIAL, T0, FixedClock, facts_for, make_verdict, outbox_items


@pytest.fixture
def config(regfd: Any) -> Config:
    """The test config, loaded as the CLI would load it."""
    return load_config(regfd.config)


def test_unrecorded_verdict_writes_nothing(store: RedisStore, config: Config) -> None:
    v = make_verdict(config, to=("carol@example.org",))
    assert not v.recorded
    wf = Workflow(store, config)
    wf.on_decision(v, facts_for(v))
    wf.follow_up()
    assert store.r.keys(store.k("*")) == []


def test_accept_is_recorded_without_notification(store: RedisStore, config: Config) -> None:
    v = make_verdict(config, officer=True)
    assert v.action == "accept"
    wf = Workflow(store, config, FixedClock(T0))
    wf.on_decision(v, facts_for(v))
    wf.follow_up()
    assert store.r.xlen(store.k("records")) == 1
    assert outbox_items(store) == []


def test_tag_is_recorded_in_one_round_trip_and_followed_up_once(store: RedisStore, config: Config) -> None:
    v = make_verdict(config, officer=True, findings=(MATERIAL,))
    assert v.action == "tag"
    wf = Workflow(store, config, FixedClock(T0))
    executes = []
    real = store.r.pipeline

    def counting_pipeline(*a: Any, **kw: Any) -> Any:
        p = real(*a, **kw)
        orig = p.execute
        def counted(*x: Any, **y: Any) -> Any:
            executes.append(1)
            return orig(*x, **y)

        p.execute = counted  # type: ignore[method-assign]
        return p

    store.r.pipeline = counting_pipeline  # type: ignore[method-assign]
    try:
        wf.on_decision(v, facts_for(v))
    finally:
        store.r.pipeline = real  # type: ignore[method-assign]
    assert len(executes) == 1, "on_decision must be one MULTI/EXEC round trip"
    assert wf.disclosures.list() == [] and outbox_items(store) == []  # the follow-up does those, off the hot path
    assert wf.follow_up() == 1 and wf.follow_up() == 0  # once
    ds = wf.disclosures.list()
    assert len(ds) == 1 and ds[0].state == "open"
    assert ds[0].deadline == disclosure_deadline(T0) == T0 + timedelta(hours=24)
    [n] = outbox_items(store)
    assert n["kind"] == "decision" and n["to"] == ["corpsec@allient.com"]
    assert ds[0].id in n["text"] and "PUBLIC DISCLOSURE DUE BY" in n["text"]
    rec = wf.records.list()[0]
    assert rec.disclosure_id == ds[0].id and rec.action == "tag"


def test_hold_registers_quarantine_and_notifies_both(store: RedisStore, config: Config) -> None:
    v = make_verdict(config, findings=(MATERIAL,))
    assert v.action == "hold"
    wf = Workflow(store, config, FixedClock(T0))
    wf.on_decision(v, facts_for(v))
    wf.follow_up()
    [entry] = wf.quarantine.list()
    assert entry.state == "held" and entry.queue_id == "4ABCDEF123" and entry.mta_host == "mta1.test"
    assert wf.quarantine.raw(entry.id).startswith(b"From: alice@allient.com")
    assert wf.quarantine.get("4ABCDEF123").id == entry.id  # by MTA queue id too
    kinds = sorted((n["kind"], tuple(n["to"])) for n in outbox_items(store))
    assert kinds == [("decision", ("corpsec@allient.com",)), ("held-sender", ("alice@allient.com",))]
    assert wf.disclosures.list() == []  # not delivered: no clock yet
    assert wf.records.list()[0].quarantine_id == entry.id


def test_hold_without_sender_notice(store: RedisStore, regfd: Any) -> None:
    regfd.write_config(extra="[notify]\nnotify_sender_on_hold = false\n")
    config = load_config(regfd.config)
    v = make_verdict(config, findings=(MATERIAL,))
    wf = Workflow(store, config, FixedClock(T0))
    wf.on_decision(v, facts_for(v))
    wf.follow_up()
    assert [n["kind"] for n in outbox_items(store)] == ["decision"]


def test_reject_records_and_notifies_without_quarantine(store: RedisStore, config: Config) -> None:
    v = make_verdict(config, findings=(EMBARGO,))
    assert v.action == "reject"
    wf = Workflow(store, config, FixedClock(T0))
    wf.on_decision(v, facts_for(v))
    wf.follow_up()
    assert wf.quarantine.list() == []
    [n] = outbox_items(store)
    assert n["subject"].startswith("[RegFD] REJECT")
    assert wf.records.list()[0].findings[0].location == "attachment:pr.docx"


def test_redis_down_raises_store_unavailable(config: Config, tmp_path: Path) -> None:
    dead = RedisStore(client_from_url(f"unix://{tmp_path}/nothing.sock", timeout=0.5), "x:")
    v = make_verdict(config, findings=(MATERIAL,))
    with pytest.raises(StoreUnavailable):
        Workflow(dead, config).on_decision(v, facts_for(v))


def test_disclosure_reminder_then_overdue_once_each(store: RedisStore, config: Config) -> None:
    clock = FixedClock(T0)
    wf = Workflow(store, config, clock)
    v = make_verdict(config, officer=True, findings=(MATERIAL,))
    wf.on_decision(v, facts_for(v))
    wf.follow_up()
    store.r.delete(store.k("outbox:msg"), store.k("outbox:due"))
    rem = Reminders(store, config, clock)
    deadline = T0 + timedelta(hours=24)
    assert rem.run_due(deadline - timedelta(hours=5)) == 0  # reminder is 4 h before
    assert rem.run_due(deadline - timedelta(hours=3)) == 1
    assert rem.run_due(deadline - timedelta(hours=2)) == 0  # once
    assert rem.run_due(deadline + timedelta(minutes=1)) == 1  # overdue notice
    assert rem.run_due(deadline + timedelta(hours=30)) == 0
    kinds = sorted(n["kind"] for n in outbox_items(store))
    assert kinds == ["disclosure-overdue", "disclosure-reminder"]


def test_closed_disclosure_gets_no_reminder(store: RedisStore, config: Config) -> None:
    clock = FixedClock(T0)
    wf = Workflow(store, config, clock)
    v = make_verdict(config, officer=True, findings=(MATERIAL,))
    wf.on_decision(v, facts_for(v))
    wf.follow_up()
    [d] = wf.disclosures.list()
    clock.advance(hours=2)
    wf.disclosures.close(d.id, "corpsec@allient.com", "8-K filed")
    assert Reminders(store, config, clock).run_due(T0 + timedelta(days=3)) == 0


def test_start_background_runs_outbox_and_agent(store: RedisStore, config: Config) -> None:
    """What `regfd milter` starts: the outbox worker (with reminders) and the quarantine agent."""
    import threading

    from regfd.compliance.executor import start_background
    from regfd.ports import MtaResult

    sent: list[Any] = []

    class Transport:
        def send(self, message: Any, sender: str, recipients: tuple[str, ...]) -> dict[str, Any]:
            sent.append((sender, recipients, message["Subject"]))
            return {}

    class Mta:
        def release(self, queue_id: str) -> MtaResult:
            return MtaResult(True, "released")

        def delete(self, queue_id: str) -> MtaResult:
            return MtaResult(True, "deleted")

        def can_act(self) -> str:
            return ""

    v = make_verdict(config, findings=(MATERIAL,))
    wf = Workflow(store, config)
    # received now (not at T0): a message held since T0 would also, rightly, get a hold reminder
    wf.on_decision(v, facts_for(v, at=datetime.now(UTC), host="mta1.test"))
    wf.follow_up()
    stop = threading.Event()
    threads = start_background(store, config, stop, mta_host="MTA1.test", mta=Mta(), transport=Transport(),
                               interval=0.05)
    try:
        for _ in range(200):
            if len(sent) >= 2 and store.r.exists(store.k("agent:alive:mta1.test")):
                break
            stop.wait(0.02)
        assert sorted(r for _s, r, _subj in sent) == [("alice@allient.com",), ("corpsec@allient.com",)]
        qid = wf.quarantine.list()[0].id
        out = act_via_agent(wf.quarantine, qid, "release", "corpsec@allient.com", "ok", timeout=5)
        assert out.ok and out.state == "released"
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not any(t.is_alive() for t in threads)
