"""Register benchmark (issue 15): what chaining costs per record, in time and in Redis memory.

Starts its own redis-server on a unix socket in a temp dir. Writes the same
real record (a `tag` decision with a material finding, built by the decision
path) N times, in alternating rounds, two ways:
  - plain: the pre-register append, an XADD with exact MINID trimming in a MULTI/EXEC
  - chained: the register's append (the Lua script: head, SHA-256 link, XADD, head) in a MULTI/EXEC
and prints:
  - µs per append as the client sees it (median of the rounds), with and without chaining
  - µs per call inside Redis (INFO commandstats: XADD vs the EVAL that does the chained append)
  - bytes per record in Redis (MEMORY USAGE of each stream / entries), with and without chaining,
    and per audit entry
  - `regfd records verify` speed (µs per entry walked)
Usage: .venv/bin/python bench/bench_register.py [--records 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from regfd.compliance.records import make_record  # noqa: E402
from regfd.compliance.register import Register  # noqa: E402
from regfd.config import parse_config  # noqa: E402
from regfd.core.chain import digest  # noqa: E402
from regfd.core.clock import to_ms  # noqa: E402
from regfd.store.client import client_from_url  # noqa: E402
from regfd.store.redis_store import RedisStore  # noqa: E402
from tests.builders import MATERIAL, facts_for, make_verdict  # noqa: E402
from tests.conftest import start_redis, stop_redis  # noqa: E402


def plain_round(store: RedisStore, key: str, body: str, n: int, minid: int) -> float:
    """µs per append: the pre-register path (XADD with exact MINID trimming, alone in a MULTI/EXEC)."""
    t = time.perf_counter()
    for _ in range(n):
        with store.batch("bench") as tx:
            tx.pipe.xadd(key, {"r": body}, minid=minid, approximate=False)
    return (time.perf_counter() - t) / n * 1e6


def chained_round(store: RedisStore, record: dict[str, Any], body: str, n: int, minid: int) -> float:
    """µs per append: the register's path (digest in Python, the Lua append in the MULTI/EXEC)."""
    t = time.perf_counter()
    for _ in range(n):
        with store.batch("bench") as tx:
            store.register.append(tx, "records", {"r": body}, digest(record), minid)
    return (time.perf_counter() - t) / n * 1e6


def commandstats(store: RedisStore) -> dict[str, float]:
    """usec_per_call of every command Redis ran since the last CONFIG RESETSTAT."""
    info: dict[str, Any] = store.r.info("commandstats")
    return {k.removeprefix("cmdstat_"): float(v["usec_per_call"]) for k, v in info.items()}


def main() -> None:
    """Run every measurement and print the results (see the module docstring)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=5000, help="records per way per round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    config = parse_config({"internal_domains": ["allient.com"]}, "<bench>")
    verdict = make_verdict(config, findings=(MATERIAL,))
    record = make_record(verdict, facts_for(verdict), disclosure_id="d-0123456789abcdef").to_json()
    body = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
    minid = to_ms(datetime.now(UTC) - timedelta(days=2555))
    with tempfile.TemporaryDirectory(prefix="regfd-bench-register-") as tmp:
        server = start_redis(Path(tmp) / "redis")
        try:
            store = RedisStore(client_from_url(server.url), "bench:")
            plain_key = "bench:plain"
            plain_round(store, plain_key, body, 200, minid)  # warm up both paths
            chained_round(store, record, body, 200, minid)
            store.r.delete(plain_key, store.k("records"), store.k("register:records"))
            store.r.config_resetstat()
            plain: list[float] = []
            chained: list[float] = []
            for _ in range(args.rounds):
                plain.append(plain_round(store, plain_key, body, args.records, minid))
                chained.append(chained_round(store, record, body, args.records, minid))
            stats = commandstats(store)
            n = args.rounds * args.records
            plain_bytes = int(store.r.memory_usage(plain_key, samples=0) or 0)
            chained_bytes = int(store.r.memory_usage(store.k("records"), samples=0) or 0)
            for i in range(1000):  # audit entries, as `regfd registry add` writes them
                store.audit("alice@allient.com", "registry.add", f"analyst{i}@bank.com",
                            {"pattern": f"analyst{i}@bank.com", "category": "analyst", "firm": "Big Bank",
                             "note": "", "added_by": "alice@allient.com", "added_at": "2026-11-17T15:00:00+00:00"})
            audit_bytes = int(store.r.memory_usage(store.k("audit"), samples=0) or 0)
            t = time.perf_counter()
            report = Register(store, config).verify([])
            walk_us = (time.perf_counter() - t) / (n + 1000) * 1e6
            assert report.intact and report.walks["records"].entries == n, report.problems
            print(f"record: {len(body)} bytes of JSON (a tag decision with one material finding)")
            print(f"append, client side, median of {args.rounds} rounds of {args.records}:")
            print(f"  plain   (XADD MINID in MULTI/EXEC)        {statistics.median(plain):8.1f} µs")
            print(f"  chained (Lua append in MULTI/EXEC)        {statistics.median(chained):8.1f} µs"
                  f"   (+{statistics.median(chained) - statistics.median(plain):.1f} µs)")
            print("inside Redis, per call (INFO commandstats):")
            print(f"  XADD  {stats.get('xadd', 0):8.1f} µs   (plain)")
            print(f"  EVAL  {stats.get('eval', 0):8.1f} µs   (chained: head, SHA-256 link, XADD, head)")
            print(f"  EXEC  {stats.get('exec', 0):8.1f} µs   (both ways, whole transaction)")
            print(f"memory per record (MEMORY USAGE / {n} entries):")
            print(f"  plain   {plain_bytes / n:8.1f} bytes")
            print(f"  chained {chained_bytes / n:8.1f} bytes   (+{(chained_bytes - plain_bytes) / n:.1f})")
            print(f"  audit entry (a registry change), chained: {audit_bytes / 1000:.1f} bytes")
            print(f"verify: {walk_us:.1f} µs per entry walked ({n + 1000} entries)")
            store.r.close()
        finally:
            stop_redis(server)


if __name__ == "__main__":
    main()
