"""`[milter] workers = N` (regfd/mta/workers.py): the asyncio engine in N processes behind a real Postfix.

Unix (the session Postfix's `dedicated` listener, a shared socket) and inet
(its `asyncio-inet` listener, SO_REUSEPORT sockets): mail through Postfix is
decided, recorded, held and delivered as with one process, and both workers
serve; a worker killed with SIGKILL is replaced while mail keeps flowing;
SIGTERM to the supervisor drains the workers and exits 0 within
drain_timeout, removing the unix socket. The configuration refusals are
checked at load and on the command line.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.mta import ASYNCIO_INET_PORT, MilterProcess, make_message, queue_id_of, wait_until

MATERIAL = "Between us, we will miss the quarter and the guidance will be lowered next week."


def uniq(local: str, domain: str) -> str:
    """A fresh address, so tests sharing the session's Postfix and sink never see each other's mail."""
    return f"{local}.{uuid.uuid4().hex[:8]}@{domain}"


def events(log: Path, name: str) -> list[dict[str, Any]]:
    """The JSON log lines whose event is `name`."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            d = json.loads(line)
            if d.get("event") == name:
                out.append(d)
    return out


def alive(pid: int) -> bool:
    """Whether `pid` runs (not a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False


@dataclass
class Pool:
    """A `regfd milter --workers 2` and the Postfix listener whose milter it is."""

    kind: str
    port: int
    milter: MilterProcess

    @property
    def worker_pids(self) -> list[int]:
        """The workers' pids as the supervisor logged them at start."""
        return list(events(self.milter.log, "milter.start")[0]["worker_pids"])


def start_pool(world: Any, mta_regfd: Any, log: Path, kind: str) -> Pool:
    """`regfd milter --engine asyncio --workers 2` behind the listener for `kind`."""
    if kind == "unix":
        sock: Path | str = world.sockets["dedicated"]
        port = world.ports["dedicated"]
    else:
        sock, port = f"inet:{ASYNCIO_INET_PORT}@127.0.0.1", world.ports["asyncio-inet"]
    m = MilterProcess.start(mta_regfd.config, sock, mta_regfd.env, log, engine="asyncio", workers=2)
    wait_until(lambda: len(events(log, "milter.worker_start")) >= 2, 30, what="both workers to listen")
    return Pool(kind, port, m)


@pytest.fixture(scope="module")
def world(mta_regfd: Any, postfix: Any) -> Any:
    """The directory every test here relies on (session prefix shared with the milters)."""
    for args in (("registry", "add", "bank.com", "--category", "analyst"),
                 ("officer", "add", "ceo@allient.com", "--role", "CEO")):
        r = mta_regfd(*args)
        assert r.rc == 0, r.err
    return postfix


@pytest.fixture(scope="module", params=["unix", "inet"])
def pool(request: Any, world: Any, mta_regfd: Any, mta_dir: Path) -> Iterator[Pool]:
    """Two workers on each kind of socket, for the module."""
    p = start_pool(world, mta_regfd, mta_dir / f"workers-{request.param}.log", request.param)
    try:
        yield p
    finally:
        assert p.milter.stop() == 0


def send_mix(world: Any, port: int, n: int, threads: int = 4) -> list[tuple[str, str, str]]:
    """`n` messages through Postfix on `threads` SMTP clients at once: a third each accepted (outside
    recipient), tagged (the CEO to the analyst) and held (an employee to the analyst). Returns
    (expected action, sender, recipient) per message."""
    plan: list[tuple[str, str, str]] = []
    for i in range(n):
        kind = ("accept", "tag", "hold")[i % 3]
        sender = "ceo@allient.com" if kind == "tag" else uniq("emp", "allient.com")
        rcpt = uniq("friend", "example.org") if kind == "accept" else uniq("analyst", "bank.com")
        plan.append((kind, sender, rcpt))
    errors: list[str] = []

    def client(chunk: list[tuple[str, str, str]]) -> None:
        for kind, sender, rcpt in chunk:
            body = "Lunch on Friday?" if kind == "accept" else MATERIAL
            code, text = world.send(sender, [rcpt], make_message(sender, rcpt, "Note", body), port=port)
            if code != 250:
                errors.append(f"{rcpt}: {code} {text}")

    workers = [threading.Thread(target=client, args=(plan[i::threads],)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(120)
    assert not errors, errors
    return plan


def check_decided(world: Any, smtp_sink: Any, milter: MilterProcess, plan: list[tuple[str, str, str]]
                  ) -> list[dict[str, Any]]:
    """Every message of `plan` decided as expected, at the sink or in the hold queue; returns the decisions."""
    rcpts = {rcpt for _, _, rcpt in plan}

    def decided() -> list[dict[str, Any]] | None:
        got = [d for d in milter.decisions()
               if set(d.get("specified", [])) & rcpts or d.get("sender") in {s for k, s, _ in plan if k != "tag"}]
        return got if len(got) >= len(plan) else None

    decisions: list[dict[str, Any]] = wait_until(decided, 30, what="every decision")
    held_qids = {q["queue_id"] for q in world.held()}
    for kind, sender, rcpt in plan:
        if kind == "hold":
            d = next(d for d in decisions if d.get("sender") == sender)
            assert d["action"] == "hold" and d["queue_id"] in held_qids
            assert smtp_sink.to(rcpt) == []
        else:
            got, = smtp_sink.wait_for(rcpt)
            assert (got.msg["X-RegFD-Action"] == "tag") == (kind == "tag")
    return decisions


@pytest.mark.e2e
def test_twenty_messages_all_decided_by_both_workers(world: Any, smtp_sink: Any, mta_regfd: Any, pool: Pool) -> None:
    plan = send_mix(world, pool.port, 20)
    decisions = check_decided(world, smtp_sink, pool.milter, plan)
    pids = {d["pid"] for d in decisions}
    assert pids == set(pool.worker_pids), (pids, pool.worker_pids)  # both served, nobody else did
    # every message to the analyst is in the records (14 of the 20), each once
    records = json.loads(mta_regfd("records", "--json").out or "[]")
    recorded = [r for r in records if any(rc in json.dumps(r) for _, _, rc in plan)]
    assert len(recorded) == len([k for k, _, _ in plan if k != "accept"])


@pytest.mark.e2e
def test_a_killed_worker_is_replaced_and_mail_still_flows(world: Any, smtp_sink: Any, pool: Pool) -> None:
    victim, survivor = pool.worker_pids
    current = [e["new_pid"] for e in events(pool.milter.log, "milter.worker_restarted")]
    victim = current[-1] if current else victim  # a previous run of this test may have replaced it already
    os.kill(victim, signal.SIGKILL)
    restarted = wait_until(lambda: [e for e in events(pool.milter.log, "milter.worker_restarted")
                                    if e["new_pid"] not in current], 10, what="the worker to be restarted")[0]
    died = [e for e in events(pool.milter.log, "milter.worker_died") if e["dead_pid"] == victim]
    assert died and died[0]["status"] == "signal SIGKILL"
    assert alive(restarted["new_pid"]) and alive(survivor) and pool.milter.proc.poll() is None
    wait_until(lambda: [e for e in events(pool.milter.log, "milter.worker_start")
                        if e["pid"] == restarted["new_pid"]], 30, what="the new worker to listen")
    plan = send_mix(world, pool.port, 12)
    decisions = check_decided(world, smtp_sink, pool.milter, plan)
    assert {d["pid"] for d in decisions} <= {survivor, restarted["new_pid"]}


@pytest.mark.e2e
def test_sigterm_drains_every_worker_and_exits_zero(world: Any, smtp_sink: Any, pool: Pool) -> None:
    """SIGTERM with a message in flight: it is still decided, then the supervisor exits 0 well within
    drain_timeout (30 s) and leaves no process and no socket file behind. (The module's pool ends here:
    this test comes last.)"""
    p, kind = pool, pool.kind
    try:
        pid = p.milter.proc.pid
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        assert len(children) == 3  # two workers and the background process
        sender, rcpt = uniq("frank", "allient.com"), uniq("analyst", "bank.com")
        with smtplib.SMTP("127.0.0.1", p.port, timeout=60) as smtp:
            smtp.ehlo("client.test")
            assert smtp.mail(sender)[0] == 250
            assert smtp.rcpt(rcpt)[0] == 250  # a worker has seen MAIL and RCPT: the message is in flight
            t0 = time.monotonic()
            p.milter.proc.send_signal(signal.SIGTERM)
            wait_until(lambda: len(events(p.milter.log, "milter.stopping")) >= 3, 15,
                       what="the supervisor and the workers to stop listening")
            assert p.milter.proc.poll() is None  # still running: a worker waits for the message in flight
            code, text = smtp.data(make_message(sender, rcpt, "Numbers", MATERIAL))
        assert code == 250, text
        decision = p.milter.decision_for(sender)
        assert decision["action"] == "hold" and decision["queue_id"] == queue_id_of(text.decode())
        assert p.milter.proc.wait(40) == 0
        assert time.monotonic() - t0 < 30
        stopping = [e for e in events(p.milter.log, "milter.stopping") if e.get("inflight")]
        assert [e["pid"] for e in stopping] == [decision["pid"]]  # the worker that had it waited for it
        assert not events(p.milter.log, "milter.stop_with_inflight")
        assert events(p.milter.log, "milter.stopped")
        assert not [pid for pid in children if alive(pid)]
        if kind == "unix":
            assert not world.sockets["dedicated"].exists()
    finally:
        p.milter.stop()


@pytest.mark.parametrize("milter,problem", [
    ({"workers": 0}, "milter.workers: must be an integer from 1 to 64 (got 0)"),
    ({"workers": 65}, "milter.workers: must be an integer from 1 to 64 (got 65)"),
    ({"workers": "4"}, "milter.workers: must be an integer (got '4')"),
    ({"workers": 2, "engine": "libmilter"}, "milter.workers: 2 workers need engine = \"asyncio\""),
])
def test_workers_is_a_checked_setting(milter: dict[str, Any], problem: str) -> None:
    from regfd.config import parse_config
    from regfd.errors import ConfigError

    assert parse_config({}).milter.workers == 1
    assert parse_config({"milter": {"workers": 8, "engine": "asyncio"}}).milter.workers == 8
    with pytest.raises(ConfigError) as exc:
        parse_config({"milter": milter})
    assert str(exc.value).startswith(f"config: {problem}")


def test_workers_accept_metrics() -> None:
    from regfd.config import parse_config

    cfg = parse_config({"milter": {"workers": 3, "engine": "asyncio"}, "metrics": {"listen": "127.0.0.1:9464"}})
    assert cfg.milter.workers == 3 and cfg.metrics.port == 9464  # served by the background process (test_metrics.py)


@pytest.mark.parametrize("args,problem", [
    (["--workers", "2", "--engine", "libmilter"], "milter.workers: 2 workers need engine"),
    (["--workers", "0", "--engine", "asyncio"], "milter.workers: must be an integer from 1 to 64 (got 0)"),
    (["--workers", "99", "--engine", "asyncio"], "milter.workers: must be an integer from 1 to 64 (got 99)"),
])
def test_the_command_line_override_is_checked_too(regfd: Any, tmp_path: Path, args: list[str], problem: str
                                                  ) -> None:
    r = regfd.subprocess("milter", "--socket", f"unix:{tmp_path / 'm.sock'}", *args)
    assert r.rc == 1
    assert r.err.strip().splitlines() == [r.err.strip()] and problem in r.err
    assert not (tmp_path / "m.sock").exists()


def test_each_log_line_is_one_write() -> None:
    """The workers share one stderr: a line written in two parts (print's text, then its newline) let two
    processes' lines run together into one invalid JSON line (seen in bench/bench_mta.py --workers 2)."""
    import structlog

    from regfd.mta.daemon import configure_logging

    class Stream:
        def __init__(self) -> None:
            self.writes: list[str] = []

        def write(self, text: str) -> int:
            self.writes.append(text)
            return len(text)

        def flush(self) -> None:
            pass

        def isatty(self) -> bool:
            return False

    stream = Stream()
    try:
        configure_logging(stream)
        structlog.get_logger("t").info("milter.decision", action="hold")
        structlog.get_logger("t").info("milter.decision", action="tag")
    finally:
        configure_logging()
    assert len(stream.writes) == 2 and all(w.endswith("}\n") and w.count("\n") == 1 for w in stream.writes)
    assert [json.loads(w)["action"] for w in stream.writes] == ["hold", "tag"]
    assert {json.loads(w)["pid"] for w in stream.writes} == {os.getpid()}


def test_the_supervisor_runs_and_watches_the_private_redis(regfd: Any) -> None:
    """No redis URL: the supervisor starts the private redis-server before the fork and owns it (the workers
    only connect), starts it again when it dies, and stops it after the workers on SIGTERM."""
    import shutil

    from regfd.store.private_redis import PrivateRedis
    from tests.mta import make_mta_dir

    d = make_mta_dir("regfd-workers-")
    env = {k: v for k, v in regfd.env.items() if k != "REGFD_REDIS_URL"}
    env = {**{k: v for k, v in os.environ.items() if k != "REGFD_REDIS_URL"}, **env}
    m = MilterProcess.start(regfd.config, d / "m.sock", env, d / "m.log", workers=2)
    private = PrivateRedis(regfd.tmp / "state")
    try:
        wait_until(lambda: len(events(m.log, "milter.worker_start")) == 2, 30, what="both workers")
        assert events(m.log, "milter.start")[0]["store"] == "private" and private.answering()
        assert json.loads(private.owner_file.read_text())["owner"] == m.proc.pid
        server = private.server_pid()
        assert server is not None
        os.kill(server, signal.SIGKILL)
        wait_until(lambda: events(m.log, "redis.private_restarted"), 15, what="the supervisor's restart")
        assert private.answering() and private.server_pid() != server
        assert json.loads(private.owner_file.read_text())["owner"] == m.proc.pid
        background = events(m.log, "milter.start")[0]["background_pid"]  # the outbox and agent's process
        os.kill(background, signal.SIGKILL)
        again = wait_until(lambda: events(m.log, "milter.worker_restarted"), 15, what="its restart")[0]
        assert again["role"] == "background" and alive(again["new_pid"])
        wait_until(lambda: [e for e in events(m.log, "milter.background_start") if e["pid"] == again["new_pid"]], 30,
                   what="the new background process")
    finally:
        rc = m.stop()
    assert rc == 0, m.log.read_text()[-2000:]
    assert not private.answering() and not (d / "m.sock").exists()
    assert [e["role"] for e in events(m.log, "milter.worker_died")] == ["background"]  # the workers lived on
    shutil.rmtree(d, ignore_errors=True)


def test_a_message_stuck_in_flight_does_not_hold_the_stop_past_drain_timeout(regfd: Any) -> None:
    """A client that stops mid-message (MAIL and RCPT sent, then silence): SIGTERM still ends every process
    within drain_timeout (2 s here), exit 0, the stuck worker reporting what it left."""
    import shutil

    from regfd.mta import protocol as p
    from tests.conftest import free_port
    from tests.mta import make_mta_dir
    from tests.test_asyncio_engine import Client, negotiate, z

    regfd.write_config(extra="[milter]\ndrain_timeout = 2.0\n")
    d = make_mta_dir("regfd-workers-")
    port = free_port()
    m = MilterProcess.start(regfd.config, f"inet:{port}@127.0.0.1", regfd.env, d / "m.log", workers=2)
    try:
        wait_until(lambda: len(events(m.log, "milter.worker_start")) == 2, 30, what="both workers")
        pid = m.proc.pid
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        c = Client(port)
        negotiate(c)
        c.send(p.packet(p.MAIL, z("<bob@allient.com>")), p.packet(p.RCPT, z("<analyst@bank.com>")))
        assert [r.cmd for r in c.replies(2)] == [p.R_CONTINUE] * 2  # the message is in flight
        t0 = time.monotonic()
        m.proc.send_signal(signal.SIGTERM)
        assert m.proc.wait(10) == 0
        took = time.monotonic() - t0
        assert took <= 2.0 + 0.2, took  # the bound, plus the interpreter's exit
        assert [e["inflight"] for e in events(m.log, "milter.stop_with_inflight")] == [1]
        assert not [child for child in children if alive(child)]
        assert c.closed_by_peer()
    finally:
        m.stop()
        shutil.rmtree(d, ignore_errors=True)


def test_workers_stop_when_the_supervisor_is_killed(regfd: Any) -> None:
    """SIGKILL to the supervisor (no drain possible there): its children get SIGTERM from the kernel
    (PR_SET_PDEATHSIG), drain and exit instead of serving on unsupervised."""
    import shutil

    from tests.conftest import free_port
    from tests.mta import make_mta_dir

    d = make_mta_dir("regfd-workers-")
    m = MilterProcess.start(regfd.config, f"inet:{free_port()}@127.0.0.1", regfd.env, d / "m.log", workers=2)
    try:
        wait_until(lambda: len(events(m.log, "milter.worker_start")) == 2, 30, what="both workers")
        pid = m.proc.pid
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        assert len(children) == 3
        m.proc.kill()
        m.proc.wait()
        wait_until(lambda: not [c for c in children if alive(c)], 15, what="the children to exit")
        assert len(events(m.log, "milter.worker_stopped")) == 2 and events(m.log, "milter.background_stopped")
    finally:
        m.stop()
        shutil.rmtree(d, ignore_errors=True)


def test_the_default_engine_runs_without_pymilter(regfd: Any, tmp_path: Path) -> None:
    """asyncio, the default, needs neither pymilter nor libmilter: with both hidden (a `Milter` and a `milter`
    module that fail to import, ahead of site-packages) it starts, with two workers, and decides; libmilter
    says in one line what is missing."""
    import shutil

    from regfd.mta import protocol as p
    from tests.conftest import free_port
    from tests.mta import make_mta_dir
    from tests.test_asyncio_engine import Client, negotiate, z

    hidden = tmp_path / "hidden"
    hidden.mkdir()
    for name in ("Milter", "milter"):
        (hidden / f"{name}.py").write_text('raise ImportError("pymilter hidden by the test")\n')
    env = {**regfd.env, "PYTHONPATH": str(hidden)}
    assert regfd("registry", "add", "bank.com", "--category", "analyst").rc == 0
    d = make_mta_dir("regfd-workers-")
    port = free_port()
    m = MilterProcess.start(regfd.config, f"inet:{port}@127.0.0.1", env, d / "m.log", workers=2)
    try:
        wait_until(lambda: len(events(m.log, "milter.worker_start")) == 2, 30, what="both workers")
        assert events(m.log, "milter.start")[0]["engine"] == "asyncio"
        c = Client(port)
        negotiate(c)
        c.send(p.packet(p.MAIL, z("<bob@allient.com>")), p.packet(p.RCPT, z("<analyst@bank.com>")),
               p.packet(p.DATA), p.packet(p.BODYEOB, b"Subject: x\r\n\r\nWe will miss the quarter.\r\n"))
        replies = c.replies(4)
        assert [r.cmd for r in replies[:3]] == [p.R_CONTINUE] * 3 and replies[3].cmd != p.R_TEMPFAIL
        c.close()
        assert m.decision_for("bob@allient.com")["action"] == "hold"
    finally:
        assert m.stop() == 0
        shutil.rmtree(d, ignore_errors=True)
    r = subprocess_run(regfd, env, "milter", "--engine", "libmilter", "--socket", f"unix:{tmp_path / 'x.sock'}")
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        'regfd: error: milter engine libmilter: pymilter is not installed (pip install "regfd[milter]"); '
        'engine = "asyncio" needs neither it nor libmilter']


def subprocess_run(regfd: Any, env: dict[str, str], *args: str) -> Any:
    """`python -m regfd.cli ARGS` with `env` over the environment, as the operator runs it."""
    import subprocess

    from tests.mta import PYTHON, REPO

    return subprocess.run([PYTHON, "-m", "regfd.cli", *args], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=60, cwd=REPO)


def test_a_child_that_keeps_dying_at_start_waits_longer_each_time() -> None:
    from regfd.mta.workers import MAX_RESTART_DELAY, restart_delay

    deaths, delays = 0, []
    for _ in range(9):  # dies 0.1 s after every start: 1, 2, 4 … s, never more than the cap
        delay, deaths = restart_delay(0.1, deaths)
        delays.append(delay)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0] and MAX_RESTART_DELAY == 60.0
    assert restart_delay(30.0, deaths) == (0.0, 0)  # one that ran a while is forked again at once, the count reset
