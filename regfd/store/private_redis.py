"""The built-in default store: a private redis-server under the state directory.

When no Redis URL is configured regfd runs its own redis-server on a unix
socket (mode 0700 directory, append-only persistence) so a new user needs
nothing but the package. A file lock serialises concurrent starts (milter
and CLI).

The server is tied to the regfd process that owns it: `owner.json` next to
the socket names the owner (pid and start time) and the server's pid.
Whoever owns it stops it. A server already answering on the socket is
reused and left running while its owner lives (or when there is no owner
file: a server started by hand is never stopped by regfd); a server whose
owner is dead (a regfd that was SIGKILLed) is adopted by the next regfd to
start, which then stops it on exit like one it started itself.

Whether a server answers is decided with a raw connect and PING on the
socket, without a Redis client and its retries: a stale socket file left by
a dead server is detected in milliseconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from regfd.errors import StoreUnavailable

CONNECT_TIMEOUT = 0.2  # a unix socket connect is immediate, or refused at once when nobody listens
REPLY_TIMEOUT = 1.0  # a live server answers PING in well under a millisecond


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of process `pid` from /proc, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rpartition(")")[2].split()  # fields 3.. of proc(5); the name may hold spaces
    return (fields[0], fields[19]) if len(fields) > 19 else None


def process_alive(pid: int, start: str | None = None) -> bool:
    """Whether `pid` runs (a zombie does not) and, given `start`, is the process that started then."""
    if pid <= 0:
        return False
    if not Path("/proc/self/stat").exists():  # no procfs: signal 0 is all there is
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return start is None or stat[1] == start


def _start_time(pid: int) -> str | None:
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def _resp(*args: str) -> bytes:
    return b"".join([f"*{len(args)}\r\n".encode()] + [f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args])


class PrivateRedis:
    """The redis-server regfd runs for itself when no redis_url is configured (see the module docstring)."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = (state_dir / "redis").resolve()
        self.socket = self.dir / "redis.sock"
        self.owner_file = self.dir / "owner.json"
        self._proc: subprocess.Popen[bytes] | None = None
        self._adopted: tuple[int, str] | None = None  # (pid, start) of a server whose dead owner this replaced

    @property
    def url(self) -> str:
        """The socket URL, valid whether or not the server is running yet."""
        return f"unix://{self.socket}"

    # --- talking to the server without a client (no retries, millisecond failure on a dead socket)
    def _command(self, *args: str, timeout: float = REPLY_TIMEOUT) -> bytes | None:
        """Send one command on a fresh connection; its simple-string or bulk reply, None on any failure."""
        if not self.socket.exists():
            return None
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(CONNECT_TIMEOUT)
                s.connect(str(self.socket))
                s.settimeout(timeout)
                s.sendall(_resp(*args))
                buf = b""
                while b"\r\n" not in buf:
                    chunk = s.recv(4096)
                    if not chunk:
                        return None
                    buf += chunk
                head, _, rest = buf.partition(b"\r\n")
                if head[:1] == b"+":
                    return head[1:]
                if head[:1] != b"$" or not head[1:].lstrip(b"-").isdigit() or int(head[1:]) < 0:
                    return None  # an error (-LOADING, -NOAUTH ...) or a reply this never asks for
                size = int(head[1:])
                while len(rest) < size + 2:
                    chunk = s.recv(65536)
                    if not chunk:
                        return None
                    rest += chunk
                return rest[:size]
        except (OSError, ValueError):
            return None

    def answering(self) -> bool:
        """Whether a server, started by anyone, answers PING on the socket; never raises.

        A raw connect (refused at once on a stale socket file) and PING: no client, no retries.
        """
        return self._command("PING") == b"PONG"

    def server_pid(self) -> int | None:
        """The pid of the server answering on the socket (INFO server), or None."""
        info = self._command("INFO", "server")
        for line in (info or b"").decode(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key == "process_id" and value.strip().isdigit():
                return int(value.strip())
        return None

    # --- ownership
    def owner(self) -> dict[str, Any] | None:
        """The owner file's content ({"owner", "owner_start", "server"}), or None when absent or unreadable."""
        try:
            data = json.loads(self.owner_file.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _owner_alive(self) -> bool:
        """Whether the server on the socket has a living owner; without an owner file nobody may judge: yes."""
        data = self.owner()
        if data is None:
            return True
        try:
            pid, start = int(data["owner"]), data.get("owner_start")
        except (KeyError, TypeError, ValueError):
            return True
        return process_alive(pid, str(start) if start is not None else None)

    def _write_owner(self, server: int) -> None:
        me = os.getpid()
        tmp = self.owner_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"owner": me, "owner_start": _start_time(me), "server": server}))
        os.replace(tmp, self.owner_file)

    def _drop_owner(self, server: int) -> None:
        """Remove the owner file if it still names this process and `server` (a newer owner keeps theirs)."""
        data = self.owner() or {}
        if data.get("owner") == os.getpid() and data.get("server") == server:
            with contextlib.suppress(OSError):
                self.owner_file.unlink()

    # --- start, adopt, stop
    def ensure_running(self, timeout: float = 10.0) -> bool:
        """Start the server unless one answers already. True when this object now owns the server:
        it started it, or adopted one whose owning regfd is dead; either way `stop()` stops it."""
        if self.answering() and self._owner_alive():
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        with open(self.dir / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.answering():
                if self._owner_alive():
                    return False
                pid = self.server_pid()
                start = _start_time(pid) if pid is not None else None
                if pid is not None and start is not None:
                    self._write_owner(pid)
                    self._adopted = (pid, start)
                    return True
                # no pid we can see (another pid namespace?): not one we can stop; leave it be
                return False
            self._start(timeout)
            return True

    def _start(self, timeout: float) -> None:
        fallback = "/usr/bin/redis-server"
        binary = shutil.which("redis-server") or (fallback if os.path.exists(fallback) else None)
        if binary is None:
            raise StoreUnavailable(
                "no redis_url is configured and redis-server is not installed "
                "(install it: apt-get install redis-server)"
            )
        if self.socket.exists():
            self.socket.unlink()
        args = [
            binary, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
            "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "everysec",
            "--save", "", "--daemonize", "no", "--logfile", str(self.dir / "redis.log"),
        ]
        self._adopted = None
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
        self._write_owner(self._proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._drop_owner(self._proc.pid)
                raise StoreUnavailable(f"private redis-server exited at start; see {self.dir / 'redis.log'}")
            if self.answering():
                return
            time.sleep(0.02)
        self.stop()
        raise StoreUnavailable(f"private redis-server did not answer within {timeout:.0f}s")

    def stop(self) -> None:
        """Stop the server if this object owns it (started or adopted it): SIGTERM, redis fsyncs the AOF and exits."""
        proc, self._proc = self._proc, None
        adopted, self._adopted = self._adopted, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self._drop_owner(proc.pid)
        if adopted is not None:
            self._stop_adopted(*adopted)
            self._drop_owner(adopted[0])

    @staticmethod
    def _stop_adopted(pid: int, start: str) -> None:
        """SIGTERM an adopted server (not a child of ours: wait by polling), SIGKILL after 10 s."""
        if not process_alive(pid, start):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while process_alive(pid, start) and time.monotonic() < deadline:
            time.sleep(0.02)
        if process_alive(pid, start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
