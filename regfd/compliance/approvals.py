"""Decisions taken in the console: release and reject through the CLI's own agent path, and the two-person rule.

With `[web] approvals = 1` a reviewer's release goes straight to the
quarantine agent on the MTA host (agent.act_via_agent, exactly what `regfd
quarantine release` does). With `approvals = 2` it is only recorded as
awaiting a second approval (store/users_store.py); another person with the
approver role approves, and only then does the request reach the agent, in
both names: the quarantine entry's `decided_by` and the audit entry read
"REQUESTER (requested) + APPROVER (approved)". A rejection needs one person:
holding mail back is the safe side.

The state machine (quarantine.py) still makes each decision happen once: two
approvers racing get one release; the second is told who acted.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from regfd.compliance.agent import act_via_agent
from regfd.compliance.quarantine import UNDECIDED, Outcome, Quarantine
from regfd.core.clock import now as utcnow
from regfd.core.clock import to_iso
from regfd.core.vocabulary import Review
from regfd.errors import InvalidInput

if TYPE_CHECKING:
    from regfd.store.users_store import UsersStore

AWAITING = "awaiting second approval"


def reason_text(text: str) -> str:
    """A decision's reason, whitespace collapsed; refused when empty (every decision says why)."""
    t = " ".join((text or "").split())
    if not t:
        raise InvalidInput("a reason is required")
    if len(t) > 2000:
        raise InvalidInput("the reason is too long (2000 characters at most)")
    return t


def both(requester: str, approver: str) -> str:
    """How a two-person release names its people in the entry, the audit trail and the notifications."""
    return f"{requester} (requested) + {approver} (approved)"


class Decisions:
    """Release, reject and approve as the console and the API offer them."""

    def __init__(self, quarantine: Quarantine, users: UsersStore, approvals: int, timeout: float = 30.0,
                 clock: Callable[[], datetime] = utcnow,
                 act: Callable[..., Outcome] = act_via_agent) -> None:
        self.quarantine = quarantine
        self.users = users
        self.approvals = approvals
        self.timeout = timeout
        self.clock = clock
        self.act = act

    def pending(self, qid: str) -> dict[str, Any] | None:
        """The release awaiting a second approval on `qid`, if any."""
        return self.users.approval_get(qid)

    def release(self, ref: str, by: str, reason: str) -> Outcome:
        """One approval needed: act now. Two: record the request and say it awaits a second approval."""
        reason = reason_text(reason)
        entry = self.quarantine.get(ref)
        if entry.state not in UNDECIDED:
            raise InvalidInput(f"{entry.id} was already {entry.state} by {entry.decided_by}; nothing done")
        if self.approvals < 2:
            return self.act(self.quarantine, entry.id, Review.RELEASE, by, reason, timeout=self.timeout)
        request = {"by": by, "reason": reason, "at": to_iso(self.clock())}
        if not self.users.approval_request(entry.id, request, by):
            waiting = self.users.approval_get(entry.id) or {}
            raise InvalidInput(f"{entry.id}: a release requested by {waiting.get('by', '?')} already awaits "
                               f"a second approval; nothing done")
        return Outcome(True, entry.id, Review.RELEASE, AWAITING,
                       f"release of {entry.id} requested by {by}: {AWAITING} (an approver other than {by})")

    def approve(self, ref: str, approver: str) -> Outcome:
        """The second approval: refused for the requester; else the release goes to the agent in both names."""
        entry = self.quarantine.get(ref)
        waiting = self.users.approval_get(entry.id)
        if waiting is None:
            raise InvalidInput(f"{entry.id}: no release awaits a second approval")
        if waiting["by"] == approver:
            raise InvalidInput(f"{entry.id}: the second approval must come from someone other than the requester "
                               f"({approver})")
        taken = self.users.approval_take(entry.id)
        if taken is None:
            raise InvalidInput(f"{entry.id}: another approver acted first; nothing done")
        by = both(taken["by"], approver)
        try:
            out = self.act(self.quarantine, entry.id, Review.RELEASE, by, taken["reason"], timeout=self.timeout)
        except Exception:
            self.users.approval_restore(entry.id, taken)
            raise
        if not out.ok:  # failed at the MTA: the entry is held again and the request may be approved again
            self.users.approval_restore(entry.id, taken)
        return out

    def reject(self, ref: str, by: str, reason: str, sender_text: str = "") -> Outcome:
        """Reject through the agent at once (one person suffices); a waiting release request is dropped.

        `sender_text`, when given, is what the sender is told instead of the reason."""
        reason = reason_text(reason)
        note = " ".join(sender_text.split()) if sender_text.strip() else ""
        entry = self.quarantine.get(ref)
        out = self.act(self.quarantine, entry.id, Review.REJECT, by, reason, timeout=self.timeout, note=note)
        if out.ok:
            self.users.approval_take(entry.id)
        return out
