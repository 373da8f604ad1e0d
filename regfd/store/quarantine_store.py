"""Held messages and the agent protocol in Redis.

    quarantine          hash  id -> JSON QuarantineEntry
    quarantine:raw      hash  id -> the raw message (for `show`)
    quarantine:qid      hash  "host/queue id" and "queue id" -> id   (lookup by MTA queue id)
    quarantine:held     zset  id -> held since (ms)       undecided entries
    quarantine:remind   zset  id -> next reminder (ms)
    agent:req:HOST      list  requests for the agent on MTA host HOST
    agent:ans:REQ       list  the agent's answer to one request (expires)
    agent:alive:HOST    string, expires: an agent for HOST is running

Every transition of an entry goes through `update` (WATCH/MULTI on the
entry, retried on races); the state machine itself is compliance/quarantine.py's.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from regfd.core.clock import to_ms
from regfd.store.client import REDIS_ERRORS, Tx, dumps, reaching, text, update_row

if TYPE_CHECKING:
    from regfd.store.redis_store import RedisStore

T = TypeVar("T")

ANSWER_TTL = 600  # seconds an unread answer stays

# Withdraw a request nobody took, and restore its entry, in one step: an
# agent that pops the request afterwards finds nothing to do.
_CANCEL = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  return 1
end
return 0
"""


def _wait(seconds: int) -> int:
    """BLPOP waits in slices of 1 to 2 s: the client's socket timeout must not fire first."""
    return max(1, min(2, seconds))


class QuarantineStore:
    """The quarantine and agent keys under the store's prefix. Hosts arrive already normalized (host_key)."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._r = store.r
        self._k = store.k
        self._cancel = store.r.register_script(_CANCEL)
        self.key, self.raw_key, self.qid_key, self.held_key, self.remind_key = (
            store.k(n) for n in ("quarantine", "quarantine:raw", "quarantine:qid", "quarantine:held",
                                 "quarantine:remind"))

    # ------------------------------------------------------------ entries
    def add(self, tx: Tx, qid: str, entry: dict[str, Any], raw: bytes, host: str, queue_id: str,
            held_since: datetime, remind_after: float) -> None:
        """Queue a newly held message on `tx`: its entry, raw message, queue-id lookups and schedules.

        The first hold reminder falls `remind_after` seconds after `held_since`.
        """
        tx.pipe.hset(self.key, qid, dumps(entry))
        if raw:
            tx.pipe.hset(self.raw_key, qid, raw)
        if queue_id:
            tx.pipe.hset(self.qid_key, mapping={f"{host}/{queue_id}": qid, queue_id: qid})
        tx.pipe.zadd(self.held_key, {qid: to_ms(held_since)})
        tx.pipe.zadd(self.remind_key, {qid: to_ms(held_since) + int(remind_after * 1000)})

    def backlog(self) -> tuple[int, int | None]:
        """How many messages are held undecided, and since when (ms) the oldest of them; one round trip."""
        with reaching():
            pipe = self._r.pipeline(transaction=False)
            pipe.zcard(self.held_key)
            pipe.zrange(self.held_key, 0, 0, withscores=True)
            count, oldest = pipe.execute()
        return int(count), int(oldest[0][1]) if oldest else None

    def resolve(self, ref: str) -> str | None:
        """`ref` when it is a quarantine id, else the id its MTA queue id ("QID" or "host/QID") maps to."""
        with reaching():
            if self._r.hexists(self.key, ref):
                return ref
            mapped = self._r.hget(self.qid_key, ref)
        return text(mapped) if mapped is not None else None

    def get(self, qid: str) -> dict[str, Any] | None:
        """The stored entry, None when there is none."""
        with reaching():
            raw = self._r.hget(self.key, qid)
        return json.loads(raw) if raw is not None else None

    def raw(self, qid: str) -> bytes:
        """The message as held (b"" if it was not kept)."""
        with reaching():
            raw = self._r.hget(self.raw_key, qid)
        return raw.encode() if isinstance(raw, str) else raw or b""

    def list(self, include_decided: bool = False) -> list[dict[str, Any]]:
        """Stored entries, only the undecided ones unless `include_decided`, in no particular order."""
        with reaching():
            if include_decided:
                raws = self._r.hvals(self.key)
            else:
                ids = cast("list[bytes]", self._r.zrange(self.held_key, 0, -1))
                raws = [x for x in (self._r.hmget(self.key, ids) if ids else []) if x]
        return [json.loads(x) for x in raws]

    def update(self, qid: str, fn: Callable[[dict[str, Any] | None, Tx], T],
               also_watch: Sequence[str] = ()) -> T:
        """Read the entry under WATCH and let `fn(row, tx)` queue the transition (see client.update_row)."""
        return update_row(self._r, self.key, qid, fn, failure="quarantine update failed, nothing changed",
                          also_watch=also_watch)

    def put(self, tx: Tx, qid: str, entry: dict[str, Any]) -> None:
        """Queue the entry's new state on `tx`."""
        tx.pipe.hset(self.key, qid, dumps(entry))

    def decided(self, tx: Tx, qid: str) -> None:
        """Queue: no longer undecided, no more reminders."""
        tx.pipe.zrem(self.held_key, qid)
        tx.pipe.zrem(self.remind_key, qid)

    # ------------------------------------------------------------ hold reminders
    def remind_at(self, tx: Tx, qid: str, at_ms: int | None) -> None:
        """Queue the next hold reminder at `at_ms`, or none (None)."""
        if at_ms is None:
            tx.pipe.zrem(self.remind_key, qid)
        else:
            tx.pipe.zadd(self.remind_key, {qid: at_ms})

    def process_due(self, now: datetime, step: Callable[[Tx, str, int, dict[str, Any]], bool]) -> int:
        """Each entry whose hold reminder is due, claimed once (see RedisStore.process_due)."""
        return self._store.process_due(self.remind_key, self.key, to_ms(now), step)

    # ------------------------------------------------------------ the agent protocol
    def request(self, tx: Tx, host: str, req: dict[str, Any]) -> None:
        """Queue a request for `host`'s agent on `tx` (with the transition that issues it)."""
        tx.pipe.lpush(self._k(f"agent:req:{host}"), dumps(req))

    def next_request(self, host: str, wait: int) -> dict[str, Any] | None:
        """Pop one request for `host` (each goes to one agent), waiting about `wait` seconds (1 to 2)."""
        with reaching():
            got = self._r.blpop([self._k(f"agent:req:{host}")], timeout=_wait(wait))
        return json.loads(got[1]) if got else None

    def withdraw(self, host: str, req: dict[str, Any], qid: str, restored: dict[str, Any]) -> bool:
        """Take back a request no agent has popped and store `restored` as the entry, atomically; whether done."""
        with reaching():
            return bool(self._cancel(keys=[self._k(f"agent:req:{host}"), self.key],
                                     args=[dumps(req), qid, dumps(restored)]))

    def answer(self, req_id: str, outcome: dict[str, Any]) -> None:
        """Send the outcome of request `req_id` back to whoever waits for it (kept ANSWER_TTL seconds)."""
        key = self._k(f"agent:ans:{req_id}")
        with reaching():
            pipe = self._r.pipeline(transaction=True)
            pipe.rpush(key, dumps(outcome))
            pipe.expire(key, ANSWER_TTL)
            pipe.execute()

    def wait_answer(self, req_id: str, wait: int) -> dict[str, Any] | None:
        """The answer to `req_id`, waiting about `wait` seconds (1 to 2); None when none came."""
        key = self._k(f"agent:ans:{req_id}")
        with reaching():
            got = self._r.blpop([key], timeout=_wait(wait))
            if not got:
                return None
            self._r.delete(key)
        return cast("dict[str, Any]", json.loads(got[1]))

    def heartbeat(self, host: str, beat: dict[str, Any], ttl: int) -> None:
        """Say an agent for `host` is alive for the next `ttl` seconds."""
        with reaching():
            self._r.set(self._k(f"agent:alive:{host}"), dumps(beat), ex=ttl)

    def agent_alive(self, host: str) -> bool:
        """Whether an agent for `host` sent a heartbeat that has not lapsed."""
        with reaching():
            return bool(self._r.exists(self._k(f"agent:alive:{host}")))

    def agents(self) -> dict[str, dict[str, Any]]:
        """Every MTA host with a live agent heartbeat, with what the heartbeat says (worker, at)."""
        pattern = self._k("agent:alive:*")
        start = len(self._k("agent:alive:"))
        with reaching():
            keys = [text(k) for k in self._r.scan_iter(match=pattern, count=1000)]
            beats = self._r.mget(keys) if keys else []
        return {k[start:]: json.loads(b) for k, b in zip(keys, beats, strict=True) if b is not None}

    def agent_gone(self, host: str) -> None:
        """Drop `host`'s heartbeat at shutdown; best effort (it lapses anyway)."""
        with contextlib.suppress(*REDIS_ERRORS):
            self._r.delete(self._k(f"agent:alive:{host}"))
