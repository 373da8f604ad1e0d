"""The health facts an operator asks for: `regfd status` prints them, /metrics exports the backlog.

Each fact is read from the store in a round trip or two (no scan of every
record): the outbox's depth and its oldest entry, the held messages and the
oldest, the agents' heartbeats. `assess` turns the facts into healthy,
degraded or unreachable, with one line per problem, so the command's exit
status and its text say the same thing.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regfd.compliance.quarantine import host_key
from regfd.errors import StoreUnavailable

if TYPE_CHECKING:
    from regfd.config import Config
    from regfd.store.redis_store import RedisStore

# A notification undelivered this long after it was due means the relay or the worker is failing.
OUTBOX_STALE_SECONDS = 900.0
# A follow-up is done within a second or two by any running regfd milter; this long means none is running.
FOLLOWUP_STALE_SECONDS = 300.0

HEALTHY, DEGRADED, UNREACHABLE = "healthy", "degraded", "unreachable"


@dataclass(frozen=True)
class Backlog:
    """What waits: undelivered notifications and undecided held messages, each with its oldest age (s)."""

    outbox_depth: int
    outbox_oldest_age: float | None  # seconds since the oldest undelivered notification was due
    held: int
    held_oldest_age: float | None  # seconds the oldest undecided held message has waited
    followups: int = 0  # recorded decisions whose notices and disclosure are not yet done
    followup_oldest_age: float | None = None
    digest: int = 0  # messages waiting for the next digest email


def _age(since_ms: int | None, now: float) -> float | None:
    return None if since_ms is None else max(0.0, now - since_ms / 1000.0)


def read_backlog(store: RedisStore, now: float | None = None) -> Backlog:
    """Three round trips; raises StoreUnavailable. `now` is a Unix time (default: the clock)."""
    t = time.time() if now is None else now
    depth, outbox_since = store.outbox.backlog()
    held, held_since = store.quarantine.backlog()
    followups, followup_since, digest = store.followups.backlog()
    return Backlog(depth, _age(outbox_since, t), held, _age(held_since, t), followups, _age(followup_since, t),
                   digest)


def lexicon_version(directory: Path) -> str:
    """A digest of the lexicon files (names and contents): equal on two hosts iff they scan alike."""
    h = hashlib.sha256()
    for p in sorted(directory.iterdir()):
        if p.is_file() and p.suffix == ".toml":
            h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:12]


@dataclass(frozen=True)
class Agent:
    """One MTA host: whether a quarantine agent for it is alive, and how many held messages wait there."""

    host: str
    alive: bool
    held: int = 0
    worker: str = ""
    seen_at: str = ""


@dataclass
class Health:
    """Everything `regfd status` reports; `status` and `problems` come from `assess`."""

    config: str
    store: str
    lexicon_version: str
    reachable: bool = False
    round_trip_ms: float | None = None
    error: str = ""
    agents: list[Agent] = field(default_factory=list)
    backlog: Backlog | None = None
    status: str = UNREACHABLE
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The shape `regfd status --json` prints."""
        d = asdict(self)
        d["round_trip_ms"] = None if self.round_trip_ms is None else round(self.round_trip_ms, 2)
        for k, v in (d["backlog"] or {}).items():
            if isinstance(v, float):
                d["backlog"][k] = round(v, 1)
        return d


def gather(config: Config, store: RedisStore | None, error: str = "", at: datetime | None = None) -> Health:
    """Read every fact from `store` (None: it could not be opened, `error` says why) and assess them."""
    h = Health(config=config.source, store=config.describe_store(), lexicon_version=lexicon_version(config.lexicon_dir))
    if store is None:
        h.error = error
        return assess(h)
    try:
        t = time.perf_counter()
        store.ping()
        h.round_trip_ms = (time.perf_counter() - t) * 1000
        h.reachable = True
        h.backlog = read_backlog(store, at.timestamp() if at else None)
        beats = store.quarantine.agents()
        held_at = Counter(host_key(str(e.get("mta_host", ""))) for e in store.quarantine.list())
    except StoreUnavailable as exc:
        h.error = str(exc)
        return assess(h)
    hosts = sorted(set(beats) | set(held_at) | ({host_key(config.mta_host)} if config.mta_host else set()))
    h.agents = [Agent(host, host in beats, held_at.get(host, 0), str(beats.get(host, {}).get("worker", "")),
                      str(beats.get(host, {}).get("at", ""))) for host in hosts]
    return assess(h)


def assess(h: Health) -> Health:
    """Set `status` and `problems`: unreachable without a store; degraded when held mail waits on a host
    without an agent, this host's agent is down, or a notification or a follow-up is stuck."""
    problems: list[str] = []
    if not h.reachable:
        h.status, h.problems = UNREACHABLE, [f"store unreachable: {h.error}" if h.error else "store unreachable"]
        return h
    for a in h.agents:
        if not a.alive and a.held:
            problems.append(f"no quarantine agent alive for MTA host {a.host!r}, where {a.held} held message(s) wait")
        elif not a.alive:
            problems.append(f"no quarantine agent alive for MTA host {a.host!r}")
    b = h.backlog
    if b is not None and b.outbox_oldest_age is not None and b.outbox_oldest_age > OUTBOX_STALE_SECONDS:
        problems.append(f"a notification has waited {b.outbox_oldest_age / 60:.0f} min for delivery "
                        f"(over {OUTBOX_STALE_SECONDS / 60:.0f}): is the relay reachable and regfd milter running?")
    if b is not None and b.followup_oldest_age is not None and b.followup_oldest_age > FOLLOWUP_STALE_SECONDS:
        problems.append(f"{b.followups} decision(s) not followed up for {b.followup_oldest_age / 60:.0f} min "
                        "(notices, disclosures): is regfd milter running?")
    h.status, h.problems = (DEGRADED if problems else HEALTHY), problems
    return h


def describe_age(seconds: float | None) -> str:
    """'-' for none, else the age in the largest unit that fits (s, min, h, d)."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"

