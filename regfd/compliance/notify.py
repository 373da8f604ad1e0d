"""Notifications: what the Corporate Secretary (and senders) are told, and the durable outbox.

Rendering is pure (a record dict in, a `Notification` out) so its wording is
unit-tested without SMTP. Delivery goes through a durable outbox in Redis so
a notification survives a relay outage and a restart:

    outbox:msg    hash  id -> JSON Notification
    outbox:due    zset  id -> next attempt (ms)
    outbox:lease  zset  id -> lease expiry (ms)   being sent by some worker
    outbox:sent   stream (capped) what was delivered, for `regfd outbox --sent`

Enqueueing is a few commands added to the caller's transaction (the
milter's decision pipeline). Workers claim due messages with one Lua script
that moves them from `due` to `lease` atomically, so two workers on two hosts
never take the same message; a worker that dies mid-send leaves a lease that
expires (LEASE_SECONDS) and the message becomes due again: never dropped.
(A crash after the relay accepted but before the acknowledgement can resend
once; each notification has a stable Message-ID so that duplicate is
recognisable.) Failures back off exponentially from `retry_initial` to
`retry_max` and are retried forever; `regfd outbox` shows the last error.
"""

from __future__ import annotations

import html
import json
import smtplib
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from regfd.compliance.disclosures import new_id, to_ms
from regfd.compliance.records import Record
from regfd.core.clock import from_iso, to_iso
from regfd.core.clock import now as utcnow
from regfd.errors import StoreUnavailable
from regfd.ports import Transport
from regfd.store.client import REDIS_ERRORS, text

if TYPE_CHECKING:
    from regfd.config import Config
    from regfd.store.redis_store import RedisStore

LEASE_SECONDS = 600.0  # > smtp timeout many times over: a live worker finishes well before


# ---------------------------------------------------------------- the message
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


# ---------------------------------------------------------------- rendering (pure)
def highlight_text(excerpt: str, matched: str) -> str:
    """The excerpt with the matched words between » and «."""
    i = excerpt.casefold().find(matched.casefold()) if matched else -1
    if i < 0 or len(excerpt.casefold()) != len(excerpt):
        return f"{excerpt}  [matched: »{matched}«]" if matched and matched not in excerpt else excerpt
    return f"{excerpt[:i]}»{excerpt[i:i + len(matched)]}«{excerpt[i + len(matched):]}"


def highlight_html(excerpt: str, matched: str) -> str:
    """The excerpt, HTML-escaped, with the matched words in <mark>."""
    i = excerpt.casefold().find(matched.casefold()) if matched else -1
    if i < 0 or len(excerpt.casefold()) != len(excerpt):
        tail = f" <small>[matched: <mark>{html.escape(matched)}</mark>]</small>" if matched else ""
        return html.escape(excerpt) + tail
    return (html.escape(excerpt[:i]) + "<mark>" + html.escape(excerpt[i:i + len(matched)]) + "</mark>"
            + html.escape(excerpt[i + len(matched):]))


def local_time(iso_or_dt: str | datetime | None, tz: ZoneInfo) -> str:
    """For people: the instant in the company's time zone with the zone's name; '' for no instant."""
    dt = from_iso(iso_or_dt) if isinstance(iso_or_dt, str) or iso_or_dt is None else iso_or_dt
    if dt is None:
        return ""
    loc = dt.astimezone(tz)
    return f"{loc:%a %Y-%m-%d %H:%M} {loc.tzname()}"


_HEADLINES = {
    "tag": "DELIVERED and tagged: the message went out; review it.",
    "accept": "DELIVERED: the message went out; review it.",
    "hold": "HELD for your review: it waits in the mail queue until you release or reject it.",
    "reject": "REJECTED at the gateway: not delivered; the sender was told to contact you.",
}


@dataclass(frozen=True)
class Commands:
    """The exact commands a reviewer runs (also shown in the HTML)."""

    lines: tuple[tuple[str, str], ...]  # (what it does, command)


def quarantine_commands(qid: str) -> Commands:
    """What a reviewer runs to read, release or reject a held message (YOU@company left to fill in)."""
    return Commands((
        ("Read the whole message", f"regfd quarantine show {qid}"),
        ("Release (deliver now)", f'regfd quarantine release {qid} --by YOU@company --reason "why it may go"'),
        ("Reject (delete; the sender is told)", f'regfd quarantine reject {qid} --by YOU@company --reason "why not"'),
    ))


def disclosure_commands(did: str) -> Commands:
    """What a reviewer runs to close a disclosure follow-up once the information is public."""
    return Commands((
        ("When the information is public",
         f'regfd disclosures close {did} --by YOU@company --reference "8-K filed ..."'),
        ("See open follow-ups", "regfd disclosures --open"),
    ))


def _section_text(title: str, body: list[str]) -> list[str]:
    return [title, *body, ""] if body else []


def render_case(record: Record, *, headline: str, tz: ZoneInfo, quarantine_id: str = "",
                deadline: datetime | None = None, disclosure_id: str = "", extra: Iterable[str] = (),
                commands: Iterable[Commands] = ()) -> tuple[str, str]:
    """Plain text and HTML bodies describing one message and what to do about it."""
    recipients = record.recipients
    findings = record.findings
    cmds = [c for group in commands for c in group.lines]
    extra = list(extra)
    # ---- text
    t: list[str] = [headline, ""]
    t += extra + ([""] if extra else [])
    if deadline is not None:
        t += [f"PUBLIC DISCLOSURE DUE BY: {local_time(deadline, tz)} (follow-up {disclosure_id})", ""]
    t += [f"Sender:      {record.sender} ({record.sender_class})",
          "Specified Persons:"]
    t += [f"  - {r.line()}" for r in recipients]
    others = record.other_recipients
    if others:
        t.append("Other recipients: " + ", ".join(o.address for o in others))
    t += [f"Subject:     {record.subject}",
          f"Received:    {local_time(record.at, tz)} on {record.mta_host or '?'}, queue id {record.queue_id or '?'}",
          f"Message-ID:  {record.message_id}",
          f"Action:      {record.action}" + (
              f" (policy: {record.policy_action})"
              if record.policy_action and record.policy_action != record.action else "")]
    if quarantine_id:
        t.append(f"Quarantine:  {quarantine_id}")
    t.append("")
    t += _section_text("Findings:", [
        f"  {n}. {f.kind} ({f.category}) in {f.location}:\n"
        f"       {highlight_text(f.excerpt, f.text)}"
        for n, f in enumerate(findings, 1)] or ["  none"])
    t += _section_text("Why:", [f"  - {r}" for r in record.reasons])
    for what, cmd in cmds:
        t += [f"{what}:", f"  {cmd}", ""]
    t.append("-- regfd, Regulation FD gateway (automatic message)")
    text = "\n".join(t) + "\n"
    # ---- HTML
    e = html.escape
    h: list[str] = ["<!DOCTYPE html><html><body style=\"font-family:sans-serif\">",
                    f"<p><strong>{e(headline)}</strong></p>"]
    for line in extra:
        h.append(f"<p>{e(line)}</p>")
    if deadline is not None:
        h.append(f"<p style=\"color:#b00\"><strong>Public disclosure due by {e(local_time(deadline, tz))}</strong>"
                 f" (follow-up {e(disclosure_id)})</p>")
    h.append("<table>")
    rows = [("Sender", f"{record.sender} ({record.sender_class})"),
            ("Specified Persons", "; ".join(r.line() for r in recipients)),
            ("Subject", record.subject),
            ("Received", f"{local_time(record.at, tz)} on {record.mta_host or '?'}, "
                         f"queue id {record.queue_id or '?'}"),
            ("Message-ID", record.message_id),
            ("Action", record.action)]
    if quarantine_id:
        rows.append(("Quarantine", quarantine_id))
    for k, v in rows:
        h.append(f"<tr><th align=\"left\">{e(k)}</th><td>{e(str(v))}</td></tr>")
    h.append("</table><h3>Findings</h3><ol>")
    for f in findings:
        h.append(f"<li><strong>{e(f.kind)}</strong> ({e(f.category)}) in {e(f.location)}:<br>"
                 f"<q>{highlight_html(f.excerpt, f.text)}</q></li>")
    if not findings:
        h.append("<li>none</li>")
    h.append("</ol>")
    if record.reasons:
        h.append("<h3>Why</h3><ul>" + "".join(f"<li>{e(r)}</li>" for r in record.reasons) + "</ul>")
    if cmds:
        h.append("<h3>What to do</h3>")
        for what, cmd in cmds:
            h.append(f"<p>{e(what)}:<br><code>{e(cmd)}</code></p>")
    h.append("<p><small>regfd, Regulation FD gateway (automatic message)</small></p></body></html>")
    return text, "\n".join(h) + "\n"


def _short(subject: str, n: int = 60) -> str:
    s = " ".join(subject.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _to_line(record: Record) -> str:
    rs = [r.address for r in record.recipients]
    return rs[0] + (f" +{len(rs) - 1}" if len(rs) > 1 else "") if rs else "?"


def render_decision(record: Record, *, to: tuple[str, ...], tz: ZoneInfo, now: datetime,
                    quarantine_id: str = "", deadline: datetime | None = None, disclosure_id: str = "") -> Notification:
    """To the Corporate Secretary: a message was tagged, held or rejected."""
    action = record.action
    commands = []
    if quarantine_id:
        commands.append(quarantine_commands(quarantine_id))
    if disclosure_id:
        commands.append(disclosure_commands(disclosure_id))
    text, body = render_case(record, headline=_HEADLINES.get(action, action.upper()), tz=tz,
                             quarantine_id=quarantine_id, deadline=deadline, disclosure_id=disclosure_id,
                             commands=commands)
    kinds = sorted({f.kind for f in record.findings})
    subject = (f"[RegFD] {action.upper()}{' ' + quarantine_id if quarantine_id else ''}: "
               f"{record.sender} to {_to_line(record)}"
               f"{' (' + ', '.join(kinds) + ')' if kinds else ''}: {_short(record.subject)}")
    return Notification(new_id("n"), "decision", to, subject, text, body, quarantine_id or disclosure_id, to_iso(now))


def render_sender_held(record: Record, *, corpsec: tuple[str, ...], tz: ZoneInfo, now: datetime,
                       quarantine_id: str) -> Notification:
    """To the sender: the message waits for review (no findings: the reviewer explains if needed)."""
    contact = ", ".join(corpsec) or "the Corporate Secretary"
    text = (f"Your message \"{record.subject}\" to {record.recipients_line()}\n"
            f"(sent {local_time(record.at, tz)}) is held for review under the company's "
            f"Regulation FD communications policy.\n\n"
            f"It has not been delivered yet. The Corporate Secretary will release or reject it; "
            f"you will be told if it is rejected.\nQuestions: {contact}. Reference: {quarantine_id}.\n\n"
            f"-- regfd, Regulation FD gateway (automatic message)\n")
    return Notification(new_id("n"), "held-sender", (record.sender,),
                        f"[RegFD] Your message is held for review: {_short(record.subject)}",
                        text, "", quarantine_id, to_iso(now))


def render_sender_rejected(record: Record, *, corpsec: tuple[str, ...], tz: ZoneInfo, now: datetime,
                           quarantine_id: str, by: str, reason: str) -> Notification:
    """To the sender: not delivered, by whom and why, with whom to ask."""
    contact = ", ".join(corpsec) or "the Corporate Secretary"
    text = (f"Your message \"{record.subject}\" to {record.recipients_line()}\n"
            f"(sent {local_time(record.at, tz)}) was NOT delivered: after review under the company's "
            f"Regulation FD communications policy it was rejected by {by}.\n\n"
            f"Reason: {reason}\n\nQuestions: {contact}. Reference: {quarantine_id}.\n\n"
            f"-- regfd, Regulation FD gateway (automatic message)\n")
    return Notification(new_id("n"), "rejected-sender", (record.sender,),
                        f"[RegFD] Your message was not delivered: {_short(record.subject)}",
                        text, "", quarantine_id, to_iso(now))


def render_outcome(record: Record, *, to: tuple[str, ...], tz: ZoneInfo, now: datetime, quarantine_id: str,
                   outcome: str, by: str, reason: str, deadline: datetime | None = None,
                   disclosure_id: str = "") -> Notification:
    """To the Corporate Secretary: who released or rejected a held message, and why (the others need to know)."""
    headline = f"{outcome.upper()} by {by} at {local_time(now, tz)}: {reason}"
    commands = [disclosure_commands(disclosure_id)] if disclosure_id else []
    text, body = render_case(record, headline=headline, tz=tz, quarantine_id=quarantine_id, deadline=deadline,
                             disclosure_id=disclosure_id, commands=commands)
    return Notification(new_id("n"), outcome, to,
                        f"[RegFD] {outcome.upper()} {quarantine_id} by {by}: {_short(record.subject)}",
                        text, body, quarantine_id, to_iso(now))


def render_hold_reminder(record: Record, *, to: tuple[str, ...], tz: ZoneInfo, now: datetime,
                         quarantine_id: str, held_since: datetime) -> Notification:
    """To the Corporate Secretary: a held message is still waiting, with how long and the commands again."""
    hours = (now - held_since).total_seconds() / 3600
    headline = (f"REMINDER: held for {hours:.1f} hours and still waiting for your decision "
                f"(held since {local_time(held_since, tz)}).")
    text, body = render_case(record, headline=headline, tz=tz, quarantine_id=quarantine_id,
                             commands=[quarantine_commands(quarantine_id)])
    return Notification(new_id("n"), "hold-reminder", to,
                        f"[RegFD] REMINDER: {quarantine_id} held {hours:.0f} h: {_short(record.subject)}",
                        text, body, quarantine_id, to_iso(now))


def render_disclosure_reminder(record: Record, *, to: tuple[str, ...], tz: ZoneInfo, now: datetime,
                               disclosure_id: str, deadline: datetime, overdue: bool) -> Notification:
    """To the Corporate Secretary: a disclosure deadline is near, or with `overdue` has passed."""
    if overdue:
        headline = f"OVERDUE: public disclosure was due by {local_time(deadline, tz)} and the follow-up is still open."
    else:
        left = (deadline - now).total_seconds() / 3600
        headline = f"REMINDER: public disclosure due in {left:.1f} hours, by {local_time(deadline, tz)}."
    text, body = render_case(record, headline=headline, tz=tz, deadline=deadline, disclosure_id=disclosure_id,
                             commands=[disclosure_commands(disclosure_id)])
    word = "OVERDUE" if overdue else "due soon"
    return Notification(new_id("n"), "disclosure-overdue" if overdue else "disclosure-reminder", to,
                        f"[RegFD] Disclosure {word} ({disclosure_id}): {_short(record.subject)}",
                        text, body, disclosure_id, to_iso(now))


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
_CLAIM = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[1], ARGV[1], id)
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[4], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[2], id)
end
return ids
"""


@dataclass
class DeliveryReport:
    """What one delivery pass did: the ids sent, and (id, error) for each failure."""

    sent: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def backoff(attempts: int, initial: float, maximum: float) -> float:
    """Seconds before attempt `attempts + 1`: initial, 2x, 4x ... capped at maximum."""
    return min(maximum, initial * float(2 ** max(0, attempts - 1)))


class Outbox:
    """The durable outbox in Redis (see the module docstring); `transport` and `clock` may be replaced in tests."""

    def __init__(self, store: RedisStore, config: Config, transport: Transport | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.config = config
        self.transport = transport or SmtpTransport(config.smtp.host, config.smtp.port, config.smtp.timeout)
        self.clock = clock
        self._claim = store.r.register_script(_CLAIM)
        self.msg_key, self.due_key, self.lease_key, self.sent_key = (
            store.k(f"outbox:{name}") for name in ("msg", "due", "lease", "sent"))

    # --- enqueue (in the caller's transaction)
    def enqueue_ops(self, pipe: Any, n: Notification, at: datetime | None = None) -> None:
        """Queue `n` on the caller's pipeline, due at `at` (default: its creation); no recipients, no message."""
        if not n.to:
            return
        when = at or from_iso(n.created_at) or self.clock()
        n = replace(n, next_at=to_iso(when))
        pipe.hset(self.msg_key, n.id, json.dumps(n.to_json(), separators=(",", ":"), ensure_ascii=False))
        pipe.zadd(self.due_key, {n.id: to_ms(when)})

    def enqueue(self, n: Notification) -> None:
        """Enqueue in a transaction of its own, when there is no decision pipeline to join."""
        pipe = self.store.r.pipeline(transaction=True)
        self.enqueue_ops(pipe, n)
        try:
            pipe.execute()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"outbox write failed: {exc}") from exc

    # --- inspect
    def pending(self) -> list[Notification]:
        """Everything not yet delivered, due or not, soonest first."""
        try:
            raws = self.store.r.hvals(self.msg_key)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc
        return sorted((Notification.from_json(json.loads(x)) for x in raws), key=lambda n: (n.next_at, n.id))

    def sent(self, count: int = 100) -> list[dict[str, str]]:
        """The latest `count` deliveries, newest first; the stream keeps only about the last 10,000."""
        rows = self.store.r.xrevrange(self.sent_key, count=count)
        return [{text(k): text(v) for k, v in (f or {}).items()} for _sid, f in rows or []]

    # --- deliver
    def claim(self, now: datetime, limit: int = 50, everything: bool = False) -> list[Notification]:
        """Atomically take due messages (all pending ones with `everything`) for this worker."""
        lease_until = to_ms(now) + int(LEASE_SECONDS * 1000)
        max_score = "+inf" if everything else str(to_ms(now))
        ids = self._claim(keys=[self.due_key, self.lease_key], args=[to_ms(now), lease_until, limit, max_score])
        if not ids:
            return []
        raws = self.store.r.hmget(self.msg_key, ids)
        out = []
        for mid, raw in zip(ids, raws, strict=True):
            if raw is None:  # acknowledged by someone else meanwhile
                self.store.r.zrem(self.lease_key, mid)
                continue
            out.append(Notification.from_json(json.loads(raw)))
        return out

    def deliver_due(self, now: datetime | None = None, everything: bool = False) -> DeliveryReport:
        """Send what is due (each message by exactly one worker); reschedule failures with backoff."""
        report = DeliveryReport()
        limit = 100000 if everything else 50
        try:
            while True:
                t = now or self.clock()
                batch = self.claim(t, limit=limit, everything=everything)
                for n in batch:
                    self._deliver_one(n, t, report)
                if everything or len(batch) < limit:
                    return report
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"outbox: Redis is unreachable: {exc}") from exc

    def _deliver_one(self, n: Notification, now: datetime, report: DeliveryReport) -> None:
        sender = self.config.smtp.sender
        try:
            refused = self.transport.send(n.email(sender), sender, n.to)
        except (OSError, smtplib.SMTPException) as exc:
            refused = {a: str(exc) for a in n.to}
            error = f"{type(exc).__name__}: {exc}"
        else:
            error = "; ".join(f"{a}: {v}" for a, v in refused.items())
        pipe = self.store.r.pipeline(transaction=True)
        pipe.zrem(self.lease_key, n.id)
        if not refused:
            pipe.hdel(self.msg_key, n.id)
            pipe.xadd(self.sent_key, {"id": n.id, "kind": n.kind, "to": ", ".join(n.to), "subject": n.subject,
                                        "at": to_iso(self.clock()), "attempts": str(n.attempts + 1)},
                      maxlen=10000, approximate=True)
            report.sent.append(n.id)
        else:
            attempts = n.attempts + 1
            nxt = datetime.fromtimestamp(
                now.timestamp() + backoff(attempts, self.config.notify.retry_initial, self.config.notify.retry_max),
                tz=UTC)
            # only the refused recipients are retried: the others have their copy
            retry = replace(n, to=tuple(a for a in n.to if a in refused) or n.to, attempts=attempts,
                            last_error=error[:500], next_at=to_iso(nxt))
            pipe.hset(self.msg_key, n.id, json.dumps(retry.to_json(), separators=(",", ":"), ensure_ascii=False))
            pipe.zadd(self.due_key, {n.id: to_ms(nxt)})
            report.failed.append((n.id, error))
        pipe.execute()

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
