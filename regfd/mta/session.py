"""One MTA connection as a pure state machine: packets in, reply bytes out.

The same adapter as `libmilter.RegfdMilter` (same early accept at MAIL,
same DATA decision, same tag headers, journal Bcc, subject prefix, hold by
quarantine, 550 5.7.1 reject, failure action on any exception), written
against the wire protocol (`protocol.py`) instead of pymilter's callbacks.
No sockets, threads or clocks of its own beyond `time.monotonic` for the
decision budget: an engine feeds it packets and writes what it returns.

Blocking work (the directory lookup at DATA: Redis; the end of message:
scan, judge and record) is never done here: `handle` returns a `Job`, the
engine runs `job.run()` wherever it likes within `job.budget` seconds and
gives the outcome (or the exception) back to `resume`, which returns the
replies. Until then the engine must not hand the session another packet.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import structlog

from regfd.core.decision import Decider
from regfd.core.envelope import Envelope
from regfd.core.message import MessageFacts
from regfd.core.policy import ACCEPT, HOLD, REJECT, TAG
from regfd.core.verdict import Classification, Verdict
from regfd.errors import StoreUnavailable
from regfd.monitoring.metrics import REASON_DEADLINE, REASON_ERROR, REASON_REFUSED, REASON_STOPPING, REASON_STORE
from regfd.mta import protocol as p
from regfd.ports import DecisionSink, DirectoryReader, Metrics

log = structlog.get_logger("regfd.mta.session")

WANTED_ACTIONS = p.F_ADDHDRS | p.F_CHGHDRS | p.F_ADDRCPT | p.F_QUARANTINE | p.F_SETSYMLIST

# Protocol bits asked for. On inet every stage the MTA sends is answered
# (FIELD-NOTES §1: a no-reply stage over TCP meets a 40 ms delayed ACK);
# unknown commands are never needed and SKIP ends an oversized body early.
# On a unix socket (no Nagle) connect and helo are left out and headers and
# end-of-headers are no-reply: the same choices as libmilter's QuietRegfdMilter.
INET_PROTOCOL = p.P_NOUNKNOWN | p.P_SKIP
UNIX_PROTOCOL = INET_PROTOCOL | p.P_NOCONNECT | p.P_NOHELO | p.P_NR_HDR | p.P_NR_EOH

# Macros read per stage (Sendmail and Postfix share these names): the same lists as libmilter.MACROS.
MACROS: dict[int, tuple[str, ...]] = {
    p.M_ENVFROM: ("i", "{auth_authen}", "{mail_addr}", "{client_addr}"),
    p.M_ENVRCPT: ("i", "{rcpt_addr}"),
    p.M_DATA: ("i",),
    p.M_EOM: ("i", "j"),
}

# Recipients kept per message: far above any MTA's limit (Postfix: 1000), a bound for a hostile peer.
MAX_RECIPIENTS = 100_000

# Order of the SMTP stages whose macros the MTA sends; a stage's macros replace those of later stages.
_MACRO_ORDER = b"CHMRTLNBE"


class Failure(Protocol):
    """What to answer when no decision can be taken (libmilter.FailurePolicy)."""

    @property
    def action(self) -> str: ...

    @property
    def tempfail_text(self) -> str: ...

    @property
    def reject_text(self) -> str: ...


class SessionApp(Protocol):
    """State shared by every connection (libmilter.MilterApp has all of it)."""

    @property
    def decider(self) -> Decider: ...

    @property
    def store(self) -> DirectoryReader: ...

    @property
    def sink(self) -> DecisionSink: ...

    @property
    def decision_timeout(self) -> float: ...

    @property
    def reject_text(self) -> str: ...

    @property
    def subject_prefix(self) -> str: ...

    @property
    def journal_bcc(self) -> str: ...

    @property
    def clock(self) -> Callable[[], datetime]: ...

    @property
    def failure(self) -> Failure: ...

    @property
    def max_message_bytes(self) -> int: ...

    @property
    def metrics(self) -> Metrics: ...

    def _enter(self) -> bool: ...

    def _leave(self) -> None: ...


class DecisionFailed(Exception):
    """No decision could be taken (deadline, missing classification); carries the reason for the log."""


class DeadlinePassed(DecisionFailed):
    """The decision did not finish within milter.decision_timeout."""


def failure_reason(exc: BaseException) -> str:
    """The regfd_failures_total{reason} of a failure: store, deadline, refused (no decision possible) or error."""
    if isinstance(exc, StoreUnavailable):
        return REASON_STORE
    if isinstance(exc, DeadlinePassed):
        return REASON_DEADLINE
    if isinstance(exc, DecisionFailed):
        return REASON_REFUSED
    return REASON_ERROR


@dataclass(eq=False)
class Job:
    """Blocking work for the engine: run `run()` off the event loop within `budget` seconds, then `resume`."""

    stage: str  # "data" | "eom"
    run: Callable[[], Any]
    budget: float
    started: float = field(default_factory=time.monotonic)
    # Set by the engine when the budget is over: a scan finishing later must not record.
    cancelled: bool = False


Step = list[bytes] | Job


def _percent(text: str) -> str:
    """The reply text exactly as libmilter sends it (its setreply needs a '%' doubled)."""
    return text.replace("%", "%%")


def _addr(value: str) -> str:
    return value.strip().strip("<>").strip()


class Session:
    """One MTA connection (possibly several messages). Not thread-safe: one engine task drives it."""

    def __init__(self, app: SessionApp, quiet: bool = False) -> None:
        self.app = app
        self.quiet = quiet
        self.negotiated = False
        self.closed = False
        self.actions = 0
        self.protocol = 0
        self.client_addr = ""
        self.pending: Job | None = None
        self._macros: dict[int, dict[str, str]] = {}
        self._in_message = False
        self._reset()

    # ----- per-message state (as RegfdMilter)
    def _reset(self) -> None:
        self.sender = ""
        self.recipients: list[str] = []
        self.auth = ""
        self.queue_id = ""
        self.classification: Classification | None = None
        self.deferred_error: BaseException | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.buffered = 0
        self.truncated = False
        self.subject = ""
        self.message_id = ""
        self.decision_s = 0.0
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

    def close(self) -> None:
        """The connection is gone: a message still open stops counting as in flight."""
        self._end()
        self.closed = True

    # ----- macros
    def _macro(self, name: str) -> str:
        name = p.macro_name(name)
        for pos in sorted(self._macros, reverse=True):  # the latest stage first, as libmilter
            v = self._macros[pos].get(name)
            if v is not None:
                return v
        return ""

    def _set_macros(self, cmd: bytes, values: dict[str, str]) -> None:
        pos = _MACRO_ORDER.find(cmd)
        if pos < 0:
            return  # macros for a command we do not read
        for later in [k for k in self._macros if k >= pos]:
            del self._macros[later]
        self._macros[pos] = values

    def _qid(self) -> None:
        if not self.queue_id:
            self.queue_id = self._macro("i")

    # ----- the entry points
    def handle(self, pkt: p.Packet) -> Step:
        """Replies to one packet (possibly none), or a Job whose outcome goes to `resume`.

        Raises `ProtocolError` when the peer broke the protocol: the engine closes the connection.
        """
        if self.pending is not None:
            raise p.ProtocolError("packet while a decision is pending")
        cmd = pkt.cmd
        if cmd == p.OPTNEG:
            return [self._negotiate(pkt.data)]
        if cmd == p.QUIT:
            self.close()
            return []
        if not self.negotiated:
            raise p.ProtocolError(f"command {cmd!r} before option negotiation")
        if cmd == p.MACRO:
            stage, values = p.decode_macros(pkt.data)
            self._set_macros(stage, values)
            return []
        if cmd == p.ABORT:
            self._end()
            self._reset()
            self._macros = {k: v for k, v in self._macros.items() if k < _MACRO_ORDER.find(p.MAIL)}
            return []
        if cmd == p.QUIT_NC:
            self._end()
            self._reset()
            self._macros = {}
            self.negotiated = False
            return []
        if cmd not in p.COMMANDS:
            raise p.ProtocolError(f"unknown command {cmd!r}")
        noreply = bool(self.protocol & p.NO_REPLY_BIT.get(cmd, 0))
        try:
            step = self._dispatch(cmd, pkt.data)
        except p.ProtocolError:
            raise
        except Exception as exc:  # fail closed, whatever went wrong
            if noreply:
                self.deferred_error = self.deferred_error or exc
                return []
            return self._fail(_STAGE.get(cmd, "unknown"), exc)
        if isinstance(step, Job):
            self.pending = step
            return step
        return [] if noreply else step

    def resume(self, job: Job, outcome: Any) -> list[bytes]:
        """The replies once `job` ran: `outcome` is what `job.run()` returned, or the exception it raised."""
        if job is not self.pending:
            raise RuntimeError("resume of a job this session is not waiting for")
        self.pending = None
        self.decision_s += time.monotonic() - job.started
        try:
            if isinstance(outcome, BaseException):
                raise outcome
            if job.stage == "data":
                return self._after_data(outcome)
            return self._after_eom(outcome)
        except Exception as exc:
            return self._fail(job.stage, exc)

    # ----- negotiation
    def _negotiate(self, data: bytes) -> bytes:
        version, offered, proto = p.decode_optneg(data)
        if version < 2:
            raise p.ProtocolError(f"milter protocol version {version} is too old")
        if offered == 0:  # as libmilter: no actions offered means a version-1 MTA's (found by bench_fuzz.py)
            offered = p.V1_ACTIONS
        self.actions = offered & WANTED_ACTIONS
        self.protocol = proto & (UNIX_PROTOCOL if self.quiet else INET_PROTOCOL)
        missing = (p.F_ADDHDRS | p.F_QUARANTINE) & ~offered
        if missing:
            log.warning("milter.negotiate", problem="MTA does not offer a needed action",
                        offered=hex(offered), missing=hex(missing))
        self.negotiated = True
        macros = MACROS if self.actions & p.F_SETSYMLIST else None
        return p.optneg(min(version, p.VERSION), self.actions, self.protocol, macros)

    # ----- the stages
    def _dispatch(self, cmd: bytes, data: bytes) -> Step:
        if cmd == p.CONNECT:
            _host, addr = p.decode_connect(data)
            if addr:
                self.client_addr = addr
            return [p.CONTINUE_PKT]
        if cmd == p.MAIL:
            return self._mail(data)
        if cmd == p.RCPT:
            args = p.cstrings(data)
            a = _addr(args[0].decode("utf-8", "surrogateescape") if args else "") or _addr(self._macro("{rcpt_addr}"))
            if a:
                if len(self.recipients) >= MAX_RECIPIENTS:
                    raise DecisionFailed(f"more than {MAX_RECIPIENTS} recipients")
                self.recipients.append(a)
            self._qid()
            return [p.CONTINUE_PKT]
        if cmd == p.DATA:
            return self._data()
        if cmd == p.HEADER:
            name, value = p.decode_header(data)
            self._header(name, value)
            return [p.CONTINUE_PKT]
        if cmd == p.EOH:
            self._keep(b"\r\n")
            return [p.CONTINUE_PKT]
        if cmd == p.BODY:
            self._keep(data)
            if self.truncated and self.protocol & p.P_SKIP:
                return [p.SKIP_PKT]  # over the limit: no need to receive the rest
            return [p.CONTINUE_PKT]
        if cmd == p.BODYEOB:
            if data:
                self._keep(data)
            return self._eom()
        return [p.CONTINUE_PKT]  # HELO, UNKNOWN: negotiated only so that the stage is answered

    def _mail(self, data: bytes) -> Step:
        self._end()
        self._reset()
        if not self._begin():  # stopping: the MTA keeps the message and retries
            self.app.metrics.failure("mail", REASON_STOPPING, 0.0)
            return [p.replycode("451", "4.7.1", _percent(self.app.failure.tempfail_text))]
        args = p.cstrings(data)
        mailfrom = args[0].decode("utf-8", "surrogateescape") if args else ""
        self.sender = _addr(mailfrom) or _addr(self._macro("{mail_addr}"))
        self.auth = self._macro("{auth_authen}")
        self._qid()
        early = self.app.decider.at_mail(self._envelope(), self.app.clock())
        if early is not None:
            self._log_decision(early.action, early.reasons, (), stage="mail")
            self._end()
            return [p.ACCEPT_PKT]
        return [p.CONTINUE_PKT]

    def _data(self) -> Step:
        self._qid()
        envelope = self._envelope()
        store, decider, clock = self.app.store, self.app.decider, self.app.clock

        def lookup() -> Classification:
            snap = store.snapshot(envelope.sender, envelope.recipients)
            return decider.at_data(envelope, snap, clock())

        return Job("data", lookup, self.app.decision_timeout - self.decision_s)

    def _after_data(self, c: Classification) -> list[bytes]:
        if self.decision_s > self.app.decision_timeout:
            raise DeadlinePassed(f"directory lookup took {self.decision_s:.1f}s")
        if not c.needs_content:
            self._log_decision(ACCEPT, c.reasons, c.specified, stage="data")
            self._end()
            return [p.ACCEPT_PKT]
        self.classification = c
        return [p.CONTINUE_PKT]

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

    def _header(self, name_b: bytes, value: bytes) -> None:
        name = name_b.decode("ascii", "replace")
        if not self.subject and name.lower() == "subject":
            self.subject = value.decode("utf-8", "replace")
        elif not self.message_id and name.lower() == "message-id":
            self.message_id = value.decode("ascii", "replace").strip()
        self._keep(name.encode("ascii", "replace") + b": " + value + b"\r\n")

    def _eom(self) -> Step:
        if self.deferred_error is not None:
            raise self.deferred_error
        c = self.classification
        if c is None:  # the MTA skipped DATA, or a hostile peer: fail closed
            raise DecisionFailed("end of message without a classification")
        self.queue_id = self._macro("i") or self.queue_id
        if self.queue_id and c.envelope.queue_id != self.queue_id:
            c = dataclasses.replace(c, envelope=dataclasses.replace(c.envelope, queue_id=self.queue_id))
        budget = self.app.decision_timeout - self.decision_s
        if budget <= 0:
            raise DeadlinePassed("no time left for the scan within milter.decision_timeout")
        raw = b"".join(self.chunks)
        self.chunks = [raw]
        facts = MessageFacts(received_at=c.at, queue_id=self.queue_id, message_id=self.message_id,
                             subject=self.subject, mta_host=self._macro("j"), size=self.size, raw=b"")
        decider, sink, size = self.app.decider, self.app.sink, self.size
        job: Job

        metrics = self.app.metrics

        def decide() -> Verdict:
            t = time.perf_counter()
            verdict = decider.at_end(c, raw, size)
            metrics.scanned(time.perf_counter() - t, size)
            if job.cancelled:
                raise DeadlinePassed("decided after the deadline: not recorded")
            if verdict.recorded:  # BEFORE acting; raises → failure action: never unrecorded
                sink.on_decision(verdict, dataclasses.replace(facts, raw=raw) if verdict.action == HOLD else facts)
            return verdict

        job = Job("eom", decide, budget)
        return job

    def _after_eom(self, verdict: Verdict) -> list[bytes]:
        if self.decision_s > self.app.decision_timeout:
            raise DeadlinePassed(f"decision took {self.decision_s:.1f}s (over milter.decision_timeout "
                                 f"{self.app.decision_timeout:g}s)")
        out = self._act(verdict)
        self._log_decision(verdict.action, verdict.reasons, verdict.specified, stage="eom",
                           findings=sorted({f"{f.kind}:{f.category}" for f in verdict.findings}),
                           rule=verdict.rule.number if verdict.rule else None)
        self._end()
        return out

    def _offered(self, action: int, name: str) -> None:
        """An action the MTA did not offer cannot be sent (the MTA would take the reply as a protocol error
        and apply its own default, maybe delivering a message to hold): the failure action instead, as
        pymilter's DisabledAction gives the libmilter engine. Found by tests/test_fuzz_milter.py."""
        if not self.actions & action:
            raise DecisionFailed(f"the MTA did not offer the {name} action")

    def _act(self, verdict: Verdict) -> list[bytes]:
        if verdict.action == ACCEPT:
            return [p.ACCEPT_PKT]
        if verdict.action == TAG:
            self._offered(p.F_ADDHDRS, "ADDHDRS")
            out = [p.addheader("X-RegFD-Action", "tag"), p.addheader("X-RegFD-Reasons", verdict.header_reasons())]
            if self.app.journal_bcc:
                self._offered(p.F_ADDRCPT, "ADDRCPT")
                out.append(p.addrcpt(f"<{self.app.journal_bcc}>"))
            prefix = self.app.subject_prefix
            if prefix and not self.subject.lstrip().startswith(prefix.strip()):
                if self.subject:
                    self._offered(p.F_CHGHDRS, "CHGHDRS")
                    out.append(p.chgheader("Subject", 1, prefix + self.subject.lstrip()))
                else:
                    out.append(p.addheader("Subject", prefix.strip()))
            return [*out, p.ACCEPT_PKT]
        if verdict.action == HOLD:
            self._offered(p.F_QUARANTINE, "QUARANTINE")
            return [p.quarantine(f"regfd hold: {verdict.header_reasons()}"[:200]), p.ACCEPT_PKT]
        if verdict.action == REJECT:
            return [p.replycode("550", "5.7.1", _percent(self.app.reject_text))]
        raise DecisionFailed(f"unknown verdict action {verdict.action!r}")

    # ----- helpers
    def _envelope(self) -> Envelope:
        if not self.client_addr:
            self.client_addr = self._macro("{client_addr}")
        return Envelope.from_raw(self.sender, self.recipients, self.auth, self.queue_id, self.client_addr)

    def _fail(self, stage: str, exc: BaseException) -> list[bytes]:
        """The configured failure action; logged with the exception (its traceback when a bug)."""
        f = self.app.failure
        bug = not isinstance(exc, (StoreUnavailable, DecisionFailed))
        log.error("milter.failure", stage=stage, queue_id=self.queue_id, sender=self.sender,
                  action=f.action, error=f"{type(exc).__name__}: {exc}", exc_info=exc if bug else None)
        self.app.metrics.failure(stage, failure_reason(exc), self.decision_s)
        self._end()
        if f.action == "accept":
            return [p.ACCEPT_PKT]
        if f.action == "reject":
            return [p.replycode("550", "5.7.1", _percent(f.reject_text))]
        return [p.replycode("451", "4.7.1", _percent(f.tempfail_text))]

    def _log_decision(self, action: str, reasons: Iterable[str], specified: Iterable[Any], stage: str,
                      findings: Iterable[str] = (), rule: int | None = None) -> None:
        self.app.metrics.message(action, stage, self.decision_s)
        log.info("milter.decision", queue_id=self.queue_id, sender=self.sender, rule=rule,
                 recipients=len(self.recipients), specified=[r.address for r in specified], action=action,
                 reasons=list(reasons), findings=list(findings), stage=stage, client=self.client_addr,
                 duration_ms=round(self.decision_s * 1000, 2),
                 elapsed_ms=round((time.monotonic() - self.t0) * 1000, 2))


_STAGE = {p.CONNECT: "connect", p.HELO: "helo", p.MAIL: "mail", p.RCPT: "rcpt", p.DATA: "data", p.HEADER: "header",
          p.EOH: "eoh", p.BODY: "body", p.BODYEOB: "eom", p.UNKNOWN: "unknown"}


def run_inline(session: Session, step: Step) -> list[bytes]:
    """Run a Job at once on this thread (tests, and tools without an event loop); replies pass through."""
    if isinstance(step, Job):
        try:
            outcome: Any = step.run()
        except Exception as exc:
            outcome = exc
        return session.resume(step, outcome)
    return step
