"""Shared fixtures: a private redis-server and a `regfd` runner.

Each test session (each xdist worker) starts its own redis-server on a unix
socket in a temp dir and stops it at the end; each test gets its own key
prefix, so tests never see each other's data and nothing is ever flushed.
Never a Redis on 6379.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

REPO = Path(__file__).resolve().parent.parent

# The private Postfix, the SMTP sink and the milter process (tests/mta.py),
# registered once here so every module can use its fixtures.
pytest_plugins = ["tests.mta"]


def free_port() -> int:
    """A free TCP port on loopback (tests only ever listen on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    """A throwaway redis-server on a unix socket, without persistence, for the whole test session."""

    socket: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """The URL regfd's config and REGFD_REDIS_URL take."""
        return f"unix://{self.socket}"

    def client(self) -> redis.Redis:
        """A fresh client; the caller closes it."""
        return redis.Redis(unix_socket_path=str(self.socket))

    def alive(self) -> bool:
        """Whether the process is still running (not whether it answers)."""
        return self.proc.poll() is None


def start_redis(directory: Path) -> RedisServer:
    """Start a server in `directory` and wait (up to 10 s) until it answers PING."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    directory.mkdir(parents=True, exist_ok=True)
    sock = directory / "redis.sock"
    proc = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700", "--dir", str(directory),
         "--save", "", "--appendonly", "no", "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if sock.exists():
            try:
                if redis.Redis(unix_socket_path=str(sock)).ping():
                    return RedisServer(sock, proc)
            except redis.RedisError:
                pass
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError("test redis-server did not start")


def stop_redis(server: RedisServer) -> None:
    """SIGTERM and wait; a server that already exited is left alone."""
    if server.proc.poll() is None:
        server.proc.terminate()
        server.proc.wait(10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One server for the session; tests keep apart by key prefix, not by database."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    stop_redis(server)


@dataclass
class Result:
    """What one `regfd` run gave: exit status, stdout and stderr."""

    rc: int
    out: str
    err: str


BASE_CONFIG = """\
internal_domains = ["allient.com"]
corporate_secretary = ["corpsec@allient.com"]
redis_prefix = "{prefix}"
state_dir = "{state}"
policy_file = "{policy}"
lexicon_dir = "{lexicons}"
mode = "{mode}"
{top}
[smtp]
relay = "127.0.0.1:{smtp_port}"
sender = "regfd@allient.com"
"""


class Regfd:
    """Runs `regfd` in-process (fast) or as a subprocess (exact user experience)."""

    def __init__(self, tmp: Path, redis_url: str, prefix: str, mode: str = "enforce", smtp_port: int = 2525,
                 extra: str = "", top: str = "") -> None:
        self.tmp = tmp
        self.redis_url = redis_url
        self.prefix = prefix
        self.config = tmp / "regfd.toml"
        self.top = top
        self.write_config(mode=mode, smtp_port=smtp_port, extra=extra)

    def write_config(self, mode: str = "enforce", smtp_port: int = 2525, extra: str = "") -> None:
        """`extra` is appended after the [smtp] table (tables); `top` keys go before it."""
        self.config.write_text(BASE_CONFIG.format(
            prefix=self.prefix, state=self.tmp / "state", policy=REPO / "config" / "policy.toml",
            lexicons=REPO / "lexicons", mode=mode, smtp_port=smtp_port, top=self.top) + extra)

    @property
    def env(self) -> dict[str, str]:
        """What the command sees: the config file, the test Redis and a fixed audit actor."""
        return {"REGFD_CONFIG": str(self.config), "REGFD_REDIS_URL": self.redis_url, "REGFD_ACTOR": "tester"}

    def __call__(self, *args: str | os.PathLike[str]) -> Result:
        from regfd.cli import main

        out, err = io.StringIO(), io.StringIO()
        old = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    rc = main([str(a) for a in args])
                except SystemExit as exc:  # argparse usage errors
                    rc = int(exc.code or 0)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return Result(rc, out.getvalue(), err.getvalue())

    def subprocess(self, *args: str | os.PathLike[str], input: str | None = None, timeout: float = 60) -> Result:
        """Run `python -m regfd.cli` for real, when a test needs the exact process (exit codes, signals, stdin)."""
        env = {**os.environ, **self.env}
        p = subprocess.run([sys.executable, "-m", "regfd.cli", *map(str, args)], capture_output=True, text=True,
                           env=env, input=input, timeout=timeout, cwd=self.tmp)
        return Result(p.returncode, p.stdout, p.stderr)


@pytest.fixture
def regfd(redis_server: RedisServer, tmp_path: Path) -> Regfd:
    """A runner with its own key prefix and config under tmp_path, on the session's Redis."""
    return Regfd(tmp_path, redis_server.url, f"t{uuid.uuid4().hex[:12]}:")


@pytest.fixture
def store(regfd: Regfd):  # type: ignore[no-untyped-def]
    """A RedisStore over the same prefix as the `regfd` fixture, to look behind the CLI."""
    from regfd.store.client import client_from_url
    from regfd.store.redis_store import RedisStore

    s = RedisStore(client_from_url(regfd.redis_url), regfd.prefix)
    yield s
    s.r.close()
