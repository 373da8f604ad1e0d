"""The record stream: one entry per recorded verdict, kept for the retention period.

    records   stream  {"r": JSON record, seq, prev, hash}   (chained: store/register_store.py)

The stream id is Redis's own time-ordered id, which makes `--since` a range
read; MINID trimming drops entries older than the retention period as new
ones arrive (exact trimming, so retention is exact; it costs one lookup
when nothing has expired), moving the register's anchor. Appends join the caller's transaction (the
milter's decision), so a message is never delivered unrecorded.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from regfd.core.chain import digest
from regfd.core.clock import to_ms
from regfd.store.client import Tx, reaching

if TYPE_CHECKING:
    from regfd.store.redis_store import RedisStore

PAGE = 1000  # entries per XRANGE: a long listing never blocks Redis for long


class RecordsStore:
    """The `records` stream under the store's prefix."""

    def __init__(self, store: RedisStore) -> None:
        self._r = store.r
        self._register = store.register
        self.key = store.k("records")

    def append(self, tx: Tx, record: dict[str, Any], trim_before: datetime) -> None:
        """Queue the record on `tx`, dropping (exactly) the entries that arrived before `trim_before`."""
        self._register.append(tx, "records", {"r": json.dumps(record, separators=(",", ":"), ensure_ascii=False)},
                              digest(record), to_ms(trim_before))

    def list(self, since: datetime | None = None, until: datetime | None = None) -> list[dict[str, Any]]:
        """Stored records in stream (arrival) order, each with its stream id as `id`; read page by page."""
        start = f"{to_ms(since)}-0" if since else "-"
        end = f"{to_ms(until)}" if until else "+"
        out: list[dict[str, Any]] = []
        with reaching():
            while True:
                # the client does not decode replies: ids and fields are bytes
                rows = cast("list[tuple[bytes, dict[bytes, bytes]]]",
                            self._r.xrange(self.key, min=start, max=end, count=PAGE))
                for sid, fields in rows:
                    if b"r" in fields:
                        out.append({**json.loads(fields[b"r"]), "id": sid.decode()})
                if len(rows) < PAGE:
                    break
                last = rows[-1][0].decode()
                ms, seq = last.split("-")
                start = f"{ms}-{int(seq) + 1}"
        return out
