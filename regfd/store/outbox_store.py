"""The durable outbox of notifications in Redis.

    outbox:msg    hash  id -> JSON Notification
    outbox:due    zset  id -> next attempt (ms)
    outbox:lease  zset  id -> lease expiry (ms)   being sent by some worker
    outbox:holder hash  id -> the claim token of the worker holding the lease
    outbox:sent   stream (capped) what was delivered, for `regfd outbox --sent`
    outbox:since  zset  id -> when it was queued (ms)   how long the oldest has waited (`backlog`)

Workers claim due messages with one Lua script that moves them from `due`
to `lease` atomically (expired leases first) and records the claim's token
in `holder`, so two workers on two hosts never take the same message, and a
worker that dies mid-send leaves a lease that expires: the message becomes
due again, never dropped. Leases are short; a live worker renews its own
(same token, not yet expired) while it sends, and checks it still holds one
before each send, so a slow send is not taken over and sent a second time.
(A lease without a holder, written before the holder hash existed, simply
expires.)
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
  redis.call('HDEL', KEYS[3], id)
  redis.call('ZADD', KEYS[1], ARGV[1], id)
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[4], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[2], id)
  redis.call('HSET', KEYS[3], id, ARGV[5])
end
return ids
"""

# Extend the leases still held by token ARGV[1] and not yet expired at ARGV[2] to ARGV[3]; the ids renewed.
# An expired lease is not revived: another worker may be about to claim (or have claimed) the message.
_RENEW = """
local held = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local until_ms = redis.call('ZSCORE', KEYS[1], id)
  if until_ms and tonumber(until_ms) > tonumber(ARGV[2]) and redis.call('HGET', KEYS[2], id) == ARGV[1] then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[3], id)
    held[#held + 1] = id
  end
end
return held
"""

FAILURE = "outbox: Redis is unreachable"


def _encode(n: dict[str, Any]) -> str:
    return json.dumps(n, separators=(",", ":"), ensure_ascii=False)


class OutboxStore:
    """The outbox keys under the store's prefix; the compliance Outbox decides what and when, this stores it."""

    def __init__(self, store: RedisStore) -> None:
        self._r = store.r
        self._claim = store.r.register_script(_CLAIM)
        self._renew = store.r.register_script(_RENEW)
        self.msg_key, self.due_key, self.lease_key, self.holder_key, self.sent_key, self.since_key = (
            store.k(f"outbox:{name}") for name in ("msg", "due", "lease", "holder", "sent", "since"))

    def add(self, tx: Tx, nid: str, notification: dict[str, Any], due: datetime) -> None:
        """Queue a notification on `tx`, due at `due`."""
        tx.pipe.hset(self.msg_key, nid, _encode(notification))
        tx.pipe.zadd(self.due_key, {nid: to_ms(due)})
        tx.pipe.zadd(self.since_key, {nid: to_ms(due)}, nx=True)

    def backlog(self) -> tuple[int, int | None]:
        """How many notifications are undelivered, and since when (ms) the oldest of them waits; one round trip."""
        with reaching(FAILURE):
            pipe = self._r.pipeline(transaction=False)
            pipe.hlen(self.msg_key)
            pipe.zrange(self.since_key, 0, 0, withscores=True)
            depth, oldest = pipe.execute()
        return int(depth), int(oldest[0][1]) if oldest else None

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

    def claim(self, now: datetime, lease_until: datetime, limit: int, everything: bool,
              token: str) -> list[dict[str, Any]]:
        """Lease due notifications (every pending one with `everything`) to the caller, whose claim is
        `token` (for renew); their stored rows."""
        max_score = "+inf" if everything else str(to_ms(now))
        with reaching(FAILURE):
            ids = self._claim(keys=[self.due_key, self.lease_key, self.holder_key],
                              args=[to_ms(now), to_ms(lease_until), limit, max_score, token])
            if not ids:
                return []
            raws = self._r.hmget(self.msg_key, ids)
            out = []
            for mid, raw in zip(ids, raws, strict=True):
                if raw is None:  # acknowledged by someone else meanwhile
                    self._r.zrem(self.lease_key, mid)
                    self._r.hdel(self.holder_key, mid)
                    continue
                out.append(json.loads(raw))
        return out

    def renew(self, ids: list[str], token: str, now: datetime, lease_until: datetime) -> set[str]:
        """Extend to `lease_until` the leases of `ids` that claim `token` still holds at `now`; those ids."""
        if not ids:
            return set()
        with reaching(FAILURE):
            held = self._renew(keys=[self.lease_key, self.holder_key],
                               args=[token, to_ms(now), to_ms(lease_until), *ids])
        return {text(x) for x in held or []}

    def delivered(self, nid: str, entry: dict[str, str]) -> None:
        """Done: drop the notification and its lease, and list `entry` among the deliveries."""
        with reaching(FAILURE):
            pipe = self._r.pipeline(transaction=True)
            pipe.zrem(self.lease_key, nid)
            pipe.hdel(self.holder_key, nid)
            pipe.hdel(self.msg_key, nid)
            pipe.zrem(self.since_key, nid)
            pipe.xadd(self.sent_key, dict(entry), maxlen=SENT_KEPT, approximate=True)  # type: ignore[arg-type]
            pipe.execute()

    def retry(self, nid: str, notification: dict[str, Any], at: datetime) -> None:
        """Not (fully) delivered: store its new state and make it due again at `at`."""
        with reaching(FAILURE):
            pipe = self._r.pipeline(transaction=True)
            pipe.zrem(self.lease_key, nid)
            pipe.hdel(self.holder_key, nid)
            pipe.hset(self.msg_key, nid, _encode(notification))
            pipe.zadd(self.due_key, {nid: to_ms(at)})
            pipe.execute()
