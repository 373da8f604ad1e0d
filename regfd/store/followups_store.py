"""What follows a recorded decision, written with the record and done later; and the digest, in Redis.

    followup       hash  id -> JSON follow-up (the record, and which ids it was given)
    followup:due   zset  id -> when it is (next) due (ms): at once, later after a failure
    followup:since zset  id -> when the decision was recorded (ms), for the backlog's age
    digest         list  JSON entries waiting for the next digest email, oldest first

A follow-up is written in the decision's own transaction, so it exists iff
the record does. A worker claims due follow-ups a hundred at a time with
one script that also makes them due again LEASE seconds later (a lease), then
writes what they produce and deletes them in ONE transaction: three round
trips for the lot. A worker that dies leaves them to be claimed again when
the lease runs out: never lost; done twice only if a worker stalls for the
whole lease between its claim and its write (then the disclosure is
written again under the same id, and a notice may go out twice). A
digest is taken whole under WATCH, in the transaction that queues its
email in the outbox: the entries leave the list only with the email that
lists them, so a crash at any point loses nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from redis.client import Pipeline

from regfd.core.clock import to_ms
from regfd.store.client import Tx, dumps, reaching, text, transact

if TYPE_CHECKING:
    from regfd.store.redis_store import RedisStore

T = TypeVar("T")

FAILURE = "follow-ups: Redis is unreachable"

# Claim up to ARGV[3] follow-ups due by ARGV[1]: each becomes due again at ARGV[2] (the lease); returns
# id, row, id, row ... (row false when the follow-up has no row any more).
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], ARGV[2], id)
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id)
end
return out
"""


class FollowupsStore:
    """The follow-up and digest keys under the store's prefix."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._r = store.r
        self._claim = store.r.register_script(_CLAIM)
        self.key, self.due_key, self.since_key, self.digest_key = (
            store.k(n) for n in ("followup", "followup:due", "followup:since", "digest"))

    def add(self, tx: Tx, fid: str, row: dict[str, Any], at: datetime) -> None:
        """Queue a follow-up on `tx` (the decision's transaction), due at once."""
        tx.pipe.hset(self.key, fid, dumps(row))
        tx.pipe.zadd(self.due_key, {fid: to_ms(at)})
        tx.pipe.zadd(self.since_key, {fid: to_ms(at)})

    def claim(self, now: datetime, lease_until: datetime, limit: int) -> list[tuple[str, dict[str, Any] | None]]:
        """Lease up to `limit` follow-ups due by `now` to the caller until `lease_until`: (id, row) each,
        row None when it is gone (then only `done` is left to do)."""
        with reaching(FAILURE):
            flat = self._claim(keys=[self.due_key, self.key], args=[to_ms(now), to_ms(lease_until), limit])
        pairs = zip(flat[::2], flat[1::2], strict=True)
        return [(text(fid), json.loads(raw) if raw else None) for fid, raw in pairs]

    def done(self, tx: Tx, fid: str) -> None:
        """Queue the follow-up's removal on `tx` (with what it produced)."""
        tx.pipe.hdel(self.key, fid)
        tx.pipe.zrem(self.due_key, fid)
        tx.pipe.zrem(self.since_key, fid)

    def retry(self, tx: Tx, fid: str, at_ms: int) -> None:
        """Queue: try this follow-up again at `at_ms` (it stays, with its row)."""
        tx.pipe.zadd(self.due_key, {fid: at_ms})

    def backlog(self) -> tuple[int, int | None, int]:
        """Follow-ups not yet done, since when (ms) the oldest waits, and the digest entries waiting."""
        with reaching(FAILURE):
            pipe = self._r.pipeline(transaction=False)
            pipe.zcard(self.due_key)
            pipe.zrange(self.since_key, 0, 0, withscores=True)
            pipe.llen(self.digest_key)
            count, oldest, digest = pipe.execute()
        return int(count), int(oldest[0][1]) if oldest else None, int(digest)

    # ------------------------------------------------------------ the digest
    def digest_add(self, tx: Tx, entry: dict[str, Any]) -> None:
        """Queue an entry for the next digest on `tx`."""
        tx.pipe.rpush(self.digest_key, dumps(entry))

    def digest_oldest(self) -> dict[str, Any] | None:
        """The entry that has waited longest, None when the digest is empty."""
        with reaching(FAILURE):
            raw = self._r.lindex(self.digest_key, 0)
        return cast("dict[str, Any]", json.loads(raw)) if raw is not None else None

    def digest_take(self, fn: Callable[[list[dict[str, Any]], Tx], T]) -> T | None:
        """Every waiting entry, to `fn(entries, tx)`, which queues the email; the entries leave in the same
        transaction. None (nothing written) when the digest is empty."""

        def step(pipe: Pipeline) -> T | None:
            raws = cast("list[bytes]", pipe.lrange(self.digest_key, 0, -1))
            if not raws:
                return None
            pipe.multi()
            result = fn([json.loads(r) for r in raws], Tx(pipe))
            pipe.ltrim(self.digest_key, len(raws), -1)
            return result

        return transact(self._r, (self.digest_key,), step, failure=FAILURE)
