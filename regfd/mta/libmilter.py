"""The libmilter (pymilter) engine: a thin translation onto the session core (session.py).

Each pymilter callback becomes the core's event (its macros read with
getsymval, as libmilter keeps them), the core's `Job` (DATA lookup, EOM
decision) runs while the callback waits for it within the same budget the
asyncio engine gives it, and the replies become pymilter calls (addheader,
chgheader, addrcpt, quarantine, setreply, the return code). Everything the
adapter decides, and every piece of per-message state, is the core's: this
module keeps only the `SessionCore` of its connection.

Threading: libmilter runs callbacks for one connection one at a time and
pymilter builds one `RegfdMilter` per connection. A job runs on the app's
pool (app.executor), not on the callback's thread: Debian's libmilter
runs callbacks on a worker pool, so one connection's callbacks hop between
OS threads while pymilter keeps one PyThreadState per connection and
deletes it on another thread at close. The per-thread PyGILState slot of
the worker that created it then dangles, and the next C extension that
calls PyGILState_Ensure there (Hyperscan's match callback) crashes the
process (measured: SIGSEGV under Postfix). Threads the threading module
created have their own, stable thread state. Waiting on a future also makes
`milter.decision_timeout` a real bound: the answer does not wait for a job
that overruns it (the job then records nothing).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from typing import Any

import Milter
import structlog

from regfd.mta import reply as r
from regfd.mta.app import FailurePolicy, MilterApp
from regfd.mta.session import (
    INET_PROTOCOL,
    MACROS,
    UNIX_PROTOCOL,
    WANTED_ACTIONS,
    DeadlinePassed,
    Job,
    SessionCore,
    Step,
    deadline_passed,
)

log = structlog.get_logger("regfd.mta.libmilter")

# MilterApp and FailurePolicy live in app.py (the asyncio engine needs them without pymilter); importable from here too.
__all__ = ["FailurePolicy", "MilterApp", "QuietRegfdMilter", "RegfdMilter"]


def run_job(job: Job, executor: concurrent.futures.Executor, timeout: float) -> Any:
    """What the job returned or raised, waiting at most its budget (then it is cancelled: it records nothing)."""
    if job.budget <= 0:
        return DeadlinePassed("no time left within milter.decision_timeout")
    try:
        future = executor.submit(job.run)
    except RuntimeError as exc:  # the pool is shut down (the process is stopping): fail closed
        return exc
    done, _ = concurrent.futures.wait([future], timeout=job.budget)
    if not done:
        job.cancelled = True
        future.cancel()
        return deadline_passed(timeout)
    error = future.exception()
    return error if error is not None else future.result()


class RegfdMilter(Milter.Base):
    """One MTA connection (possibly several messages): pymilter's callbacks onto the session core."""

    quiet = False

    def __init__(self, app: MilterApp) -> None:
        self.app = app
        self.session = SessionCore(app, quiet=self.quiet)
        # Made without a negotiation: after QUIT_NC libmilter keeps the connection's options and makes a new
        # object for the next SMTP client. It checks each action against what it negotiated, so every action
        # wanted is allowed here (as pymilter does); the protocol is what this class negotiates (libmilter
        # answers a no-reply stage itself when the MTA cannot skip the reply), without SKIP, which the MTA
        # may not know.
        self.session.actions = WANTED_ACTIONS
        self.session.protocol = (UNIX_PROTOCOL if self.quiet else INET_PROTOCOL) & ~Milter.P_SKIP
        app.metrics.connection(True)

    # ----- negotiation
    def negotiate(self, opts: list[int]) -> int:
        """The core's choice of actions, protocol bits and macros, out of what the MTA offers."""
        try:
            offered, proto, _f2, _f3 = opts
            n = self.session.negotiate(offered, proto)
            self._actions = n.actions
            for stage, syms in (n.macros or {}).items():
                # Straight to the C context: pymilter 1.0.5's Base.setsymlist passes
                # bytes where its C module wants str (TypeError on Python 3).
                self._ctx.setsymlist(stage, " ".join(syms))
            opts[0] = n.actions
            opts[1] = self._protocol = n.protocol
            opts[2] = 0
            opts[3] = 0
        except Exception as exc:
            log.error("milter.negotiate_failed", error=str(exc), exc_info=True)
            return Milter.ALL_OPTS
        return Milter.CONTINUE

    # ----- callbacks: each is the core's event
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        """The client address: (IP, port, ...) on inet, the socket path on unix."""
        addr = hostaddr[0] if isinstance(hostaddr, tuple) and hostaddr else hostaddr
        return self._reply("connect", self.session.connect(str(addr or "")))

    def hello(self, hostname: str) -> int:
        """HELO/EHLO."""
        return self._reply("helo", self.session.helo())

    def envfrom(self, mailfrom: str, *params: str) -> int:
        """MAIL FROM."""
        return self._reply("mail", self.session.mail(mailfrom, self._macros(Milter.M_ENVFROM)))

    def envrcpt(self, rcpt: str, *params: str) -> int:
        """RCPT TO."""
        return self._reply("rcpt", self.session.rcpt(rcpt, self._macros(Milter.M_ENVRCPT)))

    def data(self) -> int:
        """DATA: the directory lookup runs here (no Specified Person: accepted before the body)."""
        return self._reply("data", self.session.data(self._macros(Milter.M_DATA)))

    @Milter.decode("bytes")
    def header(self, name: str, value: bytes) -> int:
        """One header, its value as bytes."""
        return self._reply("header", self.session.header(name, value))

    def eoh(self) -> int:
        """End of headers."""
        return self._reply("eoh", self.session.eoh())

    def body(self, chunk: bytes) -> int:
        """A body chunk."""
        return self._reply("body", self.session.body(chunk))

    def eom(self) -> int:
        """End of message: scan, judge, record, then the verdict's actions."""
        return self._reply("eom", self.session.eom(self._macros(Milter.M_EOM)))

    def abort(self) -> int:
        """The MTA abandoned the message."""
        self.session.abort()
        return Milter.CONTINUE

    def close(self) -> int:
        """The connection ended: a message still open stops counting as in flight."""
        self.session.close()
        self.app.metrics.connection(False)
        return Milter.CONTINUE

    # ----- translation
    def _macros(self, stage: int) -> dict[str, str]:
        """The macros the core reads at this stage, as libmilter has them (a missing one is no error)."""
        out = {}
        for name in MACROS[stage]:
            try:
                v = self.getsymval(name)
            except Exception:
                continue
            if v is not None:
                out[name] = v
        return out

    def _reply(self, stage: str, step: Step) -> int:
        """Run a job in this callback, then apply the replies; an error applying them is the failure action."""
        if isinstance(step, Job):
            step = self.session.finish(step, run_job(step, self.app.executor, self.app.decision_timeout))
        try:
            return self._apply(step)
        except Exception as exc:
            return self._apply(self.session.fail(stage, exc))

    def _apply(self, replies: r.Replies) -> int:
        if not replies:
            return Milter.NOREPLY
        *mods, final = replies
        for m in mods:
            if isinstance(m, r.AddHeader):
                self.addheader(m.name, m.value)
            elif isinstance(m, r.ChangeHeader):
                self.chgheader(m.name, m.index, m.value)
            elif isinstance(m, r.AddRcpt):
                self.addrcpt(m.rcpt)
            elif isinstance(m, r.Quarantine):
                self.quarantine(m.reason)
            else:
                raise TypeError(f"{m!r} is not a modification")
        if isinstance(final, r.Continue):
            return Milter.CONTINUE
        if isinstance(final, r.Accept):
            return Milter.ACCEPT
        if isinstance(final, r.Skip):
            return Milter.SKIP
        if isinstance(final, (r.Tempfail, r.Reject)):
            with contextlib.suppress(Exception):  # the reply text is a nicety; the code is what matters
                self.setreply(final.code, final.xcode, r.escaped(final.text))
            return Milter.TEMPFAIL if isinstance(final, r.Tempfail) else Milter.REJECT
        raise TypeError(f"{final!r} is not a final reply")


class QuietRegfdMilter(RegfdMilter):
    """The same adapter with fewer round trips, for unix sockets only.

    The core negotiates no connect/helo (the client address comes from the
    `{client_addr}` macro at MAIL) and no-reply headers and end-of-headers:
    the MTA streams them without waiting. On a TCP socket that would stall
    40 ms on delayed ACKs (Nagle meets delayed ACK); a unix socket has no
    Nagle. An error in a no-reply stage is kept and answered at end of message.
    """

    quiet = True
