"""The disclosure follow-ups in Redis.

    disclosure         hash  id -> JSON Disclosure
    disclosure:open    zset  id -> deadline (ms)      open follow-ups
    disclosure:due     zset  id -> next reminder (ms) reminder, then overdue notice
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from regfd.core.clock import to_ms
from regfd.store.client import Tx, dumps, reaching, update_row

if TYPE_CHECKING:
    from regfd.store.redis_store import RedisStore

T = TypeVar("T")


class DisclosuresStore:
    """The follow-up keys under the store's prefix; the state machine is compliance/disclosures.py's."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._r = store.r
        self.key, self.open_key, self.due_key = (store.k(n) for n in ("disclosure", "disclosure:open",
                                                                      "disclosure:due"))

    def add(self, tx: Tx, did: str, disclosure: dict[str, Any], deadline: datetime, remind_at: datetime) -> None:
        """Queue a new open follow-up on `tx`, with its deadline and its first reminder."""
        tx.pipe.hset(self.key, did, dumps(disclosure))
        tx.pipe.zadd(self.open_key, {did: to_ms(deadline)})
        tx.pipe.zadd(self.due_key, {did: to_ms(remind_at)})

    def get(self, did: str) -> dict[str, Any] | None:
        """The stored follow-up, None when there is none."""
        with reaching():
            raw = self._r.hget(self.key, did)
        return json.loads(raw) if raw else None

    def list(self, open_only: bool = False) -> list[dict[str, Any]]:
        """Every stored follow-up (only the open ones with `open_only`), in no particular order."""
        with reaching():
            if open_only:
                ids = cast("list[bytes]", self._r.zrange(self.open_key, 0, -1))
                raws: list[Any] = self._r.hmget(self.key, ids) if ids else []
            else:
                raws = self._r.hvals(self.key)
        return [json.loads(x) for x in raws if x]

    def update(self, did: str, fn: Callable[[dict[str, Any] | None, Tx], T], failure: str) -> T:
        """Read the follow-up under WATCH and let `fn(row, tx)` queue the change (see client.update_row)."""
        return update_row(self._r, self.key, did, fn, failure=failure)

    def put(self, tx: Tx, did: str, disclosure: dict[str, Any]) -> None:
        """Queue the follow-up's new state on `tx`."""
        tx.pipe.hset(self.key, did, dumps(disclosure))

    def closed(self, tx: Tx, did: str) -> None:
        """Queue: no longer open, no more reminders."""
        tx.pipe.zrem(self.open_key, did)
        tx.pipe.zrem(self.due_key, did)

    def remind_at(self, tx: Tx, did: str, at: datetime | None) -> None:
        """Queue the next reminder at `at`, or none (None)."""
        if at is None:
            tx.pipe.zrem(self.due_key, did)
        else:
            tx.pipe.zadd(self.due_key, {did: to_ms(at)})

    def process_due(self, now: datetime, step: Callable[[Tx, str, int, dict[str, Any]], bool]) -> int:
        """Each follow-up whose reminder is due, claimed once (see RedisStore.process_due)."""
        return self._store.process_due(self.due_key, self.key, to_ms(now), step)
