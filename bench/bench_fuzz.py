"""The fuzz properties of tests/test_fuzz_milter.py and tests/test_scanner_property.py at full size.

    .venv/bin/python bench/bench_fuzz.py                      # 100 000 inputs per target
    .venv/bin/python bench/bench_fuzz.py --examples 2000 --targets session,scanner

Targets: `session` (the sans-IO core: PacketParser + Session), `asyncio`
(the asyncio engine in this process over a loopback socket; `asyncio-unix`: on a
unix socket with the quiet protocol), `libmilter`
(`regfd milter --engine libmilter` as a subprocess over a loopback socket),
`scanner` (structured MIME through scan_message). The properties are the
suite's (tests/fuzzing/harness.py), on inputs from tests/fuzzing/strategies.py;
a private redis-server in a temp dir holds the directory. A failing input is
counted and its first lines printed, and the run goes on (no shrinking: put
it in an @example to shrink and keep it).

Printed per target: inputs run, failures, the largest tracemalloc peak of
one input (above what was allocated before it), the process's peak RSS (the
subprocess's for libmilter), inputs/s. Hypothesis generates in runs of
`--batch` inputs (200): its cost per input grows with the length of a run
(measured: 13 inputs/s in runs of 5 000, 40/s in runs of 200, same load),
and its memory of what it tried is dropped between runs.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import structlog  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.conftest import Regfd, free_port, start_redis, stop_redis  # noqa: E402
from tests.fuzzing import harness  # noqa: E402
from tests.fuzzing.strategies import Script, milter_scripts, mime_messages  # noqa: E402

TARGETS = ("session", "asyncio", "asyncio-unix", "libmilter", "scanner")
TRACE_EVERY = 10


class Tally:
    """Inputs run and failures (with the first few kept to print) of one target."""

    trace_every = TRACE_EVERY

    def __init__(self) -> None:
        self.runs = 0
        self.failures = 0
        self.first: list[str] = []

    def progress(self) -> str:
        """Inputs and failures so far."""
        return f"{self.runs} inputs, {self.failures} failures"

    def run(self, check: Callable[[], Any], describe: Callable[[], str]) -> None:
        """One input; a failure is counted and kept, not raised. Every `trace_every`-th input runs under
        tracemalloc (harness.traced_peak checks and notes its peak); tracing all would triple the time."""
        self.runs += 1
        traced = self.trace_every > 0 and self.runs % self.trace_every == 0
        if traced:
            tracemalloc.start()
        try:
            check()
        except Exception as exc:
            self.failures += 1
            if len(self.first) < 5:
                self.first.append(f"{type(exc).__name__}: {str(exc)[:300]}\n      input: {describe()[:300]}")
        finally:
            if traced:
                tracemalloc.stop()


def drive(strategy: st.SearchStrategy[Any], n: int, batch: int, one: Callable[[Any], None],
          progress: Callable[[], str]) -> None:
    """Run `one` on `n` generated inputs, `batch` per Hypothesis run (generation only, no database)."""
    done = [0]
    t0 = time.monotonic()
    while done[0] < n:
        if done[0]:
            print(f"  ... {progress()} after {time.monotonic() - t0:.0f}s", flush=True)
        before = done[0]

        @settings(max_examples=min(batch, n - done[0]), database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(strategy)
        def run(x: Any) -> None:
            done[0] += 1
            one(x)

        run()
        if done[0] == before:
            break  # nothing left to generate


def _describe(script: Script) -> str:
    return f"{script.kind} {script.size} B {[w[:24] for w in script.writes[:6]]!r}"


def bench(target: str, n: int, batch: int, regfd: Regfd) -> tuple[Tally, float, int]:
    """Run one target; returns its tally, seconds, and peak RSS in KiB."""
    tally = Tally()
    t0 = time.monotonic()
    rss = 0
    if target == "session":
        apps = [(a, harness.make_app(regfd, a)[0]) for a in ("tempfail", "reject")]

        def one_session(script: Script) -> None:
            action, app = apps[tally.runs % 2]  # the failure actions in turn
            tally.run(lambda: harness.check_session(app, script, action), lambda: _describe(script))

        drive(milter_scripts(), n, batch, one_session, tally.progress)
    elif target in ("asyncio", "asyncio-unix"):
        app, _ = harness.make_app(regfd)
        ref, _ = harness.make_app(regfd)
        eut = harness.EngineUnderTest(app, str(regfd.tmp / "milter.sock") if target == "asyncio-unix" else None)
        try:
            drive(milter_scripts(), n, batch,
                  lambda s: tally.run(lambda: harness.check_engine(eut, ref, s, "tempfail"), lambda: _describe(s)),
                  tally.progress)
        finally:
            eut.close()
    elif target == "libmilter":
        from tests.mta import MilterProcess, make_mta_dir

        ref, _ = harness.make_app(regfd)
        port = free_port()
        m = MilterProcess.start(regfd.config, f"inet:{port}@127.0.0.1", regfd.env,
                                make_mta_dir("regfd-bench-fuzz-") / "milter.log", engine="libmilter", timeout=120)
        alive: Callable[[], bool] = lambda: m.proc.poll() is None  # noqa: E731
        log = harness.LogTail(m.log)
        try:
            drive(milter_scripts(), n, batch, lambda s: tally.run(
                lambda: harness.check_libmilter(port, alive, ref, s, log), lambda: _describe(s)), tally.progress)
            rss = _hwm_kib(m.proc.pid)
        finally:
            m.stop()
    else:
        drive(mime_messages(), n, batch,
              lambda raw: tally.run(lambda: harness.check_scan(raw), lambda: repr(raw[:300])), tally.progress)
    elapsed = time.monotonic() - t0
    return tally, elapsed, rss or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=100_000, help="inputs per target (default 100000)")
    ap.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, of {', '.join(TARGETS)}")
    ap.add_argument("--batch", type=int, default=200, help="inputs per Hypothesis run")
    ap.add_argument("--trace-every", type=int, default=TRACE_EVERY,
                    help=f"run every Nth input under tracemalloc (default {TRACE_EVERY}; 0: none)")
    args = ap.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    bad = [t for t in targets if t not in TARGETS]
    if bad:
        ap.error(f"unknown target(s): {', '.join(bad)}")
    # The milter logs every decision; at 100 000 inputs that is the bench's own noise, not its subject.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    logging.getLogger("pypdf").setLevel(logging.CRITICAL)
    tmp = Path(tempfile.mkdtemp(prefix="regfd-bench-fuzz-"))
    server = start_redis(tmp / "redis")
    try:
        regfd = Regfd(tmp, server.url, f"fuzz{uuid.uuid4().hex[:8]}:")
        harness.populate(regfd)
        from tests.scanner_fixtures import lexicons

        lexicons()  # compiled before any clock starts
        Tally.trace_every = args.trace_every
        print(f"{'target':<10} {'inputs':>8} {'failures':>8} {'peak/input':>11} {'peak RSS':>9} {'inputs/s':>9}")
        failed = 0
        for target in targets:
            harness.PEAKS.clear()
            tally, elapsed, rss = bench(target, args.examples, args.batch, regfd)
            peak = max(harness.PEAKS.values(), default=0)
            peak_s = f"{peak / 1048576:.1f} MiB" if peak else "-"
            print(f"{target:<10} {tally.runs:>8} {tally.failures:>8} {peak_s:>11} {rss / 1024:>6.0f} MiB "
                  f"{tally.runs / elapsed:>9.0f}", flush=True)
            if target == "scanner":
                budget = harness.SCAN_LIMITS.time_budget
                print(f"    slowest scan: {harness.SCAN_WALL[0]:.2f} s wall (budget {budget:g} s)")
            for f in tally.first:
                print(f"    {f}")
            failed += tally.failures
        return 1 if failed else 0
    finally:
        stop_redis(server)


if __name__ == "__main__":
    sys.exit(main())
