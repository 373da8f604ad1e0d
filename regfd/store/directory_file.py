"""A directory read from a TOML file instead of Redis.

`regfd evaluate` judges a labelled corpus against the directory the corpus
was labelled with (who is an officer, a delegate, a Specified Person ...),
not against whatever the live registry holds today. The file is validated
with the same normalization as the CLI, and `snapshot` answers exactly what
`RedisStore.snapshot` would for the same entries.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from regfd.core.address import candidates, normalize_address, normalize_domain, normalize_pattern
from regfd.core.clock import parse_instant
from regfd.core.directory import (
    EXEMPTION_KINDS,
    REGISTRY_CATEGORIES,
    Authorization,
    DirectorySnapshot,
    Exemption,
    Officer,
    QuietPeriod,
    RegistryEntry,
)
from regfd.core.directory_rules import parse_choice, parse_pattern
from regfd.errors import InvalidInput

_TABLES = {"officer", "delegate", "registry", "exempt", "quiet"}
_SCALARS = {"internal_domains", "authorized_roles", "timezone", "at"}


@dataclass(frozen=True)
class FileDirectory:
    """The whole directory in memory; `snapshot` serves one envelope like the Redis store does."""

    internal_domains: tuple[str, ...]
    authorized_roles: tuple[str, ...]
    tz: ZoneInfo
    at: datetime | None
    officers: Mapping[str, Officer]
    delegates: Mapping[str, Authorization]
    registry: Mapping[str, RegistryEntry]
    exemptions: Mapping[str, Exemption]
    quiet_periods: tuple[QuietPeriod, ...]

    def snapshot(self, sender: str, recipients: Iterable[str]) -> DirectorySnapshot:
        """The entries that concern this envelope, as the Redis store would return them."""
        keys = {key for rcpt in recipients for key in candidates(rcpt)}
        return DirectorySnapshot(
            officer=self.officers.get(sender),
            authorization=self.delegates.get(sender),
            registry={k: v for k, v in self.registry.items() if k in keys},
            exemptions={k: v for k, v in self.exemptions.items() if k in keys},
            quiet_periods=self.quiet_periods,
        )


def _rows(data: Mapping[str, Any], name: str, where: str) -> list[Mapping[str, Any]]:
    rows = data.get(name, [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InvalidInput(f"{where}: [[{name}]] must be a list of tables")
    return rows


def _get(row: Mapping[str, Any], key: str, where: str, required: bool = True) -> str:
    value = row.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidInput(f"{where}: {key} is {'missing' if key not in row else 'not a non-empty string'}")
    return value.strip()


def load_directory_file(path: Path) -> FileDirectory:
    """Read and validate; any mistake is one InvalidInput line naming the file and the entry."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInput(f"directory {path}: cannot read: {exc}") from None
    unknown = set(data) - _TABLES - _SCALARS
    if unknown:
        raise InvalidInput(f"directory {path}: unknown key {sorted(unknown)[0]!r}")
    try:
        tz = ZoneInfo(str(data.get("timezone", "America/New_York")))
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"directory {path}: unknown timezone {data.get('timezone')!r}") from None
    try:
        domains = tuple(normalize_domain(d) for d in data.get("internal_domains", []))
        at = parse_instant(str(data["at"]), tz) if "at" in data else None
    except ValueError as exc:
        raise InvalidInput(f"directory {path}: {exc}") from None
    roles = tuple(str(r).upper() for r in data.get("authorized_roles", ["CEO", "CFO"]))
    officers: dict[str, Officer] = {}
    delegates: dict[str, Authorization] = {}
    registry: dict[str, RegistryEntry] = {}
    exemptions: dict[str, Exemption] = {}
    quiet: list[QuietPeriod] = []
    for name in sorted(_TABLES):
        for n, row in enumerate(_rows(data, name, f"directory {path}"), 1):
            where = f"directory {path}: [[{name}]] {n}"
            try:
                if name == "officer":
                    address = normalize_address(_get(row, "address", where))
                    officers[address] = Officer(address, _get(row, "role", where).upper())
                elif name == "delegate":
                    address = normalize_address(_get(row, "address", where))
                    until = _get(row, "until", where, required=False)
                    to = row.get("to", [])
                    delegates[address] = Authorization(
                        address, normalize_address(_get(row, "by", where)),
                        tuple(normalize_pattern(str(p)) for p in to),
                        parse_instant(until, tz, end_of_day=True) if until else None,
                        _get(row, "scope", where, required=False))
                elif name == "registry":
                    pattern = parse_pattern(_get(row, "pattern", where))
                    category = parse_choice(_get(row, "category", where), REGISTRY_CATEGORIES, "category")
                    registry[pattern] = RegistryEntry(pattern, category, _get(row, "firm", where, False),
                                                      _get(row, "note", where, False))
                elif name == "exempt":
                    pattern = parse_pattern(_get(row, "pattern", where))
                    kind = parse_choice(_get(row, "kind", where), EXEMPTION_KINDS, "kind")
                    until = _get(row, "until", where, required=False)
                    exemptions[pattern] = Exemption(pattern, kind,
                                                    parse_instant(until, tz, end_of_day=True) if until else None)
                else:
                    start = parse_instant(_get(row, "start", where), tz)
                    end = parse_instant(_get(row, "end", where), tz)
                    if end <= start:
                        raise ValueError("end is not after start")
                    quiet.append(QuietPeriod(str(n), start, end, _get(row, "label", where, False)))
            except (ValueError, InvalidInput) as exc:  # the CLI's own checks, located in the file
                raise InvalidInput(f"{where}: {exc}") from None
    return FileDirectory(domains, roles, tz, at, officers, delegates, registry, exemptions, tuple(quiet))
