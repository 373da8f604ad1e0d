"""The graceful stop's one deadline (regfd/mta/deadline.py): every step waits only until the same instant."""

from __future__ import annotations

import threading
import time

from regfd.mta.deadline import StopDeadline


def test_the_deadline_is_fixed_at_the_first_begin_and_tells_the_background() -> None:
    told = threading.Event()
    d = StopDeadline(30.0, on_begin=told)
    assert not told.is_set() and d.at is None
    first = d.begin()
    assert told.is_set() and 29.9 < first - time.monotonic() <= 30.0
    time.sleep(0.01)
    assert d.begin() == first  # a second signal does not move it


def test_each_step_gets_what_is_left_and_the_drain_leaves_the_reserve() -> None:
    d = StopDeadline(4.0)
    d.begin()
    assert d.reserve == 1.0 and StopDeadline(2.0).reserve == 0.5
    assert 2.9 < d.drain_left() <= 3.0  # the drain ends a reserve before the deadline
    assert 3.4 < d.steps_left() <= 3.5  # the steps after it, half a reserve before
    assert 3.9 < d.left() <= 4.0
    d.at = time.monotonic() - 1  # past the deadline: nothing more to wait, never a negative timeout
    assert d.left() == d.drain_left() == d.steps_left() == 0.0
