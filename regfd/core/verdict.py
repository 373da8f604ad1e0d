"""What the core decides: the classification of an envelope and the verdict on a message.

Plain frozen data; the milter, `check`, `evaluate`, the records and the
notifications all read the same objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from regfd.core.clock import to_iso
from regfd.core.directory import QuietPeriod
from regfd.core.envelope import Envelope
from regfd.core.finding import Finding
from regfd.core.policy import ACCEPT, Rule
from regfd.core.vocabulary import Action, FindingKind, RecipientKind, SenderClass


@dataclass(frozen=True)
class RecipientVerdict:
    """One recipient's class, and for a Specified Person the sender's class towards them and the action."""

    address: str
    cls: RecipientKind
    category: str = ""
    firm: str = ""
    sender_class: SenderClass | str = ""  # the sender's class towards a Specified Person; "" for the others
    action: Action = ACCEPT

    def to_json(self) -> dict[str, str]:
        """One element of `recipients` in Verdict.to_json."""
        return {"address": self.address, "class": self.cls, "category": self.category, "firm": self.firm,
                "sender_class": self.sender_class, "action": self.action}


@dataclass(frozen=True)
class Classification:
    """Who is talking to whom, before the content is known."""

    envelope: Envelope
    at: datetime
    outbound: bool
    sender_class: SenderClass
    recipients: tuple[RecipientVerdict, ...]
    quiet_period: QuietPeriod | None
    reasons: tuple[str, ...] = ()

    @property
    def specified(self) -> tuple[RecipientVerdict, ...]:
        """The recipients who are Specified Persons, in envelope order."""
        return tuple(r for r in self.recipients if r.cls == RecipientKind.SPECIFIED)

    @property
    def needs_content(self) -> bool:
        """False when the content cannot change the verdict (inbound, system, no Specified Person)."""
        return self.outbound and self.sender_class != SenderClass.SYSTEM and bool(self.specified)


@dataclass(frozen=True)
class Verdict:
    """The decision for one message: what the MTA does, why, and which policy row decided."""

    action: Action  # what the MTA does (monitor mode turns hold/reject into tag)
    policy_action: Action  # what the policy table says
    classification: Classification
    findings: tuple[Finding, ...] = ()
    reasons: tuple[str, ...] = ()
    mode: str = "enforce"
    rule: Rule | None = None  # the row that gave the strictest action; None when the table was not consulted

    @property
    def envelope(self) -> Envelope:
        """Shortcut to the classification's envelope."""
        return self.classification.envelope

    @property
    def specified(self) -> tuple[RecipientVerdict, ...]:
        """Shortcut to the classification's Specified Persons."""
        return self.classification.specified

    @property
    def recorded(self) -> bool:
        """Every outbound message with a Specified Person is recorded, whatever its action."""
        c = self.classification
        return c.outbound and bool(self.specified) and c.sender_class != SenderClass.SYSTEM

    @property
    def has_material(self) -> bool:
        """Whether delivering the message starts the public-disclosure clock."""
        return any(f.kind == FindingKind.MATERIAL for f in self.findings)

    def header_reasons(self) -> str:
        """For X-RegFD-Reasons: categories only, never matched text or addresses."""
        parts = [f"sender={self.classification.sender_class}"]
        kinds = sorted({f"{f.kind}:{f.category}" for f in self.findings})
        parts.extend(kinds or ["no-findings"])
        if self.classification.quiet_period is not None:
            parts.append("quiet-period")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """The shape `regfd check --json` prints."""
        c = self.classification
        return {
            "action": self.action,
            "policy_action": self.policy_action,
            "mode": self.mode,
            "outbound": c.outbound,
            "at": to_iso(self.classification.at),
            "queue_id": c.envelope.queue_id,
            "reasons": list(self.reasons),
            "sender": {"address": c.envelope.sender, "class": c.sender_class, "auth": c.envelope.auth},
            "recipients": [r.to_json() for r in c.recipients],
            "quiet_period": c.quiet_period.to_json() if c.quiet_period else None,
            "findings": [f.to_json() for f in self.findings],
            "rule": {"number": self.rule.number, "why": self.rule.why} if self.rule else None,
        }
