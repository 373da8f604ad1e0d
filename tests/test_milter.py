"""The milter adapter driven callback by callback, without an MTA.

libmilter's context object only exists inside a live MTA connection, so
these tests hand the adapter a small recording stand-in (`FakeCtx`); the
store, policy table and config are the real ones (the test redis-server, or
a unix socket nobody listens on for "Redis down"). The scanner is a stub
here (one phrase per finding kind) because these tests are about the
adapter, not the lexicons; the end-to-end tests use the real scanner.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import Milter
import pytest

from regfd.config import load_config
from regfd.core.decision import Decider
from regfd.core.finding import Finding
from regfd.core.policy import Policy
from regfd.mta.libmilter import MilterApp, QuietRegfdMilter, RegfdMilter
from regfd.store.client import client_from_url
from regfd.store.redis_store import RedisStore


@dataclass
class FakeCtx:
    """Records what the milter asks of the MTA (libmilter's ctx cannot exist without one)."""

    macros: dict[str, str] = field(default_factory=dict)
    reply: tuple[Any, ...] = ()
    headers: list[tuple[str, str]] = field(default_factory=list)
    changed: list[tuple[str, int, str]] = field(default_factory=list)
    rcpts: list[str] = field(default_factory=list)
    quarantined: str | None = None
    symlists: dict[int, str] = field(default_factory=dict)
    priv: Any = None

    def getpriv(self) -> Any:
        """Where pymilter keeps the connection's milter object."""
        return self.priv

    def setpriv(self, p: Any) -> None:
        """Where pymilter keeps the connection's milter object."""
        self.priv = p

    def getsymval(self, name: str) -> str | None:
        """A macro the test put in `macros`; None for any other, as from an MTA that did not send it."""
        return self.macros.get(name)

    def setreply(self, rcode: str, xcode: str, *msg: str) -> None:
        """Keep the SMTP reply the milter set."""
        self.reply = (rcode, xcode) + msg

    def setsymlist(self, stage: int, macros: str) -> None:
        """Keep the macro list; asserts str, which pymilter's C module requires."""
        assert isinstance(macros, str), "pymilter's C setsymlist takes str"
        self.symlists[stage] = macros

    def addheader(self, name: str, value: str, idx: int) -> None:
        """Keep the added header (its position is not checked)."""
        self.headers.append((name, value))

    def chgheader(self, name: str, idx: int, value: str) -> None:
        """Keep the changed header with its index."""
        self.changed.append((name, idx, value))

    def addrcpt(self, rcpt: str, params: Any) -> None:
        """Keep the added recipient (the journal Bcc)."""
        self.rcpts.append(rcpt)

    def quarantine(self, reason: str) -> None:
        """Keep the hold reason."""
        self.quarantined = reason


PHRASES = {
    b"we will miss the quarter": Finding("material", "earnings", "we will miss the quarter", "...", "body"),
    b"embargoed until": Finding("embargo", "embargo", "embargoed until", "...", "body"),
}


def stub_scan(raw: bytes) -> list[Finding]:
    """A scanner that finds only the phrases in PHRASES, so the milter tests do not depend on the lexicons."""
    low = raw.lower()
    return [f for p, f in PHRASES.items() if p in low]


class RecordingSink:
    """A DecisionSink that keeps every call, or with `fail` raises StoreUnavailable as a Redis outage would."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[Any, Any]] = []
        self.fail = fail

    def on_decision(self, verdict: Any, facts: Any) -> None:
        """Keep the call, or raise when `fail` is set."""
        if self.fail:
            from regfd.errors import StoreUnavailable

            raise StoreUnavailable("record could not be written")
        self.calls.append((verdict, facts))


@pytest.fixture
def directory(regfd):  # type: ignore[no-untyped-def]
    """One Specified Person domain (bank.com) and one authorized officer (the CEO)."""
    assert regfd("registry", "add", "bank.com", "--category", "analyst").rc == 0
    assert regfd("officer", "add", "ceo@allient.com", "--role", "CEO").rc == 0
    return regfd


def make_app(regfd: Any, *, url: str | None = None, scan: Any = stub_scan, sink: Any = None,
             extra: str = "") -> tuple[MilterApp, Any]:
    """A MilterApp on the test's Redis prefix; `url` points it elsewhere (e.g. a dead Redis)."""
    if extra:
        regfd.write_config(extra=extra)
    config = load_config(regfd.config)
    store = RedisStore(client_from_url(url or regfd.redis_url, timeout=1), regfd.prefix)
    sink = sink if sink is not None else RecordingSink()
    decider = Decider(Policy.from_config(config), scan, config.limits.max_message_bytes)
    return MilterApp.from_config(config, store, sink, decider), sink


def run_message(app: MilterApp, sender: str, rcpts: list[str], body: bytes = b"Hello.\r\n",
                subject: str = "Hi", auth: str = "", qid: str = "4ABC123") -> tuple[FakeCtx, list[int]]:
    """Drive one message through the callbacks in MTA order; stops at the first final answer."""
    ctx = FakeCtx(macros={"i": qid, "{auth_authen}": auth, "j": "mx.allient.com"})
    m = RegfdMilter(app)
    m._setctx(ctx)
    opts = [Milter.CURR_ACTS, 0x1FFFFF, 0, 0]
    assert m.negotiate(opts) == Milter.CONTINUE
    steps: list[Callable[[], int]] = [
        lambda: m.connect("client", 2, ("127.0.0.1", 4000)),
        lambda: m.hello("client"),
        lambda: m.envfrom_bytes(f"<{sender}>".encode()),
        *[functools.partial(m.envrcpt_bytes, f"<{r}>".encode()) for r in rcpts],
        lambda: m.data(),
        lambda: m.header_bytes("Subject", subject.encode()),
        lambda: m.header_bytes("Message-ID", b"<x@allient.com>"),
        lambda: m.eoh(),
        lambda: m.body(body),
        lambda: m.eom(),
    ]
    codes = []
    for step in steps:
        rc = step()
        codes.append(rc)
        if rc not in (Milter.CONTINUE, Milter.SKIP):
            break
    m.close()
    assert app.inflight == 0
    return ctx, codes


def test_negotiates_only_needed_actions_and_keeps_data(directory):  # type: ignore[no-untyped-def]
    app, _ = make_app(directory)
    m = RegfdMilter(app)
    ctx = FakeCtx()
    m._setctx(ctx)
    opts = [Milter.CURR_ACTS, 0x1FFFFF, 0, 0]
    m.negotiate(opts)
    assert opts[0] == Milter.ADDHDRS | Milter.CHGHDRS | Milter.ADDRCPT | Milter.QUARANTINE | Milter.SETSYMLIST
    assert not opts[1] & Milter.P_NODATA, "data() must stay negotiated (a reply per event avoids delayed-ACK stalls)"
    assert not opts[1] & (Milter.P_NR_DATA | Milter.P_NR_HDR | Milter.P_NR_BODY | Milter.P_NR_EOH)
    assert "{auth_authen}" in ctx.symlists[Milter.M_ENVFROM].split()
    assert "i" in ctx.symlists[Milter.M_EOM].split()


def test_no_specified_person_is_accepted_at_data_without_the_body(directory):  # type: ignore[no-untyped-def]
    app, sink = make_app(directory)
    ctx, codes = run_message(app, "bob@allient.com", ["friend@example.org"])
    assert codes[-1] == Milter.ACCEPT and len(codes) == 5  # connect helo mail rcpt data
    assert sink.calls == []


def test_inbound_is_accepted_at_mail_from_without_redis(directory):  # type: ignore[no-untyped-def]
    app, sink = make_app(directory, url="unix:///nonexistent/redis.sock")
    ctx, codes = run_message(app, "someone@bank.com", ["bob@allient.com"])
    assert codes[-1] == Milter.ACCEPT and len(codes) == 3
    assert sink.calls == []


def test_system_sender_is_accepted_at_mail_from(directory):  # type: ignore[no-untyped-def]
    app, sink = make_app(directory, url="unix:///nonexistent/redis.sock")
    ctx, codes = run_message(app, "regfd@allient.com", ["analyst@bank.com"], body=b"embargoed until\r\n")
    assert codes[-1] == Milter.ACCEPT and len(codes) == 3


def test_employee_with_material_is_held_and_recorded_before(directory):  # type: ignore[no-untyped-def]
    app, sink = make_app(directory)
    ctx, codes = run_message(app, "bob@allient.com", ["analyst@bank.com"], body=b"We will miss the quarter.\r\n")
    assert codes[-1] == Milter.ACCEPT
    assert ctx.quarantined and "we will miss" not in ctx.quarantined.lower()
    (verdict, facts), = sink.calls
    assert verdict.action == "hold" and facts.queue_id == "4ABC123"
    assert b"We will miss the quarter" in facts.raw and facts.subject == "Hi"


def test_officer_with_material_is_tagged_without_matched_text(directory):  # type: ignore[no-untyped-def]
    app, sink = make_app(directory)
    ctx, codes = run_message(app, "ceo@allient.com", ["analyst@bank.com"], body=b"we will miss the quarter\r\n")
    assert codes[-1] == Milter.ACCEPT
    h = dict(ctx.headers)
    assert h["X-RegFD-Action"] == "tag"
    assert "material" in h["X-RegFD-Reasons"] and "miss" not in h["X-RegFD-Reasons"]
    assert ctx.quarantined is None and ctx.rcpts == [] and ctx.changed == []


def test_tag_with_journal_bcc_and_subject_prefix(directory):  # type: ignore[no-untyped-def]
    app, sink = make_app(directory,
                         extra='[milter]\njournal_bcc = "journal@allient.com"\nsubject_prefix = "[RegFD] "\n')
    ctx, codes = run_message(app, "ceo@allient.com", ["analyst@bank.com"], body=b"we will miss the quarter\r\n")
    assert ctx.rcpts == ["<journal@allient.com>"]
    assert ctx.changed == [("Subject", 1, "[RegFD] Hi")]


def test_embargo_from_employee_is_rejected_550(directory):  # type: ignore[no-untyped-def]
    app, sink = make_app(directory)
    ctx, codes = run_message(app, "bob@allient.com", ["analyst@bank.com"], body=b"Embargoed until Monday\r\n")
    assert codes[-1] == Milter.REJECT
    assert ctx.reply[:2] == ("550", "5.7.1") and "Corporate Secretary" in ctx.reply[2]
    assert sink.calls[0][0].action == "reject"


def test_officer_without_findings_accepted_but_recorded(directory):  # type: ignore[no-untyped-def]
    app, sink = make_app(directory)
    ctx, codes = run_message(app, "ceo@allient.com", ["analyst@bank.com"])
    assert codes[-1] == Milter.ACCEPT and ctx.headers == []
    assert [v.action for v, _ in sink.calls] == ["accept"]


# ----- fail closed
@pytest.mark.parametrize("failure,code,reply", [
    ("tempfail", Milter.TEMPFAIL, ("451", "4.7.1")),
    ("reject", Milter.REJECT, ("550", "5.7.1")),
    ("accept", Milter.ACCEPT, None),
])
def test_store_down_answers_the_configured_failure_action(directory, failure, code, reply):  # type: ignore[no-untyped-def]
    app, sink = make_app(directory, url="unix:///nonexistent/redis.sock",
                         extra=f'[milter]\nfailure_action = "{failure}"\n')
    ctx, codes = run_message(app, "bob@allient.com", ["analyst@bank.com"])
    assert codes[-1] == code and len(codes) == 5  # answered at DATA
    assert (ctx.reply[:2] if ctx.reply else None) == reply
    assert sink.calls == []


def test_exception_in_scanner_tempfails(directory):  # type: ignore[no-untyped-def]
    def broken(raw: bytes) -> list[Finding]:
        raise RuntimeError("scanner bug")

    app, sink = make_app(directory, scan=broken)
    ctx, codes = run_message(app, "bob@allient.com", ["analyst@bank.com"])
    assert codes[-1] == Milter.TEMPFAIL and ctx.reply[:2] == ("451", "4.7.1")
    assert ctx.quarantined is None and ctx.headers == []


def test_sink_failure_tempfails_never_delivers_unrecorded(directory):  # type: ignore[no-untyped-def]
    app, sink = make_app(directory, sink=RecordingSink(fail=True))
    ctx, codes = run_message(app, "ceo@allient.com", ["analyst@bank.com"])
    assert codes[-1] == Milter.TEMPFAIL and ctx.reply[:2] == ("451", "4.7.1")


def test_exception_in_header_callback_tempfails(directory):  # type: ignore[no-untyped-def]
    app, _ = make_app(directory)
    m = RegfdMilter(app)
    ctx = FakeCtx(macros={"i": "Q1"})
    m._setctx(ctx)
    m.negotiate([Milter.CURR_ACTS, 0x1FFFFF, 0, 0])
    m.envfrom_bytes(b"<bob@allient.com>")
    m.envrcpt_bytes(b"<analyst@bank.com>")
    assert m.data() == Milter.CONTINUE
    assert m.header_bytes("Subject", object()) == Milter.TEMPFAIL  # type: ignore[arg-type]
    assert app.inflight == 0


def test_decision_over_timeout_fails_closed(directory):  # type: ignore[no-untyped-def]
    import time

    def slow(raw: bytes) -> list[Finding]:
        time.sleep(0.3)
        return []

    app, sink = make_app(directory, scan=slow, extra="[milter]\ndecision_timeout = 0.2\n")
    ctx, codes = run_message(app, "ceo@allient.com", ["analyst@bank.com"])
    assert codes[-1] == Milter.TEMPFAIL and sink.calls == []


def test_oversized_message_is_unscannable_not_buffered(directory):  # type: ignore[no-untyped-def]
    seen: list[int] = []

    def scan(raw: bytes) -> list[Finding]:
        seen.append(len(raw))
        return []

    app, sink = make_app(directory, scan=scan, extra="[limits]\nmax_message_bytes = 1000\n")
    ctx, codes = run_message(app, "ceo@allient.com", ["analyst@bank.com"], body=b"x" * 5000)
    assert seen == [1001]
    verdict = sink.calls[0][0]
    assert [f.kind for f in verdict.findings] == ["unscannable"] and verdict.action == "tag"


def test_redis_reconnects_after_restart(tmp_path: Path, regfd):  # type: ignore[no-untyped-def]
    """redis-py's pool drops the dead connection and the next message gets a real verdict."""
    from tests.conftest import start_redis, stop_redis

    server = start_redis(tmp_path / "r")
    try:
        app, sink = make_app(regfd, url=server.url)
        client_from_url(server.url).hset(regfd.prefix + "registry", "bank.com",
                                         '{"pattern":"bank.com","category":"analyst"}')
        assert run_message(app, "bob@allient.com", ["analyst@bank.com"])[1][-1] == Milter.ACCEPT
        stop_redis(server)
        assert run_message(app, "bob@allient.com", ["analyst@bank.com"])[1][-1] == Milter.TEMPFAIL
        server = start_redis(tmp_path / "r")
        client_from_url(server.url).hset(regfd.prefix + "registry", "bank.com",
                                         '{"pattern":"bank.com","category":"analyst"}')
        ctx, codes = run_message(app, "bob@allient.com", ["analyst@bank.com"])
        assert codes[-1] == Milter.ACCEPT and dict(ctx.headers)["X-RegFD-Action"] == "tag"
    finally:
        stop_redis(server)


def test_quiet_variant_for_unix_sockets_skips_connect_helo_and_header_replies(directory):  # type: ignore[no-untyped-def]
    app, sink = make_app(directory)
    app.quiet = True
    m = app.factory()
    assert isinstance(m, QuietRegfdMilter)
    ctx = FakeCtx(macros={"i": "Q9", "{client_addr}": "192.0.2.7"})
    m._setctx(ctx)
    opts = [Milter.CURR_ACTS, 0x1FFFFF, 0, 0]
    m.negotiate(opts)
    assert opts[1] & Milter.P_NOCONNECT and opts[1] & Milter.P_NOHELO
    assert opts[1] & Milter.P_NR_HDR and opts[1] & Milter.P_NR_EOH
    assert not opts[1] & (Milter.P_NODATA | Milter.P_NR_DATA | Milter.P_NR_BODY)
    assert "{client_addr}" in ctx.symlists[Milter.M_ENVFROM].split()
    assert m.envfrom_bytes(b"<ceo@allient.com>") == Milter.CONTINUE
    m.envrcpt_bytes(b"<analyst@bank.com>")
    assert m.data() == Milter.CONTINUE
    assert m.header_bytes("Subject", b"Hi") == Milter.NOREPLY
    assert m.eoh() == Milter.NOREPLY
    m.body(b"we will miss the quarter\r\n")
    assert m.eom() == Milter.ACCEPT and dict(ctx.headers)["X-RegFD-Action"] == "tag"
    assert sink.calls[0][0].envelope.client_addr == "192.0.2.7"


def test_quiet_variant_answers_a_header_error_at_eom(directory):  # type: ignore[no-untyped-def]
    app, sink = make_app(directory)
    app.quiet = True
    m = app.factory()
    ctx = FakeCtx(macros={"i": "Q10"})
    m._setctx(ctx)
    m.negotiate([Milter.CURR_ACTS, 0x1FFFFF, 0, 0])
    m.envfrom_bytes(b"<ceo@allient.com>")
    m.envrcpt_bytes(b"<analyst@bank.com>")
    m.data()
    assert m.header_bytes("Subject", object()) == Milter.NOREPLY  # type: ignore[arg-type]
    m.eoh()
    m.body(b"hello\r\n")
    assert m.eom() == Milter.TEMPFAIL and ctx.reply[:2] == ("451", "4.7.1")
    assert sink.calls == [] and app.inflight == 0
