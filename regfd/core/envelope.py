"""The SMTP envelope: who sends and who receives, as the MTA saw it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from regfd.core.address import envelope_address


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
                 client_addr: str = "") -> Envelope:
        """Normalize wire addresses; never raises (the MTA already accepted them)."""
        rcpts: list[str] = []
        for r in recipients:
            a = envelope_address(r)
            if a and a not in rcpts:
                rcpts.append(a)
        return cls(envelope_address(sender) if sender.strip("<> ") else "", tuple(rcpts), auth or "",
                   queue_id, client_addr)
