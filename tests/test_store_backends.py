"""The built-in private redis-server, Sentinel URLs, and changes seen by every host at once."""

from __future__ import annotations

import json
import os
import shutil
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
