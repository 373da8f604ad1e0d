"""How listings are printed: JSON for scripts, aligned columns for people."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def print_json(out: Any, obj: Any) -> None:
    """Indented and not ASCII-escaped, so names and subjects stay readable."""
    out.write(json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def print_table(out: Any, rows: Sequence[dict[str, Any]], columns: Sequence[str], empty: str) -> None:
    """Columns padded to their widest cell, headers in capitals; `empty` is printed instead when there are no rows."""
    if not rows:
        out.write(empty + "\n")
        return
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    out.write("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip() + "\n")
    for row in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")


def listing(out: Any, rows: Sequence[dict[str, Any]], as_json: bool, columns: Sequence[str], empty: str) -> None:
    """The one switch every list command uses between --json and the table."""
    if as_json:
        print_json(out, list(rows))
    else:
        print_table(out, rows, columns, empty)
