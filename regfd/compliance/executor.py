"""What follows a decision: record, notify, quarantine bookkeeping, disclosure clock.

The milter and `regfd check` decide (policy.decide); the milter then calls
`Workflow.on_decision` before it acts at the MTA. It raises StoreUnavailable
when the record cannot be written, and the milter then answers with the
configured failure action: a communication with a Specified Person is never
delivered unrecorded.

`on_decision` is ONE Redis round trip: the record, the notifications, the
quarantine entry and the disclosure follow-up go in one MULTI/EXEC (the
store's `batch`, to which each store module adds its writes), so they exist
all together or not at all. Ids are generated client-side for that
reason (nothing needs a value back from Redis before the EXEC).

Background work (`start_background`, which `regfd milter` starts): the
outbox worker (delivers notifications, runs `Reminders`) and the quarantine
agent (runs postsuper, or Sendmail's equivalents, for release/reject requests).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from regfd.compliance.agent import QuarantineAgent
from regfd.compliance.disclosures import Disclosure, Disclosures, new_id, open_disclosure
from regfd.compliance.outbox import Outbox
from regfd.compliance.quarantine import Quarantine, QuarantineEntry, mta_queue
from regfd.compliance.records import Record, Records, make_record
from regfd.compliance.render import render_decision, render_disclosure_reminder, render_sender_held
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
        """Record, hold, open the disclosure follow-up and queue the notifications in one transaction.

        Raises StoreUnavailable when that fails, so the milter answers the failure action instead of
        delivering a message nobody recorded.
        """
        if not verdict.recorded:
            return
        now = self.clock()
        cfg = self.config
        action = verdict.action
        quarantine_id = new_id("q") if action == HOLD else ""
        disclosure: Disclosure | None = None
        # Delivered at SMTP time with a material finding: the clock starts now.
        # (`accept` too, should a company's policy table ever accept material content.)
        if action in DELIVERED_ACTIONS and verdict.has_material:
            disclosure = open_disclosure(Record(), facts.received_at, "delivered", opened_at=now)
        record = make_record(verdict, facts, quarantine_id=quarantine_id,
                             disclosure_id=disclosure.id if disclosure else "")
        with self.store.batch("decision not recorded", durable=True) as tx:
            self.records.add_ops(tx, record, now)
            if action == HOLD:
                entry = QuarantineEntry(quarantine_id, QuarantineState.HELD, facts.received_at, facts.mta_host,
                                        record.queue_id, record)
                self.quarantine.add_ops(tx, entry, facts.raw)
            if disclosure is not None:
                disclosure = replace(disclosure, record=record)
                self.disclosures.add_ops(tx, disclosure)
            if action in NOTIFIED_ACTIONS and cfg.corporate_secretary:
                self.outbox.enqueue_ops(tx, render_decision(
                    record, to=cfg.corporate_secretary, tz=cfg.tz, now=now, quarantine_id=quarantine_id,
                    deadline=disclosure.deadline if disclosure else None,
                    disclosure_id=disclosure.id if disclosure else ""))
            if action == HOLD and cfg.notify.notify_sender_on_hold and record.sender:
                self.outbox.enqueue_ops(tx, render_sender_held(
                    record, corpsec=cfg.corporate_secretary, tz=cfg.tz, now=now, quarantine_id=quarantine_id))


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
    threads = [threading.Thread(target=outbox.run_forever, args=(stop, interval, [reminders.run_due]),
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
