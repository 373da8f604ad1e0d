"""The decision: classify the envelope, scan the content, judge by the policy table.

Pure functions over plain data; no I/O. Every adapter (the milter engines,
`regfd check`, `regfd evaluate`) goes through `Decider`, so they cannot
disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from regfd.core.clock import to_iso
from regfd.core.directory import DirectorySnapshot, classify_recipient, is_internal, sender_class_for
from regfd.core.envelope import Envelope
from regfd.core.finding import UNSCANNABLE, Finding
from regfd.core.policy import ACCEPT, HOLD, REJECT, TAG, Policy, Rule, rank, strictest
from regfd.core.verdict import Classification, RecipientVerdict, Verdict
from regfd.core.vocabulary import RecipientKind, SenderClass


def classify(envelope: Envelope, snap: DirectorySnapshot, at: datetime, policy: Policy) -> Classification:
    """Who is talking to whom, from one directory snapshot; each conclusion leaves a readable reason."""
    sender = envelope.sender
    if sender and sender == policy.system_sender:
        return Classification(envelope, at, True, SenderClass.SYSTEM, (), None,
                              ("system sender: the gateway's own mail",))
    outbound = bool(envelope.auth) or (bool(sender) and is_internal(sender, policy.internal_domains))
    quiet = next((q for q in snap.quiet_periods if q.contains(at)), None)
    if not outbound:
        others = tuple(RecipientVerdict(r, RecipientKind.OTHER) for r in envelope.recipients)
        return Classification(envelope, at, False, SenderClass.EXTERNAL, others, quiet,
                              ("inbound message: not subject to the policy",))
    recipients: list[RecipientVerdict] = []
    for address in envelope.recipients:
        rc = classify_recipient(address, snap, policy.internal_domains, at)
        sclass = ""
        if rc.cls == RecipientKind.SPECIFIED:
            sclass = sender_class_for(sender, address, snap, policy.authorized_roles, policy.system_sender, at)
        recipients.append(RecipientVerdict(address, rc.cls, rc.category, rc.firm, sclass))
    specified_classes = {r.sender_class for r in recipients if r.cls == RecipientKind.SPECIFIED}
    if snap.officer is not None and snap.officer.role.upper() in policy.authorized_roles:
        sender_class = SenderClass.OFFICER
    elif specified_classes == {SenderClass.DELEGATE}:
        sender_class = SenderClass.DELEGATE
    else:
        sender_class = SenderClass.EMPLOYEE
    reasons: list[str] = []
    for r in recipients:
        if r.cls == RecipientKind.SPECIFIED:
            firm = f", {r.firm}" if r.firm else ""
            reasons.append(f"recipient {r.address} is a Specified Person ({r.category}{firm})")
    if recipients and not any(r.cls == RecipientKind.SPECIFIED for r in recipients):
        reasons.append("no Specified Person among the recipients")
    if quiet is not None:
        reasons.append(f"quiet period in force: {quiet.label or 'quiet period ' + quiet.id} "
                       f"({to_iso(quiet.start)} to {to_iso(quiet.end)})")
    return Classification(envelope, at, True, sender_class, tuple(recipients), quiet, tuple(reasons))


_SENDER_WORDS: dict[str, str] = {
    SenderClass.OFFICER: "an authorized officer",
    SenderClass.DELEGATE: "a delegate authorized for this recipient",
    SenderClass.EMPLOYEE: "an employee not authorized to contact this Specified Person",
}


def judge(c: Classification, findings: Iterable[Finding], policy: Policy) -> Verdict:
    """Look the classification and the findings up in the policy table: strictest over Specified Persons."""
    found = tuple(findings)
    if not c.needs_content:
        return Verdict(ACCEPT, ACCEPT, c, (), c.reasons, policy.mode)
    kinds = frozenset(f.kind for f in found)
    quiet = c.quiet_period is not None
    reasons = list(c.reasons)
    for cat in sorted({(f.kind, f.category, f.location) for f in found}):
        reasons.append(f"finding: {cat[0]} ({cat[1]}) in {cat[2]}")
    recipients = []
    seen: set[tuple[str, str]] = set()
    deciding: Rule | None = None
    for r in c.recipients:
        if r.cls != RecipientKind.SPECIFIED:
            recipients.append(r)
            continue
        action, rule = policy.table.action_for(r.sender_class, kinds, quiet)
        recipients.append(RecipientVerdict(r.address, r.cls, r.category, r.firm, r.sender_class, action))
        if rule is not None and (deciding is None or rank(action) > rank(deciding.action)):
            deciding = rule
        if (r.sender_class, action) not in seen:
            seen.add((r.sender_class, action))
            why = f"sender is {_SENDER_WORDS[r.sender_class]}"
            what = ", ".join(sorted(kinds)) if kinds else "no findings"
            reasons.append(f"{why}; {what}; {'in' if quiet else 'outside'} a quiet period: {action}")
    if deciding is not None:
        reasons.append(deciding.describe())
    policy_action = strictest(r.action for r in recipients if r.cls == RecipientKind.SPECIFIED)
    action = policy_action
    if policy.mode == "monitor" and policy_action in (HOLD, REJECT):
        action = TAG
        reasons.append(f"monitor mode: would {policy_action}, tagged instead")
    classification = Classification(c.envelope, c.at, c.outbound, c.sender_class, tuple(recipients),
                                    c.quiet_period, c.reasons)
    return Verdict(action, policy_action, classification, found, tuple(reasons), policy.mode, deciding)


def decide(envelope: Envelope, snap: DirectorySnapshot, findings: Iterable[Finding], at: datetime,
           policy: Policy) -> Verdict:
    """classify then judge, for findings already known (tests and tools)."""
    return judge(classify(envelope, snap, at, policy), findings, policy)


Scan = Callable[[bytes], Iterable[Finding]]


@dataclass(frozen=True)
class Decider:
    """The one path from an envelope and a message to a verdict.

    The milter calls its three stages as the SMTP dialogue reaches them
    (MAIL: sender alone; DATA: the directory; end of message: the content),
    so mail without a Specified Person is accepted before its body travels.
    `regfd check` and `regfd evaluate` call `decide`, which runs the same
    stages in the same order: the verdicts are equal by construction.
    """

    policy: Policy
    scan: Scan
    max_message_bytes: int

    def at_mail(self, envelope: Envelope, at: datetime) -> Verdict | None:
        """A verdict from the sender alone (inbound mail, the gateway's own), or None to go on."""
        early = classify(envelope, DirectorySnapshot(), at, self.policy)
        if early.outbound and early.sender_class != SenderClass.SYSTEM:
            return None
        return judge(early, (), self.policy)

    def at_data(self, envelope: Envelope, snap: DirectorySnapshot, at: datetime) -> Classification:
        """Classify against the directory; `needs_content` False means the body cannot change the verdict."""
        return classify(envelope, snap, at, self.policy)

    def at_end(self, c: Classification, raw: bytes, size: int | None = None) -> Verdict:
        """Scan (only when the content can matter) and judge.

        `raw` may be cut one byte past the size limit (the milter keeps no
        more); `size` is what the MTA sent in all. A message over the limit
        is `unscannable` (size-limit): when in doubt, presume it is material.
        """
        if not c.needs_content:
            return judge(c, (), self.policy)
        limit = self.max_message_bytes
        findings = list(self.scan(raw[: limit + 1]))
        total = len(raw) if size is None else size
        if total > limit and not any(f.kind == UNSCANNABLE for f in findings):
            findings.append(Finding(UNSCANNABLE, "size-limit", "", f"message over {limit} bytes", "body"))
        return judge(c, findings, self.policy)

    def decide(self, envelope: Envelope, snap: DirectorySnapshot, raw: bytes, at: datetime) -> Verdict:
        """The whole path at once, for `check` and `evaluate`."""
        early = self.at_mail(envelope, at)
        if early is not None:
            return early
        return self.at_end(self.at_data(envelope, snap, at), raw)
