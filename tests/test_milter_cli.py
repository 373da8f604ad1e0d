"""`regfd milter` as an operator runs it: start, refuse a taken socket, supervise the
private redis-server, stop cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess

import pytest

from tests.conftest import free_port
from tests.mta import PYTHON, REPO, MilterProcess, make_mta_dir, wait_until


@pytest.fixture
def workdir():  # type: ignore[no-untyped-def]
    """A fresh directory under the system temp dir (mode 755) for a milter's socket and log; removed afterwards."""
    d = make_mta_dir("regfd-cli-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run_cli(regfd, *args: str, env: dict[str, str] | None = None, timeout: float = 30):  # type: ignore[no-untyped-def]
    """`regfd milter` run to completion as a subprocess, for tests of start-up failures."""
    return subprocess.run([PYTHON, "-m", "regfd.cli", "milter", "--config", str(regfd.config), *args],
                          env={**os.environ, **(env if env is not None else regfd.env)}, capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def test_taken_unix_socket_is_one_line_error(regfd, workdir):  # type: ignore[no-untyped-def]
    m = MilterProcess.start(regfd.config, workdir / "m.sock", regfd.env, workdir / "m.log")
    try:
        p = run_cli(regfd, "--socket", f"unix:{workdir / 'm.sock'}")
        assert p.returncode != 0
        assert p.stderr.strip().count("\n") == 0 and "in use" in p.stderr and "Traceback" not in p.stderr
        assert m.proc.poll() is None and (workdir / "m.sock").exists(), "the running milter keeps its socket"
    finally:
        assert m.stop() == 0


def test_taken_inet_port_is_one_line_error(regfd):  # type: ignore[no-untyped-def]
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        p = run_cli(regfd, "--socket", f"inet:{s.getsockname()[1]}@127.0.0.1")
        assert p.returncode != 0 and "in use" in p.stderr and "Traceback" not in p.stderr
        assert p.stderr.strip().count("\n") == 0
    finally:
        s.close()


def test_bad_socket_spec_is_refused(regfd):  # type: ignore[no-untyped-def]
    p = run_cli(regfd, "--socket", "tcp:127.0.0.1:99")
    assert p.returncode != 0 and "inet:PORT@HOST or unix:PATH" in p.stderr


def test_inet_socket_gets_tcp_nodelay_and_sigterm_exits_cleanly(regfd, workdir):  # type: ignore[no-untyped-def]
    port = free_port()
    log = workdir / "m.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([PYTHON, "-m", "regfd.cli", "milter", "--config", str(regfd.config),
                                 "--socket", f"inet:{port}@127.0.0.1"], env={**os.environ, **regfd.env},
                                stdout=f, stderr=f, cwd=REPO)
    try:
        wait_until(lambda: "milter.start" in log.read_text() or proc.poll() is not None, 20)
        start = next(json.loads(line) for line in log.read_text().splitlines() if "milter.start" in line)
        assert start["tcp_nodelay"] is True  # no 40 ms Nagle/delayed-ACK stall per reply
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert "milter.stopped" in log.read_text()


def test_private_redis_is_supervised_and_stopped_on_exit(regfd, workdir):  # type: ignore[no-untyped-def]
    """No redis URL: the milter runs its own redis-server, restarts it if it dies, stops it on exit."""
    env = {k: v for k, v in regfd.env.items() if k != "REGFD_REDIS_URL"}
    env = {**{k: v for k, v in os.environ.items() if k != "REGFD_REDIS_URL"}, **env}
    log = workdir / "m.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([PYTHON, "-m", "regfd.cli", "milter", "--config", str(regfd.config),
                                 "--socket", f"unix:{workdir / 'm.sock'}"], env=env, stdout=f, stderr=f, cwd=REPO)
    from regfd.store.private_redis import PrivateRedis

    private = PrivateRedis(regfd.tmp / "state")
    try:
        wait_until(lambda: "milter.start" in log.read_text() or proc.poll() is not None, 20)
        assert private.answering()
        pid = int(subprocess.run(["pgrep", "-f", f"unixsocket {private.socket}|{private.socket}"],
                                 capture_output=True, text=True).stdout.split()[0])
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: "redis.private_restarted" in log.read_text(), 15, what="the supervisor's restart")
        assert private.answering()
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
    assert rc == 0
    wait_until(lambda: not private.answering(), 10, what="the private redis-server to stop")


def test_private_redis_left_by_a_killed_milter_is_adopted_and_stopped(regfd, workdir):  # type: ignore[no-untyped-def]
    """A regfd SIGKILLed leaves its redis-server; the next milter adopts it and its SIGTERM stops it."""
    from tests.test_store_backends import orphaned_private_redis, redis_pids_under

    state = regfd.tmp / "state"
    orphan = orphaned_private_redis(state)
    env = {**{k: v for k, v in os.environ.items() if k != "REGFD_REDIS_URL"},
           **{k: v for k, v in regfd.env.items() if k != "REGFD_REDIS_URL"}}
    log = workdir / "m.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([PYTHON, "-m", "regfd.cli", "milter", "--config", str(regfd.config),
                                 "--socket", f"unix:{workdir / 'm.sock'}"], env=env, stdout=f, stderr=f, cwd=REPO)
    try:
        wait_until(lambda: "milter.start" in log.read_text() or proc.poll() is not None, 20)
        assert proc.poll() is None, log.read_text()
        assert redis_pids_under(state / "redis") == [orphan]  # reused, not a second server
        assert json.loads((state / "redis" / "owner.json").read_text())["owner"] == proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
    assert rc == 0
    wait_until(lambda: redis_pids_under(state / "redis") == [], 10, what="the adopted redis-server to stop")
