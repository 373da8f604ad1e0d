"""The tamper-evident register: `regfd records verify` names the first edited, deleted, reordered or inserted entry.

Everything runs against the session's real redis-server. The attacks are made
the way someone with access to Redis would make them: with a raw redis client
(streams cannot be edited in place, so an edit or a swap rebuilds the stream
with the original ids), never through regfd.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from regfd.compliance.disclosures import Disclosures
from regfd.compliance.executor import Workflow, start_background
from regfd.compliance.quarantine import Quarantine
from regfd.compliance.records import Record, Records
from regfd.compliance.register import Register
from regfd.config import load_config
from regfd.core.chain import GENESIS, Anchor, digest, link, verify
from regfd.store.redis_store import RedisStore
from regfd.store.register_store import SHA256_PROBE
from tests.builders import MATERIAL, T0, FixedClock, facts_for, make_verdict
from tests.conftest import REPO, Regfd
from tests.test_quarantine import FakeMta

Fields = dict[bytes, bytes]


# ------------------------------------------------------------------ helpers
def _records(store: RedisStore, subjects: list[str]) -> None:
    """One record per subject, each in its own decision transaction (as the milter writes them)."""
    records = Records(store, 2555)
    for s in subjects:
        with store.batch("test") as tx:
            records.add_ops(tx, Record(at=T0.isoformat(), sender="alice@allient.com", subject=s, action="tag"), T0)


def _fill(store: RedisStore, regfd: Regfd) -> None:
    """Five records (two through the real decision path) and three audit entries (through the CLI)."""
    config = load_config(regfd.config)
    wf = Workflow(store, config, FixedClock(T0))
    for v in (make_verdict(config, officer=True), make_verdict(config, findings=(MATERIAL,))):
        wf.on_decision(v, facts_for(v))
    _records(store, ["three", "four", "five"])
    for who in ("bob@bank.com", "carol@fund.com"):
        assert regfd("registry", "add", who, "--category", "analyst").rc == 0
    assert regfd("registry", "remove", "carol@fund.com").rc == 0


def _raw(regfd: Regfd) -> redis.Redis:
    return redis.Redis.from_url(regfd.redis_url)


def _rows(r: redis.Redis, key: str) -> list[tuple[bytes, Fields]]:
    return cast("list[tuple[bytes, Fields]]", r.xrange(key))


def _rebuild(r: redis.Redis, key: str, rows: list[tuple[bytes, Fields]]) -> None:
    """What an attacker does to change a stream: delete it and add the entries back under their old ids."""
    r.delete(key)
    for sid, fields in rows:
        r.xadd(key, fields, id=sid)  # type: ignore[arg-type]


def _seq(fields: Fields) -> int:
    return int(fields[b"seq"])


def _verify(regfd: Regfd, *args: str) -> tuple[int, str, str]:
    res = regfd("records", "verify", *args)
    return res.rc, res.out, res.err


def _tampered(regfd: Regfd, *args: str) -> str:
    """The first problem `verify` names (exit status 1 checked)."""
    rc, out, err = _verify(regfd, *args)
    assert rc == 1, out + err
    assert err.startswith("regfd: error: the register was tampered with: "), err
    return err.split("tampered with: ", 1)[1].strip()


def _forge(chain_prev: str, seq: int, body: dict[str, Any]) -> Fields:
    """A forged record whose own hash is right: the attacker knows the algorithm (there is no secret in it)."""
    return {b"r": json.dumps(body).encode(), b"seq": str(seq).encode(), b"prev": chain_prev.encode(),
            b"hash": link(chain_prev, seq, digest(body)).encode()}


# ------------------------------------------------------------------ the chain itself
def test_the_lua_sha256_redis_runs_is_sha256(regfd: Regfd) -> None:
    r = _raw(regfd)
    for n in (0, 1, 55, 56, 63, 64, 72, 119, 120, 200):
        msg = bytes((7 * i + n) % 256 for i in range(n))
        assert cast(bytes, r.eval(SHA256_PROBE, 0, msg)).decode() == hashlib.sha256(msg).hexdigest(), n


def test_an_untouched_register_verifies(store: RedisStore, regfd: Regfd) -> None:
    _fill(store, regfd)
    rc, out, err = _verify(regfd)
    assert rc == 0, out + err
    assert "records: intact, seq 1 to 5, 5 entries checked" in out
    assert "audit: intact, seq 1 to 3, 3 entries checked" in out
    assert out.rstrip().endswith("register intact")
    r = _raw(regfd)
    rows = _rows(r, regfd.prefix + "records")
    assert [_seq(f) for _, f in rows] == [1, 2, 3, 4, 5]
    assert rows[0][1][b"prev"].decode() == GENESIS
    assert all(rows[i][1][b"prev"] == rows[i - 1][1][b"hash"] for i in range(1, 5))
    # `regfd records` and `regfd audit` still list the same things
    assert [x["subject"] for x in json.loads(regfd("records", "--json").out)][2:] == ["three", "four", "five"]
    assert [x["action"] for x in json.loads(regfd("audit", "--json").out)] == [
        "registry.add", "registry.add", "registry.remove"]


def test_an_edited_record_is_named(store: RedisStore, regfd: Regfd) -> None:
    _fill(store, regfd)
    r = _raw(regfd)
    key = regfd.prefix + "records"
    rows = _rows(r, key)
    body = json.loads(rows[3][1][b"r"])
    body["subject"] = "nothing to see"
    rows[3][1][b"r"] = json.dumps(body).encode()
    _rebuild(r, key, rows)
    assert _tampered(regfd) == (f"records seq 4 (id {rows[3][0].decode()}): edited: "
                                "the content (or its seq/prev) does not match its hash")


def test_an_edited_audit_entry_is_named(store: RedisStore, regfd: Regfd) -> None:
    _fill(store, regfd)
    r = _raw(regfd)
    key = regfd.prefix + "audit"
    rows = _rows(r, key)
    rows[2][1][b"who"] = b"somebody-else"
    _rebuild(r, key, rows)
    assert _tampered(regfd).startswith(f"audit seq 3 (id {rows[2][0].decode()}): edited")


def test_a_deleted_record_is_named(store: RedisStore, regfd: Regfd) -> None:
    _fill(store, regfd)
    r = _raw(regfd)
    key = regfd.prefix + "records"
    rows = _rows(r, key)
    r.xdel(key, rows[2][0])
    assert _tampered(regfd) == (f"records seq 3 (id {rows[3][0].decode()}): deleted: seq 3 missing: "
                                "the chain jumps from seq 2 to seq 4")


def test_the_newest_records_deleted_are_named(store: RedisStore, regfd: Regfd) -> None:
    _fill(store, regfd)
    r = _raw(regfd)
    key = regfd.prefix + "records"
    rows = _rows(r, key)
    r.xdel(key, rows[3][0], rows[4][0])
    assert _tampered(regfd) == ("records seq 4: deleted: the chain ends at seq 3 but its head says seq 5: "
                                "the newest entries are gone")


def test_reordered_records_are_named(store: RedisStore, regfd: Regfd) -> None:
    _fill(store, regfd)
    r = _raw(regfd)
    key = regfd.prefix + "records"
    rows = _rows(r, key)
    (id2, f2), (id3, f3) = rows[1], rows[2]
    rows[1], rows[2] = (id2, f3), (id3, f2)  # same ids, contents swapped
    _rebuild(r, key, rows)
    assert _tampered(regfd) == f"records seq 3 (id {id2.decode()}): reordered: seq 3 stored where seq 2 belongs"


def test_a_forged_record_is_named(store: RedisStore, regfd: Regfd) -> None:
    _fill(store, regfd)
    r = _raw(regfd)
    key = regfd.prefix + "records"
    rows = _rows(r, key)
    # a forgery chained onto seq 2 with a correct hash, slipped in between seq 2 and seq 3 (the stream is
    # rebuilt under new ids, as it must be to put an entry in the middle)
    rows.insert(2, (b"", _forge(rows[1][1][b"hash"].decode(), 3, {"subject": "all fine", "action": "accept"})))
    base = rows[0][0].decode().split("-")[0]
    rows = [(f"{base}-{k}".encode(), f) for k, (_, f) in enumerate(rows)]
    _rebuild(r, key, rows)
    assert _tampered(regfd) == (f"records seq 3 (id {base}-3): inserted: seq 3 appears twice "
                                f"(ids {base}-2 and {base}-3): one of them is forged")


def test_an_unchained_entry_inserted_is_named(store: RedisStore, regfd: Regfd) -> None:
    _fill(store, regfd)
    r = _raw(regfd)
    sid = r.xadd(regfd.prefix + "audit", {"at": T0.isoformat(), "who": "x", "action": "registry.add",
                                          "target": "eve@hedge.com", "detail": "{}"})
    assert _tampered(regfd) == (f"audit an entry (id {sid.decode()}): inserted: "  # type: ignore[union-attr]
                                "it follows the head (seq 3) without continuing it")


def test_releases_rejects_and_disclosure_closes_are_chained(store: RedisStore, regfd: Regfd) -> None:
    """Hold two messages, release one (it opens a disclosure follow-up, then closed), reject the other: each
    step's audit entry is in the chain, and an edited release reason is named."""
    config = load_config(regfd.config)
    clock = FixedClock(T0)
    wf = Workflow(store, config, clock)
    for qid in ("4AAAA", "4BBBB"):
        v = make_verdict(config, findings=(MATERIAL,), queue_id=qid)
        wf.on_decision(v, facts_for(v))
    first, second = (r.quarantine_id for r in wf.records.list())
    q = Quarantine(store, config, clock)
    mta = FakeMta()  # postsuper cannot run here; tests/test_e2e_compliance.py releases through a real Postfix
    assert q.act_local(first, "release", "corpsec@allient.com", "public since the 8-K", mta).ok
    assert q.act_local(second, "reject", "corpsec@allient.com", "not public", mta).ok
    (d,) = Disclosures(store, config, clock).list(open_only=True)
    Disclosures(store, config, clock).close(d.id, "corpsec@allient.com", "8-K item 7.01")
    r = _raw(regfd)
    key = regfd.prefix + "audit"
    rows = _rows(r, key)
    assert [(f[b"action"], _seq(f)) for _, f in rows] == [
        (b"quarantine.release", 1), (b"quarantine.reject", 2), (b"disclosure.close", 3)]
    rc, out, err = _verify(regfd)
    assert rc == 0 and "records: intact, seq 1 to 2" in out and "audit: intact, seq 1 to 3" in out, out + err
    detail = json.loads(rows[0][1][b"detail"])
    detail["reason"] = "approved by the CEO"
    rows[0][1][b"detail"] = json.dumps(detail).encode()
    _rebuild(r, key, rows)
    assert _tampered(regfd).startswith(f"audit seq 1 (id {rows[0][0].decode()}): edited:")


# ------------------------------------------------------------------ checkpoints
def test_keygen_is_private_and_never_replaced(regfd: Regfd, tmp_path: Path) -> None:
    res = regfd("records", "keygen")
    assert res.rc == 0, res.err
    key = tmp_path / "state" / "register-signing.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = key.read_bytes()
    res = regfd("records", "keygen")
    assert res.rc == 1 and "already exists" in res.err and key.read_bytes() == first
    pem = regfd("records", "export-key")
    assert pem.rc == 0 and pem.out.startswith("-----BEGIN PUBLIC KEY-----")
    assert "PRIVATE" not in pem.out


def test_a_rewritten_chain_is_caught_by_the_signed_checkpoint(store: RedisStore, regfd: Regfd,
                                                                tmp_path: Path) -> None:
    """Edit seq 4 and recompute every hash after it (and the head): the chain alone looks intact; the checkpoint
    signed before does not."""
    _fill(store, regfd)
    assert regfd("records", "keygen").rc == 0
    public = tmp_path / "register.pub"
    public.write_text(regfd("records", "export-key").out)
    res = regfd("records", "checkpoint")
    assert res.rc == 0 and "records seq 5, audit seq 3" in res.out, res.out + res.err
    assert _verify(regfd, "--public-key", str(public))[0] == 0
    r = _raw(regfd)
    key = regfd.prefix + "records"
    rows = _rows(r, key)
    prev = rows[2][1][b"hash"].decode()
    for i in (3, 4):
        body = json.loads(rows[i][1][b"r"])
        body["subject"] = "rewritten"
        rows[i] = (rows[i][0], _forge(prev, i + 1, body))
        prev = rows[i][1][b"hash"].decode()
    _rebuild(r, key, rows)
    r.hset(regfd.prefix + "register:records", mapping={"hash": prev})
    problem = _tampered(regfd, "--public-key", str(public))
    assert problem.startswith("checkpoint ") and problem.endswith(
        "records: the hash of seq 5 differs from the signed checkpoint: the chain was rewritten"), problem


def test_a_checkpoint_copied_off_redis_survives_the_deletion_of_those_in_redis(store: RedisStore, regfd: Regfd,
                                                                                 tmp_path: Path) -> None:
    _fill(store, regfd)
    assert regfd("records", "keygen").rc == 0
    worm = tmp_path / "worm"
    res = regfd("records", "checkpoint", "--out", str(worm))
    assert res.rc == 0 and f"copy in {worm}" in res.out, res.out + res.err
    (copy,) = worm.iterdir()
    assert copy.name.endswith(".checkpoint.json") and stat.S_IMODE(copy.stat().st_mode) == 0o444
    r = _raw(regfd)
    key = regfd.prefix + "records"
    rows = _rows(r, key)
    body = json.loads(rows[4][1][b"r"])
    body["subject"] = "rewritten"
    rows[4] = (rows[4][0], _forge(rows[3][1][b"hash"].decode(), 5, body))
    _rebuild(r, key, rows)
    r.hset(regfd.prefix + "register:records", mapping={"hash": rows[4][1][b"hash"]})
    r.delete(regfd.prefix + "register:checkpoints")
    assert _verify(regfd)[0] == 0  # Redis alone no longer shows it
    assert _tampered(regfd, "--archive", str(worm)) == (
        f"archive checkpoint {copy.name} (at {json.loads(copy.read_text())['payload']['at']}): records: "
        "the hash of seq 5 differs from the signed checkpoint: the chain was rewritten")


def test_a_truncated_chain_with_its_head_moved_back_is_caught_by_the_checkpoint(store: RedisStore,
                                                                                  regfd: Regfd) -> None:
    _fill(store, regfd)
    assert regfd("records", "keygen").rc == 0
    assert regfd("records", "checkpoint").rc == 0
    r = _raw(regfd)
    key = regfd.prefix + "records"
    rows = _rows(r, key)
    r.xdel(key, rows[4][0])
    r.hset(regfd.prefix + "register:records", mapping={"seq": 4, "hash": rows[3][1][b"hash"]})
    assert _tampered(regfd).endswith("records: a signed checkpoint covers seq 5 but the chain ends at seq 4: "
                                     "entries were deleted")


def test_a_bad_checkpoint_signature_is_named(store: RedisStore, regfd: Regfd, tmp_path: Path) -> None:
    _fill(store, regfd)
    assert regfd("records", "keygen").rc == 0
    assert regfd("records", "checkpoint").rc == 0
    r = _raw(regfd)
    ck = regfd.prefix + "register:checkpoints"
    (sid, fields), = _rows(r, ck)
    signed = json.loads(fields[b"c"])
    signed["payload"]["at"] = "2020-01-01T00:00:00+00:00"  # backdated, signature kept
    r.delete(ck)
    r.xadd(ck, {"c": json.dumps(signed)}, id=sid)
    problem = _tampered(regfd)
    assert problem.startswith(f"checkpoint {sid.decode()} (at 2020-01-01T00:00:00+00:00): the signature does not "
                              "verify with the given public key"), problem
    # and a key that is not the register's: every checkpoint is refused
    (tmp_path / "other").mkdir()
    other = Regfd(tmp_path / "other", regfd.redis_url, regfd.prefix + "other:")
    assert other("records", "keygen").rc == 0
    foreign = tmp_path / "foreign.pub"
    foreign.write_text(other("records", "export-key").out)
    r.delete(ck)
    assert regfd("records", "checkpoint").rc == 0
    assert "the signature does not verify" in _tampered(regfd, "--public-key", str(foreign))


def test_checkpoints_are_signed_periodically_and_only_when_due(store: RedisStore, regfd: Regfd) -> None:
    _fill(store, regfd)
    reg = Register(store, load_config(regfd.config), FixedClock(T0))
    minute = timedelta(minutes=1)
    assert reg.checkpoint_due(T0) == 0  # no key yet: nothing to sign with, nothing fails
    assert regfd("records", "keygen").rc == 0
    assert reg.checkpoint_due(T0 + minute) == 1  # the key is looked for again a minute later
    assert reg.checkpoint_due(T0 + 59 * minute) == 0  # the default interval is an hour
    assert reg.checkpoint_due(T0 + 121 * minute) == 0  # an hour passed, but nothing new to sign
    _records(store, ["six"])
    assert reg.checkpoint_due(T0 + 122 * minute) == 1
    assert [c["payload"]["chains"]["records"]["seq"] for c in store.register.checkpoints()] == [5, 6]


def test_the_milter_background_worker_signs_checkpoints(store: RedisStore, regfd: Regfd) -> None:
    regfd.write_config(extra="[register]\ncheckpoint_interval = 1\n")
    assert regfd("records", "keygen").rc == 0
    _records(store, ["one"])
    stop = threading.Event()
    threads = start_background(store, load_config(regfd.config), stop, agent=False, interval=0.05)
    try:
        deadline = time.monotonic() + 10
        while not store.register.checkpoints() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    (signed,) = store.register.checkpoints()
    assert signed["payload"]["chains"]["records"]["seq"] == 1
    assert _verify(regfd)[0] == 0


# ------------------------------------------------------------------ archive
def test_archive_round_trip(store: RedisStore, regfd: Regfd, tmp_path: Path) -> None:
    _fill(store, regfd)
    assert regfd("records", "keygen").rc == 0
    time.sleep(0.005)
    cut = datetime.now(UTC)
    time.sleep(0.005)
    _records(store, ["six", "seven"])
    assert regfd("registry", "add", "dave@fund.com", "--category", "analyst").rc == 0
    out = tmp_path / "archive"
    res = regfd("records", "archive", "--before", cut.isoformat(), "--out", str(out))
    assert res.rc == 0, res.err
    assert "records: seq 1 to 5 (5 entries)" in res.out and "5 trimmed from Redis" in res.out
    assert "audit: seq 1 to 3 (3 entries)" in res.out
    files = sorted(p.name for p in out.iterdir())
    assert files[:1] == ["archive-" + files[0][8:]] and files[0].endswith(".checkpoint.json")
    assert files[1:] == ["audit-000000000001-000000000003.jsonl", "records-000000000001-000000000005.jsonl"]
    assert all(stat.S_IMODE((out / f).stat().st_mode) == 0o444 for f in files)
    archived = [json.loads(x) for x in (out / files[2]).read_text().splitlines()]
    assert [a["entry"]["subject"] for a in archived][2:] == ["three", "four", "five"]
    # Redis keeps only what came after the cut; `regfd records` lists what is in Redis (the rest is in the archive)
    assert [x["subject"] for x in json.loads(regfd("records", "--json").out)] == ["six", "seven"]
    listed = json.loads(regfd("records", "--json", "--archive", str(out)).out)
    assert [x["subject"] for x in listed][2:] == ["three", "four", "five", "six", "seven"]
    assert listed[0]["id"] == archived[0]["id"]
    audit = json.loads(regfd("audit", "--json", "--archive", str(out)).out)
    assert [(x["action"], x["target"]) for x in audit] == [
        ("registry.add", "bob@bank.com"), ("registry.add", "carol@fund.com"), ("registry.remove", "carol@fund.com"),
        ("registry.add", "dave@fund.com")]
    assert [x["action"] for x in json.loads(regfd("audit", "--json").out)] == ["registry.add"]
    rc, text, err = _verify(regfd)
    assert rc == 0, text + err
    assert "records: intact, seq 6 to 7, 2 entries checked" in text
    assert "seq 1 to 5 are no longer in Redis" in text
    rc, text, err = _verify(regfd, "--archive", str(out))
    assert rc == 0, text + err
    assert "records: intact, seq 1 to 7, 7 entries checked (5 from the archive)" in text
    assert "audit: intact, seq 1 to 4, 4 entries checked (3 from the archive)" in text
    # a second archive, in a directory of its own, continues where the first stopped
    _records(store, ["eight"])
    out2 = tmp_path / "archive2"
    res = regfd("records", "archive", "--before", (datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
                "--out", str(out2))
    assert res.rc == 0 and "records: seq 6 to 8 (3 entries)" in res.out, res.out + res.err
    assert json.loads(regfd("records", "--json").out) == []
    listed = json.loads(regfd("records", "--json", "--archive", str(out), "--archive", str(out2)).out)
    assert len(listed) == 8 and listed[-1]["subject"] == "eight"
    rc, text, err = _verify(regfd, "--archive", str(out2), "--archive", str(out))
    assert rc == 0 and "records: intact, seq 1 to 8, 8 entries checked (8 from the archive)" in text, text + err
    problem = _tampered(regfd, "--archive", str(out2))  # the first directory left out: its part is missing
    assert problem.startswith("checkpoint ") and problem.endswith(
        ": the archive file audit-000000000001-000000000003.jsonl it signs is not in the archive directory "
        "(deleted?)"), problem
    # an archive file edited (made writable first, as on a non-WORM disk) is named
    path = out / "records-000000000001-000000000005.jsonl"
    os.chmod(path, 0o644)
    lines = path.read_text().splitlines()
    line = json.loads(lines[3])
    line["entry"]["subject"] = "nothing to see"
    lines[3] = json.dumps(line)
    path.write_text("\n".join(lines) + "\n")
    problems = _tampered(regfd, "--archive", str(out), "--archive", str(out2))
    assert problems.startswith("records seq 4 (id ") and ": edited:" in problems, problems
    # an archive file missing is named too
    path.unlink()
    problem = _tampered(regfd, "--archive", str(out), "--archive", str(out2))
    assert problem.endswith(": the archive file records-000000000001-000000000005.jsonl it signs is not in the "
                            "archive directory (deleted?)"), problem


def test_archive_refuses_a_broken_chain_and_trims_nothing(store: RedisStore, regfd: Regfd, tmp_path: Path) -> None:
    _fill(store, regfd)
    assert regfd("records", "keygen").rc == 0
    r = _raw(regfd)
    key = regfd.prefix + "records"
    r.xdel(key, _rows(r, key)[1][0])
    res = regfd("records", "archive", "--before", (datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
                "--out", str(tmp_path / "a"))
    assert res.rc == 1 and "nothing archived: the live chain is broken: records seq 2" in res.err, res.err
    assert r.xlen(key) == 4


def test_retention_trimming_keeps_the_chain_verifiable(regfd: Regfd, store: RedisStore) -> None:
    """Records past retention are dropped as new ones arrive; the anchor moves with them."""
    _records(store, ["old-1", "old-2"])
    time.sleep(0.005)
    records = Records(store, 1)
    with store.batch("test") as tx:  # a clock a day and a bit ahead: both old records are past retention
        records.add_ops(tx, Record(subject="new"), datetime.now(UTC) + timedelta(days=1, seconds=-0.001))
    assert [x["subject"] for x in json.loads(regfd("records", "--json").out)] == ["new"]
    rc, text, err = _verify(regfd)
    assert rc == 0, text + err
    assert "records: intact, seq 3 to 3, 1 entries checked" in text


# ------------------------------------------------------------------ concurrency
WRITER = """
import sys
from regfd.compliance.records import Record, Records
from regfd.core.clock import now
from regfd.store.client import client_from_url
from regfd.store.redis_store import RedisStore
store = RedisStore(client_from_url(sys.argv[1]), sys.argv[2])
records = Records(store, 2555)
for i in range(int(sys.argv[3])):
    with store.batch("test") as tx:
        records.add_ops(tx, Record(subject=f"{sys.argv[4]}-{i}"), now())
    if i % 5 == 0:
        store.audit("writer", "test.event", f"{sys.argv[4]}-{i}", {"i": i})
"""


def test_concurrent_writers_keep_one_chain(regfd: Regfd) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, regfd.redis_url, regfd.prefix, "60", f"w{n}"],
                              cwd=REPO) for n in range(4)]
    checks = 0
    while any(p.poll() is None for p in procs):  # verify while they append: what arrives meanwhile is no error
        rc, text, err = _verify(regfd)
        assert rc == 0, text + err
        checks += 1
    assert [p.wait(120) for p in procs] == [0, 0, 0, 0] and checks
    rc, text, err = _verify(regfd)
    assert rc == 0, text + err
    assert "records: intact, seq 1 to 240, 240 entries checked" in text
    assert "audit: intact, seq 1 to 48, 48 entries checked" in text
    subjects: Callable[[str], list[int]] = lambda w: [  # noqa: E731
        int(x["subject"].split("-")[1]) for x in json.loads(regfd("records", "--json").out)
        if x["subject"].startswith(w + "-")]
    assert all(subjects(f"w{n}") == list(range(60)) for n in range(4))


def test_verify_exit_status_and_usage(regfd: Regfd) -> None:
    rc, text, _ = _verify(regfd)
    assert rc == 0 and "records: intact, no entries" in text
    res = regfd("records", "archive", "--out", "x")
    assert res.rc == 2
    res = regfd("records", "verify", "--public-key", "/nonexistent.pub")
    assert res.rc == 1 and "cannot read the public key" in res.err
    down = Regfd(regfd.tmp, f"unix://{regfd.tmp / 'no-redis.sock'}", regfd.prefix)
    res = down("records", "verify")
    assert res.rc == 3 and res.err.startswith("regfd: error: ") and res.err.count("\n") == 1, res.err


@pytest.mark.parametrize("value", ["register-signing.key"])
def test_a_relative_signing_key_is_read_beside_the_config(regfd: Regfd, value: str, tmp_path: Path) -> None:
    regfd.write_config(extra=f'[register]\nsigning_key = "keys/{value}"\n')
    assert regfd("records", "keygen").rc == 0
    assert (tmp_path / "keys" / value).is_file()


def test_after_a_key_rotation_both_public_keys_verify(store: RedisStore, regfd: Regfd, tmp_path: Path) -> None:
    _fill(store, regfd)
    key = tmp_path / "state" / "register-signing.key"
    pubs = []
    for n in (1, 2):
        assert regfd("records", "keygen").rc == 0
        pubs.append(tmp_path / f"key{n}.pub")
        pubs[-1].write_text(regfd("records", "export-key").out)
        assert regfd("records", "checkpoint").rc == 0
        key.rename(tmp_path / f"retired{n}.key")
    assert "the signature does not verify" in _tampered(regfd, "--public-key", str(pubs[1]))
    rc, out, err = _verify(regfd, "--public-key", str(pubs[0]), "--public-key", str(pubs[1]))
    assert rc == 0 and "checkpoints: 2, 2 signatures valid, 4 heads agree" in out, out + err


def test_a_missing_head_is_named_and_a_long_chain_is_read_page_by_page(store: RedisStore, regfd: Regfd) -> None:
    records = Records(store, 2555)
    with store.batch("test") as tx:  # 1,050 appends in one transaction: more than one XRANGE page
        for i in range(1050):
            records.add_ops(tx, Record(subject=f"s{i}"), T0)
    rc, out, err = _verify(regfd)
    assert rc == 0 and "records: intact, seq 1 to 1050, 1050 entries checked" in out, out + err
    _raw(regfd).delete(regfd.prefix + "register:records")
    assert _tampered(regfd) == "records: the chain's head record is missing from Redis (deleted?)"


def test_retention_trimming_while_verify_starts_is_no_gap(store: RedisStore, regfd: Regfd) -> None:
    """The anchor read, then an append trims the oldest records, then the walk reads the stream: the walk
    re-reads the anchor instead of calling the trimmed records deleted (and a real gap stays a gap)."""
    _records(store, ["one", "two", "three"])
    entries = list(store.register.entries("records"))
    moved = Anchor(2, entries[1].hash)
    assert verify("records", entries[2:], Anchor(), reanchor=lambda: moved).intact
    walk = verify("records", entries[2:], Anchor(), reanchor=lambda: Anchor())
    assert walk.problem is not None and walk.problem.what == "deleted"
    forged = Anchor(2, entries[0].hash)  # an anchor that does not end where seq 3 begins
    walk = verify("records", entries[2:], Anchor(), reanchor=lambda: forged)
    assert walk.problem is not None and walk.problem.what == "inserted"
