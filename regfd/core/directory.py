"""The directory: who is a Specified Person, who may speak to them, and when.

Plain data and pure classification. The store fetches a `DirectorySnapshot`
for one envelope in one round trip; everything here decides from that
snapshot and an instant, so `check`, the milter and the tests agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from regfd.core.address import candidates, domain_of, pattern_covers
from regfd.core.clock import from_iso, to_iso
from regfd.core.vocabulary import RecipientKind, SenderClass

REGISTRY_CATEGORIES: tuple[str, ...] = (
    "analyst",
    "institutional-investor",
    "money-manager",
    "investment-adviser",
    "broker-dealer",
    "investment-company",
    "shareholder",
)
EXEMPTION_KINDS: tuple[str, ...] = ("attorney", "auditor", "investment-banker", "nda")
# Roles an officer may hold; only those in config `authorized_roles` make the
# sender class `officer`.
OFFICER_ROLES: tuple[str, ...] = (
    "CEO", "CFO", "COO", "CAO", "CTO", "GC", "IRO", "PRESIDENT", "CHAIR",
    "TREASURER", "CONTROLLER", "SECRETARY", "DIRECTOR",
)


@dataclass(frozen=True)
class RegistryEntry:
    """A Specified Person: an address, or a domain covering its subdomains; `category` is in REGISTRY_CATEGORIES."""

    pattern: str
    category: str
    firm: str = ""
    note: str = ""
    added_at: str = ""
    added_by: str = ""

    def to_json(self) -> dict[str, Any]:
        """The row stored in Redis and printed by the CLI."""
        return {"pattern": self.pattern, "category": self.category, "firm": self.firm,
                "note": self.note, "added_at": self.added_at, "added_by": self.added_by}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RegistryEntry:
        """The inverse of to_json; optional fields may be absent."""
        return cls(d["pattern"], d["category"], d.get("firm", ""), d.get("note", ""),
                   d.get("added_at", ""), d.get("added_by", ""))


@dataclass(frozen=True)
class Exemption:
    """A recipient outside Regulation FD (an attorney, auditor, banker or NDA party); it lapses at `until`."""

    pattern: str
    kind: str
    until: datetime | None = None
    note: str = ""
    added_at: str = ""
    added_by: str = ""

    def active(self, at: datetime) -> bool:
        """Exclusive at `until`; None means it never lapses."""
        return self.until is None or at < self.until

    def to_json(self) -> dict[str, Any]:
        """The row stored in Redis and printed by the CLI."""
        return {"pattern": self.pattern, "kind": self.kind, "until": to_iso(self.until),
                "note": self.note, "added_at": self.added_at, "added_by": self.added_by}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Exemption:
        """The inverse of to_json; optional fields may be absent."""
        return cls(d["pattern"], d["kind"], from_iso(d.get("until")), d.get("note", ""),
                   d.get("added_at", ""), d.get("added_by", ""))


@dataclass(frozen=True)
class Officer:
    """A company officer; only a role in config `authorized_roles` makes the sender class `officer`."""

    address: str
    role: str
    added_at: str = ""
    added_by: str = ""

    def to_json(self) -> dict[str, Any]:
        """The row stored in Redis and printed by the CLI."""
        return {"address": self.address, "role": self.role, "added_at": self.added_at, "added_by": self.added_by}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Officer:
        """The inverse of to_json; optional fields may be absent."""
        return cls(d["address"], d["role"], d.get("added_at", ""), d.get("added_by", ""))


@dataclass(frozen=True)
class Authorization:
    """An authorized officer's approval for an employee to speak to Specified Persons.

    `to` are the patterns (addresses or domains) it covers; empty means every
    Specified Person. `scope` is the approved subject matter, for the record.
    """

    address: str
    by: str
    to: tuple[str, ...] = ()
    until: datetime | None = None
    scope: str = ""
    revoked_at: datetime | None = None
    revoked_by: str = ""
    added_at: str = ""

    def active(self, at: datetime) -> bool:
        """Neither revoked by `at` nor past `until` (both exclusive ends)."""
        if self.revoked_at is not None and self.revoked_at <= at:
            return False
        return self.until is None or at < self.until

    def covers(self, recipient: str) -> bool:
        """Whether the approval extends to this normalized recipient (an empty `to` covers everyone)."""
        return not self.to or any(pattern_covers(p, recipient) for p in self.to)

    def to_json(self) -> dict[str, Any]:
        """The row stored in Redis and printed by the CLI."""
        return {"address": self.address, "by": self.by, "to": list(self.to), "until": to_iso(self.until),
                "scope": self.scope, "revoked_at": to_iso(self.revoked_at), "revoked_by": self.revoked_by,
                "added_at": self.added_at}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Authorization:
        """The inverse of to_json; optional fields may be absent."""
        return cls(d["address"], d["by"], tuple(d.get("to", ())), from_iso(d.get("until")), d.get("scope", ""),
                   from_iso(d.get("revoked_at")), d.get("revoked_by", ""), d.get("added_at", ""))


@dataclass(frozen=True)
class QuietPeriod:
    """[start, end): start inclusive, end exclusive."""

    id: str
    start: datetime
    end: datetime
    label: str = ""

    def contains(self, at: datetime) -> bool:
        """Start inclusive, end exclusive, so back-to-back periods never overlap."""
        return self.start <= at < self.end

    def to_json(self) -> dict[str, Any]:
        """The row stored in Redis and printed by the CLI."""
        return {"id": self.id, "start": to_iso(self.start), "end": to_iso(self.end), "label": self.label}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> QuietPeriod:
        """The inverse of to_json; `start` and `end` are required."""
        start, end = from_iso(d["start"]), from_iso(d["end"])
        assert start is not None and end is not None
        return cls(str(d["id"]), start, end, d.get("label", ""))


@dataclass(frozen=True)
class DirectorySnapshot:
    """Everything the directory says about one envelope, fetched at once.

    `registry` and `exemptions` hold only the entries found among the
    candidate keys of the envelope's recipients.
    """

    officer: Officer | None = None
    authorization: Authorization | None = None
    registry: Mapping[str, RegistryEntry] = field(default_factory=dict)
    exemptions: Mapping[str, Exemption] = field(default_factory=dict)
    quiet_periods: tuple[QuietPeriod, ...] = ()


@dataclass(frozen=True)
class RecipientClass:
    """How the directory classed one recipient, with the pattern that decided, for the record."""

    address: str
    cls: RecipientKind
    category: str = ""  # registry category, or exemption kind
    firm: str = ""
    matched: str = ""  # the directory pattern that decided


def classify_recipient(address: str, snap: DirectorySnapshot, internal_domains: tuple[str, ...],
                       at: datetime) -> RecipientClass:
    """Most specific entry wins; at equal specificity `specified` beats `exempt`.

    Candidates come most specific first, so the first key with a live entry
    decides. Expired exemptions are skipped, which lets a less specific
    registry entry apply.
    """
    for key in candidates(address):
        entry = snap.registry.get(key)
        if entry is not None:
            return RecipientClass(address, RecipientKind.SPECIFIED, entry.category, entry.firm, key)
        exemption = snap.exemptions.get(key)
        if exemption is not None and exemption.active(at):
            return RecipientClass(address, RecipientKind.EXEMPT, exemption.kind, "", key)
    if is_internal(address, internal_domains):
        return RecipientClass(address, RecipientKind.INTERNAL)
    return RecipientClass(address, RecipientKind.OTHER)


def is_internal(address: str, internal_domains: tuple[str, ...]) -> bool:
    """Whether a normalized address is at one of the company's domains or their subdomains."""
    domain = domain_of(address)
    return any(domain == d or domain.endswith("." + d) for d in internal_domains)


def sender_class_for(sender: str, recipient: str, snap: DirectorySnapshot, authorized_roles: tuple[str, ...],
                     system_sender: str, at: datetime) -> SenderClass:
    """The sender's class towards one recipient (a delegate's scope is per recipient)."""
    if sender == system_sender:
        return SenderClass.SYSTEM
    if snap.officer is not None and snap.officer.role.upper() in authorized_roles:
        return SenderClass.OFFICER
    auth = snap.authorization
    if auth is not None and auth.active(at) and auth.covers(recipient):
        return SenderClass.DELEGATE
    return SenderClass.EMPLOYEE
