"""The hash chain of the tamper-evident register (pure: no I/O, no clock).

Every entry of a chained stream (the `records` and the `audit` stream, one
chain each) carries `seq`, `prev` and `hash`:

    digest = SHA-256(canonical(entry))                       the entry's content
    hash   = SHA-256(prev || digest || seq)                  prev, digest: 32 raw bytes; seq: 8 bytes big-endian

`canonical` is sorted-key compact JSON in UTF-8, so the same content always
hashes the same whichever process wrote it. The link hashes the content's
digest rather than the content itself because Redis computes it (a Lua
script in the writer's MULTI/EXEC, store/register_store.py, so concurrent
milters cannot fork the chain and none retries a WATCH), and 72 fixed
bytes cost Redis two SHA-256 blocks (about 90 µs of Lua) whatever the
record's size; SHA-256 over SHA-256 is as collision-resistant as the
direct form. The seq is hashed, so an entry cannot be renumbered.

`verify` walks entries in stored order from an anchor (the last entry moved
to the archive or trimmed by retention, or the genesis) and names the first
one that is wrong: edited, deleted, inserted or reordered.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

GENESIS = "0" * 64
"""The `prev` of a chain's first entry (seq 1)."""

RECENT = 1000  # entries remembered to name both copies of a duplicated seq

CHAINS = ("records", "audit")
"""The chained streams: each has its own sequence, anchor and head."""


def canonical(obj: Any) -> bytes:
    """Sorted-key compact JSON, UTF-8: the one byte form an entry is hashed in."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(entry: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the entry's canonical form."""
    return hashlib.sha256(canonical(entry)).hexdigest()


def link(prev: str, seq: int, entry_digest: str) -> str:
    """The entry's chain hash (hex): SHA-256(prev || digest || seq); Redis's Lua computes the same bytes.

    A `prev` or digest that is not 64 hex digits (an edited entry) gives a hash no entry has.
    """
    try:
        data = bytes.fromhex(prev) + bytes.fromhex(entry_digest) + seq.to_bytes(8, "big")
    except (ValueError, OverflowError):
        return ""
    if len(data) != 72:
        return ""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Anchor:
    """A point of a chain: `seq` and the `hash` of that entry (seq 0 and GENESIS before the first)."""

    seq: int = 0
    hash: str = GENESIS


@dataclass(frozen=True)
class Entry:
    """One stored entry as read back: `seq` is None when it carries no chain fields (`body` None when unreadable)."""

    id: str
    seq: int | None
    prev: str
    hash: str
    body: Mapping[str, Any] | None


@dataclass(frozen=True)
class Problem:
    """The first bad entry of a chain: where it is (`seq`, stream `id`), what kind (`what`), in a sentence."""

    chain: str
    seq: int | None
    id: str
    what: str
    detail: str

    def line(self) -> str:
        """'records seq 17 (id 1700000000000-0): edited: ...' — what `regfd records verify` prints."""
        where = f"seq {self.seq}" if self.seq is not None else "an entry"
        at = f" (id {self.id})" if self.id else ""
        return f"{self.chain} {where}{at}: {self.what}: {self.detail}"


@dataclass(frozen=True)
class Walk:
    """The outcome of `verify` for one chain: from `start` to `end` (the last good entry), `entries` checked.

    `hashes` holds the hashes at the seqs `verify` was asked to keep (the
    checkpoints'), which `check_point` compares with what was signed.
    """

    chain: str
    start: Anchor
    end: Anchor
    entries: int
    legacy: int = 0
    problem: Problem | None = None
    hashes: Mapping[int, str] = field(default_factory=dict)

    @property
    def intact(self) -> bool:
        """No entry was found wrong."""
        return self.problem is None


def verify(chain: str, entries: Iterable[Entry], start: Anchor = Anchor(), head: Anchor | None = None,
           wanted: Collection[int] = (), reanchor: Callable[[], Anchor] | None = None) -> Walk:
    """Walk `entries` (stored order) from `start` and stop at the first bad one.

    One pass, in constant memory whatever the chain's length: only the
    hashes at the `wanted` seqs (the checkpoints to check) are kept. `head`
    is what the store says the last entry is: a chain that ends before it
    has lost its newest entries. Entries without chain fields before the
    first chained one are counted as `legacy` (written before the register
    existed); anywhere else they are insertions.

    `reanchor` reads the anchor again when the entries jump ahead: retention
    trimming the oldest entries while the walk began is no gap when the
    anchor has moved to just before the entry found (whose `prev` must then
    be the anchor's hash).
    """
    it = iter(entries)
    expected, prev = start.seq + 1, start.hash
    hashes: dict[int, str] = {}
    recent: deque[tuple[int, str]] = deque(maxlen=RECENT)  # (seq, id) of the last entries, to name a duplicate
    legacy = 0
    count = 0

    def stop(e: Entry | None, seq: int | None, what: str, detail: str) -> Walk:
        p = Problem(chain, seq, e.id if e else "", what, detail)
        return Walk(chain, start, Anchor(expected - 1, prev), count, legacy, p, hashes)

    for e in it:
        if e.seq is None:
            if count == 0 and e.body is not None:
                legacy += 1
                continue
            if e.body is None:
                return stop(e, None, "edited", f"an unreadable entry follows seq {expected - 1}")
            return stop(e, None, "inserted", f"an entry without chain fields follows seq {expected - 1}")
        if e.seq != expected:
            if start.seq < e.seq < expected:
                first = next((i for s, i in recent if s == e.seq), "an earlier entry")
                return stop(e, e.seq, "inserted", f"seq {e.seq} appears twice (ids {first} and {e.id}): "
                                                  "one of them is forged")
            if e.seq <= start.seq:
                return stop(e, e.seq, "inserted", f"seq {e.seq} is at or before the anchor (seq {start.seq})")
            moved = reanchor() if reanchor is not None and e.seq > expected else None
            if moved is not None and moved.seq == e.seq - 1:
                expected, prev = e.seq, moved.hash  # trimmed meanwhile; `e` must continue the new anchor
            elif not any(later.seq == expected for later in it):
                missing = f"seq {expected}" if e.seq == expected + 1 else f"seq {expected} to {e.seq - 1}"
                return stop(e, expected, "deleted", f"{missing} missing: the chain jumps from seq {expected - 1} "
                                                    f"to seq {e.seq}")
            else:
                return stop(e, e.seq, "reordered", f"seq {e.seq} stored where seq {expected} belongs")
        if e.body is None:
            return stop(e, e.seq, "edited", "the entry's content is not readable JSON")
        if not e.hash or link(e.prev, e.seq, digest(e.body)) != e.hash:
            return stop(e, e.seq, "edited", "the content (or its seq/prev) does not match its hash")
        if e.prev != prev:
            return stop(e, e.seq, "inserted", f"its prev is not the hash of seq {expected - 1}: "
                                              "a forged or replaced entry")
        if e.seq in wanted:
            hashes[e.seq] = e.hash
        recent.append((e.seq, e.id))
        prev, expected, count = e.hash, expected + 1, count + 1
    end = Anchor(expected - 1, prev)
    if head is not None and head != end:
        if head.seq > end.seq:
            return Walk(chain, start, end, count, legacy,
                        Problem(chain, end.seq + 1, "", "deleted",
                                f"the chain ends at seq {end.seq} but its head says seq {head.seq}: "
                                "the newest entries are gone"), hashes)
        return Walk(chain, start, end, count, legacy,
                    Problem(chain, head.seq, "", "edited",
                            f"the chain's head (seq {head.seq}) does not match its last entry (seq {end.seq})"),
                    hashes)
    return Walk(chain, start, end, count, legacy, None, hashes)


def check_point(walk: Walk, seq: int, hash_: str) -> str:
    """Whether a signed checkpoint (`seq`, `hash_`) agrees with a walked chain: '' if so, '-' when it lies
    before the walk (archived or trimmed, not checkable here), else what is wrong."""
    if seq <= walk.start.seq:
        return "-" if not (seq == walk.start.seq and hash_ != walk.start.hash) else (
            f"the checkpoint at seq {seq} does not match the chain's anchor: history before it was rewritten")
    if seq > walk.end.seq:
        return (f"a signed checkpoint covers seq {seq} but the chain ends at seq {walk.end.seq}: "
                "entries were deleted")
    if (walk.hashes.get(seq) if seq != walk.end.seq else walk.end.hash) != hash_:
        return f"the hash of seq {seq} differs from the signed checkpoint: the chain was rewritten"
    return ""
