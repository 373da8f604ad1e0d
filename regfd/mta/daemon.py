"""The milter daemon: start-up checks, signals, the private Redis supervisor, the graceful stop.

Start-up loads and validates everything (config, policy, lexicons) and fails
with one line before listening; at run time the daemon never exits because
Redis is down: it answers the failure action until Redis returns (redis-py's
pool reconnects by itself) and restarts the private redis-server if that is
the store and it dies. SIGTERM/SIGINT stop accepting messages (451 4.7.1: the client retries),
let the messages in flight finish, then stop the private redis-server it
started; the whole stop takes at most `milter.drain_timeout` (deadline.py).
With `[milter] workers` above 1, the same checks run, then workers.py forks
the worker processes and supervises them.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from regfd.errors import ConfigError, RegfdError
from regfd.mta.deadline import StopDeadline

if TYPE_CHECKING:
    from regfd.config import Config
    from regfd.service import Services

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}

log = structlog.get_logger("regfd.mta.libmilter")


def configure_logging(stream: Any = None) -> None:
    """structlog: JSON lines unless stderr is a terminal."""
    stream = stream or sys.stderr
    renderer: Any = (structlog.dev.ConsoleRenderer(colors=False) if stream.isatty()
                     else structlog.processors.JSONRenderer(sort_keys=False))
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            _add_pid,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        # One write per line (print() writes the newline apart): the processes of `[milter] workers`
        # share the stream, and two lines written at once must not end up on one.
        logger_factory=structlog.WriteLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )


def _add_pid(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Every line says which process wrote it (with `[milter] workers` several share one log)."""
    event.setdefault("pid", os.getpid())
    return event


def parse_socket(spec: str) -> tuple[str, str]:
    """Validate a libmilter socket spec; returns (kind, spec) with kind unix|inet|inet6."""
    kind, _, rest = spec.partition(":")
    if kind in ("unix", "local") and rest:
        return "unix", f"unix:{rest}"
    if kind in ("inet", "inet6"):
        port, _, host = rest.partition("@")
        if port.isdigit() and 0 < int(port) < 65536:
            return kind, spec
    raise ConfigError(f"milter socket: must be inet:PORT@HOST or unix:PATH (got {spec!r})")


def check_socket_free(kind: str, spec: str) -> None:
    """Refuse to start when another process serves the socket (libmilter would remove a unix one)."""
    rest = spec.partition(":")[2]
    if kind == "unix":
        path = Path(rest)
        if path.exists():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.settimeout(1)
                s.connect(str(path))
            except OSError:
                return  # a stale socket file: libmilter removes it
            finally:
                s.close()
            raise RegfdError(f"milter socket {spec} is in use by another process")
        if not path.parent.is_dir():
            raise RegfdError(f"milter socket {spec}: directory {path.parent} does not exist")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise RegfdError(f"milter socket {spec}: permission denied: this user (uid {os.geteuid()}) may not "
                             f"create files in {path.parent}")
        return
    port, _, host = rest.partition("@")
    family = socket.AF_INET6 if kind == "inet6" else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host or ("::" if kind == "inet6" else "0.0.0.0"), int(port)))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise RegfdError(f"milter socket {spec} is in use by another process") from None
        raise RegfdError(f"milter socket {spec}: {exc.strerror}") from None
    finally:
        s.close()


def _socket_fds() -> set[int]:
    out = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                out.add(int(name))
        except OSError:
            continue
    return out


def set_nodelay(fds: Iterable[int]) -> int:
    """TCP_NODELAY on libmilter's listening socket: accepted sockets inherit it on Linux.

    libmilter does not set it, and Nagle's algorithm meeting delayed ACKs
    costs 40 ms per reply (measured on loopback). Returns how many sockets were set.
    """
    n = 0
    for fd in fds:
        try:
            s = socket.socket(fileno=fd)
        except OSError:
            continue
        try:
            if s.family in (socket.AF_INET, socket.AF_INET6) and s.type == socket.SOCK_STREAM:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                n += 1
        finally:
            s.detach()  # the fd stays libmilter's
    return n


class RedisSupervisor(threading.Thread):
    """Restart the private redis-server if it stops answering (it is the store when no URL is set)."""

    def __init__(self, private: Any, interval: float = 1.0) -> None:
        super().__init__(name="regfd-redis-supervisor", daemon=True)
        self.private = private
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        """Poll until `stopping` is set; a failed restart is logged and retried, never raised."""
        while not self.stopping.wait(self.interval):
            try:
                if self.private.answering():
                    continue
                log.warning("redis.private_down", action="restarting", dir=str(self.private.dir))
                # The child must not inherit the blocked stop signals, or it could not be stopped.
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
                try:
                    self.private.ensure_running()
                finally:
                    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
                log.info("redis.private_restarted", socket=str(self.private.socket))
            except Exception as exc:
                log.error("redis.private_restart_failed", error=str(exc))


def run_daemon(config: Config, services: Services, socket_spec: str | None = None, engine: str | None = None,
               workers: int | None = None) -> int:
    """The milter daemon: fails before listening on any bad setting; returns after a stop signal and the drain.

    `socket_spec` overrides `milter.socket` from the configuration, `engine` its `milter.engine`,
    `workers` its `milter.workers` (above 1: regfd/mta/workers.py).
    """
    from regfd.config import check_workers

    engine = engine or config.milter.engine
    if engine not in ("libmilter", "asyncio"):
        raise ConfigError(f"milter engine: must be libmilter or asyncio (got {engine!r})")
    if engine == "libmilter":
        try:
            import Milter  # noqa: F401 -- pymilter, which only this engine needs
        except ImportError:
            raise ConfigError('milter engine libmilter: pymilter is not installed (pip install "regfd[milter]"); '
                              'engine = "asyncio" needs neither it nor libmilter') from None
    count = config.milter.workers if workers is None else workers
    check_workers(count, engine)
    kind, spec = parse_socket(socket_spec or config.milter.socket)
    services.decider  # noqa: B018 -- policy and lexicons load (and fail) before anything listens
    check_socket_free(kind, spec)
    # What is loaded now lives as long as the process: out of the collector's sight, a full
    # collection no longer walks it in the middle of a message (and forked workers share it).
    gc.freeze()
    if count > 1:
        from regfd.mta.workers import run_workers

        fields = dict(socket=spec, config=config.source, mode=config.mode, engine=engine,
                      failure_action=config.milter.failure_action, quiet_protocol=kind == "unix",
                      store="private" if not config.effective_redis_url else "url")
        return run_workers(config, services, kind, spec, count, fields)

    handle = services.open_store(timeout=min(5.0, config.milter.decision_timeout))
    supervisor = None
    metrics_server = None
    stop_background = threading.Event()
    # From the stop signal on, every step of the stop waits only until this one instant.
    deadline = StopDeadline(config.milter.drain_timeout, on_begin=stop_background)
    background: list[threading.Thread] = []
    try:
        # Every thread but this one (ours and libmilter's) is created with the stop
        # signals blocked, so they reach this thread's handlers (serve_until_stopped).
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        if not config.effective_redis_url:
            from regfd.store.private_redis import PrivateRedis

            private = handle.private or PrivateRedis(config.state_dir)
            supervisor = RedisSupervisor(private)
            supervisor.start()
        try:
            handle.store.ping()
        except RegfdError as exc:
            log.warning("milter.store_unreachable", error=str(exc), action=config.milter.failure_action)
        from regfd.compliance.executor import start_background

        sink = services.executor(handle.store)
        # Notifications, reminders and the quarantine agent for this MTA host;
        # started after the stop signals are blocked, so only libmilter sees them.
        background = start_background(handle.store, config, stop_background)
        app = services.milter_app(handle.store, sink)
        app.quiet = kind == "unix"  # fewer round trips where Nagle cannot stall them
        if config.metrics.listen:
            metrics_server = start_metrics(config, engine, app, handle.store)
        start_fields = dict(socket=spec, config=config.source, mode=config.mode, engine=engine,
                            failure_action=config.milter.failure_action, quiet_protocol=app.quiet, pid=os.getpid(),
                            store="private" if not config.effective_redis_url else "url",
                            sink=type(sink).__module__ + "." + type(sink).__name__)
        gc.freeze()  # the store, the engine and the background threads' objects too
        if engine == "asyncio":
            failure = serve_asyncio(app, kind, spec, start_fields, deadline)
            if failure is not None:
                raise RegfdError(f"milter stopped: {failure}")
            log.info("milter.stopped")
            return 0

        import Milter
        import milter as libmilter

        Milter.factory = app.factory
        before = _socket_fds()
        _register(Milter, libmilter, spec)
        nodelay = set_nodelay(_socket_fds() - before) if kind != "unix" else 0
        if kind == "unix":
            # The MTA runs as another user (postfix): the socket must be writable by it.
            # Who may reach it is decided by the socket's directory (deploy/README.md).
            os.chmod(spec.partition(":")[2], 0o666)
        log.info("milter.start", tcp_nodelay=bool(nodelay), **start_fields)
        failure = serve_until_stopped(libmilter, app, deadline, kind, spec)
        app.shutdown()
        if failure is not None:
            raise RegfdError(f"milter stopped: {failure}")
        log.info("milter.stopped")
        return 0
    finally:
        if metrics_server is not None:
            metrics_server.stop()
        deadline.begin()  # also on an error: the stop is bounded the same way
        for thread in background:  # told to stop at the signal; those busy past the deadline are abandoned
            thread.join(deadline.steps_left())
        if supervisor is not None:
            supervisor.stopping.set()
            supervisor.join(deadline.steps_left())
            if handle.private is None and supervisor.private._proc is not None:
                supervisor.private.stop()  # a server the supervisor restarted is ours to stop
        handle.close()
        if kind == "unix":
            with contextlib.suppress(OSError):
                os.unlink(spec.partition(":")[2])


def describe(metrics: Any, config: Config, engine: str) -> None:
    """regfd_build_info and regfd_config_info for a process serving the MTA (one process, or each worker)."""
    from regfd.monitoring.health import lexicon_version

    metrics.describe(engine, config.mode, config.milter.failure_action,
                     "private" if not config.effective_redis_url else "url", lexicon_version(config.lexicon_dir))


def metrics_listen_failed(config: Config, exc: OSError) -> RegfdError:
    """The one-line start-up error when `[metrics] listen` cannot be bound."""
    return RegfdError(f"metrics listen {config.metrics.listen}: cannot listen ({exc.strerror or exc})")


def start_metrics(config: Config, engine: str, app: Any, store: Any) -> Any:
    """/metrics on `[metrics] listen`, fed by both engines and the store; fails before the milter listens."""
    from regfd.monitoring.health import read_backlog
    from regfd.monitoring.prometheus import MetricsServer, PrometheusMetrics

    metrics = PrometheusMetrics().with_process_metrics()
    describe(metrics, config, engine)
    metrics.watch_backlog(lambda: read_backlog(store), config.metrics.store_timeout)
    try:
        server = MetricsServer(metrics, config.metrics.host, config.metrics.port)
    except OSError as exc:
        raise metrics_listen_failed(config, exc) from None
    app.metrics = metrics
    store.metrics = metrics
    log.info("metrics.start", listen=config.metrics.listen)
    return server


def serve_until_stopped(libmilter: Any, app: Any, deadline: StopDeadline, kind: str = "", spec: str = ""
                        ) -> BaseException | None:
    """Run libmilter on its own thread until a stop signal, then stop gracefully.

    libmilter's own SIGTERM handling stops its worker pool at once and
    abandons messages mid-transfer, so the signal is taken here instead (the
    main thread is the one Linux delivers process signals to when it does not
    block them): refuse new messages, let those in flight finish (until the
    `deadline` less its reserve), and only then tell libmilter to stop,
    waking its listener (which otherwise holds the stop back until the end
    of its 5 s poll: 2 s measured).
    Returns the error libmilter failed with, if it did.
    """
    stop = threading.Event()
    failed: list[BaseException] = []

    def serve() -> None:
        try:
            libmilter.main()
        except BaseException as exc:  # reported by the main thread
            failed.append(exc)
        finally:
            stop.set()

    server = threading.Thread(target=serve, name="libmilter", daemon=True)
    server.start()  # inherits the blocked stop signals
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS}
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed:
        return failed[0]
    deadline.begin()
    log.info("milter.stopping", inflight=app.inflight, drain_timeout=deadline.seconds)
    if not app.drain(deadline.drain_left()):
        log.warning("milter.stop_with_inflight", inflight=app.inflight)
    # smfi_stop() waits for a mutex libmilter's listener holds for the whole of its 5 s poll:
    # call it aside and connect to our own socket until it returns, each connection ending a poll.
    stopper = threading.Thread(target=libmilter.stop, name="libmilter-stop", daemon=True)
    stopper.start()
    while stopper.is_alive() and deadline.steps_left() > 0:
        if kind and spec:
            wake_listener(kind, spec)
        stopper.join(min(0.05, deadline.steps_left()))
    server.join(deadline.steps_left())  # daemon threads: past this the process exits without them
    return failed[0] if failed else None


def wake_listener(kind: str, spec: str) -> None:
    """Connect to our own socket once, so libmilter's listener sees the stop now, not at its next poll."""
    rest = spec.partition(":")[2]
    try:
        if kind == "unix":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = rest
        else:
            port, _, host = rest.partition("@")
            family = socket.AF_INET6 if kind == "inet6" else socket.AF_INET
            if host in ("", "0.0.0.0", "::"):
                host = "::1" if kind == "inet6" else "127.0.0.1"
            s = socket.socket(family, socket.SOCK_STREAM)
            address = (host, int(port))
        with s:
            s.settimeout(0.5)
            s.connect(address)
    except OSError:
        pass  # not listening any more: nothing to wake


def serve_asyncio(app: Any, kind: str, spec: str, start_fields: dict[str, Any], deadline: StopDeadline,
                  sock: socket.socket | None = None, event: str = "milter.start") -> BaseException | None:
    """The asyncio engine on this (the main) thread until a stop signal, then the drain.

    `sock`: a socket bound already (a worker, regfd/mta/workers.py); `event`: the start line's name.

    The stop signals are blocked in every thread (run_daemon); the loop's
    handlers take them here while it runs. Returns the error it failed with, if any.
    """
    from regfd.mta import asyncio_engine

    loop, loop_name = asyncio_engine.new_event_loop()
    engine = asyncio_engine.Engine(app, quiet=kind == "unix")

    def started(server: Any) -> None:
        log.info(event, tcp_nodelay=kind != "unix", loop=loop_name, threads=engine.workers, **start_fields)

    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        loop.run_until_complete(asyncio_engine.serve(engine, kind, spec, STOP_SIGNALS, deadline, started, sock))
    except OSError as exc:
        return RegfdError(f"milter socket {spec}: cannot listen ({exc})")
    except Exception as exc:  # reported by run_daemon
        return exc
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        engine.shutdown()
        loop.close()
    return None


def _milter(ctx: Any) -> Any:
    """The connection's milter object, made now if no negotiation made it.

    libmilter passes a peer's commands on even when no option negotiation
    came first (a broken or hostile peer; found by tests/test_fuzz_milter.py):
    without an object every callback raised AttributeError and pymilter
    answered its own "451 4.3.0 untrapped exception", not the configured
    failure action. pymilter's connect_callback does the same.
    """
    m = ctx.getpriv()
    if m is None:
        import Milter as M

        m = M.factory()
        m._setctx(ctx)
    return m


def _register(Milter: Any, libmilter: Any, spec: str) -> None:
    """Milter.runmilter without its final main(), so the listening socket exists to set options on."""
    import Milter as M

    libmilter.set_connect_callback(M.connect_callback)
    libmilter.set_helo_callback(lambda ctx, host: _milter(ctx).hello(host))
    libmilter.set_envfrom_callback(lambda ctx, *b: _milter(ctx).envfrom_bytes(*b))
    libmilter.set_envrcpt_callback(lambda ctx, *b: _milter(ctx).envrcpt_bytes(*b))
    libmilter.set_header_callback(lambda ctx, f, v: _milter(ctx).header_bytes(f, v))
    libmilter.set_eoh_callback(lambda ctx: _milter(ctx).eoh())
    libmilter.set_body_callback(lambda ctx, chunk: _milter(ctx).body(chunk))
    libmilter.set_eom_callback(lambda ctx: _milter(ctx).eom())
    libmilter.set_abort_callback(lambda ctx: _milter(ctx).abort())
    libmilter.set_close_callback(M.close_callback)
    libmilter.setconn(spec)
    libmilter.register("regfd", data=lambda ctx: _milter(ctx).data(),
                       unknown=lambda ctx, cmd: _milter(ctx).unknown(cmd), negotiate=M.negotiate_callback)
    try:
        libmilter.opensocket(True)
    except libmilter.error as exc:
        raise RegfdError(f"milter socket {spec}: cannot listen ({exc})") from None
