"""The tamper-evident register: signed checkpoints, verification, and the archive of closed periods.

The chain itself is core/chain.py (pure) and store/register_store.py (the
append in the writer's transaction). This module adds what makes it useful
to an auditor:

- a checkpoint signs each chain's head (seq, hash) with the Ed25519 key
  (compliance/signing.py); `regfd records checkpoint`, and the milter's
  outbox worker every `[register] checkpoint_interval` seconds. A chain
  rewritten from some entry on, hashes recomputed, no longer matches the
  checkpoints signed before, and an attacker without the key cannot sign new ones;
- `verify` walks every chain (and the archive, if given) and names the first
  bad entry, then checks every checkpoint's signature and head;
- `archive` writes the entries that arrived before a date to JSON-lines
  files with a signed checkpoint naming each file's SHA-256, reads them back
  and verifies them, and only then trims them from Redis, anchoring what
  remains on the last archived entry.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regfd.compliance.signing import load_private, sign, signature_ok
from regfd.core.chain import CHAINS, Anchor, Entry, Walk, canonical, check_point, verify
from regfd.core.clock import from_iso, to_iso, to_ms
from regfd.core.clock import now as utcnow
from regfd.errors import RegfdError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    from regfd.config import Config
    from regfd.store.redis_store import RedisStore


@dataclass
class Report:
    """What `regfd records verify` found: one walk per chain, the first problems, notes, checkpoint counts."""

    walks: dict[str, Walk] = field(default_factory=dict)
    archived: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checkpoints: int = 0
    signatures_ok: int = 0
    agreeing: int = 0
    not_checkable: int = 0

    @property
    def intact(self) -> bool:
        """Nothing was found wrong."""
        return not self.problems


@dataclass(frozen=True)
class ArchivedChain:
    """One chain's part of an archive run: the file, its digest and the range of seqs it holds."""

    chain: str
    file: str
    sha256: str
    first: int
    prev: str
    last: int
    hash: str
    entries: int
    trimmed: int = 0


class _Counter:
    """Counts the entries an iterator yields (how many came from the archive)."""

    def __init__(self, it: Iterable[Entry]) -> None:
        self.it = iter(it)
        self.n = 0

    def __iter__(self) -> Iterator[Entry]:
        for e in self.it:
            self.n += 1
            yield e


def _log() -> Any:
    import structlog

    return structlog.get_logger("regfd.register")


# ------------------------------------------------------------------ archive files
def archive_line(chain: str, e: Entry) -> bytes:
    """One archived entry: canonical JSON, one line (what `verify --archive` reads back)."""
    return canonical({"chain": chain, "id": e.id, "seq": e.seq, "prev": e.prev, "hash": e.hash,
                      "entry": e.body}) + b"\n"


def _write_once(path: Path, data: bytes) -> None:
    """Create `path` with `data`, read-only (0444), fsynced; never overwrite (WORM-friendly)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise RegfdError(f"{path} already exists: an archive file is never overwritten") from None
    finally:
        tmp.unlink()
    os.chmod(path, 0o444)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@dataclass
class ArchiveDir:
    """An archive directory: its files per chain (in seq order), signed checkpoints, file digests.

    Entries are read lazily (`entries`), so verifying years of archive needs
    no more memory than one line.
    """

    files: dict[str, list[Path]] = field(default_factory=dict)
    checkpoints: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def last_seq(self, chain: str) -> int:
        """The last seq the chain's archive files hold (0 with none), from their names (CHAIN-FIRST-LAST.jsonl)."""
        files = self.files.get(chain, [])
        return int(files[-1].stem.rsplit("-", 1)[1]) if files else 0

    def entries(self, chain: str) -> Iterator[Entry]:
        """The chain's archived entries in order; an unreadable line comes as an Entry without seq or body."""
        for path in self.files.get(chain, []):
            with open(path, "rb") as f:
                for n, line in enumerate(f, 1):
                    try:
                        d = json.loads(line)
                        seq = d["seq"]
                        yield Entry(str(d["id"]), seq if isinstance(seq, int) else None, str(d["prev"]),
                                    str(d["hash"]), d["entry"] if isinstance(d["entry"], dict) else None)
                    except (ValueError, KeyError, TypeError):
                        yield Entry(f"{path.name} line {n}", None, "", "", None)


_ARCHIVE_FILE = re.compile(r"^(?P<chain>[a-z]+)-(?P<first>\d{12})-(?P<last>\d{12})\.jsonl$")


def read_archive(directories: Sequence[Path]) -> ArchiveDir:
    """Every `CHAIN-FIRST-LAST.jsonl` (digested here, read later) and `*.checkpoint.json` in `directories`.

    Several directories (a year each, the checkpoint copies) are one archive:
    files are ordered by name, i.e. by seq, whichever directory holds them.
    """
    out = ArchiveDir({c: [] for c in CHAINS})
    for directory in directories:
        if not directory.is_dir():
            raise RegfdError(f"archive directory {directory} does not exist")
        for path in sorted(directory.glob("*.jsonl")):
            m = _ARCHIVE_FILE.match(path.name)
            if m is None or m["chain"] not in CHAINS:
                out.problems.append(f"archive file {path.name}: not an archive file name (inserted?)")
                continue
            if path.name in out.digests:
                out.problems.append(f"archive file {path.name}: in two of the archive directories")
                continue
            out.files[m["chain"]].append(path)
            digest_ = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest_.update(block)
            out.digests[path.name] = digest_.hexdigest()
        for path in sorted(directory.glob("*.checkpoint.json")):
            try:
                out.checkpoints.append((path.name, json.loads(path.read_bytes())))
            except ValueError:
                out.problems.append(f"archive {path.name}: not a JSON checkpoint (edited?)")
    for files in out.files.values():
        files.sort(key=lambda p: p.name)
    return out


def archived_entries(directories: Sequence[Path], chain: str, since: datetime | None = None) -> list[dict[str, Any]]:
    """A chain's archived entries (those that arrived at or after `since`), each with its stream `id`, in order.

    What `regfd records --archive DIR` and `regfd audit --archive DIR` list before what is still in Redis.
    """
    floor = to_ms(since) if since else 0
    return [{**e.body, "id": e.id} for e in read_archive(directories).entries(chain)
            if e.body is not None and e.seq is not None and int(e.id.split("-")[0]) >= floor]


# ------------------------------------------------------------------ the service
class Register:
    """Checkpoints, verification and archiving over the store's chained streams."""

    def __init__(self, store: RedisStore, config: Config, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.chains = store.register
        self.config = config
        self.clock = clock
        self._key: Ed25519PrivateKey | None = None
        self._not_before: datetime | None = None  # the periodic tick looks at Redis again only then

    def key(self) -> Ed25519PrivateKey:
        """The signing key from the configured file, read once."""
        if self._key is None:
            self._key = load_private(self.config.signing_key_path)
        return self._key

    def heads(self) -> dict[str, dict[str, Any]]:
        """Each chain's last entry as {"seq", "hash"} (seq 0 before the first)."""
        out = {}
        for chain in CHAINS:
            anchor, head, _ = self.chains.head(chain)
            h = head or anchor
            out[chain] = {"seq": h.seq, "hash": h.hash}
        return out

    # ---------------------------------------------------------------- checkpoints
    def checkpoint(self, out: Path | None = None) -> dict[str, Any]:
        """Sign and store a checkpoint of every chain's head now; returns it (with its stream `id`).

        With `out`, it is also written there as `checkpoint-TIME.checkpoint.json`
        (read-only, never overwritten): a copy off Redis, which `verify
        --archive` of that directory checks too, so deleting the checkpoints
        in Redis before rewriting a chain does not hide the rewrite.
        """
        now = self.clock()
        signed = sign(self.key(), {"kind": "checkpoint", "at": to_iso(now), "chains": self.heads()})
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            _write_once(out / f"checkpoint-{now.strftime('%Y%m%dT%H%M%S%fZ')}.checkpoint.json",
                        canonical(signed) + b"\n")
        return {**signed, "id": self.chains.add_checkpoint(signed)}

    def checkpoint_due(self, now: datetime) -> int:
        """The outbox worker's tick: a checkpoint when `checkpoint_interval` has passed and a chain moved.

        Does nothing without a key file (a deployment that has not run
        `regfd records keygen` yet) or with an interval of 0; between two
        looks at Redis it waits in memory, so the 1 s tick costs nothing.
        Returns 1 when it signed. Never raises: a failure is logged and
        retried a minute later, and the notifications that share the
        worker's loop go on.
        """
        interval = timedelta(seconds=self.config.register.checkpoint_interval)
        if not interval or (self._not_before is not None and now < self._not_before):
            return 0
        self._not_before = now + min(interval, timedelta(minutes=1))
        try:
            if not self.config.signing_key_path.exists():
                return 0
            last = self.chains.last_checkpoint()
            if last is not None:
                payload = last.get("payload", {})
                at = from_iso(payload.get("at"))
                if at is not None and now - at < interval:
                    self._not_before = at + interval
                    return 0
                if payload.get("kind") == "checkpoint" and payload.get("chains") == self.heads():
                    return 0
            signed = self.checkpoint()
        except Exception as exc:  # the key unreadable, Redis away: say so, try again later
            _log().warning("register.checkpoint.failed", error=f"{type(exc).__name__}: {exc}")
            return 0
        self._not_before = now + interval
        _log().info("register.checkpoint", id=signed["id"], key=signed["key"], **{
            f"{c}_seq": p["seq"] for c, p in signed["payload"]["chains"].items()}, **{
            f"{c}_hash": p["hash"] for c, p in signed["payload"]["chains"].items()})
        return 1

    # ---------------------------------------------------------------- verify
    def verify(self, public: Sequence[Ed25519PublicKey], archive: Sequence[Path] = ()) -> Report:
        """Walk every chain (after the archive's entries, if given) and check every checkpoint.

        A checkpoint's signature must verify with one of `public` (several
        after a key rotation); with none given, signatures are not checked.
        One pass over each chain, streamed: memory does not grow with its length.
        """
        report = Report()
        arch = read_archive(archive) if archive else None
        if arch is not None:
            report.problems += arch.problems
        stored = [(f"checkpoint {c.get('id', '?')}", c) for c in self.chains.checkpoints()]
        files = [(f"archive checkpoint {name}", c) for name, c in (arch.checkpoints if arch else [])]
        wanted: dict[str, set[int]] = {c: set() for c in CHAINS}
        for _, signed in stored + files:
            for chain, point in ((signed.get("payload") or {}).get("chains") or {}).items():
                if chain in wanted and isinstance(point, dict) and isinstance(point.get("seq"), int):
                    wanted[chain].add(point["seq"])
        for chain in CHAINS:
            report.walks[chain] = self._walk(report, chain, arch, wanted[chain])
        if report.problems:
            return report
        for source, signed in stored + files:
            self._check(report, source, signed, public)
        if arch is not None:
            self._check_files(report, arch, stored + files)
        return report

    def _walk(self, report: Report, chain: str, arch: ArchiveDir | None, wanted: set[int]) -> Walk:
        """One chain: the archive's entries (if any) then Redis's, from where the first of them starts."""
        anchor, head, head_id = self.chains.head(chain)
        if head is None and next(iter(self.chains.entries(chain)), None) is not None:
            # Entries but no head: the first appends arrived since the head was read, or the head record
            # is gone; read it again (still none: reported below as missing).
            anchor, head, head_id = self.chains.head(chain)
        live: Iterable[Entry] = self.chains.entries(chain, through=head_id)
        old = iter(arch.entries(chain)) if arch is not None else iter(())
        first = next(old, None)
        counted: _Counter | None = None
        if first is None:
            start, entries = anchor, live
            if anchor.seq:
                report.notes.append(f"{chain}: seq 1 to {anchor.seq} are no longer in Redis (archived, or "
                                    "trimmed by retention); give --archive DIR to check them too")
        else:
            assert arch is not None
            start = Anchor(first.seq - 1, first.prev) if first.seq else Anchor()
            if start.seq:
                report.notes.append(f"{chain}: the archive starts at seq {start.seq + 1}; earlier entries "
                                    "were trimmed by retention before any archive")
            last = arch.last_seq(chain)
            if anchor.seq < last:  # archived but not (all) trimmed: Redis still has copies of archived entries
                copies = {e.seq: e.hash for e in arch.entries(chain) if e.seq is not None and e.seq > anchor.seq}
                live = (e for e in live if e.seq is None or copies.get(e.seq) != e.hash)
            counted = _Counter(itertools.chain([first], old))
            entries = itertools.chain(counted, live)
        # Without an archive, retention may trim the oldest entries while the walk starts: the anchor moves.
        reanchor = (lambda: self.chains.head(chain)[0]) if first is None else None
        walk = verify(chain, entries, start, head, wanted, reanchor)
        report.archived[chain] = counted.n if counted is not None else 0
        if head is None and walk.problem is None and walk.end.seq > 0:
            report.problems.append(f"{chain}: the chain's head record is missing from Redis (deleted?)")
        if head is not None and head_id and walk.problem is None:
            # What follows the head can only be an append made since it was read: seq head+1, chained onto it.
            after = self.chains.entry_after(chain, head_id)
            if after is not None and (after.seq != head.seq + 1 or after.prev != head.hash):
                report.problems.append(f"{chain} an entry (id {after.id}): inserted: it follows the head "
                                       f"(seq {head.seq}) without continuing it")
        if walk.problem is not None:
            line = walk.problem.line()
            if first is not None and walk.problem.what == "deleted" and walk.problem.seq is not None \
                    and walk.problem.seq <= anchor.seq:
                line += " (trimmed from Redis but not in this archive)"
            report.problems.append(line)
        return walk

    def _check(self, report: Report, source: str, signed: Mapping[str, Any],
               public: Sequence[Ed25519PublicKey]) -> None:
        report.checkpoints += 1
        payload = signed.get("payload") or {}
        at = payload.get("at", "?")
        if public:
            if not any(signature_ok(k, signed) for k in public):
                report.problems.append(f"{source} (at {at}): the signature does not verify with the given public "
                                       f"key (it names key {signed.get('key', '?')}): forged or edited")
                return
            report.signatures_ok += 1
        for chain, point in (payload.get("chains") or {}).items():
            walk = report.walks.get(chain)
            if walk is None:
                report.problems.append(f"{source} (at {at}): names an unknown chain {chain!r}")
                continue
            try:
                seq, hash_ = int(point["seq"]), str(point["hash"])
            except (KeyError, TypeError, ValueError):
                report.problems.append(f"{source} (at {at}): {chain}: no seq/hash")
                continue
            found = check_point(walk, seq, hash_)
            if found == "-":
                report.not_checkable += 1
            elif found:
                report.problems.append(f"{source} (at {at}): {chain}: {found}")
            else:
                report.agreeing += 1

    @staticmethod
    def _check_files(report: Report, arch: ArchiveDir, checkpoints: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        covered: set[str] = set()
        for source, signed in checkpoints:
            payload = signed.get("payload") or {}
            if payload.get("kind") != "archive":
                continue
            for point in (payload.get("chains") or {}).values():
                name = str(point.get("file", ""))
                covered.add(name)
                if name not in arch.digests:
                    report.problems.append(f"{source}: the archive file {name} it signs is not in the archive "
                                           "directory (deleted?)")
                elif arch.digests[name] != point.get("sha256"):
                    report.problems.append(f"{source}: the archive file {name} does not match the SHA-256 it signs "
                                           "(edited)")
        for name in sorted(set(arch.digests) - covered):
            report.problems.append(f"archive file {name}: no signed checkpoint names it (inserted?)")

    # ---------------------------------------------------------------- archive
    def archive(self, before: datetime, out: Path) -> list[ArchivedChain]:
        """Archive the entries that arrived before `before` to `out`, verify the files, then trim Redis.

        Nothing is trimmed unless every file written reads back intact and
        the checkpoint's signature verifies; a live chain that is already
        broken is refused (verify it first).
        """
        key = self.key()
        out.mkdir(parents=True, exist_ok=True)
        now = self.clock()
        taken: dict[str, tuple[list[Entry], ArchivedChain]] = {}
        for chain in CHAINS:
            anchor, _, _ = self.chains.head(chain)
            entries = list(self.chains.entries(chain, to_ms(before)))
            chained = [e for e in entries if e.seq is not None]
            if not chained:
                continue
            walk = verify(chain, entries, anchor)
            if walk.problem is not None:
                raise RegfdError(f"nothing archived: the live chain is broken: {walk.problem.line()}")
            first, last = chained[0], chained[-1]
            name = f"{chain}-{first.seq:012d}-{last.seq:012d}.jsonl"
            data = b"".join(archive_line(chain, e) for e in entries)
            _write_once(out / name, data)
            taken[chain] = (entries, ArchivedChain(chain, name, hashlib.sha256(data).hexdigest(), first.seq or 0,
                                                   first.prev, last.seq or 0, last.hash, len(entries)))
        if not taken:
            return []
        payload = {"kind": "archive", "at": to_iso(now), "before": to_iso(before),
                   "chains": {c: {"file": a.file, "sha256": a.sha256, "first": a.first, "prev": a.prev,
                                  "seq": a.last, "hash": a.hash, "entries": a.entries}
                              for c, (_, a) in taken.items()}}
        signed = sign(key, payload)
        stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
        _write_once(out / f"archive-{stamp}.checkpoint.json", canonical(signed) + b"\n")
        self._reread(out, taken, key.public_key(), f"archive-{stamp}.checkpoint.json")
        self.chains.add_checkpoint(signed)
        done = []
        for chain, (entries, a) in taken.items():
            last = [e for e in entries if e.seq is not None][-1]
            n = self.chains.trim_through(chain, last)
            if n < 0:
                raise RegfdError(f"the archive is written and verified, but {chain} seq {a.last} changed in Redis "
                                 "since it was read: nothing trimmed from that chain (run `regfd records verify`)")
            done.append(replace(a, trimmed=n))
        return done

    @staticmethod
    def _reread(out: Path, taken: Mapping[str, tuple[list[Entry], ArchivedChain]], public: Ed25519PublicKey,
                checkpoint_file: str) -> None:
        """Read back what was written; any difference stops the archive before Redis is trimmed."""
        arch = read_archive([out])
        if arch.problems:
            raise RegfdError(f"nothing trimmed: {arch.problems[0]}")
        signed = dict(arch.checkpoints).get(checkpoint_file)
        if signed is None or not signature_ok(public, signed):
            raise RegfdError(f"nothing trimmed: the checkpoint {checkpoint_file} does not verify after writing")
        for chain, (_, a) in taken.items():
            if arch.digests.get(a.file) != a.sha256:
                raise RegfdError(f"nothing trimmed: {a.file} does not read back as written")
            arch.files[chain] = [out / a.file]  # just the file written now
            mine = [e for e in arch.entries(chain) if e.seq is not None]
            walk = verify(chain, mine, Anchor(a.first - 1, a.prev), Anchor(a.last, a.hash))
            if walk.problem is not None:
                raise RegfdError(f"nothing trimmed: {a.file} does not verify: {walk.problem.line()}")
