"""Faults under load through a real Postfix: the load driver, the accountant and the faults themselves.

One module, imported by tests/test_faults.py (marker `faults`, CI size) and
by bench/bench_faults.py (full size, `--messages 10000`), so the suite and
the benchmark run the very same driver, faults and accounting. It lives in
tests/ because it is built on tests/mta.py (the private Postfix) and
tests/conftest.py (the `Regfd` runner), which bench/bench_mta.py already
imports the same way; it is not part of the regfd package (no user runs it).

- `FaultMta`: a private Postfix whose `unix` and `inet` smtpd listeners use a
  regfd milter on a unix socket and on loopback TCP (and `lossy` through a
  `ReplyDropper` proxy), relaying to a `FaultSink` (aiosmtpd) that can refuse
  (4xx) or accept the data and then hang. Short retry and timeout settings,
  so a deferred message is retried in seconds rather than minutes.
- `FaultStack`: one run's own redis-server (append-only persistence, as the
  private Redis regfd starts itself; or a `SentinelCluster`) and
  `regfd milter`, on one listener.
- `drive`: sends N messages with concurrency C, 90 % to ordinary recipients
  and 10 % to a Specified Person (half of them with material content, which
  is held), each with a unique Message-ID, recording every SMTP reply; a
  message refused with 4xx is retried after the fault, as a client would.
- `account`: for every 250, exactly one delivery at the sink or one entry in
  the hold queue (else `lost` or `duplicated`), and exactly one record per
  message to a Specified Person (its queue id in the record stream).
- `FAULTS` (and `FAILOVER`): what is injected, and for how long, while the load runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.conftest import Regfd, free_port
from tests.mta import POSTFIX_HOSTNAME, MilterProcess, PostfixInstance, make_mta_dir, queue_id_of, wait_until

MATERIAL = "Between us, we will miss the quarter and the guidance will be lowered next week."
ORDINARY = "Shall we have lunch on Friday? The usual place at noon works for me."
SPECIFIED_DOMAIN = "bank.com"
LOAD_MID_DOMAIN = "load.regfd.test"  # the Message-IDs of the load (notifications have others)
DECISION_TIMEOUT = 2.0  # the milter's decision_timeout in these runs: a frozen Redis is noticed quickly
DRAIN_TIMEOUT = 5.0  # the milter's drain_timeout in these runs

# Retries and timeouts in seconds, not minutes: a deferred message is retried
# while the run waits, and a hung relay is given up on quickly.
FAULT_MAIN_CF = """
minimal_backoff_time = 1s
maximal_backoff_time = 2s
queue_run_delay = 1s
smtp_connect_timeout = 3s
smtp_helo_timeout = 3s
smtp_data_init_timeout = 3s
smtp_data_xfer_timeout = 3s
smtp_data_done_timeout = 3s
milter_connect_timeout = 5s
milter_command_timeout = 15s
milter_content_timeout = 20s
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
"""


# ----------------------------------------------------------------------------- the relay
class FaultSink:
    """aiosmtpd on loopback counting deliveries per Message-ID; `mode` makes it refuse or hang.

    ok: 250 and the message counts as delivered. refuse: 451 at the end of
    DATA (Postfix defers and retries). hang: the data is taken and no reply
    comes until the mode changes (Postfix's smtp_data_done_timeout gives up
    first); a message never acknowledged is not counted, as a real relay
    that never said 250 has not taken responsibility for it.
    """

    MID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.mode = "ok"
        self.delivered: Counter[str] = Counter()
        self.others: list[bytes] = []  # notifications: anything not one of the load's messages
        self.refused = 0
        self.hung = 0
        self.lock = threading.Lock()
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                if sink.mode == "refuse":
                    sink.refused += 1
                    return "451 4.3.0 relay refusing (fault injection)"
                if sink.mode == "hang":
                    sink.hung += 1
                    while sink.mode == "hang":
                        await asyncio.sleep(0.05)
                    return "451 4.3.0 relay was hung (fault injection)"
                data = envelope.original_content or envelope.content
                m = FaultSink.MID.search(data[:8192])
                with sink.lock:
                    if m and m.group(1).endswith(LOAD_MID_DOMAIN.encode() + b">"):
                        sink.delivered[m.group(1).decode()] += 1
                    else:
                        sink.others.append(data)
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        """Stop the aiosmtpd thread (a hung handler is released first)."""
        self.mode = "ok"
        self.controller.stop()


# ----------------------------------------------------------------------------- Postfix
class FaultPostfix(PostfixInstance):
    """tests/mta.py's PostfixInstance with FAULT_MAIN_CF appended to main.cf."""

    def write(self) -> None:
        """The base configuration, then the short retries and timeouts."""
        super().write()
        with open(self.config_dir / "main.cf", "a") as f:
            f.write(FAULT_MAIN_CF)


@dataclass
class FaultMta:
    """A private Postfix and its relay; `unix`, `inet` and `lossy` listeners each expect a regfd milter.

    `lossy`'s milter is reached through a ReplyDropper (on `lossy_port`) that the run starts in front
    of the milter it runs on `backend_port`.
    """

    base: Path
    sink: FaultSink
    postfix: FaultPostfix
    inet_port: int
    lossy_port: int
    backend_port: int

    @classmethod
    def start(cls) -> FaultMta:
        """Postfix on loopback with `unix`, `inet` and `lossy` listeners (their milters start per run)."""
        base = make_mta_dir("regfd-faults-")
        sink = FaultSink()
        inet_port, lossy_port = free_port(), free_port()
        pf = FaultPostfix(base / "postfix", sink.port,
                          {"main": "", "unix": base / "milter.sock", "inet": f"inet:127.0.0.1:{inet_port}",
                           "lossy": f"inet:127.0.0.1:{lossy_port}"})
        pf.start()
        return cls(base, sink, pf, inet_port, lossy_port, free_port())

    def milter_socket(self, kind: str) -> Path | str:
        """What `MilterProcess.start` takes for the listener `kind` (unix | inet | lossy)."""
        if kind == "unix":
            return self.base / "milter.sock"
        return f"inet:{self.backend_port if kind == 'lossy' else self.inet_port}@127.0.0.1"

    def stop(self) -> None:
        """Stop Postfix and the sink; REGFD_KEEP_MTA=1 keeps the directory (logs, queue)."""
        self.postfix.stop()
        self.sink.stop()
        if not os.environ.get("REGFD_KEEP_MTA"):
            shutil.rmtree(self.base, ignore_errors=True)

    def outstanding(self) -> int:
        """Messages in the queue that are not held (incoming, active, deferred)."""
        return sum(1 for q in self.postfix.queue() if q.get("queue_name") != "hold")


class ReplyDropper:
    """A milter-protocol proxy between Postfix and regfd that can lose regfd's answer at end of message.

    Armed with `arm(n)`, it closes both connections instead of forwarding the
    first packet regfd sends after the MTA's end of message (SMFIC_BODYEOB),
    n times. regfd records its decision before it sends any action, so this is
    a crash between the record's commit and the MTA's reply, made exact:
    Postfix answers 451 (milter_default_action = tempfail) and the client retries.
    """

    def __init__(self, port: int, backend: int) -> None:
        self.backend = backend
        self.armed = 0
        self.dropped = 0
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", port), backlog=128)
        threading.Thread(target=self._accept, name="reply-dropper", daemon=True).start()

    def arm(self, n: int) -> None:
        """Lose the next `n` end-of-message answers."""
        with self.lock:
            self.armed += n

    def _accept(self) -> None:
        while True:
            try:
                mta, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._pair, args=(mta,), daemon=True).start()

    def _pair(self, mta: socket.socket) -> None:
        try:
            milter = socket.create_connection(("127.0.0.1", self.backend), timeout=10)
            milter.settimeout(None)
        except OSError:
            mta.close()
            return
        eom = threading.Event()
        up = threading.Thread(target=self._up, args=(mta, milter, eom), daemon=True)
        up.start()
        self._down(milter, mta, eom)
        up.join(5)

    @staticmethod
    def _close(*socks: socket.socket) -> None:
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _up(self, mta: socket.socket, milter: socket.socket, eom: threading.Event) -> None:
        """MTA → milter, watching for the end-of-message command."""
        buf = b""
        try:
            while data := mta.recv(65536):
                buf += data
                while len(buf) >= 5 and len(buf) >= 4 + int.from_bytes(buf[:4], "big"):
                    if buf[4:5] == b"E":
                        eom.set()
                    buf = buf[4 + int.from_bytes(buf[:4], "big"):]
                milter.sendall(data)
        except OSError:
            pass
        self._close(mta, milter)

    def _down(self, milter: socket.socket, mta: socket.socket, eom: threading.Event) -> None:
        """Milter → MTA; the first answer after an end of message is lost while armed."""
        try:
            while data := milter.recv(65536):
                if eom.is_set():
                    eom.clear()
                    with self.lock:
                        drop = self.armed > 0
                        if drop:
                            self.armed -= 1
                            self.dropped += 1
                    if drop:
                        break
                mta.sendall(data)
        except OSError:
            pass
        self._close(mta, milter)

    def stop(self) -> None:
        """Stop accepting (connections in progress end with their peers); shutdown first, as a close
        alone leaves the port bound while the accepting thread is blocked in accept()."""
        self._close(self.server)


# ----------------------------------------------------------------------------- Redis
@dataclass
class PersistentRedis:
    """redis-server with append-only persistence (fsync every second, as regfd's private one), restartable."""

    socket: Path
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0  # also on 127.0.0.1:port (Sentinel monitors TCP addresses only)
    extra: tuple[str, ...] = ()  # more redis-server arguments (--replicaof ...)

    @property
    def url(self) -> str:
        """The URL regfd's configuration takes."""
        return f"unix://{self.socket}"

    def client(self) -> redis.Redis:
        """A fresh client (short timeouts); the caller closes it."""
        return redis.Redis(unix_socket_path=str(self.socket), socket_timeout=5)

    def start(self, timeout: float = 15.0) -> None:
        """Start (or restart, on the same files) and wait until it answers PING."""
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--unixsocket", str(self.socket),
             "--unixsocketperm", "700", "--dir", str(self.data_dir), "--appendonly", "yes",
             "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
             "--logfile", str(self.socket.with_suffix(".log")), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def answers() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                with self.client() as c:
                    return bool(c.ping())
            except (redis.RedisError, OSError):
                return False

        wait_until(answers, timeout, 0.02, what="redis-server to answer")

    def signal(self, sig: int) -> None:
        """Send `sig` to the server (SIGKILL, SIGSTOP, SIGCONT)."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGCONT (in case it is frozen), SIGTERM and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class TinyFilesystem:
    """A small tmpfs for Redis's data directory, to fill up on purpose (needs root: mount)."""

    def __init__(self, path: Path, size_mb: int) -> None:
        self.path = path
        self.size_mb = size_mb
        self.filler = path / "filler"

    @staticmethod
    def why_not() -> str:
        """Empty when mounting a tmpfs works here, else why not."""
        if os.geteuid() != 0:
            return "mounting a tmpfs needs root"
        probe = Path(make_mta_dir("regfd-tmpfs-probe-"))
        try:
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
                               capture_output=True, text=True)
            if r.returncode != 0:
                return f"mount -t tmpfs failed: {r.stderr.strip()}"
            subprocess.run(["umount", str(probe)], check=False)
            return ""
        finally:
            shutil.rmtree(probe, ignore_errors=True)

    def mount(self) -> None:
        """Mount it (the directory is created)."""
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m", "tmpfs", str(self.path)], check=True)

    def fill(self) -> None:
        """Write a file until the filesystem is full (ENOSPC)."""
        chunk = b"\0" * (1 << 16)
        with open(self.filler, "wb") as f, contextlib.suppress(OSError):
            while True:
                f.write(chunk)
                f.flush()

    def free(self) -> None:
        """Remove the filler: room again."""
        with contextlib.suppress(FileNotFoundError):
            self.filler.unlink()

    def umount(self) -> None:
        """Unmount (lazily, should something still hold a file there)."""
        subprocess.run(["umount", "-l", str(self.path)], check=False)


SENTINEL_SERVICE = "regfd"


class SentinelCluster:
    """A Redis primary, `replicas` replicas (one by default) and three redis-sentinel processes on loopback
    (quorum 2).

    `redis-server --sentinel` is the same binary as the Debian redis-sentinel
    package's. Sentinel marks the primary down after 1 s without a reply and
    fails over to the replica; the killed primary, restarted, comes back as
    a replica of the new one (Sentinel reconfigures it).
    """

    def __init__(self, base: Path, replicas: int = 1) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        p0 = free_port()
        self.replicas = replicas
        self.servers = [PersistentRedis(base / "r0.sock", base / "r0", port=p0)]
        self.servers += [PersistentRedis(base / f"r{i}.sock", base / f"r{i}", port=free_port(),
                                         extra=("--replicaof", "127.0.0.1", str(p0))) for i in range(1, replicas + 1)]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []
        self.killed: PersistentRedis | None = None

    @property
    def url(self) -> str:
        """regfd's Sentinel URL (regfd/store/client.py)."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SENTINEL_SERVICE}"

    def start(self) -> None:
        """Primary, replica, then the sentinels; waits until they see the replica (in sync) and each other."""
        for server in self.servers:
            server.start()
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        for port in self.sentinel_ports:
            conf = self.base / f"sentinel-{port}.conf"
            s = SENTINEL_SERVICE
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {self.base}\n"
                            f"logfile {self.base}/sentinel-{port}.log\n"
                            f"sentinel monitor {s} 127.0.0.1 {self.servers[0].port} 2\n"
                            f"sentinel down-after-milliseconds {s} 1000\nsentinel failover-timeout {s} 10000\n"
                            f"sentinel parallel-syncs {s} 1\n")
            self.sentinels.append(subprocess.Popen([binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL))
        wait_until(self.ready, 60, 0.2, what="the sentinels to see the replica and each other")

    def sentinel(self, port: int) -> redis.Redis:
        """A client of one sentinel; the caller closes it."""
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True)

    def ready(self) -> bool:
        """Every sentinel knows the replica and the two other sentinels, and the replica is in sync."""
        try:
            for port in self.sentinel_ports:
                with self.sentinel(port) as c:
                    m = c.sentinel_master(SENTINEL_SERVICE)
                    if int(m["num-slaves"]) < self.replicas or int(m["num-other-sentinels"]) < 2:
                        return False
            for server in self.servers[1:]:
                with server.client() as c:
                    if c.info("replication").get("master_link_status") != "up":
                        return False
            return True
        except (redis.RedisError, OSError, KeyError):
            return False

    def primary_port(self) -> int:
        """The primary's port as the first answering sentinel says, 0 if none answers."""
        for port in self.sentinel_ports:
            try:
                with self.sentinel(port) as c:
                    addr = c.sentinel_get_master_addr_by_name(SENTINEL_SERVICE)
                    if addr:
                        return int(addr[1])
            except (redis.RedisError, OSError):
                continue
        return 0

    def kill_primary(self) -> PersistentRedis:
        """SIGKILL the current primary (restarted later by `restart_killed`)."""
        port = self.primary_port()
        self.killed = next(s for s in self.servers if s.port == port)
        self.killed.signal(signal.SIGKILL)
        return self.killed

    def wait_failover(self, timeout: float = 60.0) -> int:
        """Wait until the sentinels name another primary; returns its port."""
        assert self.killed is not None
        old = self.killed.port
        port: int = wait_until(lambda: (p := self.primary_port()) != old and p, timeout, 0.05,
                               what="the sentinels to promote the replica")
        return port

    def restart_killed(self) -> None:
        """The killed primary comes back on its AOF; Sentinel turns it into a replica of the new primary."""
        assert self.killed is not None
        self.killed.start()

    def stop(self) -> None:
        """Sentinels, then the servers."""
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        for server in self.servers:
            server.stop()


# ----------------------------------------------------------------------------- one run's regfd
@dataclass
class FaultStack:
    """One run: its own Redis (AOF), directory and `regfd milter` on one listener of the FaultMta."""

    mta: FaultMta
    kind: str  # unix | inet: the listener, hence the milter socket
    engine: str
    base: Path
    redis: PersistentRedis | SentinelCluster
    runner: Regfd
    tinyfs: TinyFilesystem | None = None
    proxy: ReplyDropper | None = None  # for the `lossy` listener
    milter: MilterProcess | None = None
    starts: int = 0
    events: list[tuple[float, str]] = field(default_factory=list)

    @classmethod
    def start(cls, mta: FaultMta, kind: str, engine: str = "libmilter", tiny_disk_mb: int = 0,
              sentinel: bool = False, wait_replicas: int = 0, drain_timeout: float = DRAIN_TIMEOUT,
              replicas: int = 1) -> FaultStack:
        """A fresh Redis (data on a `tiny_disk_mb` tmpfs when given; or a Sentinel cluster), the directory,
        and the milter listening; `wait_replicas` is its redis_wait_replicas."""
        base = make_mta_dir("regfd-fault-run-")
        tinyfs = TinyFilesystem(base / "redis-data", tiny_disk_mb) if tiny_disk_mb else None
        if tinyfs is not None:
            tinyfs.mount()
        server: PersistentRedis | SentinelCluster
        server = SentinelCluster(base / "sentinel", replicas) if sentinel else PersistentRedis(base / "redis.sock",
                                                                                      base / "redis-data")
        try:
            server.start()
        except BaseException:
            server.stop()
            if tinyfs is not None:
                tinyfs.umount()
            raise
        (base / "regfd").mkdir()
        runner = Regfd(base / "regfd", server.url, f"f{uuid.uuid4().hex[:8]}:", smtp_port=mta.sink.port,
                       top=f'mta_host = "{POSTFIX_HOSTNAME}"\nredis_wait_replicas = {wait_replicas}',
                       extra=(f"[milter]\ndecision_timeout = {DECISION_TIMEOUT}\ndrain_timeout = {drain_timeout}\n"
                              f'[postfix]\nconfig_directory = "{mta.postfix.config_dir}"\n'))
        stack = cls(mta, kind, engine, base, server, runner, tinyfs)
        try:
            if kind == "lossy":
                stack.proxy = ReplyDropper(mta.lossy_port, mta.backend_port)
            r = runner("registry", "add", SPECIFIED_DOMAIN, "--category", "analyst")
            assert r.rc == 0, r.err
            stack.start_milter()
        except BaseException:
            stack.stop()  # its Redis, a milter that did not get ready, the tiny filesystem
            raise
        return stack

    @property
    def port(self) -> int:
        """The smtpd port whose milter is this run's."""
        return self.mta.postfix.ports[self.kind]

    def start_milter(self) -> None:
        """Start `regfd milter` (a fresh log per start, so readiness is this start's); one that does not get
        ready is killed, not left holding the socket."""
        self.starts += 1
        try:
            self.milter = MilterProcess.start(self.runner.config, self.mta.milter_socket(self.kind), self.runner.env,
                                              self.base / f"milter-{self.starts}.log", engine=self.engine, timeout=60)
        except (RuntimeError, TimeoutError):
            for pid in _pids_with(str(self.runner.config)):  # this run's own config file: no other process has it
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            raise

    def note(self, what: str) -> None:
        """A timestamped event of the fault's timeline."""
        self.events.append((time.monotonic(), what))

    def records(self) -> list[dict[str, Any]]:
        """Every record in the stream (the store's own reader)."""
        from regfd.store.client import client_from_url
        from regfd.store.records_store import RecordsStore
        from regfd.store.redis_store import RedisStore

        store = RedisStore(client_from_url(self.redis.url), self.runner.prefix)
        try:
            return RecordsStore(store).list()
        finally:
            store.r.close()

    def stop(self) -> None:
        """Stop the milter and Redis, unmount the tiny filesystem; keep the directory with REGFD_KEEP_MTA=1."""
        if self.proxy is not None:
            self.proxy.stop()
        if self.milter is not None:
            self.milter.stop()
        self.redis.stop()
        if self.tinyfs is not None:
            self.tinyfs.free()
            self.tinyfs.umount()
        if not os.environ.get("REGFD_KEEP_MTA"):
            shutil.rmtree(self.base, ignore_errors=True)


def _pids_with(argument: str) -> list[int]:
    """The processes with `argument` on their command line (a run's own temporary config path)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if argument.encode() in (d / "cmdline").read_bytes().split(b"\0"):
                    out.append(int(d.name))
            except OSError:
                continue
    return out


# ----------------------------------------------------------------------------- the faults
@dataclass(frozen=True)
class Fault:
    """Something that goes wrong while the load runs: `inject`, wait `hold` seconds, `recover`."""

    name: str
    what: str
    inject: Callable[[FaultStack], None]
    recover: Callable[[FaultStack], None]
    hold: float = 2.0
    tiny_disk_mb: int = 0
    listener: str = ""  # the only listener it runs on (lossy), if not every one


def _none(stack: FaultStack) -> None:
    return None


def _server(stack: FaultStack) -> PersistentRedis:
    assert isinstance(stack.redis, PersistentRedis), "a single-server fault"
    return stack.redis


def _cluster(stack: FaultStack) -> SentinelCluster:
    assert isinstance(stack.redis, SentinelCluster), "a Sentinel fault"
    return stack.redis


def _redis_kill(stack: FaultStack) -> None:
    _server(stack).signal(signal.SIGKILL)


def _redis_restart(stack: FaultStack) -> None:
    _server(stack).start()


def _redis_freeze(stack: FaultStack) -> None:
    _server(stack).signal(signal.SIGSTOP)


def _redis_thaw(stack: FaultStack) -> None:
    _server(stack).signal(signal.SIGCONT)


def _primary_kill(stack: FaultStack) -> None:
    killed = _cluster(stack).kill_primary()
    stack.note(f"primary on port {killed.port} killed")


def _failover(stack: FaultStack) -> None:
    """Wait for the new primary (noted on the timeline), then bring the old one back as a replica."""
    cluster = _cluster(stack)
    port = cluster.wait_failover()
    stack.note(f"sentinels name the primary on port {port}")
    cluster.restart_killed()


def _milter_kill(stack: FaultStack) -> None:
    assert stack.milter is not None
    stack.milter.proc.kill()
    stack.milter.proc.wait(10)


def _milter_restart(stack: FaultStack) -> None:
    stack.start_milter()


def _milter_sigterm(stack: FaultStack) -> None:
    """SIGTERM, then wait for the drain to end; the exit status and how long it took go to the timeline."""
    assert stack.milter is not None
    t = time.monotonic()
    stack.milter.proc.terminate()
    rc = stack.milter.proc.wait(DRAIN_TIMEOUT + 30)
    stack.note(f"milter exited {rc} after {time.monotonic() - t:.2f}s of drain")


def _sink(mode: str) -> Callable[[FaultStack], None]:
    def set_mode(stack: FaultStack) -> None:
        stack.mta.sink.mode = mode

    return set_mode


REPLIES_LOST = 10  # end-of-message answers the reply-lost fault loses


def _lose_replies(stack: FaultStack) -> None:
    assert stack.proxy is not None, "the reply-lost fault runs on the lossy listener"
    stack.proxy.arm(REPLIES_LOST)


def _replies_lost(stack: FaultStack) -> None:
    """Wait until the armed answers were all lost (the load keeps sending meanwhile)."""
    proxy = stack.proxy
    assert proxy is not None
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: proxy.armed == 0, 60, 0.05, what="the armed answers to be lost")
    stack.note(f"{proxy.dropped} end-of-message answers lost after the record's commit")


def _disk_fill(stack: FaultStack) -> None:
    assert stack.tinyfs is not None
    stack.tinyfs.fill()


def _disk_free(stack: FaultStack) -> None:
    assert stack.tinyfs is not None
    stack.tinyfs.free()
    # Redis retries the failed AOF write about once a second and refuses commands (MISCONF) until one
    # succeeds: the fault ends when Redis has recovered, not when the disk has room.
    assert isinstance(stack.redis, PersistentRedis)  # the disk fault runs on one redis-server, not Sentinel
    client = stack.redis.client()
    try:
        wait_until(lambda: client.info("persistence").get("aof_last_write_status") == "ok", 30, 0.1,
                   what="Redis to write its AOF again")
    finally:
        client.close()


FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("none", "no fault (the baseline)", _none, _none, 0.0),
    Fault("redis-kill", "redis-server SIGKILL, restarted 1 s later on its AOF", _redis_kill, _redis_restart, 1.0),
    Fault("redis-freeze", f"redis-server SIGSTOP for {DECISION_TIMEOUT + 2:g} s (past the decision timeout), "
          "then SIGCONT", _redis_freeze, _redis_thaw, DECISION_TIMEOUT + 2),
    Fault("milter-kill", "regfd milter SIGKILL, restarted 0.5 s later", _milter_kill, _milter_restart, 0.5),
    Fault("milter-drain", "regfd milter SIGTERM (graceful drain), restarted once it exited", _milter_sigterm,
          _milter_restart, 0.0),
    Fault("relay-refuse", "the relay answers 451 for 3 s, then accepts", _sink("refuse"), _sink("ok"), 3.0),
    Fault("relay-hang", "the relay takes the data and never answers for 5 s (Postfix gives up after 3 s)",
          _sink("hang"), _sink("ok"), 5.0),
    Fault("disk-full", "Redis's AOF filesystem full for 3 s (a 64 MB tmpfs filled to the last byte)",
          _disk_fill, _disk_free, 3.0, tiny_disk_mb=64),
    Fault("reply-lost", f"regfd's answer at end of message lost after its record's commit, {REPLIES_LOST} times "
          "(a proxy closes the connection: Postfix answers 451)", _lose_replies, _replies_lost, 0.0,
          listener="lossy"),
)}

# Run on a FaultStack started with sentinel=True only.
FAILOVER = Fault("primary-kill", "Sentinel: the primary SIGKILLed; the replica promoted; the old primary "
                 "restarted as a replica", _primary_kill, _failover, 0.0)


# ----------------------------------------------------------------------------- the load
@dataclass
class Message:
    """One message of the run and every reply it got (one per attempt)."""

    index: int
    kind: str  # ordinary | specified-held | specified-accepted
    sender: str
    rcpt: str
    message_id: str
    replies: list[tuple[int, str]] = field(default_factory=list)
    at: list[float] = field(default_factory=list)  # when each reply came (time.monotonic)

    @property
    def accepted(self) -> bool:
        """Its last attempt got a 250."""
        return bool(self.replies) and self.replies[-1][0] == 250

    @property
    def queue_id(self) -> str:
        """Postfix's queue id from the 250 ("queued as ..."), or ""."""
        return queue_id_of(self.replies[-1][1]) if self.accepted else ""

    @property
    def specified(self) -> bool:
        """To a Specified Person: it must be recorded."""
        return self.kind != "ordinary"

    def body(self) -> bytes:
        """The message, with its fixed Message-ID (a retry sends the same message)."""
        content = MATERIAL if self.kind == "specified-held" else ORDINARY
        return (f"From: {self.sender}\r\nTo: {self.rcpt}\r\nSubject: Note {self.index}\r\n"
                f"Message-ID: {self.message_id}\r\nDate: Wed, 25 Nov 2026 10:00:00 -0500\r\nMIME-Version: 1.0\r\n"
                f"Content-Type: text/plain; charset=utf-8\r\n\r\n{content}\r\n").encode()


def make_messages(n: int) -> list[Message]:
    """`n` messages: every tenth to a Specified Person (alternately with material content and without)."""
    run = uuid.uuid4().hex[:8]
    out = []
    for i in range(n):
        if i % 10 == 9:
            kind = "specified-held" if (i // 10) % 2 == 0 else "specified-accepted"
            rcpt = f"analyst{i}.{run}@{SPECIFIED_DOMAIN}"
        else:
            kind, rcpt = "ordinary", f"friend{i}.{run}@example.org"
        out.append(Message(i, kind, f"staff{i % 50}.{run}@allient.com", rcpt, f"<{run}.{i}@{LOAD_MID_DOMAIN}>"))
    return out


def send_one(port: int, m: Message, timeout: float = 60.0) -> None:
    """One SMTP transaction; the final reply (or 0 and the error) is appended to `m.replies`."""
    try:
        text: bytes | str
        with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as s:
            s.ehlo("client.regfd.test")
            code, text = s.mail(m.sender)
            if code == 250:
                code, text = s.rcpt(m.rcpt)
            if code == 250:
                try:
                    code, text = s.data(m.body())
                except smtplib.SMTPResponseException as exc:
                    code, text = exc.smtp_code, exc.smtp_error
        m.replies.append((code, text.decode(errors="replace") if isinstance(text, bytes) else str(text)))
    except (OSError, smtplib.SMTPException) as exc:
        m.replies.append((0, f"{type(exc).__name__}: {exc}"))
    m.at.append(time.monotonic())


@dataclass
class Run:
    """What happened: the messages with their replies, the fault's timeline, durations."""

    fault: str
    kind: str
    engine: str
    messages: list[Message]
    events: list[tuple[float, str]]
    send_s: float = 0.0
    settle_s: float = 0.0

    @property
    def tempfail_s(self) -> float:
        """Seconds from the first to the last 4xx (or dropped connection), retries included: how long mail
        was tempfailed."""
        times = [t for m in self.messages for (code, _), t in zip(m.replies, m.at, strict=True) if code != 250]
        return max(times) - min(times) if times else 0.0


def drive(stack: FaultStack, fault: Fault, messages: list[Message], concurrency: int = 10,
          at: float = 0.3, retry_for: float = 90.0) -> Run:
    """Send `messages` with `concurrency` clients; inject `fault` once `at` of them have been sent.

    The fault runs on its own thread (inject, hold, recover) while the load
    continues; the clients pause from the trigger until the fault is in
    place, so the rest of the load meets it however long injecting takes
    (filling a disk under a loaded CI runner can outlast the whole load).
    Then messages refused with 4xx (or a dropped connection) are sent again,
    as a client does, a pass a second for up to `retry_for` seconds.
    """
    stack.events.clear()
    done = 0
    lock = threading.Lock()
    triggered = threading.Event()
    injected = threading.Event()

    def fault_thread() -> None:
        triggered.wait()
        stack.note(f"inject {fault.name}")
        try:
            fault.inject(stack)
        finally:
            injected.set()
        time.sleep(fault.hold)
        stack.note(f"recover {fault.name}")
        fault.recover(stack)
        stack.note(f"recovered {fault.name}")

    def one(m: Message) -> None:
        nonlocal done
        if triggered.is_set():
            injected.wait(60)
        send_one(stack.port, m)
        with lock:
            done += 1
            if done >= at * len(messages):
                triggered.set()

    sink = stack.mta.sink
    refused, hung = sink.refused, sink.hung
    ft = threading.Thread(target=fault_thread, name=f"fault-{fault.name}", daemon=True)
    ft.start()
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, messages))
    triggered.set()
    ft.join(120)
    send_s = time.monotonic() - t0
    give_up = time.monotonic() + retry_for
    while time.monotonic() < give_up:
        again = [m for m in messages if m.replies[-1][0] != 250 and not 500 <= m.replies[-1][0] < 600]
        if not again:
            break
        time.sleep(1.0)
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(lambda m: send_one(stack.port, m), again))
    if sink.refused > refused or sink.hung > hung:
        stack.note(f"the relay refused {sink.refused - refused} deliveries and hung on {sink.hung - hung}")
    run = Run(fault.name, stack.kind, stack.engine, messages, list(stack.events), send_s=send_s)
    t1 = time.monotonic()
    settle(stack, messages)
    run.settle_s = time.monotonic() - t1
    return run


def settle(stack: FaultStack, messages: list[Message], timeout: float = 180.0) -> None:
    """Flush Postfix's queue and wait until every 250 is at the sink or held, or nothing is left to deliver."""
    mta = stack.mta
    accepted = [m for m in messages if m.accepted]
    deadline = time.monotonic() + timeout
    stable = 0
    while time.monotonic() < deadline:
        mta.postfix.postqueue("-f")
        held = {q["queue_id"] for q in mta.postfix.held()}
        with mta.sink.lock:
            delivered = set(mta.sink.delivered)
        missing = [m for m in accepted if m.message_id not in delivered and m.queue_id not in held]
        if not missing and mta.outstanding() == 0:
            stable += 1
            if stable >= 2:  # twice in a row, a second apart: nothing still on its way
                return
        else:
            stable = 0
        time.sleep(1.0)


@dataclass
class StuckDrain:
    """A SIGTERM with one client stuck mid-message: how long the stop took, and what new mail got meanwhile."""

    elapsed: float
    exit_status: int
    new_mail: tuple[int, str]
    gave_up: bool  # the milter logged that it stopped with a message still in flight


def stuck_drain(stack: FaultStack) -> StuckDrain:
    """MAIL and RCPT through Postfix, then silence; SIGTERM the milter, send one new message, time the exit."""
    assert stack.milter is not None
    milter = stack.milter
    with smtplib.SMTP("127.0.0.1", stack.port, timeout=120) as stuck:
        stuck.ehlo("stuck.regfd.test")
        assert stuck.mail("staff@allient.com")[0] == 250
        assert stuck.rcpt(f"analyst@{SPECIFIED_DOMAIN}")[0] == 250  # the milter has a message in flight
        t0 = time.monotonic()
        milter.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "milter.stopping" in milter.log.read_text(), 10, what="the drain to start")
        m = make_messages(1)[0]
        send_one(stack.port, m)
        rc = milter.proc.wait(300)
        elapsed = time.monotonic() - t0
    return StuckDrain(elapsed, rc, m.replies[-1], "milter.stop_with_inflight" in milter.log.read_text())


# ----------------------------------------------------------------------------- the accountant
@dataclass
class Tally:
    """The accountant's figures for one run; `ok` when nothing was lost, duplicated or unrecorded."""

    sent: int = 0
    accepted: int = 0  # final reply 250
    delivered: int = 0  # of those, at the sink
    held: int = 0  # of those, in the hold queue
    tempfailed: int = 0  # messages that got at least one 4xx (or a dropped connection) before their 250
    never_accepted: int = 0  # still refused after the retries (the client keeps it: not lost, but not through)
    lost: int = 0  # 250 and neither delivered nor held
    duplicated: int = 0  # 250 and delivered or held more than once (or delivered without a 250)
    misrouted: int = 0  # a message with material content delivered, or an ordinary one held
    records: int = 0  # accepted messages to a Specified Person with exactly one record
    record_problems: int = 0  # accepted messages to a Specified Person with no record, or several
    orphan_records: int = 0  # records whose queue id got no 250 (decided, then the MTA's reply failed)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing lost, nothing twice, every accepted message to a Specified Person recorded once."""
        return not (self.lost or self.duplicated or self.misrouted or self.record_problems)

    def row(self) -> dict[str, int]:
        """The figures the benchmark prints."""
        return {"sent": self.sent, "250": self.accepted, "delivered": self.delivered, "held": self.held,
                "451": self.tempfailed, "lost": self.lost, "duplicated": self.duplicated,
                "records": self.records, "rec-bad": self.record_problems, "orphans": self.orphan_records,
                "misrouted": self.misrouted, "refused": self.never_accepted}


def account(stack: FaultStack, messages: list[Message]) -> Tally:
    """Check every 250 against the sink, the hold queue and the record stream."""
    t = Tally(sent=len(messages))
    held_qids = Counter(q["queue_id"] for q in stack.mta.postfix.held())
    with stack.mta.sink.lock:
        delivered = Counter(stack.mta.sink.delivered)
    ours = {m.message_id for m in messages}
    by_qid = Counter(r.get("queue_id", "") for r in stack.records() if r.get("message_id") in ours)
    accepted_qids = set()
    for m in messages:
        if any(code != 250 for code, _ in m.replies):
            t.tempfailed += 1
        if not m.accepted:
            t.never_accepted += 1
            if delivered[m.message_id]:
                t.duplicated += 1
                t.notes.append(f"{m.message_id}: delivered without a 250 ({m.replies})")
            continue
        t.accepted += 1
        accepted_qids.add(m.queue_id)
        n_sink, n_hold = delivered[m.message_id], held_qids[m.queue_id]
        t.delivered += n_sink > 0
        t.held += n_hold > 0
        if n_sink + n_hold == 0:
            t.lost += 1
            t.notes.append(f"{m.message_id} ({m.queue_id}): 250 but neither delivered nor held")
        elif n_sink + n_hold > 1:
            t.duplicated += 1
            t.notes.append(f"{m.message_id} ({m.queue_id}): {n_sink} deliveries, {n_hold} held")
        if (m.kind == "specified-held") != (n_hold > 0):
            t.misrouted += 1
            t.notes.append(f"{m.message_id} ({m.kind}): {n_sink} deliveries, {n_hold} held")
        if m.specified:
            if by_qid[m.queue_id] == 1:
                t.records += 1
            else:
                t.record_problems += 1
                t.notes.append(f"{m.message_id} ({m.queue_id}): {by_qid[m.queue_id]} records")
    t.orphan_records = sum(n for qid, n in by_qid.items() if qid not in accepted_qids)
    return t


@contextlib.contextmanager
def fault_stack(mta: FaultMta, kind: str, engine: str, fault: Fault, wait_replicas: int = 0, replicas: int = 1
                ) -> Iterator[FaultStack]:
    """A FaultStack for one run, always stopped (and its tiny filesystem unmounted) afterwards."""
    stack = FaultStack.start(mta, kind, engine, tiny_disk_mb=fault.tiny_disk_mb, sentinel=fault is FAILOVER,
                             wait_replicas=wait_replicas, replicas=replicas)
    try:
        yield stack
    finally:
        mta.sink.mode = "ok"
        stack.stop()


def run_fault(mta: FaultMta, fault: Fault, kind: str, engine: str, n: int, concurrency: int = 10,
              wait_replicas: int = 0, replicas: int = 1) -> tuple[Run, Tally]:
    """One fault at `n` messages: start a stack, drive the load with the fault, settle, account."""
    with fault_stack(mta, kind, engine, fault, wait_replicas, replicas) as stack:
        run = drive(stack, fault, make_messages(n), concurrency)
        tally = account(stack, run.messages)
        return run, tally


def timeline(run: Run) -> str:
    """The fault's events relative to the first, for a report."""
    if not run.events:
        return ""
    t0 = run.events[0][0]
    return "; ".join(f"+{t - t0:.2f}s {what}" for t, what in run.events)


def dump(run: Run, tally: Tally, path: Path) -> None:
    """The run as JSON (each message's replies), for reading after a failure."""
    path.write_text(json.dumps({"fault": run.fault, "kind": run.kind, "engine": run.engine,
                                "tally": tally.row(), "notes": tally.notes, "timeline": timeline(run),
                                "messages": [{"id": m.message_id, "kind": m.kind, "replies": m.replies}
                                             for m in run.messages]}, indent=1))
