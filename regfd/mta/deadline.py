"""The graceful stop's one deadline: the stop signal's time plus `milter.drain_timeout`.

Every step of a stop (the drain of messages in flight, stopping the engine's
listener, joining the background threads, closing the store) waits only
until this one instant, so the documented bound is the bound of the whole
stop. Each step used to have its own timeout and they added up: 30 s of
drain, then libmilter's 5 s listener poll, then 5 s per background thread
(35.3 s measured with one stuck client for a documented 30 s).
"""

from __future__ import annotations

import threading
import time


class StopDeadline:
    """Set once, at the stop signal; `left()` is what a step of the stop may still wait."""

    def __init__(self, seconds: float, on_begin: threading.Event | None = None) -> None:
        self.seconds = seconds
        self.at: float | None = None
        self.on_begin = on_begin

    @property
    def reserve(self) -> float:
        """The end of the budget kept for the steps after the drain (a quarter of it, at most 1 s)."""
        return min(1.0, self.seconds / 4)

    def begin(self) -> float:
        """The stop starts now (a second call keeps the first instant); sets `on_begin`."""
        if self.at is None:
            self.at = time.monotonic() + self.seconds
            if self.on_begin is not None:
                self.on_begin.set()
        return self.at

    def left(self, reserve: float = 0.0) -> float:
        """Seconds until the deadline less `reserve`, never negative; begins the stop if it had not."""
        return max(0.0, self.begin() - reserve - time.monotonic())

    def drain_left(self) -> float:
        """What the drain of messages in flight may wait: the budget less the reserve."""
        return self.left(self.reserve)

    def steps_left(self) -> float:
        """What a step after the drain may wait: the budget less half the reserve, which is the process's exit
        (closing the store, the interpreter's own teardown: about 0.25 s measured)."""
        return self.left(self.reserve / 2)
