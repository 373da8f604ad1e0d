"""The policy decision (PRODUCT.md section 5) as a pure function.

`classify` answers who is talking to whom (one question per rule, each
leaving a readable reason); `judge` looks the answer up in the policy table,
which is data (config/policy.toml) so a company can change any row. No I/O
here: the milter and `regfd check` both call `decide`, so their verdicts are
the same by construction.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from regfd.core.address import envelope_address
from regfd.core.clock import to_iso
from regfd.core.directory import (
    DELEGATE,
    EMPLOYEE,
    EXTERNAL,
    OFFICER,
    SPECIFIED,
    SYSTEM,
    DirectorySnapshot,
    QuietPeriod,
    classify_recipient,
    is_internal,
    sender_class_for,
)
from regfd.errors import ConfigError
from regfd.core.finding import FINDING_KINDS, Finding

ACCEPT, TAG, HOLD, REJECT = "accept", "tag", "hold", "reject"
ACTIONS: tuple[str, ...] = (ACCEPT, TAG, HOLD, REJECT)  # in order of strictness
_RANK = {a: i for i, a in enumerate(ACTIONS)}
POLICY_SENDERS: tuple[str, ...] = (OFFICER, DELEGATE, EMPLOYEE)
NONE, ANY = "none", "any"


def strictest(actions: Iterable[str]) -> str:
    return max(actions, key=_RANK.__getitem__, default=ACCEPT)


@dataclass(frozen=True)
class Envelope:
    """What the MTA knows before the content: addresses already normalized."""

    sender: str
    recipients: tuple[str, ...]
    auth: str = ""  # SMTP AUTH identity ({auth_authen}); empty when not authenticated
    queue_id: str = ""
    client_addr: str = ""

    @classmethod
    def from_raw(cls, sender: str, recipients: Iterable[str], auth: str = "", queue_id: str = "",
                 client_addr: str = "") -> "Envelope":
        """Normalize wire addresses; never raises (the MTA already accepted them)."""
        rcpts: list[str] = []
        for r in recipients:
            a = envelope_address(r)
            if a and a not in rcpts:
                rcpts.append(a)
        return cls(envelope_address(sender) if sender.strip("<> ") else "", tuple(rcpts), auth or "",
                   queue_id, client_addr)


@dataclass(frozen=True)
class Rule:
    senders: tuple[str, ...]
    findings: tuple[str, ...]  # finding kinds, or ("none",) or ("any",)
    quiet: str  # "yes" | "no" | "any"
    action: str
    line: str = ""  # where it came from, for error messages

    def matches(self, sender: str, finding: str | None, quiet: bool) -> bool:
        """`finding` is one kind present in the message, or None for a message with none."""
        if sender not in self.senders:
            return False
        if self.quiet != ANY and (self.quiet == "yes") != quiet:
            return False
        if finding is None:
            return NONE in self.findings
        return ANY in self.findings or finding in self.findings


@dataclass(frozen=True)
class PolicyTable:
    rules: tuple[Rule, ...]

    def action_for(self, sender: str, kinds: frozenset[str], quiet: bool) -> tuple[str, tuple[Rule, ...]]:
        """Strictest action over the rules matching each finding kind present (or "none")."""
        keys: list[str | None] = [*sorted(kinds)] if kinds else [None]
        matched = tuple(r for r in self.rules if any(r.matches(sender, k, quiet) for k in keys))
        return strictest(r.action for r in matched), matched


def load_policy_table(path: Path) -> PolicyTable:
    """Read and validate; every (sender, finding, quiet) combination must be decided."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"policy {path}: cannot read: {exc}") from None
    raw_rules = data.get("rule")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise ConfigError(f"policy {path}: no [[rule]] entries")
    rules = []
    for n, raw in enumerate(raw_rules, 1):
        where = f"policy {path}: rule {n}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a table")
        unknown = set(raw) - {"sender", "finding", "quiet", "action", "why"}
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")

        def as_tuple(key: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
            v = raw.get(key)
            vals = (v,) if isinstance(v, str) else tuple(v) if isinstance(v, list) else ()
            if not vals:
                raise ConfigError(f"{where}: {key} is missing")
            for x in vals:
                if x not in allowed:
                    raise ConfigError(f"{where}: unknown {key} {x!r} (expected one of {', '.join(allowed)})")
            return vals

        senders = as_tuple("sender", POLICY_SENDERS)
        findings = as_tuple("finding", (NONE, ANY) + FINDING_KINDS)
        quiet = raw.get("quiet", ANY)
        if quiet not in ("yes", "no", ANY):
            raise ConfigError(f"{where}: unknown quiet {quiet!r} (expected yes, no or any)")
        action = raw.get("action")
        if action not in ACTIONS:
            raise ConfigError(f"{where}: unknown action {action!r} (expected one of {', '.join(ACTIONS)})")
        rules.append(Rule(senders, findings, quiet, action, f"rule {n}"))
    table = PolicyTable(tuple(rules))
    for sender in POLICY_SENDERS:
        for quiet_flag in (False, True):
            for kind in (None,) + FINDING_KINDS:
                if not any(r.matches(sender, kind, quiet_flag) for r in table.rules):
                    raise ConfigError(
                        f"policy {path}: no rule decides sender={sender} finding={kind or NONE} "
                        f"quiet={'yes' if quiet_flag else 'no'}"
                    )
    return table


@dataclass(frozen=True)
class Policy:
    """The policy table plus the facts about the company the decision needs."""

    table: PolicyTable
    internal_domains: tuple[str, ...]
    authorized_roles: tuple[str, ...]
    system_sender: str
    mode: str = "enforce"

    @classmethod
    def from_config(cls, config: Any) -> "Policy":
        return cls(load_policy_table(config.policy_file), config.internal_domains, config.authorized_roles,
                   config.smtp.sender, config.mode)


@dataclass(frozen=True)
class RecipientVerdict:
    address: str
    cls: str
    category: str = ""
    firm: str = ""
    sender_class: str = ""  # the sender's class towards this recipient
    action: str = ACCEPT

    def to_json(self) -> dict[str, str]:
        return {"address": self.address, "class": self.cls, "category": self.category, "firm": self.firm,
                "sender_class": self.sender_class, "action": self.action}


@dataclass(frozen=True)
class Classification:
    """Who is talking to whom, before the content is known."""

    envelope: Envelope
    at: datetime
    outbound: bool
    sender_class: str
    recipients: tuple[RecipientVerdict, ...]
    quiet_period: QuietPeriod | None
    reasons: tuple[str, ...] = ()

    @property
    def specified(self) -> tuple[RecipientVerdict, ...]:
        return tuple(r for r in self.recipients if r.cls == SPECIFIED)

    @property
    def needs_content(self) -> bool:
        """False when the content cannot change the verdict (inbound, system, no Specified Person)."""
        return self.outbound and self.sender_class != SYSTEM and bool(self.specified)


@dataclass(frozen=True)
class Verdict:
    action: str  # what the MTA does (monitor mode turns hold/reject into tag)
    policy_action: str  # what the policy table says
    classification: Classification
    findings: tuple[Finding, ...] = ()
    reasons: tuple[str, ...] = ()
    mode: str = "enforce"

    @property
    def envelope(self) -> Envelope:
        return self.classification.envelope

    @property
    def specified(self) -> tuple[RecipientVerdict, ...]:
        return self.classification.specified

    @property
    def recorded(self) -> bool:
        """Every outbound message with a Specified Person is recorded, whatever its action."""
        return self.classification.outbound and bool(self.specified) and self.classification.sender_class != SYSTEM

    @property
    def has_material(self) -> bool:
        return any(f.kind == "material" for f in self.findings)

    def header_reasons(self) -> str:
        """For X-RegFD-Reasons: categories only, never matched text or addresses."""
        parts = [f"sender={self.classification.sender_class}"]
        kinds = sorted({f"{f.kind}:{f.category}" for f in self.findings})
        parts.extend(kinds or ["no-findings"])
        if self.classification.quiet_period is not None:
            parts.append("quiet-period")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
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
        }


def classify(envelope: Envelope, snap: DirectorySnapshot, at: datetime, policy: Policy) -> Classification:
    sender = envelope.sender
    if sender and sender == policy.system_sender:
        return Classification(envelope, at, True, SYSTEM, (), None, ("system sender: the gateway's own mail",))
    outbound = bool(envelope.auth) or (bool(sender) and is_internal(sender, policy.internal_domains))
    quiet = next((q for q in snap.quiet_periods if q.contains(at)), None)
    if not outbound:
        others = tuple(RecipientVerdict(r, "other") for r in envelope.recipients)
        return Classification(envelope, at, False, EXTERNAL, others, quiet, ("inbound message: not subject to the policy",))
    recipients: list[RecipientVerdict] = []
    for address in envelope.recipients:
        rc = classify_recipient(address, snap, policy.internal_domains, at)
        sclass = ""
        if rc.cls == SPECIFIED:
            sclass = sender_class_for(sender, address, snap, policy.authorized_roles, policy.system_sender, at)
        recipients.append(RecipientVerdict(address, rc.cls, rc.category, rc.firm, sclass))
    specified_classes = {r.sender_class for r in recipients if r.cls == SPECIFIED}
    if snap.officer is not None and snap.officer.role.upper() in policy.authorized_roles:
        sender_class = OFFICER
    elif specified_classes == {DELEGATE}:
        sender_class = DELEGATE
    else:
        sender_class = EMPLOYEE
    reasons: list[str] = []
    for r in recipients:
        if r.cls == SPECIFIED:
            firm = f", {r.firm}" if r.firm else ""
            reasons.append(f"recipient {r.address} is a Specified Person ({r.category}{firm})")
    if recipients and not any(r.cls == SPECIFIED for r in recipients):
        reasons.append("no Specified Person among the recipients")
    if quiet is not None:
        reasons.append(f"quiet period in force: {quiet.label or 'quiet period ' + quiet.id} "
                       f"({to_iso(quiet.start)} to {to_iso(quiet.end)})")
    return Classification(envelope, at, True, sender_class, tuple(recipients), quiet, tuple(reasons))


_SENDER_WORDS = {
    OFFICER: "an authorized officer",
    DELEGATE: "a delegate authorized for this recipient",
    EMPLOYEE: "an employee not authorized to contact this Specified Person",
}


def judge(c: Classification, findings: Iterable[Finding], policy: Policy) -> Verdict:
    found = tuple(findings)
    if not c.needs_content:
        return Verdict(ACCEPT, ACCEPT, c, (), c.reasons, policy.mode)
    kinds = frozenset(f.kind for f in found)
    quiet = c.quiet_period is not None
    reasons = list(c.reasons)
    for cat in sorted({(f.kind, f.category, f.location) for f in found}):
        reasons.append(f"finding: {cat[0]} ({cat[1]}) in {cat[2]}")
    recipients = []
    seen_rules: set[tuple[str, str]] = set()
    for r in c.recipients:
        if r.cls != SPECIFIED:
            recipients.append(r)
            continue
        action, rules = policy.table.action_for(r.sender_class, kinds, quiet)
        recipients.append(RecipientVerdict(r.address, r.cls, r.category, r.firm, r.sender_class, action))
        if (r.sender_class, action) not in seen_rules:
            seen_rules.add((r.sender_class, action))
            why = f"sender is {_SENDER_WORDS[r.sender_class]}"
            what = ", ".join(sorted(kinds)) if kinds else "no findings"
            reasons.append(f"{why}; {what}; {'in' if quiet else 'outside'} a quiet period: {action}")
    policy_action = strictest(r.action for r in recipients if r.cls == SPECIFIED)
    action = policy_action
    if policy.mode == "monitor" and policy_action in (HOLD, REJECT):
        action = TAG
        reasons.append(f"monitor mode: would {policy_action}, tagged instead")
    classification = Classification(c.envelope, c.at, c.outbound, c.sender_class, tuple(recipients),
                                    c.quiet_period, c.reasons)
    return Verdict(action, policy_action, classification, found, tuple(reasons), policy.mode)


def decide(envelope: Envelope, snap: DirectorySnapshot, findings: Iterable[Finding], at: datetime,
           policy: Policy) -> Verdict:
    """The one decision the gateway takes; `check` and the milter both call this."""
    return judge(classify(envelope, snap, at, policy), findings, policy)
