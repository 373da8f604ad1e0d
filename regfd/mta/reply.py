"""What the session core answers an MTA event: plain values, no protocol bytes.

A stage's answer is a tuple of `Reply`: zero or more modifications
(`AddHeader`, `ChangeHeader`, `AddRcpt`, `Quarantine`; only at end of
message) followed by one final reply (`Continue`, `Accept`, `Skip`,
`Tempfail`, `Reject`). The empty tuple means "no reply": the stage was
negotiated no-reply. Each engine translates: the asyncio engine into wire
packets (session.py `Session`, with the constant answers precomputed), the
libmilter engine into pymilter calls (libmilter.py). The constant answers
are shared singletons (`CONTINUED`, `ACCEPTED`, `SKIPPED`, `NO_REPLY`), so
answering a stage allocates nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Continue:
    """Go on with this message (SMFIS_CONTINUE)."""


@dataclass(frozen=True, slots=True)
class Accept:
    """Accept the message; no more events for it (SMFIS_ACCEPT)."""


@dataclass(frozen=True, slots=True)
class Skip:
    """Send no more body chunks; end of message comes next (SMFIS_SKIP)."""


@dataclass(frozen=True, slots=True)
class Tempfail:
    """Refuse for now with this SMTP reply (`451 4.7.1 text`): the client retries."""

    code: str
    xcode: str
    text: str


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse for good with this SMTP reply (`550 5.7.1 text`)."""

    code: str
    xcode: str
    text: str


@dataclass(frozen=True, slots=True)
class AddHeader:
    """Append a header to the message."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class ChangeHeader:
    """Change the `index`th (1-based) header of that name."""

    name: str
    index: int
    value: str


@dataclass(frozen=True, slots=True)
class AddRcpt:
    """Add an envelope recipient (`<addr>`): the journal Bcc."""

    rcpt: str


@dataclass(frozen=True, slots=True)
class Quarantine:
    """Hold the message (Postfix: the hold queue; Sendmail: quarantine) with a reason."""

    reason: str


Reply = Continue | Accept | Skip | Tempfail | Reject | AddHeader | ChangeHeader | AddRcpt | Quarantine
Replies = tuple[Reply, ...]

CONTINUE = Continue()
ACCEPT = Accept()
SKIP = Skip()
CONTINUED: Replies = (CONTINUE,)
ACCEPTED: Replies = (ACCEPT,)
SKIPPED: Replies = (SKIP,)
NO_REPLY: Replies = ()


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The outcome of option negotiation: actions and protocol bits agreed, macros asked per stage (or None)."""

    actions: int
    protocol: int
    macros: Mapping[int, tuple[str, ...]] | None


def escaped(text: str) -> str:
    """A reply text as libmilter takes it and puts it on the wire: its smfi_setreply drops a text with a
    single '%', and sends the doubled '%%' as it is. Both engines send this, so the MTA sees the same reply."""
    return text.replace("%", "%%")
