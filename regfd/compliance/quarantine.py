"""Held messages: what compliance reviews, and the one-time release/reject.

The message itself stays in the MTA's hold queue (never lost); the store
(store/quarantine_store.py) keeps what a reviewer needs and the state of
this machine:

    held --release--> releasing --(MTA ok)--> released
         --reject---> rejecting --(MTA ok)--> rejected
    releasing/rejecting --(MTA failed, or no agent took it)--> held (last_error set)

Every transition is one transaction on the watched entry, so two reviewers racing
cannot both act: the second is told who acted, when and why. The final
transition carries its audit entry, the notifications (and, for a release
with a material finding, the disclosure follow-up) in the same transaction.

Release and reject run where the message is held: on this host with
`--local`, or through the agent on the MTA host (agent.py), which calls
`perform` here.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from regfd.compliance.disclosures import Disclosures, new_id, open_disclosure
from regfd.compliance.outbox import Outbox
from regfd.compliance.records import Record
from regfd.compliance.render import (
    local_time,
    render_hold_reminder,
    render_outcome,
    render_sender_rejected,
)
from regfd.core.clock import from_iso, to_iso, to_ms
from regfd.core.clock import now as utcnow
from regfd.core.vocabulary import QuarantineState, Review
from regfd.errors import InvalidInput
from regfd.ports import MtaQueue, MtaResult

if TYPE_CHECKING:
    from regfd.config import Config
    from regfd.store.client import Tx
    from regfd.store.redis_store import RedisStore

T = TypeVar("T")

IN_PROGRESS = (QuarantineState.RELEASING, QuarantineState.REJECTING)
UNDECIDED = (QuarantineState.HELD, *IN_PROGRESS)
STALE_REQUEST = timedelta(minutes=10)  # a request nobody finished may be issued again after this


def mta_queue(config: Config) -> MtaQueue:
    """The adapter for `config.mta`: Postfix's hold queue or Sendmail's quarantine."""
    if config.mta == "sendmail":
        from regfd.mta.sendmail import SendmailQueue

        sm = config.sendmail
        return SendmailQueue(sm.binary, sm.config_file, sm.queue_directory)
    from regfd.mta.postfix import PostfixQueue

    return PostfixQueue(config.postfix.config_directory)


def host_key(host: str) -> str:
    """How an MTA host name is compared (case-insensitively, '' as "default"), in keys and requests alike."""
    return (host or "default").strip().lower()


@dataclass(frozen=True)
class QuarantineEntry:
    """A held message as the reviewers see it: its record, its state, and who decided it and why."""

    id: str
    state: QuarantineState
    created_at: datetime
    mta_host: str
    queue_id: str
    record: Record
    request: dict[str, Any] | None = None
    decided_by: str = ""
    decided_at: datetime | None = None
    reason: str = ""
    detail: str = ""  # what the MTA said
    last_error: str = ""
    reminders: int = 0
    disclosure_id: str = ""

    def to_json(self) -> dict[str, Any]:
        """The stored shape (also `regfd quarantine show --json`)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["created_at"] = to_iso(self.created_at)
        d["record"] = self.record.to_json()
        d["decided_at"] = to_iso(self.decided_at)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> QuarantineEntry:
        """Tolerant of entries written by older versions (missing keys read as empty)."""
        created = from_iso(d["created_at"])
        assert created is not None
        return cls(d["id"], QuarantineState(d["state"]), created, d.get("mta_host", ""), d.get("queue_id", ""),
                   Record.from_json(d.get("record", {})),
                   d.get("request"), d.get("decided_by", ""), from_iso(d.get("decided_at")), d.get("reason", ""),
                   d.get("detail", ""), d.get("last_error", ""), int(d.get("reminders", 0)),
                   d.get("disclosure_id", ""))

    def summary(self) -> dict[str, Any]:
        """A flat row for `regfd quarantine list`."""
        r = self.record
        return {"id": self.id, "state": self.state, "held_since": to_iso(self.created_at),
                "queue_id": self.queue_id, "mta_host": self.mta_host, "sender": r.sender,
                "recipients": r.recipients_line(), "subject": r.subject, "findings": r.finding_kinds(),
                "decided_by": self.decided_by, "decided_at": to_iso(self.decided_at), "reason": self.reason,
                "last_error": self.last_error, "disclosure_id": self.disclosure_id}

    @property
    def has_material(self) -> bool:
        """Releasing a material message starts the disclosure clock."""
        return self.record.has_material


@dataclass(frozen=True)
class Outcome:
    """The answer to a release or reject, as the CLI prints it and as an agent sends it back through Redis."""

    ok: bool
    id: str
    action: str
    state: str
    message: str
    disclosure_id: str = ""
    deadline: str = ""

    def to_json(self) -> dict[str, Any]:
        """The shape sent back through Redis and printed by `regfd agent --once`."""
        return asdict(self)


class Quarantine:
    """Held messages in Redis: registration, lookup, release and reject, and the hold reminders."""

    def __init__(self, store: RedisStore, config: Config, clock: Callable[[], datetime] = utcnow,
                 outbox: Outbox | None = None) -> None:
        self.store = store
        self.kept = store.quarantine
        self.config = config
        self.clock = clock
        self.outbox = outbox or Outbox(store, config, clock=clock)
        self.disclosures = Disclosures(store, config, clock)

    # ------------------------------------------------------------ registration (milter hot path)
    def add_ops(self, tx: Tx, entry: QuarantineEntry, raw: bytes) -> None:
        """Register a held message in the caller's transaction (the decision's), raw message included."""
        self.kept.add(tx, entry.id, entry.to_json(), raw, host_key(entry.mta_host), entry.queue_id,
                      entry.created_at, self.config.notify.hold_reminder_after)

    # ------------------------------------------------------------ reading
    def resolve(self, ref: str) -> str:
        """A quarantine id, or an MTA queue id ("QID" or "host/QID"), to the quarantine id."""
        ref = ref.strip()
        if not ref:
            raise InvalidInput("empty quarantine id")
        qid = self.kept.resolve(ref)
        if qid is None:
            raise InvalidInput(f"no quarantined message {ref!r} (see regfd quarantine list)")
        return qid

    def get(self, ref: str) -> QuarantineEntry:
        """Look up by quarantine id or MTA queue id (see resolve); InvalidInput when there is none."""
        row = self.kept.get(self.resolve(ref))
        if row is None:
            raise InvalidInput(f"no quarantined message {ref!r}")
        return QuarantineEntry.from_json(row)

    def raw(self, qid: str) -> bytes:
        """The message as held (b"" if it was not kept), for `regfd quarantine show`."""
        return self.kept.raw(qid)

    def list(self, include_decided: bool = False) -> list[QuarantineEntry]:
        """Oldest first; only undecided messages unless `include_decided`."""
        return sorted((QuarantineEntry.from_json(row) for row in self.kept.list(include_decided)),
                      key=lambda e: e.created_at)

    # ------------------------------------------------------------ transitions
    def _update(self, qid: str, fn: Callable[[QuarantineEntry, Tx], T]) -> T:
        """Let `fn(entry, tx)` check the watched entry and queue the transition; retried on races.

        `fn` raises InvalidInput to refuse (nothing written).
        """

        def step(row: dict[str, Any] | None, tx: Tx) -> T:
            if row is None:
                raise InvalidInput(f"no quarantined message {qid!r}")
            return fn(QuarantineEntry.from_json(row), tx)

        return self.kept.update(qid, step)

    def begin(self, ref: str, action: str, by: str, reason: str, via: str, note: str = "") -> dict[str, Any]:
        """held -> releasing/rejecting, once. With via="agent" the request is queued for the MTA host's agent.

        `note`: for a reject, what the sender is told instead of the reason (the reason stays in the audit)."""
        if action not in (Review.RELEASE, Review.REJECT):
            raise InvalidInput(f"unknown action {action!r}")
        qid = self.resolve(ref)
        now = self.clock()

        def fn(e: QuarantineEntry, tx: Tx) -> dict[str, Any]:
            if e.state in (QuarantineState.RELEASED, QuarantineState.REJECTED):
                raise InvalidInput(f"quarantine {e.id} was already {e.state} by {e.decided_by} at "
                                   f"{to_iso(e.decided_at)} (reason: {e.reason}); nothing done")
            if e.state in IN_PROGRESS and e.request:
                started = from_iso(e.request.get("at")) or now
                if now - started < STALE_REQUEST:
                    raise InvalidInput(f"quarantine {e.id}: a {e.request.get('action')} requested by "
                                       f"{e.request.get('by')} at {e.request.get('at')} is in progress; nothing done")
            req = {"req_id": new_id("r"), "id": e.id, "action": action, "by": by, "reason": reason,
                   "at": to_iso(now), "via": via, "host": host_key(e.mta_host)}
            if note:
                req["note"] = note
            state = QuarantineState.RELEASING if action == Review.RELEASE else QuarantineState.REJECTING
            self.kept.put(tx, e.id, replace(e, state=state, request=req).to_json())
            if via == "agent":
                self.kept.request(tx, req["host"], req)
            return req

        return self._update(qid, fn)

    def perform(self, req: dict[str, Any], mta: MtaQueue, worker: str) -> Outcome:
        """Carry out one request at the MTA (agent or --local) and finish the transition; answer the requester."""
        qid, action = req["id"], req["action"]
        now = self.clock()

        def take(e: QuarantineEntry, tx: Tx) -> QuarantineEntry | None:
            if not e.request or e.request.get("req_id") != req["req_id"] or e.state not in IN_PROGRESS:
                return None
            taken = replace(e, request={**e.request, "taken_by": worker, "taken_at": to_iso(now)})
            self.kept.put(tx, e.id, taken.to_json())
            return taken

        entry = self._update(qid, take)
        if entry is None:
            out = Outcome(False, qid, action, "",
                          f"request {req['req_id']} for {qid} is no longer current; nothing done")
            self._answer(req, out)
            return out
        result: MtaResult
        try:
            result = mta.release(entry.queue_id) if action == Review.RELEASE else mta.delete(entry.queue_id)
        except Exception as exc:  # an adapter bug must not leave the entry stuck in releasing
            result = MtaResult(False, f"{type(exc).__name__}: {exc}")
        return self._finish(entry, req, result, worker)

    def _finish(self, entry: QuarantineEntry, req: dict[str, Any], result: MtaResult, worker: str) -> Outcome:
        now = self.clock()
        action, by, reason = req["action"], req["by"], req["reason"]
        cfg = self.config
        corpsec = cfg.corporate_secretary

        def fn(e: QuarantineEntry, tx: Tx) -> Outcome:
            audit = {"queue_id": e.queue_id, "mta_host": e.mta_host, "reason": reason, "via": req.get("via", ""),
                     "worker": worker, "mta": result.detail, "sender": e.record.sender,
                     "recipients": [r.address for r in e.record.recipients], "subject": e.record.subject}
            if req.get("note"):
                audit["sender_text"] = req["note"]
            if not result.ok:
                back = replace(e, state=QuarantineState.HELD, request=None, last_error=result.detail)
                self.kept.put(tx, e.id, back.to_json())
                self.store.audit_ops(tx, by, f"quarantine.{action}.failed", e.id, audit)
                return Outcome(False, e.id, action, QuarantineState.HELD,
                               f"{action} of {e.id} failed at the MTA: {result.detail}")
            final = QuarantineState.RELEASED if action == Review.RELEASE else QuarantineState.REJECTED
            disclosure = None
            if action == Review.RELEASE and e.has_material:
                disclosure = open_disclosure(replace(e.record, quarantine_id=e.id), now, "released", e.id, now)
                self.disclosures.add_ops(tx, disclosure)
                audit["disclosure_id"] = disclosure.id
                audit["deadline"] = to_iso(disclosure.deadline)
            done = replace(e, state=final, request=None, decided_by=by, decided_at=now, reason=reason,
                           detail=result.detail, last_error="", disclosure_id=disclosure.id if disclosure else "")
            self.kept.put(tx, e.id, done.to_json())
            self.kept.decided(tx, e.id)
            self.store.audit_ops(tx, by, f"quarantine.{action}", e.id, audit)
            if corpsec:
                self.outbox.enqueue_ops(tx, render_outcome(
                    e.record, to=corpsec, tz=cfg.tz, now=now, quarantine_id=e.id, outcome=final, by=by,
                    reason=reason, deadline=disclosure.deadline if disclosure else None,
                    disclosure_id=disclosure.id if disclosure else ""))
            if action == Review.REJECT and e.record.sender:
                self.outbox.enqueue_ops(tx, render_sender_rejected(
                    e.record, corpsec=corpsec, tz=cfg.tz, now=now, quarantine_id=e.id, by=by,
                    reason=req.get("note") or reason))
            msg = f"{final} {e.id} (queue id {e.queue_id} on {e.mta_host or 'the MTA'}): {result.detail}"
            if disclosure:
                msg += (f"; disclosure follow-up {disclosure.id} opened, public disclosure due by "
                        f"{local_time(disclosure.deadline, cfg.tz)}")
            return Outcome(True, e.id, action, final, msg, disclosure.id if disclosure else "",
                           to_iso(disclosure.deadline) if disclosure else "")

        out = self._update(entry.id, fn)
        self._answer(req, out)
        return out

    def _answer(self, req: dict[str, Any], out: Outcome) -> None:
        if req.get("via") != "agent":
            return
        self.kept.answer(req["req_id"], out.to_json())

    # ------------------------------------------------------------ what the CLI calls
    def act_local(self, ref: str, action: str, by: str, reason: str, mta: MtaQueue) -> Outcome:
        """Release or reject through this host's MTA directly (`--local`), without an agent."""
        req = self.begin(ref, action, by, reason, via="local")
        return self.perform(req, mta, f"local:{socket.gethostname()}:{os.getpid()}")

    # ------------------------------------------------------------ reminders
    def remind_due(self, now: datetime) -> int:
        """Held too long: remind the Corporate Secretary, once per `hold_reminder_after` period, until decided."""
        period_ms = int(self.config.notify.hold_reminder_after * 1000)

        def step(tx: Tx, qid: str, score: int, row: dict[str, Any]) -> bool:
            e = QuarantineEntry.from_json(row)
            if e.state not in UNDECIDED:
                self.kept.remind_at(tx, qid, None)
                return False
            nxt = score
            while nxt <= to_ms(now):
                nxt += period_ms
            self.kept.remind_at(tx, qid, nxt)
            self.kept.put(tx, qid, replace(e, reminders=e.reminders + 1).to_json())
            if self.config.corporate_secretary:
                self.outbox.enqueue_ops(tx, render_hold_reminder(
                    e.record, to=self.config.corporate_secretary, tz=self.config.tz, now=now,
                    quarantine_id=qid, held_since=e.created_at, base_url=self.config.web.base_url))
            return True

        return self.kept.process_due(now, step)
