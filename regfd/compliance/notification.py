"""A notification: one message to send, as the renderers build it and the outbox stores it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from regfd.core.clock import from_iso
from regfd.core.clock import now as utcnow


@dataclass(frozen=True)
class Notification:
    """One message to send, as stored in the outbox; `attempts`, `last_error` and `next_at` track its retries."""

    id: str
    # decision | held-sender | rejected-sender | released | rejected | hold-reminder
    # | disclosure-reminder | disclosure-overdue
    kind: str
    to: tuple[str, ...]
    subject: str
    text: str
    html: str = ""
    ref: str = ""  # quarantine or disclosure id, for listings
    created_at: str = ""
    attempts: int = 0
    last_error: str = ""
    next_at: str = ""

    def to_json(self) -> dict[str, Any]:
        """The stored row (`to` as a JSON list)."""
        d = asdict(self)
        d["to"] = list(self.to)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Notification:
        """The inverse of to_json."""
        return cls(**{**d, "to": tuple(d.get("to", ()))})

    def email(self, sender: str, domain: str = "") -> EmailMessage:
        """multipart/alternative (plain + HTML) when there is HTML; a stable Message-ID per notification."""
        msg = EmailMessage()
        msg["From"] = sender
        msg["To"] = ", ".join(self.to)
        msg["Subject"] = self.subject
        msg["Message-ID"] = f"<{self.id}.regfd@{domain or sender.rpartition('@')[2] or 'localhost'}>"
        created = from_iso(self.created_at) or utcnow()
        msg["Date"] = format_datetime(created)
        msg["Auto-Submitted"] = "auto-generated"
        msg["X-RegFD-Notification"] = self.kind
        msg.set_content(self.text)
        if self.html:
            msg.add_alternative(self.html, subtype="html")
        return msg
