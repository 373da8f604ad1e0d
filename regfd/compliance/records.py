"""The record of every communication with a Specified Person, kept for the retention period.

One stream entry per recorded verdict (store/records_store.py), appended in
the milter's decision transaction (compliance/executor.py), so a message is
never delivered unrecorded; entries older than `records_retention_days`
are trimmed as new ones arrive.

`make_record` is pure: the same `Record` feeds the record, the notification,
the quarantine entry and the disclosure follow-up.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from regfd.core.clock import to_iso
from regfd.core.finding import Finding
from regfd.core.message import MessageFacts
from regfd.core.verdict import Verdict
from regfd.core.vocabulary import FindingKind, RecipientKind

if TYPE_CHECKING:
    from regfd.store.client import Tx
    from regfd.store.redis_store import RedisStore

CSV_COLUMNS = ("at", "queue_id", "message_id", "mta_host", "sender", "sender_class", "recipients", "subject",
               "action", "policy_action", "findings", "reasons", "quarantine_id", "disclosure_id")


@dataclass(frozen=True)
class RecordRecipient:
    """A Specified Person the message went (or would have gone) to, and what the policy said for them."""

    address: str
    category: str = ""
    firm: str = ""
    sender_class: str = ""
    action: str = ""

    def line(self) -> str:
        """'bob@bank.com (analyst, Big Bank)': how every listing and notification names a Specified Person."""
        what = ", ".join(x for x in (self.category, self.firm) if x)
        return f"{self.address} ({what})" if what else self.address

    def to_json(self) -> dict[str, Any]:
        """The record's JSON shape for one Specified Person (unchanged since the first release)."""
        return {"address": self.address, "category": self.category, "firm": self.firm,
                "sender_class": self.sender_class, "action": self.action}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RecordRecipient:
        """Tolerant of records written by older versions (missing keys read as empty)."""
        return cls(d["address"], d.get("category", ""), d.get("firm", ""), d.get("sender_class", ""),
                   d.get("action", ""))


@dataclass(frozen=True)
class OtherRecipient:
    """A recipient who is not a Specified Person: recorded so a reviewer sees who else read the message."""

    address: str
    cls: str = ""
    category: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON names the class `class` (a Python keyword, hence `cls` here)."""
        return {"address": self.address, "class": self.cls, "category": self.category}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> OtherRecipient:
        """Tolerant of records written by older versions (missing keys read as empty)."""
        return cls(d["address"], d.get("class", ""), d.get("category", ""))


@dataclass(frozen=True)
class Record:
    """Everything a reviewer or a regulator asks about one message.

    One object feeds the record stream, the notifications, the quarantine
    entry and the disclosure follow-up, so they cannot tell different
    stories. `to_json` is the format `regfd records --json` prints and Redis
    stores; `id` is the stream id, known only once the record is read back.
    """

    at: str = ""
    queue_id: str = ""
    message_id: str = ""
    mta_host: str = ""
    size: int = 0
    sender: str = ""
    sender_class: str = ""
    auth: str = ""
    recipients: tuple[RecordRecipient, ...] = ()
    other_recipients: tuple[OtherRecipient, ...] = ()
    subject: str = ""
    action: str = ""
    policy_action: str = ""
    mode: str = ""
    quiet_period: str = ""
    reasons: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()
    quarantine_id: str = ""
    disclosure_id: str = ""
    id: str = ""

    @property
    def has_material(self) -> bool:
        """A material finding is what starts the public-disclosure clock once the message is delivered."""
        return any(f.kind == FindingKind.MATERIAL for f in self.findings)

    def recipients_line(self) -> str:
        """The Specified Persons' addresses, comma-separated, for one-line listings."""
        return ", ".join(r.address for r in self.recipients)

    def finding_kinds(self) -> str:
        """'kind:category' pairs, sorted and unique: what a listing shows without quoting the content."""
        return ", ".join(sorted({f"{f.kind}:{f.category}" for f in self.findings}))

    def to_json(self) -> dict[str, Any]:
        """The stored and printed shape, key for key and in order as it has always been."""
        d: dict[str, Any] = {"id": self.id} if self.id else {}
        d.update({
            "at": self.at, "queue_id": self.queue_id, "message_id": self.message_id, "mta_host": self.mta_host,
            "size": self.size, "sender": self.sender, "sender_class": self.sender_class, "auth": self.auth,
            "recipients": [r.to_json() for r in self.recipients],
            "other_recipients": [o.to_json() for o in self.other_recipients],
            "subject": self.subject, "action": self.action, "policy_action": self.policy_action, "mode": self.mode,
            "quiet_period": self.quiet_period, "reasons": list(self.reasons),
            "findings": [{"kind": f.kind, "category": f.category, "text": f.text, "excerpt": f.excerpt,
                          "location": f.location, "severity": f.severity} for f in self.findings],
            "quarantine_id": self.quarantine_id, "disclosure_id": self.disclosure_id,
        })
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Record:
        """Tolerant of records written by older versions (missing keys read as empty)."""
        return cls(
            d.get("at", ""), d.get("queue_id", ""), d.get("message_id", ""), d.get("mta_host", ""),
            int(d.get("size", 0)), d.get("sender", ""), d.get("sender_class", ""), d.get("auth", ""),
            tuple(RecordRecipient.from_json(r) for r in d.get("recipients", ())),
            tuple(OtherRecipient.from_json(o) for o in d.get("other_recipients", ())),
            d.get("subject", ""), d.get("action", ""), d.get("policy_action", ""), d.get("mode", ""),
            d.get("quiet_period", ""), tuple(d.get("reasons", ())),
            tuple(_finding(f) for f in d.get("findings", ())),
            d.get("quarantine_id", ""), d.get("disclosure_id", ""), d.get("id", ""))


_FINDING_FIELDS = frozenset(f.name for f in fields(Finding))


def _finding(d: Mapping[str, Any]) -> Finding:
    """A stored finding back as a `Finding` (keys a newer or older version wrote are read if known)."""
    known = {k: v for k, v in d.items() if k in _FINDING_FIELDS}
    return Finding(**{"text": "", "excerpt": "", "location": "", **known})


def make_record(verdict: Verdict, facts: MessageFacts, *, quarantine_id: str = "",
                disclosure_id: str = "") -> Record:
    """The record of one decided message (pure: no clock, no store)."""
    c = verdict.classification
    env = verdict.envelope
    return Record(
        at=to_iso(facts.received_at) or "",
        queue_id=facts.queue_id or env.queue_id,
        message_id=facts.message_id,
        mta_host=facts.mta_host,
        size=facts.size,
        sender=env.sender,
        sender_class=c.sender_class,
        auth=env.auth,
        recipients=tuple(RecordRecipient(r.address, r.category, r.firm, r.sender_class, r.action)
                         for r in verdict.specified),
        other_recipients=tuple(OtherRecipient(r.address, r.cls, r.category)
                               for r in c.recipients if r.cls != RecipientKind.SPECIFIED),
        subject=facts.subject,
        action=verdict.action,
        policy_action=verdict.policy_action,
        mode=verdict.mode,
        quiet_period=(c.quiet_period.label or c.quiet_period.id) if c.quiet_period else "",
        reasons=verdict.reasons,
        findings=verdict.findings,
        quarantine_id=quarantine_id,
        disclosure_id=disclosure_id,
    )


def csv_row(rec: Record) -> list[str]:
    """One CSV line: lists flattened with "; " so a spreadsheet shows one message per row."""
    flat = {**rec.to_json(),
            "recipients": "; ".join(r.line() for r in rec.recipients),
            "findings": "; ".join(f"{f.kind}:{f.category}@{f.location}: {f.excerpt}" for f in rec.findings),
            "reasons": "; ".join(rec.reasons)}
    return [str(flat.get(c, "")) for c in CSV_COLUMNS]


def to_csv(records: Iterable[Record]) -> str:
    """`regfd records --csv`: a header row, then one row per record."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for rec in records:
        w.writerow(csv_row(rec))
    return buf.getvalue()


class Records:
    """The record stream (store/records_store.py): appended in the decision's transaction, read by `regfd records`."""

    def __init__(self, store: RedisStore, retention_days: int) -> None:
        self.stream = store.records
        self.retention = timedelta(days=retention_days)

    def add_ops(self, tx: Tx, record: Record, now: datetime) -> None:
        """Append in the caller's transaction; trim what the retention period no longer covers."""
        self.stream.append(tx, record.to_json(), now - self.retention)

    def list(self, since: datetime | None = None, until: datetime | None = None) -> list[Record]:
        """Records in stream order (arrival order), each with its stream `id`.

        `since` bounds by arrival in Redis (the stream id's time), which is
        within the decision's milliseconds of the record's `at`.
        """
        return [Record.from_json(d) for d in self.stream.list(since, until)]
