"""What the MTA side knows about a message beyond its envelope."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class MessageFacts:
    """Carried with a verdict into the record, the notification and the quarantine.

    `raw` is the message as the MTA received it (headers and body, possibly
    truncated at the configured limit); it is kept only for held messages,
    so `quarantine show` can display it.
    """

    received_at: datetime
    queue_id: str = ""
    message_id: str = ""
    subject: str = ""
    mta_host: str = ""
    size: int = 0
    raw: bytes = b""
