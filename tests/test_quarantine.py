"""Quarantine state machine, agent request/answer through Redis, and the Postfix adapter's parsing.

The MTA side is a fake (`FakeMta`, satisfying the `MtaQueue` Protocol): these
tests are about the state machine, the audit trail and the agent protocol,
which must not need root and a running Postfix. The real postsuper/postqueue
path is covered end to end in tests/test_e2e_compliance.py, and the adapter's
command lines and output parsing below with stand-in binaries.
"""

from __future__ import annotations

import json
import stat
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from regfd.compliance.agent import QuarantineAgent
from regfd.compliance.disclosures import disclosure_deadline
from regfd.compliance.executor import Reminders, Workflow
from regfd.compliance.quarantine import Quarantine
from regfd.config import Config, load_config
from regfd.mta.postfix import PostfixQueue
from regfd.ports import MtaResult
from regfd.store.redis_store import RedisStore
from tests.builders import MATERIAL, T0, FixedClock, facts_for, make_verdict, outbox_items

HOST = "mta1.test"


class FakeMta:
    """Records what the quarantine asked the MTA to do; answers as told."""

    def __init__(self, ok: bool = True) -> None:
        self.ok = ok
        self.calls: list[tuple[str, str]] = []

    def release(self, queue_id: str) -> MtaResult:
        """Record the call; succeeds unless `ok` is False."""
        self.calls.append(("release", queue_id))
        return MtaResult(self.ok, f"released {queue_id}" if self.ok else "postsuper released nothing")

    def delete(self, queue_id: str) -> MtaResult:
        """Record the call; succeeds unless `ok` is False."""
        self.calls.append(("delete", queue_id))
        return MtaResult(self.ok, f"deleted {queue_id}" if self.ok else "postsuper deleted nothing")

    def can_act(self) -> str:
        """Always allowed: nothing is run."""
        return ""


class QuietLog:
    """A logger that drops everything, so the agent thread's log lines stay out of captured CLI output."""

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **kw: None


@pytest.fixture
def config(regfd: Any) -> Config:
    """The test config, loaded as the CLI would load it."""
    return load_config(regfd.config)


@pytest.fixture
def clock() -> FixedClock:
    """A clock the test moves by hand, starting at T0."""
    return FixedClock(T0)


@pytest.fixture
def held(store: RedisStore, config: Config, clock: FixedClock) -> str:
    """A message held by the workflow for HOST (material finding), with its notifications cleared; its quarantine id."""
    v = make_verdict(config, findings=(MATERIAL,))
    wf = Workflow(store, config, clock)
    wf.on_decision(v, facts_for(v, host=HOST))
    store.r.delete(store.k("outbox:msg"), store.k("outbox:due"))  # keep only what the tests cause
    return wf.quarantine.list()[0].id


@pytest.fixture
def agent(store: RedisStore, config: Config) -> Iterator[FakeMta]:
    """A quarantine agent thread for HOST over a FakeMta, alive before the test starts; yields the FakeMta."""
    mta = FakeMta()
    stop = threading.Event()
    a = QuarantineAgent(store, config, mta, HOST.upper())  # host names compare case-insensitively
    # its log lines must not land in the in-process CLI runner's captured stdout
    t = threading.Thread(target=a.run_forever, args=(stop, QuietLog()), daemon=True)
    t.start()
    for _ in range(100):
        if store.r.exists(store.k(f"agent:alive:{HOST}")):
            break
        stop.wait(0.02)
    yield mta
    stop.set()
    t.join(10)


def test_list_and_show(regfd: Any, held: str) -> None:
    r = regfd("quarantine", "list", "--json")
    assert r.rc == 0, r.err
    [row] = json.loads(r.out)
    assert row["id"] == held and row["state"] == "held" and row["queue_id"] == "4ABCDEF123"
    assert row["findings"] == "material:earnings" and row["recipients"] == "bob@bank.com"
    assert held in regfd("quarantine", "list").out
    r = regfd("quarantine", "show", held)
    assert r.rc == 0, r.err
    assert f"Quarantine {held}: HELD" in r.out
    assert "Subject: Q4 update" in r.out and "From: alice@allient.com" in r.out
    assert "we now expect »record revenue« for the quarter" in r.out
    assert "bob@bank.com (analyst, Big Bank)" in r.out
    assert regfd("quarantine", "show", "4ABCDEF123").rc == 0  # the MTA queue id works too
    r = regfd("quarantine", "show", "nope")
    assert r.rc == 1 and r.err.count("\n") == 1 and "no quarantined message" in r.err


def test_release_once_with_audit_and_disclosure(store: RedisStore, config: Config, clock: FixedClock,
                                                held: str, regfd: Any) -> None:
    q = Quarantine(store, config, clock)
    mta = FakeMta()
    clock.advance(hours=2)
    out = q.act_local(held, "release", "corpsec@allient.com", "reviewed: already public", mta)
    assert out.ok and out.state == "released" and mta.calls == [("release", "4ABCDEF123")]
    entry = q.get(held)
    assert entry.state == "released" and entry.decided_by == "corpsec@allient.com"
    assert entry.reason == "reviewed: already public" and entry.decided_at == clock.t
    # material content reached a Specified Person at release time: the clock starts then
    [d] = q.disclosures.list(open_only=True)
    assert d.source == "released" and d.quarantine_id == held and entry.disclosure_id == d.id
    assert d.deadline == disclosure_deadline(clock.t) and out.disclosure_id == d.id
    # a second release is refused, naming who did it and why; the MTA is not asked again
    with pytest.raises(Exception) as exc:
        q.act_local(held, "release", "other@allient.com", "again", mta)
    assert "already released by corpsec@allient.com" in str(exc.value) and len(mta.calls) == 1
    r = regfd("quarantine", "release", held, "--by", "x@allient.com", "--reason", "again", "--local")
    assert r.rc == 1 and "already released" in r.err and r.err.count("\n") == 1
    assert regfd("quarantine", "list").out.strip() == "no held messages"
    assert json.loads(regfd("quarantine", "list", "--all", "--json").out)[0]["state"] == "released"
    audit = json.loads(regfd("audit", "--json").out)
    [ev] = [e for e in audit if e["action"] == "quarantine.release"]
    assert ev["who"] == "corpsec@allient.com" and ev["target"] == held
    assert ev["detail"]["reason"] == "reviewed: already public" and ev["detail"]["queue_id"] == "4ABCDEF123"
    assert ev["detail"]["disclosure_id"] == d.id
    kinds = [n["kind"] for n in outbox_items(store)]
    assert kinds == ["released"]
    assert "PUBLIC DISCLOSURE DUE BY" in outbox_items(store)[0]["text"]


def test_reject_notifies_sender(store: RedisStore, config: Config, clock: FixedClock, held: str, regfd: Any) -> None:
    q = Quarantine(store, config, clock)
    mta = FakeMta()
    out = q.act_local(held, "reject", "corpsec@allient.com", "guidance not yet public", mta)
    assert out.ok and out.state == "rejected" and mta.calls == [("delete", "4ABCDEF123")]
    notes = {n["kind"]: n for n in outbox_items(store)}
    assert set(notes) == {"rejected", "rejected-sender"}
    to_sender = notes["rejected-sender"]
    assert to_sender["to"] == ["alice@allient.com"]
    assert "NOT delivered" in to_sender["text"] and "guidance not yet public" in to_sender["text"]
    assert q.disclosures.list() == []  # nothing reached anyone
    with pytest.raises(Exception, match="already rejected"):
        q.act_local(held, "release", "corpsec@allient.com", "changed my mind", mta)
    audit = json.loads(regfd("audit", "--json").out)
    assert [e["action"] for e in audit] == ["quarantine.reject"]


def test_mta_failure_returns_to_held(store: RedisStore, config: Config, clock: FixedClock, held: str) -> None:
    q = Quarantine(store, config, clock)
    out = q.act_local(held, "release", "corpsec@allient.com", "ok", FakeMta(ok=False))
    assert not out.ok and out.state == "held"
    entry = q.get(held)
    assert entry.state == "held" and "released nothing" in entry.last_error and entry.request is None
    assert q.act_local(held, "release", "corpsec@allient.com", "ok", FakeMta()).ok


def test_release_via_agent(store: RedisStore, held: str, agent: FakeMta, regfd: Any) -> None:
    r = regfd("quarantine", "release", held, "--by", "CorpSec@Allient.com", "--reason", "fine", "--timeout", "10")
    assert r.rc == 0, r.err
    assert f"released {held}" in r.out and "disclosure follow-up" in r.out
    assert agent.calls == [("release", "4ABCDEF123")]
    entry = json.loads(regfd("quarantine", "show", held, "--json").out)
    assert entry["state"] == "released" and entry["decided_by"] == "corpsec@allient.com"
    r = regfd("quarantine", "reject", held, "--by", "corpsec@allient.com", "--reason", "late")
    assert r.rc == 1 and "already released" in r.err
    assert agent.calls == [("release", "4ABCDEF123")]


def test_reject_via_agent(store: RedisStore, held: str, agent: FakeMta, regfd: Any) -> None:
    r = regfd("quarantine", "reject", "4ABCDEF123", "--by", "corpsec@allient.com", "--reason", "no")
    assert r.rc == 0, r.err
    assert agent.calls == [("delete", "4ABCDEF123")]
    assert {n["kind"] for n in outbox_items(store)} == {"rejected", "rejected-sender"}


def test_no_agent_running_fails_fast(held: str, regfd: Any) -> None:
    r = regfd("quarantine", "release", held, "--by", "corpsec@allient.com", "--reason", "fine")
    assert r.rc == 1 and r.err.count("\n") == 1
    assert "is regfd milter/agent running on the MTA host?" in r.err and "--local" in r.err
    assert json.loads(regfd("quarantine", "list", "--json").out)[0]["state"] == "held"


def test_agent_alive_but_silent_times_out_and_withdraws(store: RedisStore, held: str, regfd: Any) -> None:
    store.r.set(store.k(f"agent:alive:{HOST}"), "{}", ex=30)  # a heartbeat, but nobody serves requests
    r = regfd("quarantine", "release", held, "--by", "corpsec@allient.com", "--reason", "fine", "--timeout", "1")
    assert r.rc == 1 and "no agent answered within 1s; is regfd milter/agent running on the MTA host" in r.err
    assert store.r.llen(store.k(f"agent:req:{HOST}")) == 0  # withdrawn: a later agent will not act on it
    row = json.loads(regfd("quarantine", "list", "--json").out)[0]
    assert row["state"] == "held" and "no agent answered" in row["last_error"]


def test_concurrent_releases_act_once(store: RedisStore, config: Config, held: str) -> None:
    mta = FakeMta()
    results: list[Any] = []

    def go(who: str) -> None:
        try:
            results.append(Quarantine(store, config).act_local(held, "release", who, "race", mta))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=go, args=(f"r{i}@allient.com",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(mta.calls) == 1
    assert sum(1 for x in results if getattr(x, "ok", False)) == 1


@pytest.mark.parametrize("args,msg", [
    (("--by", "not-an-address", "--reason", "x"), "--by must be an email address"),
    (("--by", "a@allient.com", "--reason", "   "), "--reason must not be empty"),
])
def test_cli_validation(held: str, regfd: Any, args: tuple[str, ...], msg: str) -> None:
    r = regfd("quarantine", "release", held, *args)
    assert r.rc == 1 and msg in r.err and r.err.count("\n") == 1


def test_hold_reminder_once_per_period(store: RedisStore, config: Config, clock: FixedClock, held: str) -> None:
    period = timedelta(seconds=config.notify.hold_reminder_after)
    rem = Reminders(store, config, clock)
    assert rem.run_due(T0 + period - timedelta(seconds=1)) == 0
    assert rem.run_due(T0 + period + timedelta(seconds=1)) == 1
    assert rem.run_due(T0 + period + timedelta(minutes=5)) == 0
    assert rem.run_due(T0 + 2 * period + timedelta(seconds=1)) == 1
    [n1, n2] = outbox_items(store)
    assert n1["kind"] == n2["kind"] == "hold-reminder" and held in n1["text"]
    Quarantine(store, config, clock).act_local(held, "reject", "corpsec@allient.com", "no", FakeMta())
    assert rem.run_due(T0 + 5 * period) == 0  # decided: no more reminders


# ---------------------------------------------------------------- the Postfix adapter with stand-in binaries
def _fake_bin(path: Path, output: str, log: Path) -> str:
    path.write_text(f"#!/bin/sh\necho \"$0 $*\" >> {log}\nprintf '%s\\n' \"{output}\" >&2\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_postfix_adapter_commands_and_parsing(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    superb = _fake_bin(tmp_path / "postsuper",
                       "postsuper: 4ABC123XYZ: released from hold\npostsuper: Released from hold: 1 message", log)
    queueb = _fake_bin(tmp_path / "postqueue", "", log)
    pq = PostfixQueue("/etc/postfix-test", superb, queueb)
    res = pq.release("4ABC123XYZ")
    assert res.ok and "delivery scheduled now" in res.detail
    calls = log.read_text().splitlines()
    assert calls[0].endswith("postsuper -c /etc/postfix-test -H 4ABC123XYZ hold")
    assert calls[1].endswith("postqueue -c /etc/postfix-test -i 4ABC123XYZ")


def test_postfix_adapter_nothing_matched_and_no_config_dir(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    superb = _fake_bin(tmp_path / "postsuper", "", log)  # postsuper prints nothing and exits 0 when nothing matched
    pq = PostfixQueue("", superb, superb)
    res = pq.release("4ABC123XYZ")
    assert not res.ok and "released nothing" in res.detail
    res = pq.delete("4ABC123XYZ")
    assert not res.ok and "deleted nothing" in res.detail
    assert log.read_text().splitlines()[1].endswith("postsuper -d 4ABC123XYZ hold")  # no -c when empty
    assert not pq.release("../etc; rm").ok  # never passes a strange id to postsuper
    missing = PostfixQueue("", str(tmp_path / "missing")).release("4ABC123XYZ")
    assert not missing.ok and "not found (is Postfix installed on this host?)" in missing.detail


def test_agent_cli_once_reports_the_mta_failure(store: RedisStore, config: Config, held: str, regfd: Any,
                                                tmp_path: Path) -> None:
    # `regfd agent --once` serves one queued request with the configured Postfix (here the system's
    # postsuper, whose queue has no such message, or none at all): the entry goes back to held.
    Quarantine(store, config).begin(held, "release", "corpsec@allient.com", "ok", via="agent")
    r = regfd("agent", "--once", "--host", HOST, "--wait", "3")
    assert r.rc == 0, r.err
    out = json.loads(r.out.strip().splitlines()[-1])
    assert out["ok"] is False and out["state"] == "held"
    assert Quarantine(store, config).get(held).last_error
