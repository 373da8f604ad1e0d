"""The directory kept in Redis, and its audit trail.

Key layout (prefix `regfd:` by default), chosen so that classifying every
recipient of a message is ONE round trip whatever the registry's size:

    registry      hash  pattern -> JSON RegistryEntry   (pattern: address or domain)
    exempt        hash  pattern -> JSON Exemption
    officers      hash  address -> JSON Officer
    delegates     hash  address -> JSON Authorization
    quiet         hash  id      -> JSON QuietPeriod
    quiet:seq     counter for quiet period ids
    audit         stream of directory and release changes (chained: store/register_store.py)

A lookup computes every candidate key of every recipient (the address and
each parent domain) and sends HMGETs for them with the sender's HGETs in one
MULTI/EXEC pipeline: O(candidates), independent of the registry's size, and a
consistent snapshot. Every write goes in the same transaction as its audit
entry, so there is no change without its record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import redis
from redis.client import Pipeline

from regfd.core.address import candidates
from regfd.core.chain import digest
from regfd.core.clock import now, to_iso
from regfd.core.directory import (
    Authorization,
    DirectorySnapshot,
    Exemption,
    Officer,
    QuietPeriod,
    RegistryEntry,
)
from regfd.errors import InvalidInput, StoreUnavailable
from regfd.monitoring.metrics import NO_METRICS
from regfd.store.client import REDIS_ERRORS, Tx, client_from_url, dumps, text, transact
from regfd.store.disclosures_store import DisclosuresStore
from regfd.store.followups_store import FollowupsStore
from regfd.store.outbox_store import OutboxStore
from regfd.store.private_redis import PrivateRedis
from regfd.store.quarantine_store import QuarantineStore
from regfd.store.records_store import RecordsStore
from regfd.store.register_store import RegisterStore

if TYPE_CHECKING:
    from regfd.config import Config
    from regfd.ports import Metrics

@dataclass(frozen=True)
class AuditEvent:
    """One entry of the audit stream; `id` is the Redis stream id, so entries sort by time."""

    id: str
    at: str
    who: str
    action: str
    target: str
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The JSON shape `regfd directory audit` prints."""
        return {"id": self.id, "at": self.at, "who": self.who, "action": self.action,
                "target": self.target, "detail": self.detail}


class RedisStore:
    """The directory over one Redis client; every key lives under `prefix`, so instances can share a server.

    It also holds the compliance state's store modules, one per persisted
    concept (`records`, `quarantine`, `outbox`, `disclosures`), over the same
    client and prefix: the compliance services are given this object and
    never the client itself.
    """

    def __init__(self, client: redis.Redis, prefix: str = "regfd:", *, wait_replicas: int = 0,
                 wait_timeout: float = 0.5) -> None:
        self.r = client
        self.p = prefix
        # A durable batch returns only once this many replicas have it (Redis WAIT), see batch().
        self.wait_replicas = wait_replicas
        self.wait_timeout = wait_timeout
        self.round_trips = 0  # counted per network exchange, for the benchmark
        self.register = RegisterStore(self)
        # Where the hot path's round trips (snapshot, batch) are reported: the milter sets its metrics here.
        self.metrics: Metrics = NO_METRICS
        self.records = RecordsStore(self)
        self.quarantine = QuarantineStore(self)
        self.outbox = OutboxStore(self)
        self.disclosures = DisclosuresStore(self)
        self.followups = FollowupsStore(self)

    # ----- keys
    def k(self, name: str) -> str:
        """The full key for `name`; the store modules use it so all keys share the prefix."""
        return self.p + name

    @contextmanager
    def batch(self, failure: str, operation: str = "write", *, durable: bool = False) -> Iterator[Tx]:
        """One MULTI/EXEC for everything the block queues on the yielded Tx (nothing if the block raises).

        Raises StoreUnavailable(`failure: error`) when the EXEC fails: then none of it was written.
        `operation` names the round trip in the metrics (regfd_store_round_trips_total).
        `durable` (a decision's record): with `wait_replicas` set, also WAIT until that many replicas
        have the write, and raise StoreUnavailable when they do not within `wait_timeout`; the write
        stays on the primary (a record of a decision whose message the MTA then tempfails: the
        client retries), but nothing is answered that a failover could take back.
        """
        pipe = self.r.pipeline(transaction=True)
        yield Tx(pipe)
        t = time.perf_counter()
        try:
            self.round_trips += 1
            pipe.execute()
            if durable and self.wait_replicas > 0:
                self.round_trips += 1
                acked = int(self.r.wait(self.wait_replicas, max(1, int(self.wait_timeout * 1000))))
                if acked < self.wait_replicas:
                    raise StoreUnavailable(f"{failure}: written on the primary, but {acked} of "
                                           f"{self.wait_replicas} replicas acknowledged it within "
                                           f"{self.wait_timeout:g}s (redis_wait_replicas)")
        except REDIS_ERRORS as exc:
            self.metrics.store_call(operation, time.perf_counter() - t, False)
            raise StoreUnavailable(f"{failure}: {exc}") from exc
        self.metrics.store_call(operation, time.perf_counter() - t, True)

    # ----- the hot path
    def snapshot(self, sender: str, recipients: Iterable[str]) -> DirectorySnapshot:
        """One round trip: everything the policy needs to know about this envelope."""
        keys: list[str] = []
        seen: set[str] = set()
        for rcpt in recipients:
            for key in candidates(rcpt):
                if key not in seen:
                    seen.add(key)
                    keys.append(key)
        pipe = self.r.pipeline(transaction=True)
        pipe.hget(self.k("officers"), sender)
        pipe.hget(self.k("delegates"), sender)
        pipe.hvals(self.k("quiet"))
        if keys:
            pipe.hmget(self.k("registry"), keys)
            pipe.hmget(self.k("exempt"), keys)
        t = time.perf_counter()
        try:
            self.round_trips += 1
            res = pipe.execute()
        except REDIS_ERRORS as exc:
            self.metrics.store_call("snapshot", time.perf_counter() - t, False)
            raise StoreUnavailable(f"directory lookup failed: {exc}") from exc
        self.metrics.store_call("snapshot", time.perf_counter() - t, True)
        officer_raw, delegate_raw, quiet_raw = res[0], res[1], res[2]
        registry: dict[str, RegistryEntry] = {}
        exemptions: dict[str, Exemption] = {}
        if keys:
            for key, raw in zip(keys, res[3], strict=True):
                if raw is not None:
                    registry[key] = RegistryEntry.from_json(json.loads(raw))
            for key, raw in zip(keys, res[4], strict=True):
                if raw is not None:
                    exemptions[key] = Exemption.from_json(json.loads(raw))
        return DirectorySnapshot(
            officer=Officer.from_json(json.loads(officer_raw)) if officer_raw else None,
            authorization=Authorization.from_json(json.loads(delegate_raw)) if delegate_raw else None,
            registry=registry,
            exemptions=exemptions,
            quiet_periods=tuple(QuietPeriod.from_json(json.loads(q)) for q in quiet_raw),
        )

    def ping(self) -> None:
        """Raise StoreUnavailable now rather than on the first real command."""
        try:
            self.r.ping()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc

    # ----- writes (each with its audit entry, atomically)
    def audit_ops(self, tx: Tx, who: str, action: str, target: str, detail: dict[str, Any]) -> None:
        """Queue an audit entry on `tx`, so a change and its audit commit together."""
        self._audit(tx.pipe, who, action, target, detail)

    def _audit(self, pipe: Pipeline, who: str, action: str, target: str, detail: dict[str, Any]) -> None:
        at = to_iso(now())
        body = {"at": at, "who": who, "action": action, "target": target, "detail": detail}
        self.register.append(Tx(pipe), "audit", {"at": at, "who": who, "action": action, "target": target,
                                                 "detail": dumps(detail)}, digest(body))

    def _write(self, who: str, action: str, target: str, detail: dict[str, Any],
               ops: Iterable[tuple[str, tuple[Any, ...]]]) -> None:
        pipe = self.r.pipeline(transaction=True)
        for method, args in ops:
            getattr(pipe, method)(*args)
        self._audit(pipe, who, action, target, detail)
        try:
            pipe.execute()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"write failed, nothing changed: {exc}") from exc

    def _get(self, table: str, key: str) -> dict[str, Any] | None:
        try:
            raw = self.r.hget(self.k(table), key)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc
        return json.loads(raw) if raw else None

    def _all(self, table: str) -> Iterator[dict[str, Any]]:
        try:
            for _key, raw in self.r.hscan_iter(self.k(table), count=5000):
                yield json.loads(raw)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc

    def _put(self, table: str, key: str, value: dict[str, Any], who: str, action: str) -> None:
        self._write(who, action, key, value, [("hset", (self.k(table), key, dumps(value)))])

    def _delete(self, table: str, key: str, who: str, action: str, what: str) -> dict[str, Any]:
        old = self._get(table, key)
        if old is None:
            raise InvalidInput(f"no {what} {key!r}")
        self._write(who, action, key, old, [("hdel", (self.k(table), key))])
        return old

    # registry
    def registry_add(self, entry: RegistryEntry, who: str) -> None:
        """Add or replace the entry for its pattern (an address or a domain)."""
        self._put("registry", entry.pattern, entry.to_json(), who, "registry.add")

    def registry_remove(self, pattern: str, who: str) -> None:
        """Raise InvalidInput if no entry has exactly this pattern."""
        self._delete("registry", pattern, who, "registry.remove", "registry entry")

    def registry_list(self) -> list[RegistryEntry]:
        """Sorted by pattern; read with HSCAN, so a large registry does not block Redis."""
        return sorted((RegistryEntry.from_json(d) for d in self._all("registry")), key=lambda e: e.pattern)

    def registry_import(self, entries: list[RegistryEntry], replace: bool, who: str, source: str) -> None:
        """All rows or none: one MULTI/EXEC (with `replace`, the old registry goes in the same step)."""
        ops: list[tuple[str, tuple[Any, ...]]] = []
        if replace:
            ops.append(("delete", (self.k("registry"),)))
        chunk = 5000
        for i in range(0, len(entries), chunk):
            mapping = {e.pattern: dumps(e.to_json()) for e in entries[i:i + chunk]}
            ops.append(("hset", (self.k("registry"), None, None, mapping)))
        self._write(who, "registry.import", source, {"rows": len(entries), "replace": replace}, ops)

    def registry_count(self) -> int:
        """Cheap (HLEN), unlike registry_list."""
        return int(self.r.hlen(self.k("registry")))

    # officers
    def officer_add(self, officer: Officer, who: str) -> None:
        """Add or replace; whether the role authorizes is decided at lookup, from config."""
        self._put("officers", officer.address, officer.to_json(), who, "officer.add")

    def officer_get(self, address: str) -> Officer | None:
        """None when the address is not an officer."""
        d = self._get("officers", address)
        return Officer.from_json(d) if d else None

    def officer_remove(self, address: str, who: str) -> None:
        """Raise InvalidInput if the address is not an officer."""
        self._delete("officers", address, who, "officer.remove", "officer")

    def officer_list(self) -> list[Officer]:
        """Sorted by address."""
        return sorted((Officer.from_json(d) for d in self._all("officers")), key=lambda o: o.address)

    # delegates
    def delegate_add(self, auth: Authorization, who: str) -> None:
        """Add or replace the authorization for its address (a new one replaces a revoked one)."""
        self._put("delegates", auth.address, auth.to_json(), who, "delegate.add")

    def delegate_get(self, address: str) -> Authorization | None:
        """The authorization, revoked or expired included; None when there is none."""
        d = self._get("delegates", address)
        return Authorization.from_json(d) if d else None

    def delegate_revoke(self, address: str, who: str, at: datetime) -> Authorization:
        """Keep the authorization, marked revoked at `at`, so the record shows what was approved."""
        auth = self.delegate_get(address)
        if auth is None:
            raise InvalidInput(f"no delegate {address!r}")
        if auth.revoked_at is not None:
            raise InvalidInput(f"delegate {address!r} was already revoked at {to_iso(auth.revoked_at)}")
        revoked = Authorization(auth.address, auth.by, auth.to, auth.until, auth.scope, at, who, auth.added_at)
        self._put("delegates", address, revoked.to_json(), who, "delegate.revoke")
        return revoked

    def delegate_list(self) -> list[Authorization]:
        """Sorted by address; revoked and expired authorizations included."""
        return sorted((Authorization.from_json(d) for d in self._all("delegates")), key=lambda a: a.address)

    # exemptions
    def exempt_add(self, exemption: Exemption, who: str) -> None:
        """Add or replace the exemption for its pattern (an address or a domain)."""
        self._put("exempt", exemption.pattern, exemption.to_json(), who, "exempt.add")

    def exempt_remove(self, pattern: str, who: str) -> None:
        """Raise InvalidInput if no exemption has exactly this pattern."""
        self._delete("exempt", pattern, who, "exempt.remove", "exemption")

    def exempt_list(self) -> list[Exemption]:
        """Sorted by pattern; expired exemptions included."""
        return sorted((Exemption.from_json(d) for d in self._all("exempt")), key=lambda e: e.pattern)

    # quiet periods
    def quiet_add(self, start: datetime, end: datetime, label: str, who: str) -> QuietPeriod:
        """Add a period under a fresh id from a Redis counter, so ids are never reused."""
        try:
            qid = str(self.r.incr(self.k("quiet:seq")))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc
        period = QuietPeriod(qid, start, end, label)
        self._put("quiet", qid, period.to_json(), who, "quiet.add")
        return period

    def quiet_remove(self, qid: str, who: str) -> None:
        """Raise InvalidInput if no period has this id."""
        self._delete("quiet", qid, who, "quiet.remove", "quiet period")

    def quiet_list(self) -> list[QuietPeriod]:
        """Sorted by start; past periods included."""
        return sorted((QuietPeriod.from_json(d) for d in self._all("quiet")), key=lambda q: q.start)

    # scheduled work (reminders)
    def process_due(self, schedule: str, table: str, now_ms: int,
                    step: Callable[[Tx, str, int, dict[str, Any]], bool], limit: int = 100) -> int:
        """Claim each item due in `schedule` (a sorted set scored in epoch ms) with its JSON row in `table`.

        Each item is handled in its own WATCH transaction on both keys, so
        several workers never handle one item twice. `step(tx, id, score,
        row)` is called in the transaction to queue the item's changes (it
        must reschedule or remove the item) and returns whether it counts;
        an item whose row is gone is simply unscheduled. Returns the count.
        """
        done = 0

        def claim(item: str) -> Callable[[Pipeline], bool]:
            def run(pipe: Pipeline) -> bool:
                score = pipe.zscore(schedule, item)
                raw = pipe.hget(table, item)
                if score is None or score > now_ms:
                    return False
                pipe.multi()
                if raw is None:
                    pipe.zrem(schedule, item)
                    return False
                return step(Tx(pipe), item, int(score), json.loads(raw))
            return run

        try:
            due = cast("list[bytes]", self.r.zrangebyscore(schedule, "-inf", now_ms, start=0, num=limit))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc
        for raw_id in due:
            counted = transact(self.r, (schedule, table), claim(text(raw_id)), failure="Redis is unreachable",
                               retry=False)
            done += int(bool(counted))
        return done

    # audit
    def audit(self, who: str, action: str, target: str, detail: dict[str, Any]) -> None:
        """An audit entry on its own (releases, rejects, disclosure closes)."""
        self._write(who, action, target, detail, [])

    def audit_list(self, since: datetime | None = None) -> list[AuditEvent]:
        """Entries at or after `since` (all when None), oldest first."""
        start = f"{int(since.timestamp() * 1000)}-0" if since else "-"
        try:
            rows = self.r.xrange(self.k("audit"), min=start, max="+")
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc
        out = []
        for sid, f in rows or []:
            dec = {text(k): text(v) for k, v in (f or {}).items()}
            out.append(AuditEvent(text(sid or b""), dec["at"], dec["who"], dec["action"], dec["target"],
                                  json.loads(dec.get("detail") or "{}")))
        return out


class StoreHandle:
    """An open store plus the private redis-server it may have started.

    Use as a context manager: the private server is stopped on exit only if
    this handle started it or adopted it (its owning regfd had died).
    """

    def __init__(self, store: RedisStore, private: PrivateRedis | None) -> None:
        self.store = store
        self.private = private

    def __enter__(self) -> RedisStore:
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the client, then stop the private server if this handle started or adopted it."""
        self.store.r.close()
        if self.private is not None:
            self.private.stop()


def open_store(config: Config, *, timeout: float = 5.0, start_private: bool = True) -> StoreHandle:
    """Connect to the configured Redis, or start the private one under state_dir.

    `start_private=False` only connects to the private one (a milter worker:
    its supervisor starts and restarts the server, a worker never owns it).
    """
    url = config.effective_redis_url
    private = None
    if not url:
        private = PrivateRedis(config.state_dir)
        started = private.ensure_running() if start_private else False
        url = private.url
        if not started:
            private = None
    store = RedisStore(client_from_url(url, timeout=timeout), config.redis_prefix,
                       wait_replicas=config.redis_wait_replicas if config.effective_redis_url else 0,
                       wait_timeout=config.redis_wait_timeout)
    return StoreHandle(store, private)
