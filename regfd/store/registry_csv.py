"""The registry's CSV format: what `regfd registry import` reads and `regfd registry export` writes.

Columns pattern,category[,firm][,note] with a header; an export can be edited
and imported back.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from regfd.core.address import normalize_pattern
from regfd.core.clock import now, to_iso
from regfd.core.directory import REGISTRY_CATEGORIES, RegistryEntry
from regfd.errors import InvalidInput

CSV_COLUMNS = ("pattern", "category", "firm", "note")


def parse_registry_csv(path: Path, who: str) -> list[RegistryEntry]:
    """All rows valid or an error naming the first bad line; duplicates keep the last row."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_registry_text(text, str(path), who)


def parse_registry_text(text: str, path: str, who: str) -> list[RegistryEntry]:
    """`parse_registry_csv` on text already read (an upload in the console); `path` names it in errors."""
    text = text.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise InvalidInput(f"{path}: empty file (expected a header: {','.join(CSV_COLUMNS)})") from None
    except csv.Error as exc:
        raise InvalidInput(f"{path}:1: {exc}") from None
    if "pattern" not in header or "category" not in header:
        raise InvalidInput(f"{path}:1: header must name the columns pattern and category (got {','.join(header)})")
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown:
        raise InvalidInput(f"{path}:1: unknown column {unknown[0]!r} (columns: {','.join(CSV_COLUMNS)})")
    idx = {h: i for i, h in enumerate(header)}
    at = to_iso(now())
    entries: dict[str, RegistryEntry] = {}
    try:
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) > len(header):
                raise InvalidInput(f"{path}:{line}: {len(row)} fields, header has {len(header)}")
            cell = {h: (row[i].strip() if i < len(row) else "") for h, i in idx.items()}
            try:
                pattern = normalize_pattern(cell["pattern"])
            except ValueError as exc:
                raise InvalidInput(f"{path}:{line}: {exc}") from None
            category = cell["category"].lower()
            if category not in REGISTRY_CATEGORIES:
                raise InvalidInput(f"{path}:{line}: unknown category {cell['category']!r} "
                                   f"(expected one of: {', '.join(REGISTRY_CATEGORIES)})")
            entries[pattern] = RegistryEntry(pattern, category, cell.get("firm", ""), cell.get("note", ""), at, who)
    except csv.Error as exc:
        raise InvalidInput(f"{path}:{reader.line_num}: {exc}") from None
    return list(entries.values())


def write_registry_csv(out: TextIO, entries: Iterable[RegistryEntry]) -> None:
    """CSV in the import format, header first."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for e in entries:
        w.writerow([e.pattern, e.category, e.firm, e.note])
