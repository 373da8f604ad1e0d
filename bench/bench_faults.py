"""Faults under load at full size: per fault, sent / 250 / delivered / held / 451 / lost / duplicated / records.

    .venv/bin/python bench/bench_faults.py [--messages 10000] [--concurrency 10]
                                           [--faults redis-kill,milter-kill,...] [--kinds inet,unix]
                                           [--engine libmilter|asyncio] [--json out.json]
    .venv/bin/python bench/bench_faults.py --sentinel [--wait-replicas 0,1] [--replicas 1] [--messages 10000]
    .venv/bin/python bench/bench_faults.py --drain 30 [--engine ...]

The same driver, faults and accountant as tests/test_faults.py
(tests/faultload.py), with a fresh regfd (Redis + milter) per fault, through
one private Postfix on loopback. Columns: `250` messages whose last reply was
250; `delivered`/`held` of those, at the sink or in the hold queue; `451`
messages that got at least one 4xx (or a dropped connection) before a retry
got them through; `lost` 250 and neither delivered nor held; `duplicated`
delivered or held more than once; `records` accepted messages to a Specified
Person with exactly one record (`rec-bad`: none or several); `orphans`
records of an attempt whose 250 never came (decided, then the reply was
lost: the client retried); `tf-s` seconds from the first to the last 4xx,
retries included (how long mail was tempfailed); `msg/s` the first pass's
rate. Exit status 1 when any run lost, duplicated or failed to record anything.

--sentinel runs the failover instead (a primary, a replica and three
sentinels; the primary SIGKILLed at 30 % of the load), once per
`--wait-replicas` value (regfd's redis_wait_replicas), and measures what
WAIT costs one decision's transaction on loopback. --drain S measures the
stop with `drain_timeout = S` and one client stuck mid-message: seconds from
SIGTERM to exit, and what a new message got meanwhile.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.faultload import (  # noqa: E402
    FAILOVER,
    FAULTS,
    FaultMta,
    FaultStack,
    SentinelCluster,
    TinyFilesystem,
    dump,
    run_fault,
    stuck_drain,
    timeline,
)
from tests.mta import ensure_postfix, make_mta_dir  # noqa: E402

COLUMNS = ("sent", "250", "delivered", "held", "451", "lost", "duplicated", "records", "rec-bad", "orphans")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of: {', '.join(FAULTS)}")
    ap.add_argument("--kinds", default="inet,unix", help="milter sockets: inet, unix or both")
    ap.add_argument("--engine", default="libmilter", choices=("libmilter", "asyncio"))
    ap.add_argument("--json", type=Path, help="also write every run (each message's replies) to this file")
    ap.add_argument("--sentinel", action="store_true", help="the Sentinel failover instead of the faults")
    ap.add_argument("--wait-replicas", default="0,1", help="with --sentinel: redis_wait_replicas values to run")
    ap.add_argument("--replicas", type=int, default=1, help="with --sentinel: how many replicas (default 1)")
    ap.add_argument("--drain", type=float, default=0.0, help="measure the stop with this drain_timeout instead")
    args = ap.parse_args(argv)
    if ensure_postfix() is None:
        print("bench_faults: Postfix is not installed (make test installs it as root)", file=sys.stderr)
        return 2
    if args.drain:
        return drain_bound(args.drain, args.engine, [k for k in args.kinds.split(",") if k])
    faults = [FAULTS[name] for name in args.faults.split(",") if name]
    kinds = [k for k in args.kinds.split(",") if k]
    waits = [0]
    if args.sentinel:
        faults, kinds = [FAILOVER], kinds[:1]
        waits = [int(w) for w in args.wait_replicas.split(",") if w]
        print(f"# Sentinel: a primary, {args.replicas} replica(s), three sentinels (down-after 1 s)")
        wait_cost()
    print(f"# {args.messages} messages per fault, concurrency {args.concurrency}, engine {args.engine}; "
          "10 % to a Specified Person (half of them held)")
    header = (f"{'fault':<14}{'socket':<7}{'wait':>5}" + "".join(f"{c:>11}" for c in COLUMNS)
              + f"{'tf-s':>8}{'msg/s':>8}")
    print(header, flush=True)
    mta = FaultMta.start()
    bad = 0
    runs = []
    try:
        for fault in faults:
            if fault.tiny_disk_mb and TinyFilesystem.why_not():
                print(f"{fault.name:<14}skipped: {TinyFilesystem.why_not()}", flush=True)
                continue
            for kind, wait in [(k, w) for k in ([fault.listener] if fault.listener else kinds) for w in waits]:
                t = time.monotonic()
                run, tally = run_fault(mta, fault, kind, args.engine, args.messages, args.concurrency,
                                       wait_replicas=wait, replicas=args.replicas)
                row = tally.row()
                print(f"{fault.name:<14}{kind:<7}{wait:>5}" + "".join(f"{row[c]:>11}" for c in COLUMNS)
                      + f"{run.tempfail_s:>8.1f}{args.messages / run.send_s:>8.0f}", flush=True)
                print(f"#   {fault.what}; {timeline(run)}; total {time.monotonic() - t:.0f}s", flush=True)
                for note in tally.notes[:10]:
                    print(f"#   {note}", flush=True)
                bad += not tally.ok
                runs.append((run, tally))
    finally:
        mta.stop()
    if args.json:
        for i, (run, tally) in enumerate(runs):
            dump(run, tally, args.json.with_suffix(f".{i}.json"))
        args.json.write_text(json.dumps([{"fault": r.fault, "socket": r.kind, **t.row()} for r, t in runs]))
    return 1 if bad else 0


def drain_bound(seconds: float, engine: str, kinds: list[str]) -> int:
    """SIGTERM with one client stuck between RCPT and DATA: the stop must end within `seconds`."""
    mta = FaultMta.start()
    bad = 0
    try:
        for kind in kinds:
            stack = FaultStack.start(mta, kind, engine, drain_timeout=seconds)
            try:
                d = stuck_drain(stack)
            finally:
                stack.stop()
            bad += d.elapsed > seconds + 1.0 or d.exit_status != 0
            print(f"drain  {engine:<10}{kind:<6} drain_timeout {seconds:g}s: exited {d.exit_status} after "
                  f"{d.elapsed:.2f}s with one client stuck mid-message; new mail meanwhile got {d.new_mail[0]} "
                  f"{d.new_mail[1][:60]}", flush=True)
    finally:
        mta.stop()
    return 1 if bad else 0


def wait_cost(n: int = 2000) -> None:
    """Milliseconds per decision transaction (a 1 KB record appended to a stream) without and with WAIT 1."""
    from regfd.store.client import client_from_url
    from regfd.store.redis_store import RedisStore

    cluster = SentinelCluster(make_mta_dir("regfd-waitcost-") / "sentinel")
    cluster.start()
    try:
        record = "x" * 1024
        for replicas in (0, 1):
            store = RedisStore(client_from_url(cluster.url), f"cost{replicas}:", wait_replicas=replicas)
            samples = []
            for _ in range(n):
                t = time.perf_counter()
                with store.batch("bench", durable=True) as tx:
                    tx.pipe.xadd(store.k("records"), {"r": record})
                samples.append((time.perf_counter() - t) * 1000)
            store.r.close()
            samples.sort()
            print(f"# WAIT {replicas}: one decision's transaction p50 {statistics.median(samples):.3f} ms, "
                  f"p99 {samples[int(n * 0.99)]:.3f} ms ({n} in a row, primary + replica on loopback)", flush=True)
    finally:
        cluster.stop()




if __name__ == "__main__":
    sys.exit(main())
