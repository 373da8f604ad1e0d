"""The milter adapter: MTA events in, one policy decision out, the action back.

A thin layer over `policy`: it collects the envelope and the message, asks
the store for ONE directory snapshot per message, lets `classify`/`judge`
decide, hands every recorded verdict to the `DecisionSink` BEFORE acting,
and translates the verdict into milter actions. No policy lives here.

Threading: libmilter runs one thread per MTA connection and pymilter builds
one `RegfdMilter` per connection, so per-message state lives on that object
only. Everything shared (`MilterApp`: config, policy, lexicons, the Redis
connection pool, the sink) is immutable or thread-safe. There is no cache
across messages: every message does its own round trip, so a registry
change applies at once on every host.

Fail closed: any exception inside a callback, Redis unreachable, or a
decision slower than `milter.decision_timeout` answers the configured
failure action (default 451 4.7.1). Nothing is ever accepted by accident.

Round trips: on an inet socket every event the MTA
sends must get a reply or the MTA's next write waits for a delayed ACK
(40 ms). So every stage the MTA sends has a callback that replies, the
`data()` callback is kept (deciding there also lets us accept mail without
a Specified Person before its body is transferred), and the macros asked
for are the few we read.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any

import Milter
import structlog

from regfd.core.envelope import Envelope
from regfd.core.message import MessageFacts
from regfd.core.policy import ACCEPT, HOLD, REJECT, TAG
from regfd.core.verdict import Classification, Verdict
from regfd.errors import StoreUnavailable
from regfd.monitoring.metrics import REASON_STOPPING
from regfd.mta.app import FailurePolicy, MilterApp
from regfd.mta.session import DeadlinePassed, DecisionFailed, failure_reason

log = structlog.get_logger("regfd.mta.libmilter")

# MilterApp and FailurePolicy live in app.py (the asyncio engine needs them without pymilter); importable from here too.
__all__ = ["FailurePolicy", "MilterApp", "QuietRegfdMilter", "RegfdMilter"]

# Actions we may ask the MTA for; nothing else is negotiated.
WANTED_ACTIONS = Milter.ADDHDRS | Milter.CHGHDRS | Milter.ADDRCPT | Milter.QUARANTINE | Milter.SETSYMLIST

# Macros read per stage (Sendmail and Postfix share these names). `i` is
# asked for at every stage where an MTA may know it: Postfix knows it after
# the first valid RCPT (or at MAIL with smtpd_delay_open_until_valid_rcpt=no),
# Sendmail at MAIL; the value seen at EOM is the fallback.
MACROS: dict[int, tuple[str, ...]] = {
    Milter.M_ENVFROM: ("i", "{auth_authen}", "{mail_addr}", "{client_addr}"),
    Milter.M_ENVRCPT: ("i", "{rcpt_addr}"),
    Milter.M_DATA: ("i",),
    Milter.M_EOM: ("i", "j"),
}


def _percent(text: str) -> str:
    """libmilter silently drops a reply text with a single '%'."""
    return text.replace("%", "%%")


def _addr(value: str) -> str:
    return value.strip().strip("<>").strip()


# No decision could be taken (the session core's exceptions, so both engines give the same failure reasons).
_Failed = DecisionFailed
_Late = DeadlinePassed


def _guarded(stage: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Any exception inside a callback becomes the failure action, logged with its traceback."""

    def wrap(fn: Callable[..., int]) -> Callable[..., int]:
        def inner(self: RegfdMilter, *args: Any) -> int:
            try:
                return fn(self, *args)
            except Exception as exc:  # fail closed, whatever went wrong
                return self._fail(stage, exc)

        inner.__name__ = fn.__name__
        inner.__doc__ = fn.__doc__
        for attr in ("error_strategy",):
            if hasattr(fn, attr):
                setattr(inner, attr, getattr(fn, attr))
        return inner

    return wrap


class RegfdMilter(Milter.Base):
    """One MTA connection (possibly several messages)."""

    def __init__(self, app: MilterApp) -> None:
        self.app = app
        self.client_addr = ""
        self._in_message = False
        self._reset()
        app.metrics.connection(True)

    # ----- per-message state
    def _reset(self) -> None:
        self.sender = ""
        self.recipients: list[str] = []
        self.auth = ""
        self.queue_id = ""
        self.classification: Classification | None = None
        self.deferred_error: BaseException | None = None  # from a no-reply stage, answered at EOM
        self.chunks: list[bytes] = []
        self.size = 0  # bytes received (headers + body), buffered or not
        self.buffered = 0
        self.truncated = False
        self.subject = ""
        self.message_id = ""
        self.decision_s = 0.0  # time spent deciding (lookups, scan), not waiting for the MTA
        self.t0 = time.monotonic()

    def _begin(self) -> bool:
        if not self._in_message:
            if not self.app._enter():
                return False
            self._in_message = True
        return True

    def _end(self) -> None:
        if self._in_message:
            self._in_message = False
            self.app._leave()

    def _macro(self, name: str) -> str:
        try:
            v = self.getsymval(name)
        except Exception:  # a missing macro is not an error
            return ""
        return v or ""

    def _qid(self) -> None:
        if not self.queue_id:
            self.queue_id = self._macro("i")

    # ----- negotiation
    def negotiate(self, opts: list[int]) -> int:
        """Ask only for the actions and macros used; keep every stage answered (see module doc)."""
        try:
            offered, proto, _f2, _f3 = opts
            self._actions = offered & WANTED_ACTIONS
            if self._actions & Milter.SETSYMLIST:
                for stage, syms in MACROS.items():
                    # Straight to the C context: pymilter 1.0.5's Base.setsymlist passes
                    # bytes where its C module wants str (TypeError on Python 3).
                    self._ctx.setsymlist(stage, " ".join(syms))
            opts[0] = self._actions
            opts[1] = self._protocol = proto & ~self.protocol_mask()
            opts[2] = 0
            opts[3] = 0
            missing = (Milter.ADDHDRS | Milter.QUARANTINE) & ~offered
            if missing:
                log.warning("milter.negotiate", problem="MTA does not offer a needed action",
                            offered=hex(offered), missing=hex(missing))
        except Exception as exc:
            log.error("milter.negotiate_failed", error=str(exc), exc_info=True)
            return Milter.ALL_OPTS
        return Milter.CONTINUE

    # ----- callbacks (each replies: see module doc)
    @_guarded("connect")
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        """Remember the client address for the envelope and the log."""
        if isinstance(hostaddr, tuple) and hostaddr:
            self.client_addr = str(hostaddr[0])
        elif hostaddr:
            self.client_addr = str(hostaddr)
        return Milter.CONTINUE

    @_guarded("helo")
    def hello(self, hostname: str) -> int:
        """Negotiated only so the stage gets a reply (see the module docstring on round trips)."""
        return Milter.CONTINUE

    @_guarded("mail")
    def envfrom(self, mailfrom: str, *params: str) -> int:
        """Start a message: inbound and system mail is accepted here, before any lookup or body.

        During a graceful stop the answer is 451, so the client keeps the message and retries.
        """
        self._end()
        self._reset()
        if not self._begin():  # stopping: the MTA keeps the message and retries
            self.app.metrics.failure("mail", REASON_STOPPING, 0.0)
            self.setreply("451", "4.7.1", _percent(self.app.failure.tempfail_text))
            return Milter.TEMPFAIL
        self.sender = _addr(mailfrom) or _addr(self._macro("{mail_addr}"))
        self.auth = self._macro("{auth_authen}")
        self._qid()
        # Inbound and system mail need neither Redis nor the body.
        early = self.app.decider.at_mail(self._envelope(), self.app.clock())
        if early is not None:
            self._log_decision(early.action, early.reasons, (), stage="mail")
            self._end()
            return Milter.ACCEPT
        return Milter.CONTINUE

    @_guarded("rcpt")
    def envrcpt(self, rcpt: str, *params: str) -> int:
        """Collect the recipient; nothing is decided until data(), when all are known."""
        a = _addr(rcpt) or _addr(self._macro("{rcpt_addr}"))
        if a:
            self.recipients.append(a)
        self._qid()
        return Milter.CONTINUE

    @_guarded("data")
    def data(self) -> int:
        """All recipients are known: one snapshot, classify; no Specified Person → accept now."""
        self._qid()
        t = time.monotonic()
        envelope = self._envelope()
        try:
            snap = self.app.store.snapshot(envelope.sender, envelope.recipients)
        except StoreUnavailable as exc:
            return self._fail("data", exc)
        c = self.app.decider.at_data(envelope, snap, self.app.clock())
        self.decision_s += time.monotonic() - t
        if self.decision_s > self.app.decision_timeout:
            return self._fail("data", _Late(f"directory lookup took {self.decision_s:.1f}s"))
        if not c.needs_content:
            self._log_decision(ACCEPT, c.reasons, c.specified, stage="data")
            self._end()
            return Milter.ACCEPT
        self.classification = c
        return Milter.CONTINUE

    def _keep(self, data: bytes) -> None:
        """Buffer up to one byte past the limit, so the scanner sees the message is over it."""
        self.size += len(data)
        room = self.app.max_message_bytes + 1 - self.buffered
        if room <= 0:
            self.truncated = True
            return
        if len(data) > room:
            data = data[:room]
            self.truncated = True
        self.chunks.append(data)
        self.buffered += len(data)

    @Milter.decode("bytes")
    def header(self, name: str, value: bytes) -> int:
        """Keep the header for the scan; an error gives the failure action at once."""
        try:
            self._header(name, value)
            return Milter.CONTINUE
        except Exception as exc:
            return self._fail("header", exc)

    def _header(self, name: str | bytes, value: bytes) -> None:
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        if not self.subject and name.lower() == "subject":
            self.subject = value.decode("utf-8", "replace")
        elif not self.message_id and name.lower() == "message-id":
            self.message_id = value.decode("ascii", "replace").strip()
        self._keep(name.encode("ascii", "replace") + b": " + value + b"\r\n")

    @_guarded("eoh")
    def eoh(self) -> int:
        """Keep the blank line that ends the headers, so the buffer is the message as sent."""
        self._keep(b"\r\n")
        return Milter.CONTINUE

    @_guarded("body")
    def body(self, chunk: bytes) -> int:
        """Buffer the chunk; once over the size limit, ask the MTA to skip the rest if it can."""
        self._keep(chunk)
        if self.truncated and self._protocol & Milter.P_SKIP:
            return Milter.SKIP  # over the limit: no need to receive the rest
        return Milter.CONTINUE

    @_guarded("eom")
    def eom(self) -> int:
        """Scan, judge, record (sink) BEFORE acting, then act."""
        if self.deferred_error is not None:
            raise self.deferred_error
        c = self.classification
        if c is None:  # cannot happen after data() answered CONTINUE; fail closed if it does
            raise _Failed("end of message without a classification")
        self.queue_id = self._macro("i") or self.queue_id
        if self.queue_id and c.envelope.queue_id != self.queue_id:
            c = dataclasses.replace(c, envelope=dataclasses.replace(c.envelope, queue_id=self.queue_id))
        t = time.monotonic()
        raw = b"".join(self.chunks)
        verdict = self.app.judge_bounded(c, raw, self.size, self.app.decision_timeout - self.decision_s)
        self.decision_s += time.monotonic() - t
        if self.decision_s > self.app.decision_timeout:
            raise _Late(f"decision took {self.decision_s:.1f}s (over milter.decision_timeout "
                          f"{self.app.decision_timeout:g}s)")
        if verdict.recorded:
            facts = MessageFacts(received_at=c.at, queue_id=self.queue_id, message_id=self.message_id,
                                 subject=self.subject, mta_host=self._macro("j"), size=self.size,
                                 raw=raw if verdict.action == HOLD else b"")
            self.app.sink.on_decision(verdict, facts)  # raises → failure action: never unrecorded
        rc = self._act(verdict)
        self._log_decision(verdict.action, verdict.reasons, verdict.specified, stage="eom",
                           findings=sorted({f"{f.kind}:{f.category}" for f in verdict.findings}),
                           rule=verdict.rule.number if verdict.rule else None)
        self._end()
        return rc

    def _act(self, verdict: Verdict) -> int:
        if verdict.action == ACCEPT:
            return Milter.ACCEPT
        if verdict.action == TAG:
            self.addheader("X-RegFD-Action", "tag")
            self.addheader("X-RegFD-Reasons", verdict.header_reasons())
            if self.app.journal_bcc:
                self.addrcpt(f"<{self.app.journal_bcc}>")
            prefix = self.app.subject_prefix
            if prefix and not self.subject.lstrip().startswith(prefix.strip()):
                if self.subject:
                    self.chgheader("Subject", 1, prefix + self.subject.lstrip())
                else:
                    self.addheader("Subject", prefix.strip())
            return Milter.ACCEPT
        if verdict.action == HOLD:
            self.quarantine(f"regfd hold: {verdict.header_reasons()}"[:200])
            return Milter.ACCEPT
        if verdict.action == REJECT:
            self.setreply("550", "5.7.1", _percent(self.app.reject_text))
            return Milter.REJECT
        raise _Failed(f"unknown verdict action {verdict.action!r}")

    @_guarded("abort")
    def abort(self) -> int:
        """The MTA abandoned the message (RSET, or the client left): forget it, stop counting it in flight."""
        self._end()
        self._reset()
        return Milter.CONTINUE

    def close(self) -> int:
        """The connection ended: a message still open stops counting as in flight."""
        self._end()
        self.app.metrics.connection(False)
        return Milter.CONTINUE

    # ----- helpers
    def _envelope(self) -> Envelope:
        if not self.client_addr:
            self.client_addr = self._macro("{client_addr}")
        return Envelope.from_raw(self.sender, self.recipients, self.auth, self.queue_id, self.client_addr)

    def _fail(self, stage: str, exc: BaseException) -> int:
        """The configured failure action; logged with the exception (its traceback when a bug)."""
        f = self.app.failure
        bug = not isinstance(exc, (StoreUnavailable, _Failed))
        log.error("milter.failure", stage=stage, queue_id=self.queue_id, sender=self.sender,
                  action=f.action, error=f"{type(exc).__name__}: {exc}", exc_info=exc if bug else None)
        self.app.metrics.failure(stage, failure_reason(exc), self.decision_s)
        self._end()
        try:
            if f.action == "accept":
                return Milter.ACCEPT
            if f.action == "reject":
                self.setreply("550", "5.7.1", _percent(f.reject_text))
                return Milter.REJECT
            self.setreply("451", "4.7.1", _percent(f.tempfail_text))
        except Exception:  # the reply text is a nicety; the code is what matters
            pass
        return Milter.REJECT if f.action == "reject" else Milter.TEMPFAIL

    def _log_decision(self, action: str, reasons: Iterable[str], specified: Iterable[Any], stage: str,
                      findings: Iterable[str] = (), rule: int | None = None) -> None:
        self.app.metrics.message(action, stage, self.decision_s)
        log.info("milter.decision", queue_id=self.queue_id, sender=self.sender, rule=rule,
                 recipients=len(self.recipients), specified=[r.address for r in specified], action=action,
                 reasons=list(reasons), findings=list(findings), stage=stage, client=self.client_addr,
                 duration_ms=round(self.decision_s * 1000, 2),
                 elapsed_ms=round((time.monotonic() - self.t0) * 1000, 2))


class QuietRegfdMilter(RegfdMilter):
    """The same adapter with fewer round trips, for unix sockets only.

    No connect/helo callbacks (the client address comes from the
    `{client_addr}` macro at MAIL), and headers and end-of-headers are
    negotiated no-reply: the MTA streams them without waiting. On a TCP
    socket that would stall 40 ms on delayed ACKs (Nagle meets delayed ACK);
    a unix socket has no Nagle. An error in a no-reply stage cannot be
    answered there, so it is kept and answered at end of message.
    """

    @Milter.nocallback
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        """Not negotiated: the client address comes from the `{client_addr}` macro at MAIL instead."""
        return Milter.CONTINUE

    @Milter.nocallback
    def hello(self, hostname: str) -> int:
        """Not negotiated: nothing here is needed."""
        return Milter.CONTINUE

    @Milter.noreply
    @Milter.decode("bytes")
    def header(self, name: str, value: bytes) -> int:
        """No reply is possible here, so an error is kept and answered at end of message."""
        try:
            self._header(name, value)
        except Exception as exc:
            self.deferred_error = self.deferred_error or exc
        return Milter.CONTINUE

    @Milter.noreply
    def eoh(self) -> int:
        """No reply is possible here, so an error is kept and answered at end of message."""
        try:
            self._keep(b"\r\n")
        except Exception as exc:
            self.deferred_error = self.deferred_error or exc
        return Milter.CONTINUE


def _protocol_mask(cls: type) -> int:
    """pymilter's Base.protocol_mask, computed per class (its cache is inherited by subclasses)."""
    p = Milter.P_RCPT_REJ | Milter.P_HDR_LEADSPC
    for name, (nr, nc) in Milter.OPTIONAL_CALLBACKS.items():
        p |= (nr | nc) & ~getattr(getattr(cls, name), "milter_protocol", 0)
    return p


RegfdMilter._protocol_mask = _protocol_mask(RegfdMilter)  # type: ignore[attr-defined]
QuietRegfdMilter._protocol_mask = _protocol_mask(QuietRegfdMilter)  # type: ignore[attr-defined]
