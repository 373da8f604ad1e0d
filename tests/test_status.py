"""`regfd status` against the session's real redis-server: what it reports and the exit status it gives."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from regfd.compliance.executor import Workflow
from regfd.compliance.notification import Notification
from regfd.compliance.outbox import Outbox
from regfd.config import load_config
from regfd.core.clock import now as utcnow
from regfd.monitoring.health import lexicon_version
from regfd.store.redis_store import RedisStore
from tests.builders import MATERIAL, facts_for, make_verdict
from tests.conftest import Regfd


def status(regfd: Regfd, *args: str) -> tuple[int, dict[str, Any]]:
    r = regfd("status", "--json", *args)
    return r.rc, json.loads(r.out)


def hold_on(store: RedisStore, regfd: Regfd, host: str) -> Workflow:
    """A message held by the real workflow on MTA host `host`, now."""
    config = load_config(regfd.config)
    v = make_verdict(config, findings=(MATERIAL,), at=utcnow())
    wf = Workflow(store, config)
    wf.on_decision(v, facts_for(v, at=utcnow(), host=host))
    return wf


def test_an_empty_store_is_healthy(regfd: Regfd) -> None:
    rc, h = status(regfd)
    assert rc == 0 and h["status"] == "healthy" and h["problems"] == []
    assert h["reachable"] is True and 0 < h["round_trip_ms"] < 1000
    assert h["backlog"] == {"outbox_depth": 0, "outbox_oldest_age": None, "held": 0, "held_oldest_age": None,
                            "followups": 0, "followup_oldest_age": None, "digest": 0}
    assert h["config"] == str(regfd.config)
    assert h["lexicon_version"] == lexicon_version(Path(load_config(regfd.config).lexicon_dir))
    assert len(h["lexicon_version"]) == 12
    text = regfd("status")
    assert text.rc == 0 and text.out.startswith("regfd status: healthy\n")
    assert "reachable, round trip" in text.out and f"version {h['lexicon_version']}" in text.out


def test_held_mail_on_a_host_without_an_agent_is_degraded(regfd: Regfd, store: RedisStore) -> None:
    hold_on(store, regfd, "mta1.test")
    hold_on(store, regfd, "mta1.test")
    hold_on(store, regfd, "mta2.test")
    store.quarantine.heartbeat("mta2.test", {"worker": "w1", "at": "now"}, 15)  # mta2's agent is alive
    rc, h = status(regfd)
    assert rc == 1 and h["status"] == "degraded"
    assert h["backlog"]["held"] == 3 and 0 <= h["backlog"]["held_oldest_age"] < 60
    agents = {a["host"]: (a["alive"], a["held"]) for a in h["agents"]}
    assert agents == {"mta1.test": (False, 2), "mta2.test": (True, 1)}
    assert h["problems"] == ["no quarantine agent alive for MTA host 'mta1.test', where 2 held message(s) wait"]
    # Holds notify the Corporate Secretary and the sender, once the worker has followed them up.
    assert h["backlog"]["followups"] == 3 and h["backlog"]["outbox_depth"] == 0
    assert hold_on(store, regfd, "mta2.test").follow_up() == 4
    h = status(regfd)[1]
    assert h["backlog"]["followups"] == 0 and h["backlog"]["outbox_depth"] == 8
    assert h["backlog"]["outbox_oldest_age"] < 60
    text = regfd("status").out
    assert "mta1.test: NOT ALIVE, 2 held" in text and "mta2.test: alive, 2 held" in text
    store.quarantine.heartbeat("mta1.test", {"worker": "w2", "at": "now"}, 15)
    assert status(regfd)[0] == 0


def test_a_stuck_notification_or_follow_up_is_degraded(regfd: Regfd, store: RedisStore) -> None:
    config = load_config(regfd.config)
    outbox = Outbox(store, config)
    due = utcnow() - timedelta(minutes=20)
    with store.batch("test") as tx:
        outbox.enqueue_ops(tx, Notification("n1", "decision", ("corpsec@allient.com",), "s", "t"), at=due)
    rc, h = status(regfd)
    assert rc == 1 and h["backlog"]["outbox_depth"] == 1 and 1199 < h["backlog"]["outbox_oldest_age"] < 1260
    assert h["problems"][0].startswith("a notification has waited 20 min for delivery")
    # A follow-up nobody did for ten minutes: no regfd milter is running.
    v = make_verdict(config, officer=True, findings=(MATERIAL,), at=utcnow())
    Workflow(store, config, clock=lambda: utcnow() - timedelta(minutes=10)).on_decision(v, facts_for(v, at=utcnow()))
    rc, h = status(regfd)
    assert rc == 1 and ("1 decision(s) not followed up for 10 min (notices, disclosures): is regfd milter running?"
                        in h["problems"])
    assert Workflow(store, config).follow_up() == 1
    # Delivered: nothing waits any more.
    for n in outbox.pending():
        outbox.box.delivered(n.id, {"id": n.id})
    rc, h = status(regfd)
    assert rc == 0 and h["backlog"]["outbox_depth"] == 0 and h["backlog"]["outbox_oldest_age"] is None


def test_an_unreachable_store_exits_3_with_the_report(tmp_path: Path) -> None:
    runner = Regfd(tmp_path, f"unix://{tmp_path}/no-redis.sock", "x:")
    r = runner.subprocess("status")
    assert r.rc == 3
    assert r.out.startswith("regfd status: unreachable\n") and "no-redis.sock" in r.out
    r = runner.subprocess("status", "--json")
    h = json.loads(r.out)
    assert r.rc == 3 and h["reachable"] is False and h["backlog"] is None and "no-redis.sock" in h["error"]


def test_a_stopped_private_redis_is_reported_not_started(tmp_path: Path) -> None:
    """Without redis_url the store is the private redis-server; status must not start it to find it up."""
    r = Regfd(tmp_path, "", "p:").subprocess("status")  # REGFD_REDIS_URL empty: the private store
    assert r.rc == 3 and "is not running (regfd milter starts it)" in r.out
    assert not (tmp_path / "state" / "redis" / "redis.sock").exists()
