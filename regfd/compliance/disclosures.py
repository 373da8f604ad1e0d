"""The disclosure clock: a material message reached a Specified Person.

THE DEADLINE RULE (pure, `disclosure_deadline`):

    deadline = the LATER of
      (a) delivery + 24 hours (elapsed time, so DST changes do not shorten it), and
      (b) 09:30 America/New_York on the first NYSE trading day AFTER the
          delivery's New York calendar date.

Why: Regulation FD §243.101(d) defines "promptly" as "as soon as reasonably
practicable (but in no event after the later of 24 hours or the commencement
of the next day's trading on the New York Stock Exchange)"; in plain words:
within 24 hours, or before the next trading day's market open when a
weekend or holiday intervenes. On an ordinary
weekday (b) falls before (a) and the deadline is exactly 24 hours; when a
weekend or exchange holiday follows the delivery, (b) is later and wins
(Friday 15:00 -> Monday 09:30; the day before Thanksgiving -> Friday 09:30).
"Next day's trading" is read from the delivery's DATE, not from the instant:
a delivery on Friday at 08:00 is due on Monday at 09:30, not on Saturday at
08:00 — otherwise a deadline could fall on a weekend, which the contract's
"when a weekend intervenes" excludes. Consequences (property-tested): the
deadline is never earlier than delivery + 24 h, and it always falls on a New
York trading day.

The rest of the module is the follow-up's state machine (open -> closed,
reminder -> overdue notice -> done); store/disclosures_store.py keeps it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from regfd.compliance.records import Record
from regfd.core.clock import from_iso, to_iso
from regfd.core.clock import now as utcnow
from regfd.core.tradingcalendar import market_open, new_york_date, next_trading_day
from regfd.errors import InvalidInput

if TYPE_CHECKING:
    from regfd.config import Config
    from regfd.store.client import Tx
    from regfd.store.redis_store import RedisStore

OPEN, CLOSED = "open", "closed"
STAGE_REMINDER, STAGE_OVERDUE, STAGE_DONE = "reminder", "overdue", "done"


def disclosure_deadline(delivered_at: datetime, extra_closures: frozenset[date] = frozenset()) -> datetime:
    """When public disclosure is due for a material message delivered at `delivered_at` (aware).

    Returned in UTC. See the module docstring for the rule and why.
    """
    if delivered_at.tzinfo is None:
        raise ValueError("delivered_at must be timezone-aware")
    plus_24h = delivered_at + timedelta(hours=24)
    next_open = market_open(next_trading_day(new_york_date(delivered_at), extra_closures))
    return max(plus_24h, next_open).astimezone(UTC)


def new_id(prefix: str) -> str:
    """Short ids people can type: prefix + 7 base32 characters (35 random bits)."""
    alphabet = "23456789abcdefghjkmnpqrstuvwxyz"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(7))


@dataclass(frozen=True)
class Disclosure:
    """A disclosure follow-up: the deadline for making public what reached a Specified Person, open until closed."""

    id: str
    delivered_at: datetime
    deadline: datetime
    source: str  # "delivered" (tagged/accepted at SMTP time) or "released" (from hold)
    record: Record  # the communication's record (records.make_record)
    quarantine_id: str = ""
    state: str = OPEN
    opened_at: datetime | None = None
    closed_at: datetime | None = None
    closed_by: str = ""
    reference: str = ""
    stage: str = STAGE_REMINDER

    def to_json(self) -> dict[str, Any]:
        """The stored shape (also `regfd disclosures --json`)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        for k in ("delivered_at", "deadline", "opened_at", "closed_at"):
            d[k] = to_iso(getattr(self, k))
        d["record"] = self.record.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Disclosure:
        """The inverse of to_json; optional fields may be absent."""
        delivered, deadline = from_iso(d["delivered_at"]), from_iso(d["deadline"])
        assert delivered is not None and deadline is not None
        return cls(d["id"], delivered, deadline, d.get("source", ""), Record.from_json(d.get("record", {})),
                   d.get("quarantine_id", ""), d.get("state", OPEN), from_iso(d.get("opened_at")),
                   from_iso(d.get("closed_at")), d.get("closed_by", ""), d.get("reference", ""),
                   d.get("stage", STAGE_REMINDER))

    def summary(self) -> dict[str, Any]:
        """A flat row for listings."""
        r = self.record
        return {"id": self.id, "state": self.state, "deadline": to_iso(self.deadline),
                "delivered_at": to_iso(self.delivered_at), "source": self.source,
                "sender": r.sender, "recipients": r.recipients_line(), "subject": r.subject, "queue_id": r.queue_id,
                "quarantine_id": self.quarantine_id, "closed_by": self.closed_by,
                "closed_at": to_iso(self.closed_at), "reference": self.reference}


def open_disclosure(record: Record, delivered_at: datetime, source: str, quarantine_id: str = "",
                    opened_at: datetime | None = None) -> Disclosure:
    """A new follow-up (pure): the id and the deadline are computed here."""
    return Disclosure(new_id("d"), delivered_at, disclosure_deadline(delivered_at), source, record,
                      quarantine_id, OPEN, opened_at or delivered_at)


class Disclosures:
    """The follow-ups (kept by store/disclosures_store.py). Writes that belong to a decision join its transaction."""

    def __init__(self, store: RedisStore, config: Config, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.kept = store.disclosures
        self.config = config
        self.clock = clock

    def first_reminder(self, d: Disclosure) -> datetime:
        """When the Corporate Secretary is first reminded: `disclosure_reminder_before` ahead of the deadline."""
        return d.deadline - timedelta(seconds=self.config.notify.disclosure_reminder_before)

    def add_ops(self, tx: Tx, d: Disclosure) -> None:
        """Register a new follow-up and its first reminder in the caller's transaction (the decision's)."""
        self.kept.add(tx, d.id, d.to_json(), d.deadline, self.first_reminder(d))

    def get(self, did: str) -> Disclosure | None:
        """None when there is no follow-up with this id."""
        row = self.kept.get(did)
        return Disclosure.from_json(row) if row else None

    def list(self, open_only: bool = False) -> list[Disclosure]:
        """Open ones first, each group by deadline; only open ones with `open_only`."""
        out = [Disclosure.from_json(row) for row in self.kept.list(open_only)]
        return sorted(out, key=lambda d: (d.state != OPEN, d.deadline))

    def close(self, did: str, by: str, reference: str) -> Disclosure:
        """open -> closed, once, with its audit entry in the same transaction."""

        def step(row: dict[str, Any] | None, tx: Tx) -> Disclosure:
            if row is None:
                raise InvalidInput(f"no disclosure follow-up {did!r}")
            d = Disclosure.from_json(row)
            if d.state != OPEN:
                raise InvalidInput(f"disclosure {did} was already closed by {d.closed_by} at "
                                   f"{to_iso(d.closed_at)} (reference: {d.reference})")
            closed = replace(d, state=CLOSED, closed_at=self.clock(), closed_by=by,
                             reference=reference, stage=STAGE_DONE)
            self.kept.put(tx, did, closed.to_json())
            self.kept.closed(tx, did)
            late = closed.closed_at is not None and closed.closed_at > d.deadline
            self.store.audit_ops(tx, by, "disclosure.close", did,
                                 {"reference": reference, "deadline": to_iso(d.deadline),
                                  "late": late, "queue_id": d.record.queue_id})
            return closed

        return self.kept.update(did, step, failure="disclosure close failed, nothing changed")

    def remind_due(self, now: datetime, enqueue: Callable[[Tx, Disclosure, str], None]) -> int:
        """Send the reminder (`disclosure_reminder_before` the deadline), then one overdue notice.

        Each stage is claimed once (the store watches its schedule entry), so
        several workers never send one reminder twice; `enqueue(tx, d, stage)`
        adds the notification to the same transaction.
        """

        def step(tx: Tx, did: str, _score: int, row: dict[str, Any]) -> bool:
            d = Disclosure.from_json(row)
            stage = STAGE_OVERDUE if now >= d.deadline else STAGE_REMINDER
            if d.state != OPEN or (stage == STAGE_REMINDER and d.stage != STAGE_REMINDER) or \
                    (stage == STAGE_OVERDUE and d.stage == STAGE_DONE):
                self.kept.remind_at(tx, did, None)
                return False
            nxt = STAGE_OVERDUE if stage == STAGE_REMINDER else STAGE_DONE
            self.kept.put(tx, did, replace(d, stage=nxt).to_json())
            self.kept.remind_at(tx, did, d.deadline if nxt == STAGE_OVERDUE else None)
            enqueue(tx, d, stage)
            return True

        return self.kept.process_due(now, step)
