"""`regfd status`: the health facts for a person (or a script with --json), and an exit status to act on.

Exit 0 healthy, 1 degraded (a problem line says what), 3 store unreachable.
The report is printed in every case, the unreachable one included. It never
starts the private redis-server: a status check that started the store it
checks would always find it up.
"""

from __future__ import annotations

import argparse
from typing import Any

from regfd.cli.output import print_json
from regfd.errors import StoreUnavailable
from regfd.monitoring.health import DEGRADED, HEALTHY, Health, describe_age, gather

EXIT = {HEALTHY: 0, DEGRADED: 1}
EXIT_UNREACHABLE = 3


def register(sub: Any) -> None:
    """Add `regfd status` to the top-level parser."""
    p = sub.add_parser("status", help="health: store, agents, outbox, held mail, lexicons (exit 0/1/3)",
                       description="Is regfd healthy? Exit 0 healthy, 1 degraded, 3 store unreachable.")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for Redis (default 2)")
    p.set_defaults(func=run)


def run(ctx: Any, args: argparse.Namespace) -> int:
    """Gather, print, and exit with the status's code."""
    from regfd.store.private_redis import PrivateRedis

    config = ctx.config
    health: Health
    if not config.effective_redis_url and not PrivateRedis(config.state_dir).answering():
        health = gather(config, None, f"the private redis-server under {config.state_dir / 'redis'} is not running "
                                      "(regfd milter starts it)")
    else:
        try:
            handle = ctx.services.open_store(timeout=args.timeout)
        except StoreUnavailable as exc:
            health = gather(config, None, str(exc))
        else:
            try:
                health = gather(config, handle.store)
            finally:
                handle.close()
    if args.json:
        print_json(ctx.out, health.to_json())
    else:
        ctx.out.write(render(health))
    return EXIT.get(health.status, EXIT_UNREACHABLE)


def render(h: Health) -> str:
    """The report as aligned lines, the status first."""
    rows: list[tuple[str, str]] = [("config", h.config), ("store", h.store)]
    if h.reachable:
        rows.append(("", f"reachable, round trip {h.round_trip_ms:.2f} ms"))
    else:
        rows.append(("", "UNREACHABLE (see problems)"))
    rows.append(("lexicons", f"version {h.lexicon_version}"))
    if h.backlog is not None:
        b = h.backlog
        rows.append(("outbox", f"{b.outbox_depth} waiting" +
                     (f", oldest due {describe_age(b.outbox_oldest_age)} ago" if b.outbox_depth else "")))
        rows.append(("held", f"{b.held} waiting" + (f", oldest {describe_age(b.held_oldest_age)}" if b.held else "")))
        rows.append(("follow-ups", f"{b.followups} pending" + (
            f", oldest {describe_age(b.followup_oldest_age)}" if b.followups else "") + f"; {b.digest} in the digest"))
    if h.reachable:
        if not h.agents:
            rows.append(("agents", "none seen (no heartbeat, no held mail)"))
        for i, a in enumerate(h.agents):
            state = "alive" if a.alive else "NOT ALIVE"
            rows.append(("agents" if i == 0 else "", f"{a.host}: {state}, {a.held} held"))
    for i, problem in enumerate(h.problems):
        rows.append(("problems" if i == 0 else "", problem))
    width = max(len(k) for k, _ in rows)
    lines = [f"regfd status: {h.status}"] + [f"{k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(lines) + "\n"
