"""The `Metrics` port on prometheus_client, and /metrics served from the milter process.

Counters and histograms are updated as messages are answered (a few
microseconds each, thread-safe); the backlog (outbox, held mail) is read
from the store when Prometheus scrapes, in one background thread with a
deadline (`[metrics] store_timeout`): a slow or absent Redis makes the
scrape report `regfd_store_up 0` instead of hanging it. Everything lives
in a registry of its own, so two instances in one process (tests) never
collide. Names follow Prometheus' conventions: the `regfd_` prefix, base
units (seconds, bytes), `_total` for counters, and no address of any kind
as a label value (labels take a few fixed words each).
"""

from __future__ import annotations

import concurrent.futures
import os
import platform
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import start_http_server
from prometheus_client.gc_collector import GCCollector
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

import regfd
from regfd.monitoring.health import Backlog

DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0)
# No `_created` series beside each counter and histogram: Prometheus does not need them, and they double the output.
disable_created_metrics()  # type: ignore[no-untyped-call]

STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0, 5.0)


class PrometheusMetrics:
    """The `Metrics` port recorded in a registry of its own (`registry`), which `serve` exposes."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.messages = Counter("regfd_messages", "Messages answered, by action (accept, tag, hold, reject, "
                                "failure: the configured failure_action) and the stage that decided",
                                ("action", "stage"), registry=r)
        self.failures = Counter("regfd_failures", "Messages answered with the failure action, by stage and reason "
                                "(store, deadline, stopping, refused, error)", ("stage", "reason"), registry=r)
        self.decision = Histogram("regfd_decision_duration_seconds", "Time spent deciding one message (directory "
                                  "lookup, scan, record), by the stage that decided", ("stage",),
                                  buckets=DURATION_BUCKETS, registry=r)
        self.scan = Histogram("regfd_scan_duration_seconds", "Time to scan and judge one message's content",
                              buckets=DURATION_BUCKETS, registry=r)
        self.size = Histogram("regfd_message_size_bytes", "Size of each scanned message as the MTA sent it",
                              buckets=SIZE_BUCKETS, registry=r)
        self.round_trips = Counter("regfd_store_round_trips", "Round trips to Redis, by operation (snapshot: the "
                                   "directory lookup, record: the decision's transaction, followup: the worker's "
                                   "follow-ups, write: other writes)",
                                   ("operation",), registry=r)
        self.store_errors = Counter("regfd_store_errors", "Round trips to Redis that failed, by operation",
                                    ("operation",), registry=r)
        self.store_latency = Histogram("regfd_store_round_trip_duration_seconds", "Duration of one counted round "
                                       "trip to Redis", buckets=STORE_BUCKETS, registry=r)
        # multiprocess_mode: how the `[milter] workers` processes add up (use_files below)
        self.open_connections = Gauge("regfd_milter_open_connections", "MTA connections open now", registry=r,
                                      multiprocess_mode="livesum")
        self.connections = Counter("regfd_milter_connections", "MTA connections accepted", registry=r)
        self.protocol_errors = Counter("regfd_milter_protocol_errors", "MTA connections dropped for breaking "
                                       "the milter protocol", registry=r)
        # Every counter exists from the start (at 0), so rates work from the first scrape.
        for action, stage in (("accept", "mail"), ("accept", "data"), ("accept", "eom"), ("tag", "eom"),
                              ("hold", "eom"), ("reject", "eom")):
            self.messages.labels(action, stage)
        for op in ("snapshot", "record"):
            self.round_trips.labels(op)
            self.store_errors.labels(op)

    # ----- the Metrics port
    def message(self, action: str, stage: str, seconds: float) -> None:
        """Count the answer and its decision time."""
        self.messages.labels(action, stage).inc()
        self.decision.labels(stage).observe(seconds)

    def failure(self, stage: str, reason: str, seconds: float) -> None:
        """Count a failure-action answer (as a message with action "failure", and by reason)."""
        self.messages.labels("failure", stage).inc()
        self.failures.labels(stage, reason).inc()
        self.decision.labels(stage).observe(seconds)

    def scanned(self, seconds: float, size: int) -> None:
        """One content scan: its duration and the message's size."""
        self.scan.observe(seconds)
        self.size.observe(size)

    def store_call(self, operation: str, seconds: float, ok: bool) -> None:
        """One hot-path round trip to Redis."""
        self.round_trips.labels(operation).inc()
        self.store_latency.observe(seconds)
        if not ok:
            self.store_errors.labels(operation).inc()

    def connection(self, opened: bool) -> None:
        """The open-connections gauge, and the total of those accepted."""
        if opened:
            self.connections.inc()
            self.open_connections.inc()
        else:
            self.open_connections.dec()

    def protocol_error(self) -> None:
        """One connection dropped for a protocol error."""
        self.protocol_errors.inc()

    # ----- what does not change while the process runs
    def describe(self, engine: str, mode: str, failure_action: str, store: str, lexicon_version: str) -> None:
        """regfd_build_info and regfd_config_info (value 1, the facts as labels)."""
        Gauge("regfd_build_info", "The regfd version and the Python it runs on", ("version", "python"),
              registry=self.registry, multiprocess_mode="max").labels(
            regfd.__version__, platform.python_version()).set(1)
        Gauge("regfd_config_info", "The configuration this process runs with", ("engine", "mode", "failure_action",
              "store", "lexicon_version"), registry=self.registry, multiprocess_mode="max").labels(
            engine, mode, failure_action, store, lexicon_version).set(1)

    def watch_backlog(self, probe: Callable[[], Backlog], timeout: float) -> None:
        """Export the store's backlog at each scrape (read by `probe`, within `timeout` seconds)."""
        self.registry.register(BacklogCollector(probe, timeout))

    def with_process_metrics(self) -> PrometheusMetrics:
        """Add the standard process_* (CPU, memory, fds), python_info and python_gc_* metrics."""
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        return self


class BacklogCollector(Collector):
    """Outbox depth and oldest age, held count and oldest age, read from the store at scrape time.

    One probe runs at a time on a thread of its own; a scrape waits for it at
    most `timeout` s. A probe still running from an earlier scrape is waited
    on again rather than doubled, so a hung Redis costs one thread, not one per scrape.
    """

    def __init__(self, probe: Callable[[], Backlog], timeout: float) -> None:
        self.probe = probe
        self.timeout = timeout
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="regfd-metrics-probe")
        self.running: concurrent.futures.Future[Backlog] | None = None
        self.lock = threading.Lock()

    def describe(self) -> list[Any]:
        """Nothing at registration: collect() must not run (and reach Redis) when the collector is registered."""
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The backlog gauges, and regfd_store_up (0 when the probe failed or overran the timeout)."""
        with self.lock:
            if self.running is None or self.running.done():
                self.running = self.pool.submit(self.probe)
            future = self.running
        backlog: Backlog | None
        try:
            backlog = future.result(timeout=self.timeout)
        except Exception:  # unreachable, or too slow: said by regfd_store_up
            backlog = None
        yield GaugeMetricFamily("regfd_store_up", "1 when the store answered this scrape's backlog query in time",
                                value=1 if backlog is not None else 0)
        if backlog is None:
            return
        yield GaugeMetricFamily("regfd_outbox_depth", "Notifications not yet delivered", value=backlog.outbox_depth)
        yield GaugeMetricFamily("regfd_outbox_oldest_age_seconds", "How long the oldest undelivered notification "
                                "has waited since it was due (0 when none)", value=backlog.outbox_oldest_age or 0.0)
        yield GaugeMetricFamily("regfd_held_messages", "Held messages waiting for a decision", value=backlog.held)
        yield GaugeMetricFamily("regfd_held_oldest_age_seconds", "How long the oldest held message has waited "
                                "(0 when none)", value=backlog.held_oldest_age or 0.0)
        yield GaugeMetricFamily("regfd_followups_pending", "Recorded decisions whose notices and disclosure "
                                "follow-up are not yet done", value=backlog.followups)
        yield GaugeMetricFamily("regfd_followups_oldest_age_seconds", "How long the oldest pending follow-up has "
                                "waited (0 when none)", value=backlog.followup_oldest_age or 0.0)
        yield GaugeMetricFamily("regfd_digest_messages", "Messages waiting for the next digest email",
                                value=backlog.digest)


def use_files(directory: Path) -> None:
    """Record every metric made from now on in `directory` (prometheus_client's multiprocess mode).

    For `[milter] workers`: each worker records its own counts in files there,
    and the one process that serves /metrics adds them up (`files_registry`).
    Called in each process before its metrics are made (the value class is
    otherwise chosen when prometheus_client is first imported).
    """
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def files_registry(directory: Path) -> CollectorRegistry:
    """A registry that reads every process's metric files in `directory` at scrape time."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return registry


def forget_process(directory: Path, pid: int) -> None:
    """A worker that died no longer counts in the live gauges (open connections)."""
    mark_process_dead(pid, path=str(directory))  # type: ignore[no-untyped-call]


class MetricsServer:
    """/metrics over HTTP on a thread of prometheus_client's; `stop` closes it."""

    def __init__(self, metrics: PrometheusMetrics | CollectorRegistry, host: str, port: int) -> None:
        registry = metrics.registry if isinstance(metrics, PrometheusMetrics) else metrics
        self.server, self.thread = start_http_server(port, addr=host, registry=registry)

    @property
    def port(self) -> int:
        """The port actually bound (useful when asked for port 0)."""
        return int(self.server.server_address[1])

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
