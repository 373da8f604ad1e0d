"""What follows a decision: record, notify, quarantine bookkeeping, disclosure clock.

The milter and `regfd check` decide (policy.decide); the milter then calls
`Workflow.on_decision` before it acts at the MTA. It raises StoreUnavailable
when the record cannot be written, and the milter then answers with the
configured failure action: a communication with a Specified Person is never
delivered unrecorded.

`on_decision` is ONE Redis round trip and writes only what must exist
before the MTA acts: the record, the quarantine entry of a held message,
and a follow-up row (store/followups_store.py), in one MULTI/EXEC (the
store's `batch`, to which each store module adds its writes), so they
exist all together or not at all. Ids are generated client-side for that
reason (nothing needs a value back from Redis before the EXEC). The rest —
opening the disclosure follow-up, rendering and queueing the notifications
or adding the message to the next digest (`[notify] digest`) — is
`follow_up`, done by the background worker within a second, a hundred
follow-ups per transaction, each in the transaction that deletes it
(claimed under a lease, so a worker that dies loses none).

Background work (`start_background`, which `regfd milter` starts): the
outbox worker (does the follow-ups, sends the digests when due, delivers
notifications, runs `Reminders` and signs the register's periodic checkpoints)
and the quarantine agent (runs postsuper, or Sendmail's equivalents, for release/reject requests).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from regfd.compliance.agent import QuarantineAgent
from regfd.compliance.disclosures import Disclosure, Disclosures, new_id, open_disclosure
from regfd.compliance.notification import Notification
from regfd.compliance.outbox import Outbox
from regfd.compliance.quarantine import Quarantine, QuarantineEntry, mta_queue
from regfd.compliance.records import Record, Records, make_record
from regfd.compliance.register import Register
from regfd.compliance.render import (
    DigestCase,
    render_decision,
    render_digest,
    render_disclosure_reminder,
    render_sender_held,
)
from regfd.core.clock import from_iso, to_iso, to_ms
from regfd.core.clock import now as utcnow
from regfd.core.message import MessageFacts
from regfd.core.policy import ACCEPT, HOLD, REJECT, TAG
from regfd.core.verdict import Verdict
from regfd.core.vocabulary import QuarantineState
from regfd.mta.postfix import PostfixQueue
from regfd.ports import MtaQueue, Transport

if TYPE_CHECKING:
    from regfd.config import Config
    from regfd.store.client import Tx
    from regfd.store.redis_store import RedisStore

NOTIFIED_ACTIONS = (TAG, HOLD, REJECT)
FOLLOWUP_RETRY = 60.0  # seconds before a follow-up that failed to build is tried again
FOLLOWUP_LEASE = 30.0  # seconds a claimed follow-up waits for its claimant before another worker takes it
FOLLOWUP_BATCH = 100  # follow-ups claimed and written per transaction
DELIVERED_ACTIONS = (ACCEPT, TAG)


class Workflow:
    """The DecisionSink the milter uses."""

    def __init__(self, store: RedisStore, config: Config, clock: Callable[[], datetime] = utcnow,
                 transport: Transport | None = None) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.records = Records(store, config.records_retention_days)
        self.outbox = Outbox(store, config, transport, clock)
        self.quarantine = Quarantine(store, config, clock, self.outbox)
        self.disclosures = Disclosures(store, config, clock)

    def on_decision(self, verdict: Verdict, facts: MessageFacts) -> None:
        """Record (and hold) the message, with a follow-up for everything else, in one transaction.

        This is what the MTA waits for, so it writes only what must exist
        before the MTA acts: the record, the quarantine entry of a held
        message, and one follow-up row naming the disclosure id the record
        refers to. `follow_up` (the background worker, within a second)
        opens the disclosure and queues the notifications; the follow-up
        row lives in Redis, so a process dying in between loses nothing.
        Raises StoreUnavailable when the transaction fails, so the milter
        answers the failure action instead of delivering a message nobody recorded.
        """
        if not verdict.recorded:
            return
        now = self.clock()
        cfg = self.config
        action = verdict.action
        quarantine_id = new_id("q") if action == HOLD else ""
        # Delivered at SMTP time with a material finding: the disclosure clock starts now.
        # (`accept` too, should a company's policy table ever accept material content.)
        disclosure_id = new_id("d") if action in DELIVERED_ACTIONS and verdict.has_material else ""
        record = make_record(verdict, facts, quarantine_id=quarantine_id, disclosure_id=disclosure_id)
        follow = bool(disclosure_id or (action in NOTIFIED_ACTIONS and cfg.corporate_secretary)
                      or (action == HOLD and cfg.notify.notify_sender_on_hold and record.sender))
        with self.store.batch("decision not recorded", operation="record", durable=True) as tx:
            self.records.add_ops(tx, record, now)
            if action == HOLD:
                entry = QuarantineEntry(quarantine_id, QuarantineState.HELD, facts.received_at, facts.mta_host,
                                        record.queue_id, record)
                self.quarantine.add_ops(tx, entry, facts.raw)
            if follow:
                job = FollowUp(new_id("f"), record, quarantine_id, disclosure_id, facts.received_at, now)
                self.store.followups.add(tx, job.id, job.to_json(), now)

    def follow_up(self, now: datetime | None = None) -> int:
        """Do the follow-ups of recorded decisions, a hundred per transaction (store/followups_store.py says
        how each is done once, whichever worker runs); returns how many were done."""
        t = now or self.clock()
        done = 0
        while True:
            claimed = self.store.followups.claim(t, t + timedelta(seconds=FOLLOWUP_LEASE), FOLLOWUP_BATCH)
            if not claimed:
                return done
            with self.store.batch("follow-ups not written, they will be claimed again", operation="followup") as tx:
                for fid, row in claimed:
                    if row is None:
                        self.store.followups.done(tx, fid)
                    else:
                        done += self._follow_up_ops(tx, fid, row)
            if len(claimed) < FOLLOWUP_BATCH:
                return done

    def _follow_up_ops(self, tx: Tx, fid: str, row: dict[str, Any]) -> bool:
        """One follow-up, in the transaction that removes it: the disclosure, then the notices (or the digest).

        Everything is built before anything is queued; a follow-up that cannot be built (a bug, bad
        data) is logged and tried again in FOLLOWUP_RETRY s, so it never blocks the ones behind it.
        """
        try:
            disclosure, digest_entry, notices = self._follow_up_of(FollowUp.from_json(row))
        except Exception as exc:
            structlog.get_logger("regfd.followup").error("followup.failed", id=fid, error=f"{type(exc).__name__}: "
                                                         f"{exc}", exc_info=exc)
            self.store.followups.retry(tx, fid, to_ms(self.clock()) + int(FOLLOWUP_RETRY * 1000))
            return False
        if disclosure is not None:
            self.disclosures.add_ops(tx, disclosure)
        if digest_entry is not None:
            self.store.followups.digest_add(tx, digest_entry)
        for n in notices:
            self.outbox.enqueue_ops(tx, n)
        self.store.followups.done(tx, fid)
        return True

    def _follow_up_of(self, job: FollowUp) -> tuple[Disclosure | None, dict[str, Any] | None, list[Notification]]:
        """What one follow-up writes (pure): the disclosure, a digest entry or the notices."""
        cfg = self.config
        record, action = job.record, job.record.action
        disclosure: Disclosure | None = None
        digest_entry: dict[str, Any] | None = None
        notices: list[Notification] = []
        if job.disclosure_id:
            disclosure = replace(open_disclosure(record, job.received_at, "delivered", opened_at=job.decided_at),
                                 id=job.disclosure_id)
        deadline = disclosure.deadline if disclosure else None
        if action in NOTIFIED_ACTIONS and cfg.corporate_secretary:
            if action in cfg.notify.digest:
                digest_entry = {"at": to_iso(job.decided_at), "record": record.to_json(),
                                "quarantine_id": job.quarantine_id, "disclosure_id": job.disclosure_id,
                                "deadline": to_iso(deadline)}
            else:
                notices.append(render_decision(record, to=cfg.corporate_secretary, tz=cfg.tz, now=job.decided_at,
                                               quarantine_id=job.quarantine_id, deadline=deadline,
                                               disclosure_id=job.disclosure_id, base_url=cfg.web.base_url))
        if action == HOLD and cfg.notify.notify_sender_on_hold and record.sender:
            notices.append(render_sender_held(record, corpsec=cfg.corporate_secretary, tz=cfg.tz, now=job.decided_at,
                                              quarantine_id=job.quarantine_id))
        return disclosure, digest_entry, notices

    def send_digest(self, now: datetime | None = None, force: bool = False) -> int:
        """Queue the digest email once its oldest entry has waited `notify.digest_interval` s (at once with
        `force`); returns how many messages it lists (0: not due, or nothing waits)."""
        now = now or self.clock()
        cfg = self.config
        if not force:
            oldest = self.store.followups.digest_oldest()
            since = from_iso(oldest.get("at")) if oldest else None
            if since is None or (now - since).total_seconds() < cfg.notify.digest_interval:
                return 0

        def queue(entries: list[dict[str, Any]], tx: Tx) -> int:
            cases = [DigestCase(Record.from_json(e["record"]), e.get("quarantine_id", ""), e.get("disclosure_id", ""),
                                from_iso(e.get("deadline"))) for e in entries]
            self.outbox.enqueue_ops(tx, render_digest(cases, to=cfg.corporate_secretary, tz=cfg.tz, now=now))
            return len(cases)

        return self.store.followups.digest_take(queue) or 0


@dataclass(frozen=True)
class FollowUp:
    """What is left to do after a decision is recorded: stored with the record, done by the worker."""

    id: str
    record: Record
    quarantine_id: str
    disclosure_id: str  # given now, so the record can name it; the disclosure is opened by the follow-up
    received_at: datetime
    decided_at: datetime

    def to_json(self) -> dict[str, Any]:
        """The stored row."""
        return {"id": self.id, "record": self.record.to_json(), "quarantine_id": self.quarantine_id,
                "disclosure_id": self.disclosure_id, "received_at": to_iso(self.received_at),
                "decided_at": to_iso(self.decided_at)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FollowUp:
        """The inverse of to_json."""
        received, decided = from_iso(d["received_at"]), from_iso(d["decided_at"])
        assert received is not None and decided is not None
        return cls(d["id"], Record.from_json(d["record"]), d.get("quarantine_id", ""), d.get("disclosure_id", ""),
                   received, decided)


class Reminders:
    """Hold reminders and disclosure reminders; the outbox worker loop calls `run_due` every tick."""

    def __init__(self, store: RedisStore, config: Config, clock: Callable[[], datetime] = utcnow,
                 outbox: Outbox | None = None) -> None:
        self.config = config
        self.outbox = outbox or Outbox(store, config, clock=clock)
        self.quarantine = Quarantine(store, config, clock, self.outbox)
        self.disclosures = Disclosures(store, config, clock)

    def run_due(self, now: datetime) -> int:
        """Queue the hold and disclosure reminders now due, each once whichever worker runs; returns how many."""
        cfg = self.config

        def enqueue(tx: Tx, d: Disclosure, stage: str) -> None:
            if cfg.corporate_secretary:
                self.outbox.enqueue_ops(tx, render_disclosure_reminder(
                    d.record, to=cfg.corporate_secretary, tz=cfg.tz, now=now, disclosure_id=d.id,
                    deadline=d.deadline, overdue=stage == "overdue"))

        return self.quarantine.remind_due(now) + self.disclosures.remind_due(now, enqueue)


def agent_host(config: Config) -> str:
    """The MTA host name an agent serves: config `mta_host`, else Postfix's myhostname, else the FQDN.

    (Sendmail's `j` is its canonical host name, which is the FQDN on a sane host.)
    """
    import socket

    if config.mta_host:
        return config.mta_host
    if config.mta == "postfix":
        return PostfixQueue(config.postfix.config_directory).myhostname() or socket.getfqdn()
    return socket.getfqdn()


def start_background(store: RedisStore, config: Config, stop: threading.Event, *, mta_host: str = "",
                     mta: MtaQueue | None = None, transport: Transport | None = None,
                     agent: bool | None = None, interval: float = 1.0) -> list[threading.Thread]:
    """Start the outbox worker (with reminders) and the quarantine agent as daemon threads.

    The agent runs as `[milter] agent` says (`agent` overrides): with "auto",
    only when this process may run the MTA's queue commands. An agent that
    cannot act would take compliance's requests from Redis and only fail
    them, while a privileged `regfd agent` on the same host could have
    served them (postsuper is reserved for root; the milter runs as `regfd`).

    `regfd milter` calls this once after opening the store, and sets `stop`
    at shutdown (then joins the threads, a second or two). `mta_host` must
    equal the MessageFacts.mta_host its decisions carry (the `j` macro);
    empty means Postfix's own `myhostname` (which is what `j` is) when
    `mta = "postfix"`, else this host's FQDN.
    """
    outbox = Outbox(store, config, transport)
    reminders = Reminders(store, config, outbox=outbox)
    workflow = Workflow(store, config, transport=transport)
    # The register's periodic signed checkpoint ([register] checkpoint_interval) rides the same loop.
    checkpoints = Register(store, config).checkpoint_due
    hooks = [workflow.follow_up, workflow.send_digest, reminders.run_due, checkpoints]  # before each delivery pass
    threads = [threading.Thread(target=outbox.run_forever, args=(stop, interval, hooks),
                                name="regfd-outbox", daemon=True)]
    queue = mta or mta_queue(config)
    setting = config.milter.agent if agent is None else ("yes" if agent else "no")
    cannot = queue.can_act() if setting != "no" else ""
    if setting == "auto" and cannot:
        import structlog

        structlog.get_logger("regfd.agent").warning(
            "quarantine.agent.not_started", reason=cannot,
            fix="run `regfd agent` as root on this host (the regfd-agent service) to release and reject held mail")
    elif setting != "no":
        host = mta_host or agent_host(config)
        threads.append(threading.Thread(target=QuarantineAgent(store, config, queue, host).run_forever,
                                        args=(stop,), name="regfd-agent", daemon=True))
    for t in threads:
        t.start()
    return threads
