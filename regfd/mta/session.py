"""One MTA connection as a pure state machine, shared by both engines: events in, replies out.

Two layers, one state:

- `SessionCore` is the conversation with plain values. Each MTA event is a
  method (`negotiate`, `macros`, `connect`, `helo`, `mail`, `rcpt`, `data`,
  `header`, `eoh`, `body`, `eom`, `unknown`, `abort`, `close`) that returns
  a tuple of `Reply` values (reply.py: continue, accept, skip, tempfail,
  reject, and the modifications add_header, change_header, add_rcpt,
  quarantine; the empty tuple for a stage negotiated no-reply) or a `Job`.
  All the per-message state and every decision of the adapter live here:
  the early accept at MAIL, the DATA lookup and its accept, body buffering
  and truncation, macros and queue id, the EOM decision and its actions,
  and the failure action on any exception. No protocol bytes inside: the
  libmilter engine (libmilter.py) turns each pymilter callback into the
  event and the replies into pymilter calls.
- `Session` is the same core speaking the wire protocol (protocol.py) for
  the asyncio engine: `handle(packet)` decodes, calls the event, encodes
  the replies. Packets stay that engine's form because it is the hot path:
  the constant answers (continue, accept, skip) map to precomputed bytes by
  identity, so a packet costs no more allocation than before the split.

No sockets, threads or clocks beyond `time.monotonic` for the decision
budget. Blocking work (the directory lookup at DATA: Redis; the end of
message: scan, judge and record) is never done here: the event returns a
`Job`, the engine runs `job.run()` wherever it likes within `job.budget`
seconds and gives the outcome (or the exception) to `finish` (`resume` on
the wire), which returns the replies. Until then the engine must not hand
the session another event.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
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
from regfd.mta import reply as r
from regfd.ports import DecisionSink, DirectoryReader, Metrics

log = structlog.get_logger("regfd.mta.session")

WANTED_ACTIONS = p.F_ADDHDRS | p.F_CHGHDRS | p.F_ADDRCPT | p.F_QUARANTINE | p.F_SETSYMLIST

# Protocol bits asked for. On inet every stage the MTA sends is answered
# (FIELD-NOTES §1: a no-reply stage over TCP meets a 40 ms delayed ACK);
# unknown commands are never needed and SKIP ends an oversized body early.
# On a unix socket (no Nagle) connect and helo are left out and headers and
# end-of-headers are no-reply (libmilter's QuietRegfdMilter negotiates the same, from here).
INET_PROTOCOL = p.P_NOUNKNOWN | p.P_SKIP
UNIX_PROTOCOL = INET_PROTOCOL | p.P_NOCONNECT | p.P_NOHELO | p.P_NR_HDR | p.P_NR_EOH

# Macros read per stage (Sendmail and Postfix share these names). `i` is
# asked for at every stage where an MTA may know it: Postfix knows it after
# the first valid RCPT (or at MAIL with smtpd_delay_open_until_valid_rcpt=no),
# Sendmail at MAIL; the value seen at EOM is the fallback.
MACROS: dict[int, tuple[str, ...]] = {
    p.M_ENVFROM: ("i", "{auth_authen}", "{mail_addr}", "{client_addr}"),
    p.M_ENVRCPT: ("i", "{rcpt_addr}"),
    p.M_DATA: ("i",),
    p.M_EOM: ("i", "j"),
}

# Recipients kept per message: far above any MTA's limit (Postfix: 1000), a bound for a hostile peer.
MAX_RECIPIENTS = 100_000

# Where each stage's macros are kept, as libmilter keeps them: a lookup searches from the last slot down
# (end-of-message macros first, then end-of-headers, then the envelope's, as measured against libmilter by
# tests/test_engine_differential.py); the connect, helo, mail and rcpt commands drop the slots after their
# own, an ABORT drops none; macros for any other stage (header, body) are ignored.
STAGES = ("connect", "helo", "mail", "rcpt", "data", "eoh", "eom")
_SLOT = {name: i for i, name in enumerate(STAGES)}


class Failure(Protocol):
    """What to answer when no decision can be taken (app.FailurePolicy)."""

    @property
    def action(self) -> str: ...

    @property
    def tempfail_text(self) -> str: ...

    @property
    def reject_text(self) -> str: ...


class SessionApp(Protocol):
    """State shared by every connection (app.MilterApp has all of it)."""

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
    """Blocking work for the engine: run `run()` off its event loop or callback thread within `budget` seconds,
    then `finish` (`resume` on the wire)."""

    stage: str  # "data" | "eom"
    run: Callable[[], Any]
    budget: float
    started: float = field(default_factory=time.monotonic)
    # Set by the engine when the budget is over: a scan finishing later must not record.
    cancelled: bool = False


Step = r.Replies | Job


def deadline_passed(timeout: float) -> DeadlinePassed:
    """What an engine gives `finish` when a job's budget is over (the same text from both engines)."""
    return DeadlinePassed(f"decision not finished within milter.decision_timeout ({timeout:g}s)")


def _addr(value: str) -> str:
    return value.strip().strip("<>").strip()


class SessionCore:
    """One MTA connection (possibly several messages), as events and replies. Not thread-safe: one engine
    thread or task drives it, one event at a time."""

    def __init__(self, app: SessionApp, quiet: bool = False) -> None:
        self.app = app
        self.quiet = quiet
        self.negotiated = False
        self.closed = False
        self.actions = 0
        self.protocol = 0
        self.client_addr = ""
        self.pending: Job | None = None
        self._macros: dict[int, Mapping[str, str]] = {}
        self._in_message = False
        self._reset()

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

    # ----- macros
    def macros(self, stage: str, values: Mapping[str, str]) -> None:
        """The MTA's macros for `stage` (one of STAGES; others are ignored); names as `i` or `{i}`."""
        slot = _SLOT.get(stage)
        if slot is not None:
            self._macros[slot] = values

    def _drop_macros_after(self, slot: int) -> None:
        """A new stage began: the macros of the later ones are stale (libmilter's mi_clr_macros)."""
        for later in [k for k in self._macros if k > slot]:
            del self._macros[later]

    def _macro(self, name: str) -> str:
        name = p.macro_name(name)
        for pos in sorted(self._macros, reverse=True):  # the last slot first, as libmilter
            v = self._macros[pos].get(name)
            if v is not None:
                return v
        return ""

    def _qid(self) -> None:
        if not self.queue_id:
            self.queue_id = self._macro("i")

    # ----- connection events
    def negotiate(self, offered: int, protocol: int) -> r.Negotiated:
        """Ask only for the actions and macros used, and the protocol bits above, of what the MTA offers."""
        self._macros = {}
        self.actions = offered & WANTED_ACTIONS
        self.protocol = protocol & (UNIX_PROTOCOL if self.quiet else INET_PROTOCOL)
        missing = (p.F_ADDHDRS | p.F_QUARANTINE) & ~offered
        if missing:
            log.warning("milter.negotiate", problem="MTA does not offer a needed action",
                        offered=hex(offered), missing=hex(missing))
        self.negotiated = True
        return r.Negotiated(self.actions, self.protocol, MACROS if self.actions & p.F_SETSYMLIST else None)

    def connect(self, client_addr: str) -> Step:
        """Remember the client address (IP or socket path; '' when unknown) for the envelope and the log."""
        self._drop_macros_after(_SLOT["connect"])
        if client_addr:
            self.client_addr = client_addr
        return self._answered(p.P_NR_CONN)

    def helo(self) -> Step:
        """Negotiated on inet only so that the stage is answered (see the protocol bits above)."""
        self._drop_macros_after(_SLOT["helo"])
        return self._answered(p.P_NR_HELO)

    def unknown(self) -> Step:
        """An unknown SMTP command (negotiated away; answered if an MTA sends one anyway)."""
        return self._answered(p.P_NR_UNKN)

    def abort(self) -> None:
        """The MTA abandoned the message (RSET, or the client left): forget it, stop counting it in flight."""
        self._end()
        self._reset()  # the macros stay until the next stage drops them, as in libmilter

    def restart(self) -> None:
        """QUIT_NC: the MTA keeps the connection, and libmilter what was negotiated and the connect and helo
        macros (measured by tests/test_engine_differential.py); the rest starts again."""
        self._end()
        self._reset()
        self._macros = {k: v for k, v in self._macros.items() if k < _SLOT["mail"]}
        self.client_addr = ""

    def close(self) -> None:
        """The connection is gone: a message still open stops counting as in flight."""
        self._end()
        self.closed = True

    def _answered(self, no_reply_bit: int) -> r.Replies:
        return r.NO_REPLY if self.protocol & no_reply_bit else r.CONTINUED

    def _failed(self, stage: str, no_reply_bit: int, exc: Exception) -> r.Replies:
        """Fail closed, whatever went wrong: now, or at end of message when this stage cannot be answered."""
        if self.protocol & no_reply_bit:
            self.deferred_error = self.deferred_error or exc
            return r.NO_REPLY
        return self._fail(stage, exc)

    # ----- message events
    def mail(self, sender: str, macros: Mapping[str, str] | None = None) -> Step:
        """Start a message: inbound and system mail is accepted here, before any lookup or body.

        During a graceful stop the answer is 451, so the client keeps the message and retries.
        """
        if macros is not None:
            self.macros("mail", macros)
        self._drop_macros_after(_SLOT["mail"])
        try:
            self._end()
            self._reset()
            if not self._begin():  # stopping: the MTA keeps the message and retries
                self.app.metrics.failure("mail", REASON_STOPPING, 0.0)
                f = self.app.failure
                return (r.Tempfail("451", "4.7.1", f.tempfail_text),)
            self.sender = _addr(sender) or _addr(self._macro("{mail_addr}"))
            self.auth = self._macro("{auth_authen}")
            self._qid()
            early = self.app.decider.at_mail(self._envelope(), self.app.clock())
            if early is not None:
                self._log_decision(early.action, early.reasons, (), stage="mail")
                self._end()
                return r.ACCEPTED
        except Exception as exc:
            return self._failed("mail", p.P_NR_MAIL, exc)
        return self._answered(p.P_NR_MAIL)

    def rcpt(self, rcpt: str, macros: Mapping[str, str] | None = None) -> Step:
        """Collect the recipient; nothing is decided until DATA, when all are known."""
        if macros is not None:
            self.macros("rcpt", macros)
        self._drop_macros_after(_SLOT["rcpt"])
        try:
            a = _addr(rcpt) or _addr(self._macro("{rcpt_addr}"))
            if a:
                if len(self.recipients) >= MAX_RECIPIENTS:
                    raise DecisionFailed(f"more than {MAX_RECIPIENTS} recipients")
                self.recipients.append(a)
            self._qid()
        except Exception as exc:
            return self._failed("rcpt", p.P_NR_RCPT, exc)
        return self._answered(p.P_NR_RCPT)

    def data(self, macros: Mapping[str, str] | None = None) -> Step:
        """All recipients are known: a Job for one directory snapshot and the classification."""
        if macros is not None:
            self.macros("data", macros)
        try:
            self._qid()
            envelope = self._envelope()
        except Exception as exc:
            return self._failed("data", p.P_NR_DATA, exc)
        store, decider, clock = self.app.store, self.app.decider, self.app.clock

        def lookup() -> Classification:
            snap = store.snapshot(envelope.sender, envelope.recipients)
            return decider.at_data(envelope, snap, clock())

        self.pending = Job("data", lookup, self.app.decision_timeout - self.decision_s)
        return self.pending

    def _after_data(self, c: Classification) -> r.Replies:
        if self.decision_s > self.app.decision_timeout:
            raise DeadlinePassed(f"directory lookup took {self.decision_s:.1f}s")
        if not c.needs_content:  # no Specified Person: accepted before the body is sent
            self._log_decision(ACCEPT, c.reasons, c.specified, stage="data")
            self._end()
            return r.ACCEPTED
        self.classification = c
        return self._answered(p.P_NR_DATA)

    def header(self, name: str | bytes, value: bytes) -> Step:
        """Keep the header for the scan (and the subject and Message-ID for the record)."""
        try:
            if isinstance(name, bytes):
                name = name.decode("ascii", "replace")
            if not self.subject and name.lower() == "subject":
                self.subject = value.decode("utf-8", "replace")
            elif not self.message_id and name.lower() == "message-id":
                self.message_id = value.decode("ascii", "replace").strip()
            self._keep(name.encode("ascii", "replace") + b": " + value + b"\r\n")
        except Exception as exc:
            return self._failed("header", p.P_NR_HDR, exc)
        return self._answered(p.P_NR_HDR)

    def eoh(self) -> Step:
        """Keep the blank line that ends the headers, so the buffer is the message as sent."""
        try:
            self._keep(b"\r\n")
        except Exception as exc:
            return self._failed("eoh", p.P_NR_EOH, exc)
        return self._answered(p.P_NR_EOH)

    def body(self, chunk: bytes) -> Step:
        """Buffer the chunk; once over the size limit, ask the MTA to skip the rest if it can."""
        try:
            self._keep(chunk)
        except Exception as exc:
            return self._failed("body", p.P_NR_BODY, exc)
        if self.protocol & p.P_NR_BODY:
            return r.NO_REPLY
        if self.truncated and self.protocol & p.P_SKIP:
            return r.SKIPPED  # over the limit: no need to receive the rest
        return r.CONTINUED

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

    def eom(self, macros: Mapping[str, str] | None = None, chunk: bytes = b"") -> Step:
        """End of message (with its last chunk, if the MTA sends one there): a Job to scan, judge and record
        (the sink, BEFORE acting); its verdict's actions come from `finish`."""
        if macros is not None:
            self.macros("eom", macros)
        try:
            if chunk:
                self._keep(chunk)
            job = self._eom()
        except Exception as exc:
            return self._fail("eom", exc)
        self.pending = job
        return job

    def _eom(self) -> Job:
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
        decider, sink, size, metrics = self.app.decider, self.app.sink, self.size, self.app.metrics
        job: Job

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

    def finish(self, job: Job, outcome: Any) -> r.Replies:
        """The replies once `job` ran: `outcome` is what `job.run()` returned, or the exception it raised."""
        if job is not self.pending:
            raise RuntimeError("finish of a job this session is not waiting for")
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

    def _after_eom(self, verdict: Verdict) -> r.Replies:
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
        pymilter's DisabledAction did for the libmilter engine. Found by tests/test_fuzz_milter.py."""
        if not self.actions & action:
            raise DecisionFailed(f"the MTA did not offer the {name} action")

    def _act(self, verdict: Verdict) -> r.Replies:
        if verdict.action == ACCEPT:
            return r.ACCEPTED
        if verdict.action == TAG:
            self._offered(p.F_ADDHDRS, "ADDHDRS")
            out: list[r.Reply] = [r.AddHeader("X-RegFD-Action", "tag"),
                                  r.AddHeader("X-RegFD-Reasons", verdict.header_reasons())]
            if self.app.journal_bcc:
                self._offered(p.F_ADDRCPT, "ADDRCPT")
                out.append(r.AddRcpt(f"<{self.app.journal_bcc}>"))
            prefix = self.app.subject_prefix
            if prefix and not self.subject.lstrip().startswith(prefix.strip()):
                if self.subject:
                    self._offered(p.F_CHGHDRS, "CHGHDRS")
                    out.append(r.ChangeHeader("Subject", 1, prefix + self.subject.lstrip()))
                else:
                    out.append(r.AddHeader("Subject", prefix.strip()))
            return (*out, r.ACCEPT)
        if verdict.action == HOLD:
            self._offered(p.F_QUARANTINE, "QUARANTINE")
            return r.Quarantine(f"regfd hold: {verdict.header_reasons()}"[:200]), r.ACCEPT
        if verdict.action == REJECT:
            return (r.Reject("550", "5.7.1", self.app.reject_text),)
        raise DecisionFailed(f"unknown verdict action {verdict.action!r}")

    # ----- helpers
    def _envelope(self) -> Envelope:
        if not self.client_addr:
            self.client_addr = self._macro("{client_addr}")
        return Envelope.from_raw(self.sender, self.recipients, self.auth, self.queue_id, self.client_addr)

    def fail(self, stage: str, exc: BaseException) -> r.Replies:
        """The configured failure action for an error outside the core (an engine could not apply a reply)."""
        return self._fail(stage, exc)

    def _fail(self, stage: str, exc: BaseException) -> r.Replies:
        """The configured failure action; logged with the exception (its traceback when a bug)."""
        f = self.app.failure
        bug = not isinstance(exc, (StoreUnavailable, DecisionFailed))
        log.error("milter.failure", stage=stage, queue_id=self.queue_id, sender=self.sender,
                  action=f.action, error=f"{type(exc).__name__}: {exc}", exc_info=exc if bug else None)
        self.app.metrics.failure(stage, failure_reason(exc), self.decision_s)
        self._end()
        if f.action == "accept":
            return r.ACCEPTED
        if f.action == "reject":
            return (r.Reject("550", "5.7.1", f.reject_text),)
        return (r.Tempfail("451", "4.7.1", f.tempfail_text),)

    def _log_decision(self, action: str, reasons: Iterable[str], specified: Iterable[Any], stage: str,
                      findings: Iterable[str] = (), rule: int | None = None) -> None:
        self.app.metrics.message(action, stage, self.decision_s)
        log.info("milter.decision", queue_id=self.queue_id, sender=self.sender, rule=rule,
                 recipients=len(self.recipients), specified=[x.address for x in specified], action=action,
                 reasons=list(reasons), findings=list(findings), stage=stage, client=self.client_addr,
                 duration_ms=round(self.decision_s * 1000, 2),
                 elapsed_ms=round((time.monotonic() - self.t0) * 1000, 2))


# ----------------------------------------------------------------------------- the wire form (asyncio engine)
def _encode(reply: r.Reply) -> bytes:
    """One reply as its packet (libmilter's encoding, checked by tests/test_engine_differential.py)."""
    if isinstance(reply, r.Continue):
        return p.CONTINUE_PKT
    if isinstance(reply, r.Accept):
        return p.ACCEPT_PKT
    if isinstance(reply, r.Skip):
        return p.SKIP_PKT
    if isinstance(reply, (r.Tempfail, r.Reject)):
        return p.replycode(reply.code, reply.xcode, r.escaped(reply.text))
    if isinstance(reply, r.AddHeader):
        return p.addheader(reply.name, reply.value)
    if isinstance(reply, r.ChangeHeader):
        return p.chgheader(reply.name, reply.index, reply.value)
    if isinstance(reply, r.AddRcpt):
        return p.addrcpt(reply.rcpt)
    return p.quarantine(reply.reason)


def encode(replies: r.Replies) -> list[bytes]:
    """Replies as packets; the constant ones are precomputed."""
    if replies is r.CONTINUED:
        return [p.CONTINUE_PKT]
    if not replies:
        return []
    if replies is r.ACCEPTED:
        return [p.ACCEPT_PKT]
    return [_encode(x) for x in replies]


def _first(data: bytes) -> str:
    args = p.cstrings(data)
    return args[0].decode("utf-8", "surrogateescape") if args else ""


def _header(s: SessionCore, data: bytes) -> Step:
    name, value = p.decode_header(data)
    return s.header(name, value)


# The message commands as events: decoding (a ProtocolError closes the connection) happens before the core.
_EVENTS: dict[bytes, Callable[[SessionCore, bytes], Step]] = {
    p.BODY: SessionCore.body,
    p.HEADER: _header,
    p.EOH: lambda s, d: s.eoh(),
    p.BODYEOB: lambda s, d: s.eom(chunk=d),
    p.MAIL: lambda s, d: s.mail(_first(d)),
    p.RCPT: lambda s, d: s.rcpt(_first(d)),
    p.DATA: lambda s, d: s.data(),
    p.CONNECT: lambda s, d: s.connect(p.decode_connect(d)[1]),
    p.HELO: lambda s, d: s.helo(),
    p.UNKNOWN: lambda s, d: s.unknown(),
}

# Which stage a macro packet's command names.
_MACRO_STAGE = {p.CONNECT: "connect", p.HELO: "helo", p.MAIL: "mail", p.RCPT: "rcpt", p.DATA: "data",
                p.EOH: "eoh", p.BODYEOB: "eom"}


class Session(SessionCore):
    """The session core on the wire: packets in, reply bytes out (the asyncio engine, the fuzzers)."""

    def handle(self, pkt: p.Packet) -> list[bytes] | Job:
        """Replies to one packet (possibly none), or a Job whose outcome goes to `resume`.

        Raises `ProtocolError` when the peer broke the protocol: the engine closes the connection.
        """
        if self.pending is not None:
            raise p.ProtocolError("packet while a decision is pending")
        cmd = pkt.cmd
        event = _EVENTS.get(cmd)
        if event is not None:
            if not self.negotiated:
                raise p.ProtocolError(f"command {cmd!r} before option negotiation")
            step = event(self, pkt.data)
            if step is r.CONTINUED:
                return [p.CONTINUE_PKT]
            if isinstance(step, Job):
                return step
            return encode(step)
        if cmd == p.OPTNEG:
            return [self._optneg(pkt.data)]
        if cmd == p.QUIT:
            self.close()
            return []
        if not self.negotiated:
            raise p.ProtocolError(f"command {cmd!r} before option negotiation")
        if cmd == p.MACRO:
            stage, values = p.decode_macros(pkt.data)
            self.macros(_MACRO_STAGE.get(stage, ""), values)
            return []
        if cmd == p.ABORT:
            self.abort()
            return []
        if cmd == p.QUIT_NC:
            self.restart()
            return []
        raise p.ProtocolError(f"unknown command {cmd!r}")

    def resume(self, job: Job, outcome: Any) -> list[bytes]:
        """`finish`, as packets."""
        return encode(self.finish(job, outcome))

    def _optneg(self, data: bytes) -> bytes:
        version, offered, proto = p.decode_optneg(data)
        if version < 2:
            raise p.ProtocolError(f"milter protocol version {version} is too old")
        if offered == 0:  # as libmilter: no actions offered means a version-1 MTA's (found by bench_fuzz.py)
            offered = p.V1_ACTIONS
        if proto == 0:  # and no protocol steps its version-1 protocol (found by test_engine_differential.py)
            proto = p.V1_PROTOCOL
        n = self.negotiate(offered, proto)
        return p.optneg(min(version, p.VERSION), n.actions, n.protocol, n.macros)


def run_inline(session: Session, step: list[bytes] | Job) -> list[bytes]:
    """Run a Job at once on this thread (tests, and tools without an event loop); replies pass through."""
    if isinstance(step, Job):
        try:
            outcome: Any = step.run()
        except Exception as exc:
            outcome = exc
        return session.resume(step, outcome)
    return step
