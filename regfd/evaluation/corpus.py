"""A labelled corpus: messages plus a manifest saying what a reviewer decided.

The manifest is a CSV a compliance officer can keep in a spreadsheet:
`file,from,to,at,action,findings,categories,note`. `file` is relative to the
manifest: an .eml file, or `archive.mbox#N` for the N-th message (from 1) of
an mbox. `to` lists envelope recipients separated by spaces; `findings` the
expected finding kinds and `categories` the expected material categories,
space separated; `at` an ISO 8601 instant (empty: the directory's default).
"""

from __future__ import annotations

import csv
import mailbox
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from regfd.core.address import normalize_address
from regfd.core.clock import parse_instant
from regfd.core.finding import FINDING_KINDS
from regfd.core.policy import ACTIONS
from regfd.errors import InvalidInput

COLUMNS = ("file", "from", "to", "at", "action", "findings", "categories", "note")


@dataclass(frozen=True)
class Labelled:
    """One message and what the reviewer expects the gateway to do with it."""

    name: str
    raw: bytes
    sender: str
    recipients: tuple[str, ...]
    at: datetime | None
    action: str
    findings: frozenset[str]
    categories: frozenset[str]
    note: str = ""
    part: str = ""  # which corpus part it came from (the manifest's folder name)


def as_received(raw: bytes) -> bytes:
    """Line ends as the milter receives them (CRLF): files on disk usually have LF."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _mbox_message(path: Path, index: int, cache: dict[Path, list[bytes]]) -> bytes:
    if path not in cache:
        box = mailbox.mbox(str(path), create=False)
        try:
            cache[path] = [box.get_bytes(k) for k in box.iterkeys()]
        finally:
            box.close()
    messages = cache[path]
    if not 1 <= index <= len(messages):
        raise InvalidInput(f"{path}: has {len(messages)} messages, not #{index}")
    return messages[index - 1]


def manifests(paths: list[Path]) -> Iterator[Path]:
    """Every manifest.csv named, or found below the folders named, in a stable order."""
    for p in paths:
        if p.is_dir():
            found = sorted(p.rglob("manifest.csv"))
            if not found:
                raise InvalidInput(f"{p}: no manifest.csv in this folder or below")
            yield from found
        elif p.is_file():
            yield p
        else:
            raise InvalidInput(f"{p}: no such file or directory")


def read_manifest(path: Path, tz: ZoneInfo, categories: frozenset[str]) -> list[Labelled]:
    """All rows or none: a bad row is one InvalidInput line naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: cannot read: {exc}") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in COLUMNS[:5] if c not in (reader.fieldnames or ())]
    if missing:
        raise InvalidInput(f"{path}: missing column {missing[0]!r} (columns: {','.join(COLUMNS)})")
    out: list[Labelled] = []
    mboxes: dict[Path, list[bytes]] = {}
    part = path.parent.relative_to(path.parent.parent.parent) if len(path.parents) > 2 else path.parent
    for line, row in enumerate(reader, 2):
        where = f"{path}:{line}"
        try:
            ref = (row.get("file") or "").strip()
            file_part, _, number = ref.partition("#")
            target = (path.parent / file_part).resolve()
            raw = _mbox_message(target, int(number), mboxes) if number else target.read_bytes()
            sender = (row.get("from") or "").strip()
            sender = normalize_address(sender) if sender and sender != "<>" else ""
            rcpts = tuple(normalize_address(a) for a in (row.get("to") or "").split())
            if not rcpts:
                raise ValueError("no recipients in column 'to'")
            at_text = (row.get("at") or "").strip()
            at = parse_instant(at_text, tz) if at_text else None
            action = (row.get("action") or "").strip()
            if action not in ACTIONS:
                raise ValueError(f"unknown action {action!r}")
            kinds = frozenset((row.get("findings") or "").split())
            bad = kinds - set(FINDING_KINDS)
            if bad:
                raise ValueError(f"unknown finding {sorted(bad)[0]!r}")
            cats = frozenset((row.get("categories") or "").split())
            bad = cats - categories
            if bad:
                raise ValueError(f"unknown category {sorted(bad)[0]!r}")
        except (OSError, ValueError, InvalidInput) as exc:
            raise InvalidInput(f"{where}: {exc}") from None
        out.append(Labelled(f"{part}/{ref}", as_received(raw), sender, rcpts, at, action, kinds, cats,
                            (row.get("note") or "").strip(), str(part)))
    return out
