"""The milter's state shared by every connection, for both engines (no pymilter here).

The asyncio engine (the default) imports only this; regfd/mta/libmilter.py
adds the pymilter callbacks on top, so an installation without pymilter and
libmilter still runs `engine = "asyncio"`.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from regfd.core.clock import now
from regfd.core.decision import Decider
from regfd.monitoring.metrics import NO_METRICS
from regfd.ports import DecisionSink, DirectoryReader, Metrics

if TYPE_CHECKING:
    from regfd.mta.libmilter import RegfdMilter


@dataclass(frozen=True)
class FailurePolicy:
    """What to answer when no decision can be taken (store down, deadline, bug)."""

    action: str  # tempfail | accept | reject
    tempfail_text: str
    reject_text: str


@dataclass
class MilterApp:
    """State shared by every connection: immutable, or thread-safe by construction."""

    decider: Decider
    store: DirectoryReader
    sink: DecisionSink
    failure: FailurePolicy
    decision_timeout: float
    reject_text: str
    subject_prefix: str = ""
    journal_bcc: str = ""
    clock: Callable[[], datetime] = now
    # In-flight messages, so a graceful stop can wait for them.
    _inflight: int = 0
    _closing: bool = False
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _executor: concurrent.futures.ThreadPoolExecutor | None = None
    # Where both engines report (regfd/monitoring); nothing unless [metrics] listen is set.
    metrics: Metrics = NO_METRICS

    @classmethod
    def from_config(cls, config: Any, store: DirectoryReader, sink: DecisionSink, decider: Decider) -> MilterApp:
        """The milter's settings from the configuration, around the process's decision path."""
        m = config.milter
        return cls(decider=decider, store=store, sink=sink,
                   failure=FailurePolicy(m.failure_action, m.tempfail_text, m.reject_text),
                   decision_timeout=m.decision_timeout,
                   reject_text=m.reject_text, subject_prefix=m.subject_prefix, journal_bcc=m.journal_bcc)

    # True on a unix socket: no Nagle there, so the quieter protocol is safe (see QuietRegfdMilter).
    quiet: bool = False

    def factory(self) -> RegfdMilter:
        """Milter.factory: a milter object per MTA connection, the quiet one on a unix socket."""
        from regfd.mta.libmilter import QuietRegfdMilter, RegfdMilter

        return QuietRegfdMilter(self) if self.quiet else RegfdMilter(self)

    @property
    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        """The libmilter engine's pool for the DATA and EOM jobs, created on first use (libmilter.py says why
        jobs leave libmilter's threads)."""
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    workers = max(2, min(8, 2 * (os.cpu_count() or 1)))
                    self._executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="regfd-scan")
        return self._executor

    @property
    def max_message_bytes(self) -> int:
        """The most of one message kept in memory (one byte more shows it was over)."""
        return self.decider.max_message_bytes

    def shutdown(self) -> None:
        """Drop queued jobs without waiting; call it after drain, when no message needs one any more."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _enter(self) -> bool:
        """Count a message in flight; False once a graceful stop has begun."""
        with self._lock:
            if self._closing:
                return False
            self._inflight += 1
            return True

    def _leave(self) -> None:
        with self._lock:
            self._inflight -= 1
            self._lock.notify_all()

    @property
    def inflight(self) -> int:
        """Messages between MAIL and their answer, for the stop log (read without the lock)."""
        return self._inflight

    def drain(self, timeout: float) -> bool:
        """Refuse new messages (451, the client retries) and wait until none is in flight.

        libmilter abandons sessions mid-message once told to stop (its worker
        pool exits), so a graceful stop must drain here first. False if some
        message is still in flight after `timeout`.
        """
        with self._lock:
            self._closing = True
            return self._lock.wait_for(lambda: self._inflight <= 0, timeout)
