"""The built-in default store: a private redis-server under the state directory.

When no Redis URL is configured regfd runs its own redis-server on a unix
socket (mode 0700 directory, append-only persistence) so a new user needs
nothing but the package. Whoever starts it stops it; a server already
answering on the socket is reused, never stopped by a process that did not
start it. A file lock serialises concurrent starts (milter and CLI).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from pathlib import Path

import redis

from regfd.errors import StoreUnavailable


class PrivateRedis:
    """The redis-server regfd runs for itself when no redis_url is configured (see the module docstring)."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = (state_dir / "redis").resolve()
        self.socket = self.dir / "redis.sock"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The socket URL, valid whether or not the server is running yet."""
        return f"unix://{self.socket}"

    def answering(self) -> bool:
        """Whether a server, started by anyone, answers PING on the socket; never raises."""
        if not self.socket.exists():
            return False
        try:
            client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1)
            ok = bool(client.ping())
            client.close()
            return ok
        except (redis.RedisError, OSError):
            return False

    def ensure_running(self, timeout: float = 10.0) -> bool:
        """Start the server unless one answers already. True when this call started it."""
        if self.answering():
            return False
        fallback = "/usr/bin/redis-server"
        binary = shutil.which("redis-server") or (fallback if os.path.exists(fallback) else None)
        if binary is None:
            raise StoreUnavailable(
                "no redis_url is configured and redis-server is not installed "
                "(install it: apt-get install redis-server)"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        with open(self.dir / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.answering():
                return False
            if self.socket.exists():
                self.socket.unlink()
            args = [
                binary, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--daemonize", "no", "--logfile", str(self.dir / "redis.log"),
            ]
            self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise StoreUnavailable(f"private redis-server exited at start; see {self.dir / 'redis.log'}")
                if self.answering():
                    return True
                time.sleep(0.02)
            self.stop()
            raise StoreUnavailable(f"private redis-server did not answer within {timeout:.0f}s")

    def stop(self) -> None:
        """Stop the server if this object started it (SIGTERM: redis fsyncs the AOF and exits)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
