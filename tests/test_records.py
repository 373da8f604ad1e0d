"""Records: every message to a Specified Person, round trip through the CLI (--json, --csv, --since)."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from regfd.compliance.executor import Workflow
from regfd.compliance.records import Record, Records
from regfd.config import load_config
from regfd.store.redis_store import RedisStore
from tests.builders import EMBARGO, MATERIAL, T0, FixedClock, facts_for, make_verdict


def _decide_three(store: RedisStore, regfd: Any) -> None:
    config = load_config(regfd.config)
    wf = Workflow(store, config, FixedClock(T0))
    for v in (make_verdict(config, officer=True), make_verdict(config, findings=(MATERIAL,)),
              make_verdict(config, findings=(EMBARGO,))):
        wf.on_decision(v, facts_for(v))
        wf.follow_up()


def test_records_json_roundtrip(store: RedisStore, regfd: Any) -> None:
    _decide_three(store, regfd)
    r = regfd("records", "--json")
    assert r.rc == 0, r.err
    rows = json.loads(r.out)
    assert [x["action"] for x in rows] == ["accept", "hold", "reject"]
    hold = rows[1]
    assert hold["sender"] == "alice@allient.com" and hold["sender_class"] == "employee"
    assert hold["recipients"] == [{"address": "bob@bank.com", "category": "analyst", "firm": "Big Bank",
                                   "sender_class": "employee", "action": "hold"}]
    assert hold["subject"] == "Q4 update" and hold["message_id"] == "<m1@allient.com>"
    assert hold["queue_id"] == "4ABCDEF123" and hold["mta_host"] == "mta1.test"
    assert hold["findings"][0] == {"kind": "material", "category": "earnings", "text": "record revenue",
                                   "excerpt": MATERIAL.excerpt, "location": "body", "severity": "high"}
    assert hold["policy_action"] == "hold" and hold["reasons"] and hold["quarantine_id"].startswith("q")
    assert hold["at"] == T0.isoformat()


def test_records_csv(store: RedisStore, regfd: Any) -> None:
    _decide_three(store, regfd)
    r = regfd("records", "--csv")
    assert r.rc == 0, r.err
    rows = list(csv.DictReader(io.StringIO(r.out)))
    assert [x["action"] for x in rows] == ["accept", "hold", "reject"]
    assert rows[1]["recipients"] == "bob@bank.com (analyst, Big Bank)"
    assert rows[1]["findings"].startswith("material:earnings@body: we now expect")
    assert rows[2]["findings"].startswith("embargo:embargo@attachment:pr.docx")


def test_records_table_and_empty(regfd: Any, store: RedisStore) -> None:
    r = regfd("records")
    assert r.rc == 0 and r.out.strip() == "no records"
    _decide_three(store, regfd)
    r = regfd("records")
    assert "bob@bank.com" in r.out and "hold" in r.out and "material:earnings" in r.out


def test_records_since(store: RedisStore, regfd: Any) -> None:
    # --since bounds by arrival in Redis; the local redis-server shares this machine's clock.
    _decide_three(store, regfd)
    time.sleep(0.01)
    cut = datetime.now(UTC)
    time.sleep(0.01)
    config = load_config(regfd.config)
    v = make_verdict(config, officer=True, findings=(MATERIAL,))
    wf = Workflow(store, config, FixedClock(T0))
    wf.on_decision(v, facts_for(v))
    wf.follow_up()
    assert len(json.loads(regfd("records", "--json", "--since", "2000-01-01").out)) == 4
    later = json.loads(regfd("records", "--json", "--since", cut.isoformat()).out)
    assert [x["action"] for x in later] == ["tag"]
    assert json.loads(regfd("records", "--json", "--since", "2999-01-01").out) == []
    bad = regfd("records", "--since", "yesterday-ish")
    assert bad.rc == 1 and bad.err.count("\n") == 1 and "--since" in bad.err


def test_retention_trims_old_records(store: RedisStore, regfd: Any) -> None:
    config = load_config(regfd.config)
    recs = Records(store, retention_days=1)
    now = datetime.now(UTC)
    two_days_ago = int((now - timedelta(days=2)).timestamp() * 1000)
    store.r.xadd(store.records.key, {"r": json.dumps({"subject": "old"})}, id=f"{two_days_ago}-0")  # an old record
    with store.batch("test") as tx:
        recs.add_ops(tx, Record(subject="new"), now)
    assert [r.subject for r in recs.list()] == ["new"]
    assert config.records_retention_days == 2555  # the default keeps seven years
