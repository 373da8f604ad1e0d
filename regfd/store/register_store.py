"""The chained streams of the tamper-evident register in Redis.

    records                 stream  each entry: its fields + seq, prev, hash   (records_store.py)
    audit                   stream  each entry: its fields + seq, prev, hash   (redis_store.py)
    register:records        hash    seq, hash, id (the head); anchor_seq, anchor_hash (last entry gone from Redis)
    register:audit          hash    the same for the audit chain
    register:checkpoints    stream  {"c": JSON signed checkpoint}

An append is a Lua script queued on the writer's own MULTI/EXEC (`Tx`): it
reads the head, computes the link (SHA-256 in Lua, two blocks; see
core/chain.py for the definition), adds the entry and moves the head, all
inside the transaction that writes whatever the entry records. Redis runs
scripts one at a time, so concurrent milters append one after the other
and the chain cannot fork; nothing waits on a WATCH. The script is sent with EVAL (its
text, a few kilobytes) rather than EVALSHA: a Redis restarted between two
calls would answer NOSCRIPT inside the EXEC and the rest of the transaction
would commit without its chain entry.

Trimming (retention, or `regfd records archive`) moves the anchor to the
last entry removed, in the same script, so what remains still verifies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

from regfd.core.chain import GENESIS, Anchor, Entry
from regfd.store.client import Tx, dumps, reaching, text

if TYPE_CHECKING:
    from regfd.store.redis_store import RedisStore

PAGE = 1000  # entries per XRANGE, so a long walk never blocks Redis for long

# SHA-256 over a short string with Redis's LuaBitOp (`bit`): 32-bit words,
# sums reduced with bit.tobit. Checked against hashlib by tests/test_register.py.
_SHA256 = """
local band, bor, bxor, bnot, rshift, lshift, ror, tobit, tohex =
  bit.band, bit.bor, bit.bxor, bit.bnot, bit.rshift, bit.lshift, bit.ror, bit.tobit, bit.tohex
local K = {
0x428a2f98,0x71374491,0xb5c0fbcf,0xe9b5dba5,0x3956c25b,0x59f111f1,0x923f82a4,0xab1c5ed5,
0xd807aa98,0x12835b01,0x243185be,0x550c7dc3,0x72be5d74,0x80deb1fe,0x9bdc06a7,0xc19bf174,
0xe49b69c1,0xefbe4786,0x0fc19dc6,0x240ca1cc,0x2de92c6f,0x4a7484aa,0x5cb0a9dc,0x76f988da,
0x983e5152,0xa831c66d,0xb00327c8,0xbf597fc7,0xc6e00bf3,0xd5a79147,0x06ca6351,0x14292967,
0x27b70a85,0x2e1b2138,0x4d2c6dfc,0x53380d13,0x650a7354,0x766a0abb,0x81c2c92e,0x92722c85,
0xa2bfe8a1,0xa81a664b,0xc24b8b70,0xc76c51a3,0xd192e819,0xd6990624,0xf40e3585,0x106aa070,
0x19a4c116,0x1e376c08,0x2748774c,0x34b0bcb5,0x391c0cb3,0x4ed8aa4a,0x5b9cca4f,0x682e6ff3,
0x748f82ee,0x78a5636f,0x84c87814,0x8cc70208,0x90befffa,0xa4506ceb,0xbef9a3f7,0xc67178f2}
local function sha256(msg)
  local n = #msg
  msg = msg .. "\\128" .. string.rep("\\0", (55 - n) % 64) .. string.char(0, 0, 0, 0,
    band(rshift(n, 21), 255), band(rshift(n, 13), 255), band(rshift(n, 5), 255), band(lshift(n, 3), 255))
  local H = {0x6a09e667,0xbb67ae85,0x3c6ef372,0xa54ff53a,0x510e527f,0x9b05688c,0x1f83d9ab,0x5be0cd19}
  local w = {}
  for c = 1, #msg, 64 do
    for i = 0, 15 do
      local b1, b2, b3, b4 = string.byte(msg, c + 4 * i, c + 4 * i + 3)
      w[i] = bor(lshift(b1, 24), lshift(b2, 16), lshift(b3, 8), b4)
    end
    for i = 16, 63 do
      local x, y = w[i - 15], w[i - 2]
      w[i] = tobit(w[i - 16] + bxor(ror(x, 7), ror(x, 18), rshift(x, 3)) + w[i - 7]
                   + bxor(ror(y, 17), ror(y, 19), rshift(y, 10)))
    end
    local a, b, cc, d, e, f, g, h = H[1], H[2], H[3], H[4], H[5], H[6], H[7], H[8]
    for i = 0, 63 do
      local t1 = h + bxor(ror(e, 6), ror(e, 11), ror(e, 25)) + bxor(band(e, f), band(bnot(e), g)) + K[i + 1] + w[i]
      local t2 = bxor(ror(a, 2), ror(a, 13), ror(a, 22)) + bxor(band(a, b), band(a, cc), band(b, cc))
      h, g, f, e, d, cc, b, a = g, f, e, tobit(d + t1), cc, b, a, tobit(t1 + t2)
    end
    H[1], H[2], H[3], H[4] = tobit(H[1] + a), tobit(H[2] + b), tobit(H[3] + cc), tobit(H[4] + d)
    H[5], H[6], H[7], H[8] = tobit(H[5] + e), tobit(H[6] + f), tobit(H[7] + g), tobit(H[8] + h)
  end
  local out = {}
  for i = 1, 8 do out[i] = tohex(H[i]) end
  return table.concat(out)
end
local function raw(hex)
  return (string.gsub(hex, '..', function(c) return string.char(tonumber(c, 16)) end))
end
local function before(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, bm = tonumber(am), tonumber(bm)
  return am < bm or (am == bm and tonumber(as) < tonumber(bs))
end
local function field(flat, name)
  for i = 1, #flat, 2 do if flat[i] == name then return flat[i + 1] end end
  return false
end
"""

# KEYS: stream, head.  ARGV: chain (not hashed: each chain has its own head), digest, minid ("" = no
# trimming), then the entry's field/value pairs. Trimming costs one XRANGE COUNT 1 when nothing expired
# (XREVRANGE to find the last expired entry walks the stream in Redis 7.0: 12 ms at 25,000 entries); the
# anchor is then read off the oldest entry left (its seq - 1 and its prev).
_APPEND = _SHA256 + """
local head = redis.call('HMGET', KEYS[2], 'seq', 'hash')
local seq = tonumber(head[1] or '0') + 1
local prev = head[2] or '""" + GENESIS + """'
local s = string.format('%d', seq)
local hi = math.floor(seq / 4294967296)
local h = sha256(raw(prev) .. raw(ARGV[2]) .. string.char(
  band(rshift(hi, 24), 255), band(rshift(hi, 16), 255), band(rshift(hi, 8), 255), band(hi, 255),
  band(rshift(seq, 24), 255), band(rshift(seq, 16), 255), band(rshift(seq, 8), 255), band(seq, 255)))
local args = {KEYS[1], '*'}
for i = 4, #ARGV do args[#args + 1] = ARGV[i] end
args[#args + 1] = 'seq'; args[#args + 1] = s
args[#args + 1] = 'prev'; args[#args + 1] = prev
args[#args + 1] = 'hash'; args[#args + 1] = h
local id = redis.call('XADD', unpack(args))
redis.call('HSET', KEYS[2], 'seq', s, 'hash', h, 'id', id)
if ARGV[3] ~= '' then
  local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  if #oldest > 0 and before(oldest[1][1], ARGV[3]) then
    redis.call('XTRIM', KEYS[1], 'MINID', ARGV[3])
    local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
    if not first then
      redis.call('HSET', KEYS[2], 'anchor_seq', s, 'anchor_hash', h)
    elseif field(first[2], 'seq') then
      redis.call('HSET', KEYS[2], 'anchor_seq', string.format('%d', tonumber(field(first[2], 'seq')) - 1),
                 'anchor_hash', field(first[2], 'prev'))
    end
  end
end
return s
"""

# KEYS: stream, head.  ARGV: the last archived entry's id, seq, hash. Trims through it, if it is still there
# unchanged; returns the number of entries removed (-1 when the entry is not what was archived).
_TRIM = _SHA256 + """
local got = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #got == 0 or field(got[1][2], 'seq') ~= ARGV[2] or field(got[1][2], 'hash') ~= ARGV[3] then return -1 end
local ms, n = string.match(ARGV[1], '^(%d+)-(%d+)$')
local len0 = redis.call('XLEN', KEYS[1])
redis.call('XTRIM', KEYS[1], 'MINID', ms .. '-' .. string.format('%d', tonumber(n) + 1))
redis.call('HSET', KEYS[2], 'anchor_seq', ARGV[2], 'anchor_hash', ARGV[3])
return len0 - redis.call('XLEN', KEYS[1])
"""

# For the tests: the Lua SHA-256 of ARGV[1].
SHA256_PROBE = _SHA256 + "\nreturn sha256(ARGV[1])\n"


class RegisterStore:
    """The chain heads, the checkpoints, and reading a chained stream back as `Entry`s."""

    def __init__(self, store: RedisStore) -> None:
        self._r = store.r
        self.streams = {"records": store.k("records"), "audit": store.k("audit")}
        self.heads = {c: store.k(f"register:{c}") for c in self.streams}
        self.checkpoints_key = store.k("register:checkpoints")

    def append(self, tx: Tx, chain: str, fields: Mapping[str, str], entry_digest: str,
               trim_before_ms: int | None = None) -> None:
        """Queue the chained append of an entry (its stream fields and the digest of its content) on `tx`.

        With `trim_before_ms`, entries that arrived before that instant are
        removed in the same step (exact retention) and the anchor moves to
        the last of them.
        """
        flat: list[str] = []
        for k, v in fields.items():
            flat += (k, v)
        minid = f"{max(0, trim_before_ms)}-0" if trim_before_ms is not None else ""
        tx.pipe.eval(_APPEND, 2, self.streams[chain], self.heads[chain], chain, entry_digest, minid, *flat)

    def head(self, chain: str) -> tuple[Anchor, Anchor | None, str]:
        """The anchor (where the live entries start), the head (the last entry; None before the first) and
        the head's stream id ("" if unknown), read together."""
        with reaching():
            raw = cast("list[bytes | None]", self._r.hmget(self.heads[chain],
                                                           ["seq", "hash", "anchor_seq", "anchor_hash", "id"]))
        seq, h, aseq, ahash, sid = (text(x) if x is not None else None for x in raw)
        anchor = Anchor(int(aseq), ahash or GENESIS) if aseq else Anchor()
        return anchor, (Anchor(int(seq), h or "") if seq else None), sid or ""

    def entries(self, chain: str, before_ms: int | None = None, through: str = "") -> Iterator[Entry]:
        """The chain's live entries in stream order: those that arrived before `before_ms`, or up to and
        including stream id `through` (the head when a walk began: later appends are not its business).

        Read a page at a time as the caller goes, so a walk holds one page in memory.
        """
        key = self.streams[chain]
        start = "-"
        end = f"({before_ms}-0" if before_ms is not None else (through or "+")
        while True:
            with reaching():
                rows = cast("list[tuple[bytes, dict[bytes, bytes]]]",
                            self._r.xrange(key, min=start, max=end, count=PAGE))
            for sid, raw in rows:
                yield _entry(chain, text(sid), {text(k): text(v) for k, v in raw.items()})
            if len(rows) < PAGE:
                return
            ms, n = text(rows[-1][0]).split("-")
            start = f"{ms}-{int(n) + 1}"

    def entry_after(self, chain: str, sid: str) -> Entry | None:
        """The entry that follows stream id `sid`, if any."""
        with reaching():
            rows = cast("list[tuple[bytes, dict[bytes, bytes]]]",
                        self._r.xrange(self.streams[chain], min=f"({sid}", max="+", count=1))
        return _entry(chain, text(rows[0][0]), {text(k): text(v) for k, v in rows[0][1].items()}) if rows else None

    def trim_through(self, chain: str, last: Entry) -> int:
        """Remove every entry up to and including `last` and anchor the chain there; -1 if `last` changed."""
        with reaching():
            return int(cast(int, self._r.eval(_TRIM, 2, self.streams[chain], self.heads[chain],
                                               last.id, str(last.seq), last.hash)))

    def add_checkpoint(self, signed: Mapping[str, Any]) -> str:
        """Store a signed checkpoint; returns its stream id."""
        with reaching():
            return text(cast(bytes, self._r.xadd(self.checkpoints_key, {"c": dumps(dict(signed))})))

    def last_checkpoint(self) -> dict[str, Any] | None:
        """The newest stored checkpoint, None when there is none."""
        with reaching():
            rows = cast("list[tuple[bytes, dict[bytes, bytes]]]",
                        self._r.xrevrange(self.checkpoints_key, count=1))
        return {**json.loads(rows[0][1][b"c"]), "id": text(rows[0][0])} if rows else None

    def checkpoints(self) -> list[dict[str, Any]]:
        """Every stored signed checkpoint, oldest first, each with its stream `id`."""
        with reaching():
            rows = cast("list[tuple[bytes, dict[bytes, bytes]]]", self._r.xrange(self.checkpoints_key))
        return [{**json.loads(raw[b"c"]), "id": text(sid)} for sid, raw in rows]


def _entry(chain: str, sid: str, fields: dict[str, str]) -> Entry:
    """A stream entry as the chain sees it: its content (the fields the writer gave) and its chain fields."""
    seq = fields.pop("seq", None)
    prev = fields.pop("prev", "")
    h = fields.pop("hash", "")
    return Entry(sid, int(seq) if seq is not None and seq.isdigit() else None, prev, h, content(chain, fields))


def content(chain: str, fields: Mapping[str, str]) -> dict[str, Any] | None:
    """What an entry's digest covers: the record for `records`, the audit event's fields for `audit`."""
    try:
        if chain == "records":
            return cast("dict[str, Any]", json.loads(fields["r"]))
        return {"at": fields["at"], "who": fields["who"], "action": fields["action"], "target": fields["target"],
                "detail": json.loads(fields.get("detail") or "{}")}
    except (KeyError, ValueError):
        return None
