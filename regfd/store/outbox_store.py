"""The durable outbox of notifications in Redis.

    outbox:msg    hash  id -> JSON Notification
    outbox:due    zset  id -> next attempt (ms)
    outbox:lease  zset  id -> lease expiry (ms)   being sent by some worker
    outbox:sent   stream (capped) what was delivered, for `regfd outbox --sent`

Workers claim due messages with one Lua script that moves them from `due`
to `lease` atomically (expired leases first), so two workers on two hosts
never take the same message, and a worker that dies mid-send leaves a lease
that expires: the message becomes due again, never dropped.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from regfd.core.clock import to_ms
from regfd.store.client import Tx, reaching, text

if TYPE_CHECKING:
    from regfd.store.redis_store import RedisStore

SENT_KEPT = 10000  # about this many deliveries stay listed

_CLAIM = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[1], ARGV[1], id)
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[4], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[2], id)
end
return ids
"""

FAILURE = "outbox: Redis is unreachable"


def _encode(n: dict[str, Any]) -> str:
    return json.dumps(n, separators=(",", ":"), ensure_ascii=False)


class OutboxStore:
    """The outbox keys under the store's prefix; the compliance Outbox decides what and when, this stores it."""

    def __init__(self, store: RedisStore) -> None:
        self._r = store.r
        self._claim = store.r.register_script(_CLAIM)
        self.msg_key, self.due_key, self.lease_key, self.sent_key = (
            store.k(f"outbox:{name}") for name in ("msg", "due", "lease", "sent"))

    def add(self, tx: Tx, nid: str, notification: dict[str, Any], due: datetime) -> None:
        """Queue a notification on `tx`, due at `due`."""
        tx.pipe.hset(self.msg_key, nid, _encode(notification))
        tx.pipe.zadd(self.due_key, {nid: to_ms(due)})

    def pending(self) -> list[dict[str, Any]]:
        """Every notification not yet delivered, as stored (in no particular order)."""
        with reaching():
            raws = self._r.hvals(self.msg_key)
        return [json.loads(x) for x in raws]

    def sent(self, count: int) -> list[dict[str, str]]:
        """The latest `count` deliveries, newest first."""
        with reaching():
            rows = self._r.xrevrange(self.sent_key, count=count)
        return [{text(k): text(v) for k, v in (f or {}).items()} for _sid, f in rows or []]

    def claim(self, now: datetime, lease_until: datetime, limit: int, everything: bool) -> list[dict[str, Any]]:
        """Lease due notifications (every pending one with `everything`) to the caller; their stored rows."""
        max_score = "+inf" if everything else str(to_ms(now))
        with reaching(FAILURE):
            ids = self._claim(keys=[self.due_key, self.lease_key],
                              args=[to_ms(now), to_ms(lease_until), limit, max_score])
            if not ids:
                return []
            raws = self._r.hmget(self.msg_key, ids)
            out = []
            for mid, raw in zip(ids, raws, strict=True):
                if raw is None:  # acknowledged by someone else meanwhile
                    self._r.zrem(self.lease_key, mid)
                    continue
                out.append(json.loads(raw))
        return out

    def delivered(self, nid: str, entry: dict[str, str]) -> None:
        """Done: drop the notification and its lease, and list `entry` among the deliveries."""
        with reaching(FAILURE):
            pipe = self._r.pipeline(transaction=True)
            pipe.zrem(self.lease_key, nid)
            pipe.hdel(self.msg_key, nid)
            pipe.xadd(self.sent_key, dict(entry), maxlen=SENT_KEPT, approximate=True)  # type: ignore[arg-type]
            pipe.execute()

    def retry(self, nid: str, notification: dict[str, Any], at: datetime) -> None:
        """Not (fully) delivered: store its new state and make it due again at `at`."""
        with reaching(FAILURE):
            pipe = self._r.pipeline(transaction=True)
            pipe.zrem(self.lease_key, nid)
            pipe.hset(self.msg_key, nid, _encode(notification))
            pipe.zadd(self.due_key, {nid: to_ms(at)})
            pipe.execute()
