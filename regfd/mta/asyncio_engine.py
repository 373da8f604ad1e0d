"""The asyncio milter engine: one `asyncio.Protocol` per MTA connection, no thread per event.

Packets are parsed in `data_received` and handed to the connection's
`Session` (session.py); all replies to one read go out in one write. The
two blocking steps (the directory lookup at DATA, and scan + judge + record
at end of message) run on a small bounded thread pool, with
`milter.decision_timeout` enforced by a timer on the loop: past it the
session answers the failure action and the late result is dropped (and
not recorded). While a step runs the connection stops reading, so its
buffer stays bounded by one read; so it does when the MTA stops reading
our replies (transport flow control).

uvloop is used when it is installed (it is not a dependency). TCP_NODELAY
is set on every inet connection (FIELD-NOTES §1). A stop signal closes the
listener, refuses new messages with 451 (the client retries) and waits
for the messages in flight until the stop's deadline (deadline.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import socket
from collections.abc import Iterable
from typing import Any, cast

import structlog

from regfd.mta import protocol as p
from regfd.mta.deadline import StopDeadline
from regfd.mta.session import DeadlinePassed, DecisionFailed, Job, Session, SessionApp, deadline_passed

log = structlog.get_logger("regfd.mta.asyncio")

# A connection silent this long with no decision pending is closed: libmilter's default timeout (7210 s).
IDLE_TIMEOUT = 7210.0


class Engine:
    """The listening side: shared pool, connection count, the graceful stop."""

    def __init__(self, app: SessionApp, quiet: bool, workers: int | None = None,
                 max_packet: int = p.DEFAULT_MAX_PACKET, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.app = app
        self.quiet = quiet
        self.max_packet = max_packet
        self.idle_timeout = idle_timeout
        self.workers = workers or max(2, min(8, 2 * (os.cpu_count() or 1)))
        self.pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="regfd-decide")
        self.connections: set[MilterConnection] = set()
        self.protocol_errors = 0

    def close_idle(self, now: float) -> int:
        """Close connections silent for over `idle_timeout` s with no decision pending; returns how many."""
        idle = [c for c in self.connections
                if c.job is None and c.transport is not None and now - c.last_read > self.idle_timeout]
        for c in idle:
            log.warning("milter.idle_closed", idle_s=round(now - c.last_read, 1))
            assert c.transport is not None
            c.transport.abort()
        return len(idle)

    async def sweep_idle(self, interval: float) -> None:
        """Every `interval` s, close idle connections (a peer that connects and says nothing holds no slot forever)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            self.close_idle(loop.time())

    def protocol_factory(self) -> MilterConnection:
        """A connection object per accepted MTA connection."""
        return MilterConnection(self)

    def shutdown(self) -> None:
        """Drop queued work without waiting (after the drain)."""
        self.pool.shutdown(wait=False, cancel_futures=True)


class MilterConnection(asyncio.Protocol):
    """One MTA connection: bytes → packets → session → replies, one write per read."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.session = Session(engine.app, quiet=engine.quiet)
        self.parser = p.PacketParser(engine.max_packet)
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.job: Job | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.write_paused = False
        self.last_read = self.loop.time()

    # ----- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """TCP_NODELAY on inet (accepted sockets usually inherit it; made sure here)."""
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.engine.connections.add(self)
        self.engine.app.metrics.connection(True)

    def connection_lost(self, exc: Exception | None) -> None:
        """The MTA went away: a message still open stops counting as in flight."""
        self.session.close()
        if self.job is not None:
            self.job.cancelled = True
        self._cancel_timer()
        self.engine.connections.discard(self)
        self.engine.app.metrics.connection(False)
        self.transport = None

    def pause_writing(self) -> None:
        """The MTA does not read our replies: stop reading its packets until it does."""
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        """The write buffer drained: read again unless a decision is pending."""
        self.write_paused = False
        if self.transport is not None and self.job is None:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        """Parse and answer every complete packet of this read (stopping at a pending decision)."""
        self.last_read = self.loop.time()
        self.parser.feed(data)
        if self.job is None:
            self._process([])

    # ----- the work
    def _process(self, out: list[bytes]) -> None:
        """Hand packets to the session until none is complete or one needs blocking work; write once."""
        transport = self.transport
        if transport is None:
            return
        try:
            while not self.session.closed:
                pkt = self.parser.next()
                if pkt is None:
                    break
                step = self.session.handle(pkt)
                if isinstance(step, Job):
                    self._start(step)
                    break
                out.extend(step)
        except Exception as exc:  # a broken peer (ProtocolError), or a bug: this connection only
            self.engine.protocol_errors += 1
            self.engine.app.metrics.protocol_error()
            bug = not isinstance(exc, p.ProtocolError)
            log.warning("milter.protocol_error", error=f"{type(exc).__name__}: {exc}", buffered=self.parser.buffered,
                        exc_info=exc if bug else None)
            if out:
                transport.write(b"".join(out))
            transport.abort()
            return
        if out:
            transport.write(b"".join(out))
        if self.session.closed:
            transport.close()

    def _start(self, job: Job) -> None:
        """Run the job on the pool; stop reading until it is answered."""
        assert self.transport is not None
        self.job = job
        self.transport.pause_reading()
        if job.budget <= 0:
            self._finish(job, DeadlinePassed("no time left within milter.decision_timeout"))
            return
        future = self.engine.pool.submit(job.run)
        self.timer = self.loop.call_later(job.budget, self._timed_out, job)
        future.add_done_callback(lambda f: self.loop.call_soon_threadsafe(self._done, job, f))

    def _done(self, job: Job, future: concurrent.futures.Future[Any]) -> None:
        if self.job is not job:
            return  # timed out (answered already) or the connection is gone
        exc = future.exception() if not future.cancelled() else DecisionFailed("decision cancelled")
        self._finish(job, exc if exc is not None else future.result())

    def _timed_out(self, job: Job) -> None:
        if self.job is not job:
            return
        job.cancelled = True
        self._finish(job, deadline_passed(self.engine.app.decision_timeout))

    def _finish(self, job: Job, outcome: Any) -> None:
        self._cancel_timer()
        self.job = None
        if self.transport is None:
            return
        out = self.session.resume(job, outcome)
        if not self.write_paused:
            self.transport.resume_reading()
        self._process(out)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def new_event_loop() -> tuple[asyncio.AbstractEventLoop, str]:
    """uvloop's loop when it is installed, else asyncio's; with the name for the log.

    REGFD_EVENT_LOOP=asyncio keeps the standard loop even where uvloop is
    installed (bench/bench_mta.py compares the two).
    """
    if os.environ.get("REGFD_EVENT_LOOP") == "asyncio":
        return asyncio.new_event_loop(), "asyncio"
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return asyncio.new_event_loop(), "asyncio"
    return uvloop.new_event_loop(), "uvloop"


class SharedListener:
    """Serve a listening socket other worker processes accept from too (a unix socket bound before the fork).

    One `accept` per readiness event, where asyncio and uvloop accept every
    pending connection at once: all workers wake on a new connection, and the
    one that takes it is the one that reached its event loop first, i.e. the
    least busy; a worker that took a burst whole would serve it alone.
    The socket is the supervisor's (it keeps a copy for restarted workers):
    `close` only stops accepting here.
    """

    def __init__(self, engine: Engine, sock: socket.socket) -> None:
        self.engine = engine
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.pending: set[asyncio.Future[Any]] = set()
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._accept)
        self.closed = False

    def _accept(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return  # another worker took it
        except OSError as exc:  # EMFILE and the like: pause a second, as asyncio's own accept loop does
            log.warning("milter.accept_failed", error=str(exc))
            self.loop.remove_reader(self.sock.fileno())
            self.loop.call_later(1.0, self._resume)
            return
        conn.setblocking(False)
        task = asyncio.ensure_future(self.loop.connect_accepted_socket(self.engine.protocol_factory, conn))
        self.pending.add(task)
        task.add_done_callback(lambda t: self._made(t, conn))

    def _made(self, task: asyncio.Future[Any], conn: socket.socket) -> None:
        self.pending.discard(task)
        if task.cancelled() or task.exception() is not None:
            log.warning("milter.accept_failed", error=str(task.exception()) if not task.cancelled() else "cancelled")
            conn.close()

    def _resume(self) -> None:
        if not self.closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        """Stop accepting (the connections already made stay open); closes this process's copy of the socket."""
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()

    async def wait_closed(self) -> None:
        """Until the connections being set up are made."""
        if self.pending:
            await asyncio.wait(list(self.pending))


async def listen(engine: Engine, kind: str, spec: str, sock: socket.socket | None = None) -> Any:
    """Listen on `spec` (unix:PATH, inet:PORT@HOST, inet6:PORT@HOST); a unix socket is made writable by the MTA.

    `sock`: a listening socket bound already (a worker process, regfd/mta/workers.py): a unix one is
    shared with the other workers (SharedListener), an inet one is this worker's own SO_REUSEPORT socket.
    """
    loop = asyncio.get_running_loop()
    if sock is not None:
        if kind == "unix":
            return SharedListener(engine, sock)
        return await loop.create_server(engine.protocol_factory, sock=sock, backlog=128)
    rest = spec.partition(":")[2]
    if kind == "unix":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(rest)  # a stale socket (daemon.check_socket_free refused a live one)
        server = await loop.create_unix_server(engine.protocol_factory, rest, backlog=128)
        os.chmod(rest, 0o666)
        return server
    port, _, host = rest.partition("@")
    host = host or ("::" if kind == "inet6" else "0.0.0.0")
    family = socket.AF_INET6 if kind == "inet6" else socket.AF_INET
    return await loop.create_server(engine.protocol_factory, host, int(port), family=family, reuse_address=True,
                                    backlog=128)


async def serve(engine: Engine, kind: str, spec: str, stop_signals: Iterable[signal.Signals],
                deadline: StopDeadline, started: Any = None, sock: socket.socket | None = None) -> None:
    """Serve until a stop signal, then close the listener, refuse new messages and drain those in flight.

    Everything after the signal waits only until `deadline` (set at the
    signal): the drain until its reserve, closing the connections until the end.

    `started(server)` is called once listening (the daemon logs its start there); `sock` as `listen`.
    """
    loop = asyncio.get_running_loop()
    server = await listen(engine, kind, spec, sock)
    stop = asyncio.Event()
    for sig in stop_signals:
        loop.add_signal_handler(sig, stop.set)
    if started is not None:
        started(server)
    sweeper = asyncio.ensure_future(engine.sweep_idle(min(60.0, engine.idle_timeout / 2)))
    try:
        await stop.wait()
    finally:
        sweeper.cancel()
        for sig in stop_signals:
            loop.remove_signal_handler(sig)
    deadline.begin()
    server.close()
    app: Any = engine.app
    log.info("milter.stopping", inflight=app.inflight, drain_timeout=deadline.seconds)
    with app._lock:
        app._closing = True  # new messages get 451 (the client retries)
    while app.inflight > 0 and deadline.drain_left() > 0:
        await asyncio.sleep(min(0.05, deadline.drain_left()))
    if app.inflight > 0:
        log.warning("milter.stop_with_inflight", inflight=app.inflight)
    for conn in list(engine.connections):
        if conn.transport is not None:
            conn.transport.close()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(server.wait_closed(), deadline.steps_left())
