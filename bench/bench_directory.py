"""Directory benchmark (issue 2): registry import time, classification throughput, round trips.

Starts its own redis-server on a unix socket in a temp dir. Prints:
  - `regfd registry import` of a 100,000-row CSV (the real command, in a subprocess)
  - recipient-classification throughput (messages/s, 5 recipients each: one
    snapshot round trip + the pure classification) with 10 and with 1,000,000
    registry entries, measured in alternating rounds in one run, and the ratio
  - Redis round trips per message (counted by the store)
Usage: .venv/bin/python bench/bench_directory.py [--entries 1000000] [--messages 20000]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from regfd.core.directory import RegistryEntry, classify_recipient  # noqa: E402
from regfd.store.client import client_from_url
from regfd.store.redis_store import RedisStore  # noqa: E402
from tests.conftest import start_redis, stop_redis  # noqa: E402

CATS = ("analyst", "institutional-investor", "money-manager", "broker-dealer", "shareholder")


def domain(i: int) -> str:
    """A distinct domain for row `i`, spread over 97 parent domains."""
    return f"firm{i}.example{i % 97}.com"


def write_csv(path: Path, rows: int) -> None:
    """A registry CSV of `rows` rows in the import format."""
    with open(path, "w") as fh:
        fh.write("pattern,category,firm,note\n")
        for i in range(rows):
            fh.write(f"{domain(i)},{CATS[i % len(CATS)]},Firm {i},\n")


def fill(store: RedisStore, prefix_rows: int) -> None:
    """Load `prefix_rows` entries through registry_import in 200,000-row transactions, replacing the registry."""
    entries = [RegistryEntry(domain(i), CATS[i % len(CATS)], f"Firm {i}") for i in range(prefix_rows)]
    for i in range(0, len(entries), 200_000):
        store.registry_import(entries[i:i + 200_000], replace=(i == 0), who="bench", source="bench")


def classify_rate(store: RedisStore, entries: int, messages: int, rng: random.Random) -> tuple[float, float]:
    """(messages per second, round trips per message) for envelopes of 5 recipients, 3 of them specified."""
    at = datetime.now(UTC)
    envelopes = []
    for _ in range(messages):
        rcpts = []
        for j in range(5):
            k = rng.randrange(entries)
            rcpts.append(f"u{j}@desk.{domain(k)}" if j % 2 == 0 else f"u{j}@nobody{rng.randrange(10**6)}.org")
        envelopes.append(("bob@allient.com", rcpts))
    store.round_trips = 0
    t = time.perf_counter()
    specified = 0
    for sender, rcpts in envelopes:
        snap = store.snapshot(sender, rcpts)
        for r in rcpts:
            specified += classify_recipient(r, snap, ("allient.com",), at).cls == "specified"
    elapsed = time.perf_counter() - t
    assert specified == messages * 3, specified  # every even recipient is in the registry
    return messages / elapsed, store.round_trips / messages


def main() -> None:
    """Run every measurement and print the results (see the module docstring)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        server = start_redis(Path(tmp) / "redis")
        try:
            csv = Path(tmp) / "registry.csv"
            write_csv(csv, 100_000)
            env = {**os.environ, "REGFD_REDIS_URL": server.url, "REGFD_ACTOR": "bench"}
            cfg = Path(tmp) / "regfd.toml"
            cfg.write_text('internal_domains = ["allient.com"]\nredis_prefix = "imp:"\n')
            t = time.perf_counter()
            argv = [sys.executable, "-m", "regfd.cli", "--config", str(cfg), "registry", "import", str(csv)]
            p = subprocess.run(argv, env=env, capture_output=True, text=True)
            import_s = time.perf_counter() - t
            assert p.returncode == 0, p.stderr
            print(f"registry import, 100,000-row CSV (regfd registry import, whole command): {import_s:.2f} s"
                  f"  [target < 10 s]")

            client = client_from_url(server.url)
            small, large = RedisStore(client, "small:"), RedisStore(client, "large:")
            fill(small, 10)
            t = time.perf_counter()
            fill(large, args.entries)
            print(f"loading {args.entries:,} entries for the large registry: {time.perf_counter() - t:.1f} s")
            print(f"registry sizes: small {small.registry_count():,}, large {large.registry_count():,}")
            rates: dict[str, list[float]] = {"small": [], "large": []}
            trips = set()
            for _ in range(args.rounds):  # alternate, so machine noise hits both alike
                for name, st, n in (("small", small, 10), ("large", large, args.entries)):
                    rate, rt = classify_rate(st, n, args.messages, rng)
                    rates[name].append(rate)
                    trips.add(rt)
            s, lg = max(rates["small"]), max(rates["large"])
            print(f"classification, 5 recipients/message, 10 entries:        {s:,.0f} messages/s "
                  f"(rounds: {', '.join(f'{r:,.0f}' for r in rates['small'])})")
            print(f"classification, 5 recipients/message, {args.entries:,} entries: {lg:,.0f} messages/s "
                  f"(rounds: {', '.join(f'{r:,.0f}' for r in rates['large'])})")
            print(f"ratio large/small: {lg / s:.3f}  [target >= 0.90]")
            print(f"Redis round trips per message: {', '.join(f'{t:g}' for t in sorted(trips))}  [target 1]")
        finally:
            stop_redis(server)


if __name__ == "__main__":
    main()
