"""The durable outbox: how notifications reach the relay, its SMTP transport and the worker loop.

Rendering is pure (render.py); delivery goes through this outbox, kept in
Redis by store/outbox_store.py, so a notification survives a relay outage
and a restart.

Enqueueing is a few writes added to the caller's transaction (the milter's
decision). Workers claim due messages atomically, a few at a time
(CLAIM_LIMIT), so two workers on two hosts never take the same message. A
claim is a short lease (LEASE_SECONDS) that the worker renews while it
sends (every third of it, and once more right before each send, which is
skipped if the lease was lost), so a slow send is never taken over; a
worker that dies leaves leases that expire within LEASE_SECONDS and the
messages become due again: never dropped, resent within a minute.
(A crash after the relay accepted but before the acknowledgement can resend
once; each notification has a stable Message-ID so that duplicate is
recognisable.) Failures back off exponentially from `retry_initial` to
`retry_max` and are retried forever; `regfd outbox` shows the last error.
"""

from __future__ import annotations

import contextlib
import smtplib
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

from regfd.compliance.notification import Notification
from regfd.core.clock import from_iso, to_iso
from regfd.core.clock import now as utcnow
from regfd.ports import Transport

if TYPE_CHECKING:
    from regfd.config import Config
    from regfd.store.client import Tx
    from regfd.store.redis_store import RedisStore

LEASE_SECONDS = 30.0  # how late a dead worker's claims are resent; a live one renews every third of it
CLAIM_LIMIT = 5  # claimed at a time by one worker: what one crash can delay


# ---------------------------------------------------------------- transport
class SmtpTransport:
    """smtplib to `smtp.relay` (the local MTA usually; its own `system` mail is never scanned)."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout

    def send(self, message: EmailMessage, sender: str, recipients: tuple[str, ...]) -> dict[str, Any]:
        """One SMTP session per message; returns the refused recipients (empty when all were accepted).

        Raises (OSError or SMTPException) when the relay is unreachable or refuses every recipient.
        """
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            return dict(smtp.send_message(message, from_addr=sender, to_addrs=list(recipients)))


# ---------------------------------------------------------------- outbox
@dataclass
class DeliveryReport:
    """What one delivery pass did: the ids sent, and (id, error) for each failure."""

    sent: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def backoff(attempts: int, initial: float, maximum: float) -> float:
    """Seconds before attempt `attempts + 1`: initial, 2x, 4x ... capped at maximum."""
    return min(maximum, initial * float(2 ** max(0, attempts - 1)))


class Outbox:
    """The durable outbox (store/outbox_store.py); `transport` and `clock` may be replaced in tests."""

    def __init__(self, store: RedisStore, config: Config, transport: Transport | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.box = store.outbox
        self.config = config
        self.transport = transport or SmtpTransport(config.smtp.host, config.smtp.port, config.smtp.timeout)
        self.clock = clock
        self.token = uuid.uuid4().hex  # names this worker's claims, so it renews only its own leases

    # --- enqueue (in the caller's transaction)
    def enqueue_ops(self, tx: Tx, n: Notification, at: datetime | None = None) -> None:
        """Queue `n` in the caller's transaction, due at `at` (default: its creation); no recipients, no message."""
        if not n.to:
            return
        when = at or from_iso(n.created_at) or self.clock()
        n = replace(n, next_at=to_iso(when))
        self.box.add(tx, n.id, n.to_json(), when)

    def enqueue(self, n: Notification) -> None:
        """Enqueue in a transaction of its own, when there is no decision transaction to join."""
        with self.store.batch("outbox write failed") as tx:
            self.enqueue_ops(tx, n)

    # --- inspect
    def pending(self) -> list[Notification]:
        """Everything not yet delivered, due or not, soonest first."""
        return sorted((Notification.from_json(d) for d in self.box.pending()), key=lambda n: (n.next_at, n.id))

    def sent(self, count: int = 100) -> list[dict[str, str]]:
        """The latest `count` deliveries, newest first; the store keeps only about the last 10,000."""
        return self.box.sent(count)

    # --- deliver
    def claim(self, now: datetime, limit: int = CLAIM_LIMIT, everything: bool = False) -> list[Notification]:
        """Atomically lease due messages (all pending ones with `everything`) to this worker for LEASE_SECONDS."""
        lease_until = now + timedelta(seconds=LEASE_SECONDS)
        rows = self.box.claim(now, lease_until, limit, everything, self.token)
        return [Notification.from_json(d) for d in rows]

    def renew(self, ids: list[str]) -> set[str]:
        """Extend this worker's leases on `ids` by LEASE_SECONDS from now; the ids it still held."""
        t = self.clock()
        return self.box.renew(ids, self.token, t, t + timedelta(seconds=LEASE_SECONDS))

    @contextlib.contextmanager
    def _renewing(self, ids: list[str]) -> Iterator[Callable[[str], None]]:
        """Renew the leases of `ids` every third of LEASE_SECONDS until the block ends; the caller
        tells the yielded function each id it is done with."""
        pending = set(ids)
        lock = threading.Lock()
        done = threading.Event()
        interval = LEASE_SECONDS / 3

        def renew_loop() -> None:
            while not done.wait(interval):
                with lock:
                    todo = sorted(pending)
                if not todo:
                    continue
                with contextlib.suppress(Exception):  # Redis away: the pre-send check decides
                    self.renew(todo)

        renewer = threading.Thread(target=renew_loop, name="regfd-outbox-lease", daemon=True)
        renewer.start()

        def finished(nid: str) -> None:
            with lock:
                pending.discard(nid)

        try:
            yield finished
        finally:
            done.set()
            renewer.join(5)

    def deliver_due(self, now: datetime | None = None, everything: bool = False) -> DeliveryReport:
        """Send what is due (each message by exactly one worker); reschedule failures with backoff."""
        report = DeliveryReport()
        limit = 100000 if everything else CLAIM_LIMIT
        while True:
            t = now or self.clock()
            batch = self.claim(t, limit=limit, everything=everything)
            if not batch:
                return report
            with self._renewing([n.id for n in batch]) as finished:
                for n in batch:
                    if self.renew([n.id]):  # still ours, and a full lease for this send
                        self._deliver_one(n, t, report)
                    finished(n.id)
            if everything or len(batch) < limit:
                return report

    def _deliver_one(self, n: Notification, now: datetime, report: DeliveryReport) -> None:
        sender = self.config.smtp.sender
        try:
            refused = self.transport.send(n.email(sender), sender, n.to)
        except (OSError, smtplib.SMTPException) as exc:
            refused = {a: str(exc) for a in n.to}
            error = f"{type(exc).__name__}: {exc}"
        else:
            error = "; ".join(f"{a}: {v}" for a, v in refused.items())
        if not refused:
            self.box.delivered(n.id, {"id": n.id, "kind": n.kind, "to": ", ".join(n.to), "subject": n.subject,
                                      "at": to_iso(self.clock()), "attempts": str(n.attempts + 1)})
            report.sent.append(n.id)
        else:
            attempts = n.attempts + 1
            nxt = datetime.fromtimestamp(
                now.timestamp() + backoff(attempts, self.config.notify.retry_initial, self.config.notify.retry_max),
                tz=UTC)
            # only the refused recipients are retried: the others have their copy
            retry = replace(n, to=tuple(a for a in n.to if a in refused) or n.to, attempts=attempts,
                            last_error=error[:500], next_at=to_iso(nxt))
            self.box.retry(n.id, retry.to_json(), nxt)
            report.failed.append((n.id, error))

    def run_forever(self, stop: threading.Event, interval: float = 1.0,
                    also: Iterable[Callable[[datetime], Any]] = (), log: Any = None) -> None:
        """The worker loop: deliver what is due, run the reminders (`also`), sleep; never dies on an error."""
        if log is None:
            import structlog

            log = structlog.get_logger("regfd.outbox")
        hooks = list(also)
        while not stop.is_set():
            try:
                t = self.clock()
                for hook in hooks:
                    hook(t)
                report = self.deliver_due(t)
                if report.sent or report.failed:
                    log.info("outbox", sent=len(report.sent), failed=len(report.failed),
                             error=report.failed[0][1] if report.failed else None)
            except Exception as exc:  # keep the worker alive; Redis or the relay will come back
                log.warning("outbox.error", error=f"{type(exc).__name__}: {exc}")
            stop.wait(interval)
