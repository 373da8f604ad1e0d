"""`[milter] workers = N`: N asyncio engine processes on one listening socket, under a supervisor.

Why processes: one Python process decides on one core at a time (the GIL;
the scan is Python around Hyperscan), so a busy MTA host gains from several.

Who does what (all forked from `regfd milter` once it has loaded and checked
everything, so a bad setting still fails before anything listens):

- the supervisor is the process the operator started (the service's main
  pid). It binds the socket, starts the private redis-server when that is
  the store, forks the others and then only supervises: a child that dies is
  logged and forked again; the private redis-server is restarted when it
  stops answering; SIGTERM/SIGINT/SIGHUP stop everything within
  `milter.drain_timeout` and it exits 0. It never creates a thread, a Redis
  client or an event loop, so every fork, the first and the restarts, copies
  a single-threaded process (a fork beside other threads can copy a lock one
  of them held, held forever in the child) and the compiled lexicons are
  shared copy-on-write.
- N workers, each the asyncio engine on the inherited socket with its own
  Redis connections; new mail at the stop gets 451, mail in flight finishes.
- one background process: the notifications outbox, follow-ups, reminders,
  register checkpoints and the quarantine agent (start_background), so each
  runs once on the host as with one process.

Sockets. inet/inet6: one SO_REUSEPORT socket per worker, all bound here
before the fork; the kernel spreads new connections evenly over them (a hash
of the peer's address and port) and wakes only the worker that owns the
chosen socket. Since the supervisor keeps every socket open, connections
queued for a worker that died wait for its replacement instead of being
refused. unix (SO_REUSEPORT does not apply): one socket, bound and made
writable by the MTA before the fork, shared by all; each worker accepts one
connection per wake-up (asyncio_engine.SharedListener), so the least busy
worker takes the next connection.

Metrics (`[metrics] listen`): every process records its counts in files under
state_dir/metrics (prometheus_client's multiprocess mode, emptied at start);
the background process serves /metrics with their sum plus the backlog read
from the store; the supervisor drops a dead worker's live gauges.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import structlog

from regfd.errors import RegfdError
from regfd.mta.deadline import StopDeadline

if TYPE_CHECKING:
    from regfd.config import Config
    from regfd.service import Services
    from regfd.store.private_redis import PrivateRedis

log = structlog.get_logger("regfd.mta.workers")

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
WAITED = STOP_SIGNALS | {signal.SIGCHLD}
# A child that dies sooner than this after its start is forked again only after RESTART_DELAY, doubled at each
# such death in a row up to MAX_RESTART_DELAY (a worker that cannot start does not fork every second forever).
MIN_LIFETIME = 1.0
RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 60.0


def restart_delay(lived: float, quick_deaths: int) -> tuple[float, int]:
    """(seconds before the next fork, deaths in a row so far) for a child that died after `lived` seconds."""
    if lived >= MIN_LIFETIME:
        return 0.0, 0
    quick_deaths += 1
    return min(MAX_RESTART_DELAY, RESTART_DELAY * 2 ** (quick_deaths - 1)), quick_deaths
PR_SET_PDEATHSIG = 1


def bind_sockets(kind: str, spec: str, count: int) -> list[socket.socket]:
    """The listening sockets the workers inherit: one shared unix socket, or `count` SO_REUSEPORT inet ones."""
    rest = spec.partition(":")[2]
    if kind == "unix":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(rest)  # a stale socket (daemon.check_socket_free refused a live one)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(rest)
            os.chmod(rest, 0o666)  # the MTA runs as another user; the directory decides who reaches it
            s.listen(128)
        except OSError as exc:
            s.close()
            raise RegfdError(f"milter socket {spec}: cannot listen ({exc.strerror or exc})") from None
        return [s]
    port, _, host = rest.partition("@")
    host = host or ("::" if kind == "inet6" else "0.0.0.0")
    family = socket.AF_INET6 if kind == "inet6" else socket.AF_INET
    out: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(family, socket.SOCK_STREAM)
            out.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it on Linux
            s.bind((host, int(port)))
            s.listen(128)
    except OSError as exc:
        for s in out:
            s.close()
        raise RegfdError(f"milter socket {spec}: cannot listen ({exc.strerror or exc})") from None
    return out


@dataclass
class Child:
    """One forked process: a worker (index 0..N-1) or the background one (index -1)."""

    index: int
    pid: int = 0
    started: float = 0.0
    restart_at: float = 0.0  # when a dead child is due to be forked again; 0 while it runs
    quick_deaths: int = 0  # deaths in a row, each sooner than MIN_LIFETIME after its start

    @property
    def role(self) -> str:
        """`worker` or `background`, for the log."""
        return "background" if self.index < 0 else "worker"


@dataclass
class Supervisor:
    """The parent of the workers and the background process (see the module docstring)."""

    config: Config
    services: Services
    kind: str
    spec: str
    count: int
    start_fields: dict[str, Any]
    sockets: list[socket.socket] = field(default_factory=list)
    private: PrivateRedis | None = None
    children: list[Child] = field(default_factory=list)
    signals: list[int] = field(default_factory=list)
    interval: float = 1.0
    metrics_dir: Path | None = None  # `[metrics] listen`: each process's metric files, added up by the background one

    # ----- the supervisor
    def run(self) -> int:
        """Fork everything, supervise until a stop signal, stop everything; returns the exit status (0)."""
        if threading.active_count() != 1:  # a fork would copy other threads' locks: a bug in start-up
            raise RuntimeError(f"milter workers: {threading.active_count()} threads before the fork, expected 1")
        previous = {sig: signal.signal(sig, lambda s, _f: self.signals.append(s)) for sig in STOP_SIGNALS}
        signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)
        try:
            self.children = [Child(i) for i in range(self.count)] + [Child(-1)]
            for child in self.children:
                self._fork(child)
            log.info("milter.start", workers=self.count, worker_pids=[c.pid for c in self.children if c.index >= 0],
                     background_pid=self.children[-1].pid,
                     balancing="shared socket" if self.kind == "unix" else "SO_REUSEPORT", **self.start_fields)
            next_check = time.monotonic() + self.interval
            while not self.signals:
                due = [c.restart_at for c in self.children if c.restart_at]
                wait = max(0.0, min([next_check, *due]) - time.monotonic())
                got = signal.sigtimedwait(WAITED, wait)
                if got is not None and got.si_signo in STOP_SIGNALS:
                    self.signals.append(got.si_signo)
                    break
                self._reap()
                self._restart_due()
                if time.monotonic() >= next_check:
                    self._watch_redis()
                    next_check = time.monotonic() + self.interval
            return self._stop()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, WAITED)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _fork(self, child: Child) -> None:
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._child_main(child, parent)
        child.pid, child.started, child.restart_at = pid, time.monotonic(), 0.0

    def _reap(self) -> None:
        """Collect the children that died (only ours: the private redis-server is Popen's to wait for)."""
        for child in self.children:
            if not child.pid:
                continue
            try:
                pid, status = os.waitpid(child.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = child.pid, 0
            if pid == 0:
                continue
            lived = time.monotonic() - child.started
            if self.metrics_dir is not None:
                from regfd.monitoring.prometheus import forget_process

                forget_process(self.metrics_dir, child.pid)
            delay, child.quick_deaths = restart_delay(lived, child.quick_deaths)
            log.warning("milter.worker_died", role=child.role, worker=child.index, dead_pid=child.pid,
                        status=_describe(status), lived_s=round(lived, 1), action="restarting",
                        restart_in_s=delay, deaths_in_a_row=child.quick_deaths)
            child.pid, child.restart_at = 0, time.monotonic() + delay

    def _restart_due(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if not child.pid and child.restart_at and child.restart_at <= now:
                self._fork(child)
                log.info("milter.worker_restarted", role=child.role, worker=child.index, new_pid=child.pid)

    def _watch_redis(self) -> None:
        """Start the private redis-server again if it stopped answering (as RedisSupervisor does with one process)."""
        private = self.private
        if private is None or private.answering():
            return
        log.warning("redis.private_down", action="restarting", dir=str(private.dir))
        # redis-server must not inherit the blocked stop signals; a signal arriving meanwhile is recorded.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        try:
            private.ensure_running()
            log.info("redis.private_restarted", socket=str(private.socket))
        except Exception as exc:
            log.error("redis.private_restart_failed", error=str(exc))
        finally:
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

    def _stop(self) -> int:
        """Stop accepting, let every worker drain, stop the background process; all within drain_timeout."""
        deadline = StopDeadline(self.config.milter.drain_timeout)
        deadline.begin()
        log.info("milter.stopping", workers=self.count, drain_timeout=deadline.seconds)
        for s in self.sockets:  # our copies: once the workers close theirs, a new connection is refused
            s.close()
        for child in self.children:
            if child.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)
        end = deadline.left(deadline.reserve / 4)
        until = time.monotonic() + end
        while any(c.pid for c in self.children) and time.monotonic() < until:
            signal.sigtimedwait({signal.SIGCHLD}, max(0.0, min(0.05, until - time.monotonic())))
            for child in self.children:
                if child.pid and os.waitpid(child.pid, os.WNOHANG)[0]:
                    child.pid = 0
        late = [c for c in self.children if c.pid]
        for child in late:
            log.warning("milter.worker_killed", role=child.role, worker=child.index, pid=child.pid,
                        reason="not stopped within drain_timeout")
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
            os.waitpid(child.pid, 0)
            child.pid = 0
        log.info("milter.stopped", workers=self.count)
        return 0

    # ----- a child
    def child_drain(self) -> float:
        """A child's own drain_timeout: the supervisor's less what it keeps for itself after the children."""
        seconds = self.config.milter.drain_timeout
        return max(0.05, seconds - min(1.0, seconds / 4) / 2)

    def _child_main(self, child: Child, parent: int) -> NoReturn:
        """In the forked process: set it up, run its role, and never return into the CLI."""
        code = 70
        try:
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)  # blocked still: taken by the engine's loop or sigwait
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
            _die_with_parent(parent)
            mine = self.sockets[child.index] if child.index >= 0 and self.kind != "unix" else None
            for s in self.sockets:
                if s is not mine and not (self.kind == "unix" and child.index >= 0):
                    s.close()  # a socket held open here would queue connections nobody accepts at the stop
            code = self._background() if child.index < 0 else self._worker(child.index)
        except BaseException as exc:
            log.error("milter.worker_failed", role=child.role, worker=child.index, error=f"{type(exc).__name__}: {exc}",
                      exc_info=not isinstance(exc, RegfdError))
            code = 1 if isinstance(exc, RegfdError) else 70
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)

    def _worker(self, index: int) -> int:
        from regfd.mta.daemon import serve_asyncio

        config = self.config
        handle = self.services.open_store(timeout=min(5.0, config.milter.decision_timeout), start_private=False)
        try:
            try:
                handle.store.ping()
            except RegfdError as exc:
                log.warning("milter.store_unreachable", error=str(exc), action=config.milter.failure_action)
            app = self.services.milter_app(handle.store, self.services.executor(handle.store))
            app.quiet = self.kind == "unix"
            if self.metrics_dir is not None:
                app.metrics = handle.store.metrics = self._worker_metrics()
            sock = self.sockets[0 if self.kind == "unix" else index]
            gc.freeze()  # as run_daemon: this worker's long-lived objects out of the collector's walk
            fields = {**self.start_fields, "pid": os.getpid(), "worker": index}
            failure = serve_asyncio(app, self.kind, self.spec, fields, StopDeadline(self.child_drain()), sock=sock,
                                    event="milter.worker_start")
            if failure is not None:
                raise RegfdError(f"milter worker {index} stopped: {failure}")
            log.info("milter.worker_stopped", worker=index)
            return 0
        finally:
            handle.close()

    def _worker_metrics(self) -> Any:
        """This process's counts, recorded in its own files under `metrics_dir` (served by the background process)."""
        from regfd.monitoring.prometheus import PrometheusMetrics, use_files
        from regfd.mta.daemon import describe

        assert self.metrics_dir is not None
        use_files(self.metrics_dir)
        metrics = PrometheusMetrics()
        describe(metrics, self.config, "asyncio")
        return metrics

    def _serve_metrics(self, store: Any) -> Any:
        """/metrics on `[metrics] listen`: every process's files added up, and the backlog read at scrape time."""
        from regfd.monitoring.health import read_backlog
        from regfd.monitoring.prometheus import BacklogCollector, MetricsServer, files_registry

        assert self.metrics_dir is not None
        # Its own (zero) series and the build and config facts are in the files from the first scrape on,
        # before any worker has written its own.
        self._worker_metrics()
        registry = files_registry(self.metrics_dir)
        registry.register(BacklogCollector(lambda: read_backlog(store), self.config.metrics.store_timeout))
        server = MetricsServer(registry, self.config.metrics.host, self.config.metrics.port)
        log.info("metrics.start", listen=self.config.metrics.listen, processes=self.count)
        return server

    def _background(self) -> int:
        from regfd.compliance.executor import start_background

        handle = self.services.open_store(timeout=5.0, start_private=False)
        stop = threading.Event()
        deadline = StopDeadline(self.child_drain(), on_begin=stop)
        server = None
        try:
            if self.metrics_dir is not None:
                server = self._serve_metrics(handle.store)
            threads = start_background(handle.store, self.config, stop)  # created with the stop signals blocked
            log.info("milter.background_start", pid=os.getpid(), threads=[t.name for t in threads])
            signal.sigwait(STOP_SIGNALS)
            deadline.begin()
            for thread in threads:
                thread.join(deadline.steps_left())
            log.info("milter.background_stopped")
            return 0
        finally:
            if server is not None:
                server.stop()
            handle.close()


def _metrics_files(config: Config) -> Path:
    """An empty directory for the processes' metric files; fails in one line if `[metrics] listen` is taken."""
    try:
        with socket.create_server((config.metrics.host, config.metrics.port)):
            pass  # free now; the background process binds it for good
    except OSError as exc:
        from regfd.mta.daemon import metrics_listen_failed

        raise metrics_listen_failed(config, exc) from None
    directory = config.state_dir / "metrics"
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.db"):  # counts of an earlier run must not be added to this one's
        old.unlink()
    return directory


def _describe(status: int) -> str:
    """'exit 3' or 'signal SIGKILL', from a waitpid status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(sig).name}"
        return f"signal {sig}"
    return f"exit {os.WEXITSTATUS(status)}" if os.WIFEXITED(status) else f"status {status}"


def _die_with_parent(parent: int) -> None:
    """SIGTERM (the graceful stop) to this child when the supervisor dies, even by SIGKILL (Linux prctl)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # it died before the prctl
        os.kill(os.getpid(), signal.SIGTERM)


def run_workers(config: Config, services: Services, kind: str, spec: str, count: int,
                start_fields: dict[str, Any]) -> int:
    """`regfd milter` with `count` > 1 workers: bind, start the private Redis, fork, supervise; returns 0 after a stop.

    Called by run_daemon after every check, before it creates any thread or store connection.
    """
    private = None
    if not config.effective_redis_url:
        from regfd.store.private_redis import PrivateRedis

        private = PrivateRedis(config.state_dir)
        private.ensure_running()  # raw socket commands only: no Redis client in this process
    sockets: list[socket.socket] = []
    try:
        metrics_dir = _metrics_files(config) if config.metrics.listen else None
        sockets = bind_sockets(kind, spec, count)
        sup = Supervisor(config, services, kind, spec, count, start_fields, sockets, private, metrics_dir=metrics_dir)
        return sup.run()
    finally:
        for s in sockets:
            s.close()
        if private is not None:
            private.stop()  # only a server this process started, adopted or restarted
        if kind == "unix":
            with contextlib.suppress(OSError):
                Path(spec.partition(":")[2]).unlink()
