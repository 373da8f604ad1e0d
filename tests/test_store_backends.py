"""The built-in private redis-server, Sentinel URLs, and changes seen by every host at once."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from regfd.core.directory import RegistryEntry
from regfd.store.client import client_from_url
from regfd.store.redis_store import RedisStore
from tests.conftest import Regfd, free_port


def run(cwd: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m regfd.cli` without REGFD_REDIS_URL, so only the config file decides which Redis it uses."""
    env = {k: v for k, v in os.environ.items() if k != "REGFD_REDIS_URL"}
    env["REGFD_CONFIG"] = str(config)
    return subprocess.run([sys.executable, "-m", "regfd.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def redis_pids_under(path: Path) -> list[int]:
    """Pids of redis-servers whose command line names `path`, to see who started or stopped one."""
    out = subprocess.run(["pgrep", "-f", f"redis-server.*{path}"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_private_redis_is_started_persisted_and_stopped(tmp_path: Path) -> None:
    config = tmp_path / "regfd.toml"
    config.write_text('internal_domains = ["allient.com"]\nredis_url = ""\nstate_dir = "state"\n')
    r = run(tmp_path, config, "registry", "add", "bank.com", "--category", "analyst")
    assert r.returncode == 0, r.stderr
    state = tmp_path / "state" / "redis"
    assert (state / "appendonlydir").is_dir()  # append-only persistence under the state directory
    assert oct(state.stat().st_mode & 0o777) == "0o700"
    assert redis_pids_under(state) == []  # the command stopped the server it started
    r = run(tmp_path, config, "registry", "list", "--json")  # a new server, same data
    assert r.returncode == 0, r.stderr
    assert [e["pattern"] for e in json.loads(r.stdout)] == ["bank.com"]
    assert redis_pids_under(state) == []


def test_private_redis_already_running_is_reused_not_stopped(tmp_path: Path) -> None:
    from regfd.store.private_redis import PrivateRedis

    config = tmp_path / "regfd.toml"
    config.write_text('redis_url = ""\nstate_dir = "state"\n')
    server = PrivateRedis(tmp_path / "state")
    assert server.ensure_running() is True
    try:
        assert run(tmp_path, config, "registry", "add", "bank.com", "--category", "analyst").returncode == 0
        assert server.answering()  # the CLI did not stop a server it did not start
        assert redis.Redis(unix_socket_path=str(server.socket)).hlen("regfd:registry") == 1
    finally:
        server.stop()
    assert not server.answering()


def stale_socket(path: Path) -> None:
    """The socket file a SIGKILLed redis-server leaves: bound once, nobody listening any more."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))
    assert path.exists()


def test_a_stale_socket_is_detected_in_milliseconds_and_start_up_is_fast(tmp_path: Path) -> None:
    """A dead server's socket file: no client retries (they took ~4 s a call, twice), just a refused connect."""
    from regfd.store.private_redis import PrivateRedis

    server = PrivateRedis(tmp_path / "state")
    stale_socket(server.socket)
    t0 = time.monotonic()
    assert not server.answering()
    detect = time.monotonic() - t0
    t0 = time.monotonic()
    assert server.ensure_running() is True  # start-up over the stale file: detect it, remove it, start
    start_up = time.monotonic() - t0
    try:
        assert server.answering()
        assert redis.Redis(unix_socket_path=str(server.socket)).ping()
    finally:
        server.stop()
    print(f"stale socket: detected in {detect * 1000:.1f} ms, start-up {start_up * 1000:.0f} ms")
    assert detect < 0.25, f"a dead socket took {detect:.2f} s to detect"
    assert start_up < 1.5, f"start-up over a stale socket took {start_up:.2f} s"


OWNER = """
import sys, time
from pathlib import Path
from regfd.store.private_redis import PrivateRedis
assert PrivateRedis(Path(sys.argv[1])).ensure_running()
print("up", flush=True)
time.sleep(600)
"""


def orphaned_private_redis(state: Path) -> int:
    """Start the private server from a process that is then SIGKILLed (as a killed regfd); the server's pid."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(state)], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parent.parent)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "up"
        [pid] = redis_pids_under(state / "redis")
    finally:
        owner.kill()
        owner.wait(10)
    assert redis.Redis(unix_socket_path=str(state / "redis" / "redis.sock")).ping()  # it outlived its owner
    return pid


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_a_server_whose_owner_died_is_adopted_and_stopped(tmp_path: Path) -> None:
    """regfd SIGKILLed leaves its redis-server running; the next regfd adopts it and stops it on exit."""
    config = tmp_path / "regfd.toml"
    config.write_text('internal_domains = ["allient.com"]\nredis_url = ""\nstate_dir = "state"\n')
    state = tmp_path / "state"
    orphaned_private_redis(state)
    r = run(tmp_path, config, "registry", "add", "bank.com", "--category", "analyst")  # the next regfd
    assert r.returncode == 0, r.stderr
    assert wait_for(lambda: redis_pids_under(state / "redis") == [], 10), "the orphan is still running"
    assert not (state / "redis" / "owner.json").exists()
    r = run(tmp_path, config, "registry", "list", "--json")  # the data survived: adopted, not discarded
    assert r.returncode == 0, r.stderr
    assert [e["pattern"] for e in json.loads(r.stdout)] == ["bank.com"]
    assert redis_pids_under(state / "redis") == []


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_a_server_whose_owner_lives_is_reused_and_left_running(tmp_path: Path) -> None:
    """Adoption needs a dead owner: a live owner's server (a running milter's) is reused, not stopped."""
    from regfd.store.private_redis import PrivateRedis

    state = tmp_path / "state"
    owner = PrivateRedis(state)
    assert owner.ensure_running() is True
    try:
        [pid] = redis_pids_under(state / "redis")
        assert json.loads(owner.owner_file.read_text())["server"] == pid
        other = PrivateRedis(state)
        assert other.ensure_running() is False  # this process owns it and lives
        other.stop()
        assert owner.answering()
    finally:
        owner.stop()
    assert redis_pids_under(state / "redis") == [] and not owner.owner_file.exists()


def test_a_change_applies_on_every_host_at_once(regfd: Regfd) -> None:
    """Two MTA hosts = two independent clients; no cache, so the next message sees the change."""
    host_a = RedisStore(client_from_url(regfd.redis_url), regfd.prefix)
    host_b = RedisStore(client_from_url(regfd.redis_url), regfd.prefix)
    assert host_b.snapshot("bob@allient.com", ["ana@bank.com"]).registry == {}
    host_a.registry_add(RegistryEntry("bank.com", "analyst"), "t")
    assert "bank.com" in host_b.snapshot("bob@allient.com", ["ana@bank.com"]).registry


def wait_for(predicate, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    """Poll `predicate` until true or `timeout`; Redis and socket errors count as not yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.1)
    return False


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_sentinel_url(tmp_path: Path) -> None:
    """A real master and a real Sentinel on loopback; regfd finds the master through Sentinel."""
    master_port, sentinel_port = free_port(), free_port()
    procs = []
    try:
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(master_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        assert wait_for(lambda: redis.Redis(port=master_port).ping())
        conf = tmp_path / "sentinel.conf"
        conf.write_text(f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                        f"sentinel monitor regfdmaster 127.0.0.1 {master_port} 1\n")
        procs.append(subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        assert wait_for(lambda: redis.Redis(port=sentinel_port).ping())
        url = f"redis+sentinel://127.0.0.1:{sentinel_port}/regfdmaster"
        store = RedisStore(client_from_url(url), "s:")
        assert wait_for(lambda: store.r.ping())
        store.registry_add(RegistryEntry("bank.com", "analyst"), "t")
        assert redis.Redis(port=master_port).hexists("s:registry", "bank.com")  # written to the master
        assert "bank.com" in store.snapshot("bob@allient.com", ["ana@bank.com"]).registry
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
