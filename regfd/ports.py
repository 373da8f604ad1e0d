"""Every interface the core and the services depend on, apart from their adapters.

The adapters (Redis store, Postfix/Sendmail queues, SMTP, the decision
executor) implement these; tests substitute fakes. Importing a port never
imports redis, smtplib or subprocess, so the milter adapter can be typed
against them without pulling the adapters in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from regfd.core.directory import DirectorySnapshot
    from regfd.core.message import MessageFacts
    from regfd.core.verdict import Verdict


class DirectoryReader(Protocol):
    """Who the sender and recipients are: one consistent snapshot per message."""

    def snapshot(self, sender: str, recipients: Iterable[str]) -> DirectorySnapshot:
        """Every directory fact the decision needs for this envelope; raises StoreUnavailable."""


class DecisionSink(Protocol):
    """Where a recorded verdict goes before the MTA acts on it (raises StoreUnavailable if it cannot)."""

    def on_decision(self, verdict: Verdict, facts: MessageFacts) -> None:
        """Durably record the decision and its follow-ups; only after it returns may the MTA act."""


@dataclass(frozen=True)
class MtaResult:
    """Whether the MTA acted on a queued message, and what it said (one line, for the audit and the user)."""

    ok: bool
    detail: str


class MtaQueue(Protocol):
    """The MTA's hold queue: release or delete one held message by queue id."""

    def release(self, queue_id: str) -> MtaResult:
        """Deliver a held message now; a failure comes back as ok=False with what the MTA said."""

    def delete(self, queue_id: str) -> MtaResult:
        """Delete a message only while it is still held; a failure comes back as ok=False."""

    def can_act(self) -> str:
        """'' when this process may run the MTA's queue commands, else why not (in the MTA's terms)."""


class Transport(Protocol):
    """Sends a notification; returns the refused recipients ({} when all accepted); raises on failure."""

    def send(self, message: EmailMessage, sender: str, recipients: tuple[str, ...]) -> dict[str, Any]:
        """Deliver to the relay; the refused recipients map to the relay's reasons."""


class Metrics(Protocol):
    """What the engines and the store report as it happens (regfd/monitoring): cheap, thread-safe, never raises.

    The core knows nothing of it; the milter engines and the store call it,
    so both engines report the same figures. `NoMetrics` does nothing.
    """

    def message(self, action: str, stage: str, seconds: float) -> None:
        """One message answered with `action` (accept|tag|hold|reject) at `stage` (mail|data|eom) after
        `seconds` spent deciding (lookups, scan, record)."""

    def failure(self, stage: str, reason: str, seconds: float) -> None:
        """One message answered with the failure action at `stage`; `reason`: store|deadline|stopping|error."""

    def scanned(self, seconds: float, size: int) -> None:
        """One message's content scanned and judged in `seconds`; `size` bytes as the MTA sent it."""

    def store_call(self, operation: str, seconds: float, ok: bool) -> None:
        """One counted round trip to the store (`operation`: snapshot|record|followup|write), failed unless `ok`."""

    def connection(self, opened: bool) -> None:
        """An MTA connection opened (True) or closed (False)."""

    def protocol_error(self) -> None:
        """An MTA connection was dropped for breaking the milter protocol."""


class WordIndex(Protocol):
    """Which of a fixed vocabulary's words and word pairs occur in a text (regfd/scan/wordindex.py).

    A token is a maximal run of ASCII letters, digits and apostrophes, capitals
    lowered; a vocabulary entry is one token or two neighbouring ones joined by
    a space. Two implementations give the same answer: one in C, one with
    Hyperscan (the reference, and the fallback where the C part is not built).
    """

    def ids(self, text: str) -> set[int]:
        """The indexes, in the vocabulary, of the entries that occur in `text`."""
