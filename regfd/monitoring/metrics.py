"""The metric names, and the `Metrics` adapter that records nothing.

`NoMetrics` is what every engine and store uses unless `[metrics] listen`
is set (then `prometheus.PrometheusMetrics`): the hot path never checks
whether metrics are on, it just calls an object that may do nothing.
"""

from __future__ import annotations

# Label values of regfd_failures_total{reason}: why no decision was taken. store: Redis unreachable or
# the record not written; deadline: over milter.decision_timeout; stopping: refused during a graceful stop;
# refused: the message cannot be decided (too many recipients, no classification); error: a bug.
REASON_STORE, REASON_DEADLINE, REASON_STOPPING = "store", "deadline", "stopping"
REASON_REFUSED, REASON_ERROR = "refused", "error"


class NoMetrics:
    """The `Metrics` port doing nothing (metrics off, tools, tests that do not look)."""

    def message(self, action: str, stage: str, seconds: float) -> None:
        """Nothing."""

    def failure(self, stage: str, reason: str, seconds: float) -> None:
        """Nothing."""

    def scanned(self, seconds: float, size: int) -> None:
        """Nothing."""

    def store_call(self, operation: str, seconds: float, ok: bool) -> None:
        """Nothing."""

    def connection(self, opened: bool) -> None:
        """Nothing."""

    def protocol_error(self) -> None:
        """Nothing."""


NO_METRICS = NoMetrics()
