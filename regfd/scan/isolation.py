"""Big messages are scanned in a child process that is killed at a hard deadline.

The scanner's `time_budget` is checked between parts: one hostile part (a
PDF built to make its parser crawl) can run far past it, and a thread
cannot be stopped in Python. A forked child can: `scan_in_child` forks,
the child scans and sends its findings back through a pipe, and the parent
kills it once `seconds` have passed, answering an `unscannable` finding
(which the policy treats as material) instead of waiting. Only messages
over `[limits] isolate_over` bytes pay for the fork (a few milliseconds);
small ones are scanned in place.

The child inherits the compiled lexicons (copy-on-write), touches no lock
another thread might hold (no logging, no Redis), ignores the stop signals
meant for the milter, and dies with the parent (Linux prctl).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import select
import signal
import time
from collections.abc import Callable, Iterable

from regfd.core.finding import UNSCANNABLE, Finding

PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _unscannable(reason: str, text: str) -> list[Finding]:
    return [Finding(UNSCANNABLE, reason, text, "", "message")]


def _child(scan: Callable[[bytes], Iterable[Finding]], raw: bytes, out: int) -> None:
    """Scan and write the pickled findings to `out`; never returns."""
    status = 0
    try:
        with contextlib.suppress(Exception):
            signal.set_wakeup_fd(-1)  # the milter's event loop must not hear this child's signals
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        try:
            payload = pickle.dumps(list(scan(raw)))
        except Exception as exc:  # the scanner never raises; if it does, the parent says so
            payload = pickle.dumps(_unscannable(f"scanner-error:{type(exc).__name__}", "scanner error"))
        view = memoryview(payload)
        while view:
            view = view[os.write(out, view):]
    except BaseException:
        status = 1
    finally:
        os._exit(status)


def scan_in_child(scan: Callable[[bytes], Iterable[Finding]], raw: bytes, seconds: float) -> list[Finding]:
    """`scan(raw)` in a forked child, killed after `seconds`; what could not be read is `unscannable`."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child(scan, raw, write_end)
    os.close(write_end)
    chunks: list[bytes] = []
    deadline = time.monotonic() + seconds
    finished = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([read_end], [], [], left)
            if not ready:
                continue
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                finished = True
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        if not finished:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    if not finished:
        return _unscannable("time-budget", f"scan stopped at the hard deadline ({seconds:g} s)")
    if status != 0 or not chunks:
        return _unscannable("scanner-error:child", "the scanning process failed")
    found: list[Finding] = pickle.loads(b"".join(chunks))
    return found
