"""The record of every communication with a Specified Person (PRODUCT.md §5).

One Redis stream entry per recorded verdict, appended in the milter's
decision transaction (workflow.py), so a message is never delivered
unrecorded. The stream id is Redis's own time-ordered id, which makes
`--since` a range read; MINID trimming drops entries older than
`records_retention_days` as new ones arrive (exact trimming, so retention
is exact; it costs one comparison when nothing has expired).

    records   stream  {"r": JSON record}

`make_record` is pure: the same dict feeds the record, the notification,
the quarantine entry and the disclosure follow-up.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import redis

from regfd.core.clock import to_iso
from regfd.errors import StoreUnavailable
from regfd.core.message import MessageFacts
from regfd.core.verdict import Verdict

if TYPE_CHECKING:
    from regfd.store.redis_store import RedisStore

REDIS_ERRORS = (redis.RedisError, OSError)

CSV_COLUMNS = ("at", "queue_id", "message_id", "mta_host", "sender", "sender_class", "recipients", "subject",
               "action", "policy_action", "findings", "reasons", "quarantine_id", "disclosure_id")


def make_record(verdict: Verdict, facts: MessageFacts, *, quarantine_id: str = "",
                disclosure_id: str = "") -> dict[str, Any]:
    """Everything a reviewer or a regulator asks about one message, as plain JSON."""
    c = verdict.classification
    env = verdict.envelope
    return {
        "at": to_iso(facts.received_at),
        "queue_id": facts.queue_id or env.queue_id,
        "message_id": facts.message_id,
        "mta_host": facts.mta_host,
        "size": facts.size,
        "sender": env.sender,
        "sender_class": c.sender_class,
        "auth": env.auth,
        "recipients": [{"address": r.address, "category": r.category, "firm": r.firm,
                        "sender_class": r.sender_class, "action": r.action} for r in verdict.specified],
        "other_recipients": [{"address": r.address, "class": r.cls, "category": r.category}
                             for r in c.recipients if r.cls != "specified"],
        "subject": facts.subject,
        "action": verdict.action,
        "policy_action": verdict.policy_action,
        "mode": verdict.mode,
        "quiet_period": (c.quiet_period.label or c.quiet_period.id) if c.quiet_period else "",
        "reasons": list(verdict.reasons),
        "findings": [{"kind": f.kind, "category": f.category, "text": f.text, "excerpt": f.excerpt,
                      "location": f.location, "severity": f.severity} for f in verdict.findings],
        "quarantine_id": quarantine_id,
        "disclosure_id": disclosure_id,
    }


def csv_row(rec: dict[str, Any]) -> list[str]:
    recipients = "; ".join(
        f"{r['address']} ({', '.join(x for x in (r.get('category', ''), r.get('firm', '')) if x)})"
        for r in rec.get("recipients", []))
    findings = "; ".join(f"{f['kind']}:{f['category']}@{f['location']}: {f['excerpt']}" for f in rec.get("findings", []))
    flat = {**rec, "recipients": recipients, "findings": findings, "reasons": "; ".join(rec.get("reasons", []))}
    return [str(flat.get(c, "")) for c in CSV_COLUMNS]


def to_csv(records: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for rec in records:
        w.writerow(csv_row(rec))
    return buf.getvalue()


class Records:
    def __init__(self, store: "RedisStore", retention_days: int) -> None:
        self.store = store
        self.retention = timedelta(days=retention_days)

    @property
    def key(self) -> str:
        return self.store.k("records")

    def add_ops(self, pipe: Any, record: dict[str, Any], now: datetime) -> None:
        """Append in the caller's transaction; trim what the retention period no longer covers."""
        minid = max(0, int((now - self.retention).timestamp() * 1000))
        pipe.xadd(self.key, {"r": json.dumps(record, separators=(",", ":"), ensure_ascii=False)},
                  minid=minid, approximate=False)

    def list(self, since: datetime | None = None, until: datetime | None = None) -> list[dict[str, Any]]:
        """Records in stream order (arrival order), each with its stream `id`.

        `since` bounds by arrival in Redis (the stream id's time), which is
        within the decision's milliseconds of the record's `at`.
        """
        start = f"{int(since.timestamp() * 1000)}-0" if since else "-"
        end = f"{int(until.timestamp() * 1000)}" if until else "+"
        out: list[dict[str, Any]] = []
        try:
            while True:
                rows = self.store.r.xrange(self.key, min=start, max=end, count=1000)
                for sid, fields in rows:
                    rec = json.loads(fields[b"r"])
                    out.append({"id": sid.decode(), **rec})
                if len(rows) < 1000:
                    break
                last = rows[-1][0].decode()
                ms, seq = last.split("-")
                start = f"{ms}-{int(seq) + 1}"
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc
        return out
