"""The Redis client and the few helpers every Redis-backed store module shares.

Only the store package builds clients (`client_from_url`) and talks to
them; the compliance services call the store modules (records_store,
quarantine_store, outbox_store, disclosures_store), so the error tuple, the
JSON encoding of stored rows and the WATCH/MULTI retry loop each exist once.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import redis
from redis.client import Pipeline
from redis.sentinel import Sentinel

from regfd.errors import StoreUnavailable

REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
"""What a Redis call raises when the server is down, slow or refuses: callers turn it into StoreUnavailable."""

T = TypeVar("T")


class Tx:
    """The writes of one MULTI/EXEC, queued by the store modules' methods that take a `tx`.

    Outside the store package a Tx is only passed from one store method to
    the next: the domain decides which writes commit together, the store how
    they are written.
    """

    __slots__ = ("pipe",)

    def __init__(self, pipe: Pipeline) -> None:
        self.pipe = pipe


@contextmanager
def reaching(failure: str = "Redis is unreachable") -> Iterator[None]:
    """Turn the Redis errors raised inside the block into StoreUnavailable(`failure: error`)."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise StoreUnavailable(f"{failure}: {exc}") from exc


def client_from_url(url: str, *, timeout: float = 5.0) -> redis.Redis:
    """redis://, rediss://, unix:// via redis-py; Sentinel as
    `redis+sentinel://[:password@]host:port[,host:port...]/service[/db]`."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme in ("redis+sentinel", "sentinel"):
        hosts = []
        netloc = parsed.netloc.rpartition("@")[2]
        for hp in netloc.split(","):
            host, _, port = hp.rpartition(":")
            hosts.append((host or hp, int(port) if port.isdigit() else 26379))
        parts = [p for p in parsed.path.split("/") if p]
        if not parts:
            raise StoreUnavailable(f"sentinel URL {url!r} names no service (…/SERVICE)")
        service = parts[0]
        db = int(parts[1]) if len(parts) > 1 else 0
        sentinel = Sentinel(hosts, socket_timeout=timeout, password=parsed.password)  # type: ignore[no-untyped-call]
        master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            service, socket_timeout=timeout, db=db, password=parsed.password)
        return master
    if parsed.scheme not in ("redis", "rediss", "unix"):
        raise StoreUnavailable(f"unsupported Redis URL scheme in {url!r}")
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                health_check_interval=30)


def dumps(d: dict[str, Any]) -> str:
    """Compact, key-sorted JSON for a stored row: byte-stable, so equal rows compare equal in Lua."""
    return json.dumps(d, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def text(value: bytes | str) -> str:
    """A Redis reply as text (the clients here do not decode responses)."""
    return value.decode() if isinstance(value, bytes) else value


def transact(client: redis.Redis, keys: Sequence[str], fn: Callable[[Pipeline], T], *, failure: str,
             retry: bool = True) -> T | None:
    """Run `fn(pipe)` under WATCH on `keys`: it reads (immediate mode), calls `pipe.multi()`, queues writes.

    A concurrent change to a watched key aborts the EXEC; then the whole
    step runs again (`retry`), or is given up and None returned (a
    scheduler that will see the item again on its next pass). `fn` may
    return without calling `multi()` to write nothing. Exceptions from `fn`
    (refusals) propagate with nothing written; Redis errors become
    StoreUnavailable(`failure`).
    """
    try:
        with client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(*keys)  # type: ignore[no-untyped-call]
                    result = fn(pipe)
                    if pipe.explicit_transaction:
                        pipe.execute()
                    else:
                        pipe.unwatch()
                    return result
                except redis.WatchError:
                    if not retry:
                        return None
    except REDIS_ERRORS as exc:
        raise StoreUnavailable(f"{failure}: {exc}") from exc


def update_row(client: redis.Redis, table: str, item: str, fn: Callable[[dict[str, Any] | None, Tx], T], *,
               failure: str, also_watch: Sequence[str] = ()) -> T:
    """Read `item`'s JSON row of hash `table` under WATCH and let `fn(row, tx)` queue writes; retried on races.

    `fn` gets None when there is no such row; it raises to refuse (nothing is written).
    """

    def step(pipe: Pipeline) -> T:
        raw = pipe.hget(table, item)
        pipe.multi()
        return fn(json.loads(raw) if raw is not None else None, Tx(pipe))

    result = transact(client, (table, *also_watch), step, failure=failure)
    return cast(T, result)
