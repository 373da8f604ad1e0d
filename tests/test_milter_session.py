"""The sans-IO session (regfd/mta/session.py), packet by packet, and a differential test against libmilter's adapter.

Differential: the same packet sequences (as Postfix sends them) go to a
`Session` and to pymilter's `RegfdMilter`/`QuietRegfdMilter` (the libmilter
engine's adapter), each with its own sink on the same directory. For
RegfdMilter the test plays libmilter's part: it decodes each packet, calls
the callback libmilter would call, and encodes what the callback asked for
(setreply, addheader, chgheader, addrcpt, quarantine, the return code) the
way libmilter puts it on the wire. Compared: the reply bytes to every
packet (negotiation included), the recorded verdicts and their facts, and
the in-flight count afterwards. What is not compared: libmilter's own C
framing (the Postfix and miltertest tests cover that for both engines).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import Milter
import pytest

from regfd.core.finding import Finding
from regfd.mta import protocol as p
from regfd.mta.libmilter import MilterApp, QuietRegfdMilter, RegfdMilter
from regfd.mta.session import INET_PROTOCOL, UNIX_PROTOCOL, Job, Session, run_inline
from tests.test_milter import RecordingSink, make_app


@pytest.fixture
def directory(regfd):  # type: ignore[no-untyped-def]
    """One Specified Person domain (bank.com) and one authorized officer (the CEO), as in test_milter."""
    assert regfd("registry", "add", "bank.com", "--category", "analyst").rc == 0
    assert regfd("officer", "add", "ceo@allient.com", "--role", "CEO").rc == 0
    return regfd

ALL_ACTIONS = 0x1FF
ALL_PROTOCOL = 0x1FFFFF


def pk(cmd: bytes, data: bytes = b"") -> p.Packet:
    """A packet as the parser would return it."""
    return p.Packet(cmd, data)


def z(*parts: str | bytes) -> bytes:
    """NUL-terminated strings, concatenated."""
    return b"".join((x.encode() if isinstance(x, str) else x) + b"\0" for x in parts)


def macros(stage: bytes, **values: str) -> p.Packet:
    """A macro packet; `auth_authen` → {auth_authen}."""
    data = b"".join(z(k if len(k) == 1 else "{" + k + "}", v) for k, v in values.items())
    return pk(p.MACRO, stage + data)


def negotiation() -> p.Packet:
    """Postfix 3.7's offer: version 6, every action, every protocol bit."""
    return pk(p.OPTNEG, struct.pack(">III", 6, ALL_ACTIONS, ALL_PROTOCOL))


def message(sender: str, rcpts: list[str], body: bytes = b"Hello.\r\n", auth: str = "", qid: str = "4ABC123",
            subject: str = "Hi", quiet: bool = False) -> list[p.Packet]:
    """One message's packets as Postfix sends them (no connect/helo on the quiet protocol)."""
    out: list[p.Packet] = []
    if not quiet:
        out += [macros(p.CONNECT, j="mx.allient.com", client_addr="127.0.0.1"),
                pk(p.CONNECT, z("client") + b"4\x0f\xa0" + z("127.0.0.1")),
                macros(p.HELO), pk(p.HELO, z("client"))]
    out += [macros(p.MAIL, i=qid, auth_authen=auth, mail_addr=sender, client_addr="127.0.0.1"),
            pk(p.MAIL, z(f"<{sender}>", "SIZE=100"))]
    for r in rcpts:
        out += [macros(p.RCPT, i=qid, rcpt_addr=r), pk(p.RCPT, z(f"<{r}>"))]
    out += [macros(p.DATA, i=qid), pk(p.DATA),
            pk(p.HEADER, z("Subject", subject)), pk(p.HEADER, z("Message-ID", "<x@allient.com>")), pk(p.EOH)]
    for i in range(0, len(body), 65535):
        out.append(pk(p.BODY, body[i:i + 65535]))
    out += [macros(p.BODYEOB, i=qid, j="mx.allient.com"), pk(p.BODYEOB)]
    return out


# ----------------------------------------------------------------------------- libmilter's part, played by the test
@dataclass
class WireCtx:
    """What RegfdMilter asks of libmilter, encoded as libmilter sends it."""

    macros: dict[str, str] = field(default_factory=dict)
    out: list[bytes] = field(default_factory=list)
    reply: str = ""
    symlists: dict[int, str] = field(default_factory=dict)
    priv: Any = None

    def getpriv(self) -> Any:
        return self.priv

    def setpriv(self, v: Any) -> None:
        self.priv = v

    def getsymval(self, name: str) -> str | None:
        return self.macros.get(p.macro_name(name))

    def setreply(self, rcode: str, xcode: str, *msg: str) -> None:
        self.reply = f"{rcode} {xcode} {' '.join(msg)}"

    def setsymlist(self, stage: int, names: str) -> None:
        self.symlists[stage] = names

    def addheader(self, name: str, value: str, idx: int) -> None:
        self.out.append(p.addheader(name, value))

    def chgheader(self, name: str, idx: int, value: str) -> None:
        self.out.append(p.chgheader(name, idx, value))

    def addrcpt(self, rcpt: str, params: Any) -> None:
        self.out.append(p.addrcpt(rcpt))

    def quarantine(self, reason: str) -> None:
        self.out.append(p.quarantine(reason))


class LibmilterDriver:
    """Dispatches packets to a pymilter adapter the way libmilter's engine does."""

    def __init__(self, app: MilterApp, quiet: bool) -> None:
        self.m = QuietRegfdMilter(app) if quiet else RegfdMilter(app)
        self.ctx = WireCtx()
        self.m._setctx(self.ctx)
        self.protocol = 0

    def feed(self, pkt: p.Packet) -> list[bytes]:
        ctx, m, cmd, data = self.ctx, self.m, pkt.cmd, pkt.data
        ctx.out, ctx.reply = [], ""
        if cmd == p.OPTNEG:
            v, a, proto = p.decode_optneg(data)
            opts = [a or p.V1_ACTIONS, proto, 0, 0]  # libmilter's reading of "no actions offered"
            assert m.negotiate(opts) == Milter.CONTINUE
            self.protocol = opts[1]
            syms = {k: v.split() for k, v in ctx.symlists.items()}
            return [p.optneg(min(v, 6), opts[0], opts[1], syms if opts[0] & p.F_SETSYMLIST else None)]
        if cmd == p.MACRO:
            _, values = p.decode_macros(data)
            ctx.macros.update(values)
            return []
        if cmd == p.ABORT:
            m.abort()
            return []
        if cmd == p.QUIT:
            m.close()
            return []
        if cmd == p.CONNECT:
            host, addr = p.decode_connect(data)
            rc = m.connect(host, 2, (addr, 4000))
        elif cmd == p.HELO:
            rc = m.hello(p.cstrings(data)[0].decode())
        elif cmd == p.MAIL:
            rc = m.envfrom_bytes(*p.cstrings(data))
        elif cmd == p.RCPT:
            rc = m.envrcpt_bytes(*p.cstrings(data))
        elif cmd == p.DATA:
            rc = m.data()
        elif cmd == p.HEADER:
            name, value = p.decode_header(data)
            rc = m.header_bytes(name.decode(), value)
        elif cmd == p.EOH:
            rc = m.eoh()
        elif cmd == p.BODY:
            rc = m.body(data)
        elif cmd == p.BODYEOB:
            rc = m.eom()
        else:
            raise AssertionError(cmd)
        if rc == Milter.NOREPLY or self.protocol & p.NO_REPLY_BIT.get(cmd, 0):
            return list(ctx.out)
        code = {Milter.CONTINUE: p.CONTINUE_PKT, Milter.ACCEPT: p.ACCEPT_PKT, Milter.SKIP: p.SKIP_PKT,
                Milter.TEMPFAIL: p.TEMPFAIL_PKT, Milter.REJECT: p.REJECT_PKT}[rc]
        if ctx.reply and code in (p.TEMPFAIL_PKT, p.REJECT_PKT) and ctx.reply[0] == ("4" if code == p.TEMPFAIL_PKT
                                                                                      else "5"):
            code = p.replycode(*ctx.reply.split(" ", 2))
        return [*ctx.out, code]


FINAL = {p.R_ACCEPT, p.R_REJECT, p.R_TEMPFAIL, p.R_REPLYCODE, p.R_DISCARD}


def is_final(replies: list[bytes]) -> bool:
    return bool(replies) and replies[-1][4:5] in FINAL


def run_both(app_s: MilterApp, app_l: MilterApp, quiet: bool, packets: list[p.Packet]) -> list[tuple[Any, ...]]:
    """Feed the packets to both as an MTA would (after a final reply, nothing more of that message); every reply."""
    session, driver = Session(app_s, quiet=quiet), LibmilterDriver(app_l, quiet)
    trace = []
    skipping = False
    for pkt in packets:
        if skipping and pkt.cmd not in (p.MAIL, p.QUIT, p.ABORT, p.OPTNEG) and not (
                pkt.cmd == p.MACRO and pkt.data[:1] in (p.MAIL, p.CONNECT)):
            continue
        if pkt.cmd == p.MAIL:
            skipping = False
        if quiet and pkt.cmd in (p.CONNECT, p.HELO) and session.protocol & (p.P_NOCONNECT | p.P_NOHELO):
            continue  # negotiated away: the MTA does not send them
        mine = run_inline(session, session.handle(pkt))
        theirs = driver.feed(pkt)
        trace.append((pkt.cmd, mine, theirs))
        assert mine == theirs, f"reply to {pkt.cmd!r}: session {mine!r} libmilter {theirs!r}"
        if is_final(mine):
            skipping = True
    session.close()
    driver.m.close()
    assert app_s.inflight == 0 and app_l.inflight == 0
    return trace


def stub_scan(raw: bytes) -> list[Finding]:
    from tests.test_milter import stub_scan as s

    return s(raw)


def broken_scan(raw: bytes) -> list[Finding]:
    raise RuntimeError("scanner bug")


def _cases(quiet: bool) -> dict[str, tuple[list[p.Packet], dict[str, Any]]]:
    def m(sender: str, rcpts: list[str], **k: Any) -> list[p.Packet]:
        return message(sender, rcpts, quiet=quiet, **k)

    material = b"We will miss the quarter.\r\n"
    return {
        "no-specified-accept-at-data": (m("bob@allient.com", ["friend@example.org"]), {}),
        "inbound-accept-at-mail": (m("someone@bank.com", ["bob@allient.com"]), {}),
        "system-sender": (m("regfd@allient.com", ["analyst@bank.com"], body=b"embargoed until\r\n"), {}),
        "employee-hold": (m("bob@allient.com", ["analyst@bank.com"], body=material), {}),
        "officer-tag": (m("ceo@allient.com", ["analyst@bank.com"], body=material, auth="ceo"), {}),
        "officer-tag-bcc-prefix": (m("ceo@allient.com", ["analyst@bank.com"], body=material),
                                   {"extra": '[milter]\njournal_bcc = "journal@allient.com"\n'
                                             'subject_prefix = "[RegFD] "\n'}),
        "embargo-reject-550": (m("bob@allient.com", ["analyst@bank.com", "x@example.org"],
                                 body=b"Embargoed until Monday 100%\r\n"), {}),
        "officer-clean-recorded": (m("ceo@allient.com", ["analyst@bank.com"]), {}),
        "store-down-tempfail": (m("bob@allient.com", ["analyst@bank.com"]), {"url": "unix:///nonexistent/r.sock"}),
        "store-down-reject": (m("bob@allient.com", ["analyst@bank.com"]),
                              {"url": "unix:///nonexistent/r.sock", "extra": '[milter]\nfailure_action = "reject"\n'}),
        "store-down-accept": (m("bob@allient.com", ["analyst@bank.com"]),
                              {"url": "unix:///nonexistent/r.sock", "extra": '[milter]\nfailure_action = "accept"\n'}),
        "scanner-bug-tempfail": (m("bob@allient.com", ["analyst@bank.com"]), {"scan": broken_scan}),
        "sink-down-tempfail": (m("ceo@allient.com", ["analyst@bank.com"]), {"sink": "fail"}),
        "oversized-skip-unscannable": (m("ceo@allient.com", ["analyst@bank.com"], body=b"x" * 200_000),
                                       {"extra": "[limits]\nmax_message_bytes = 70000\n"}),
        "two-messages-abort-between": (m("bob@allient.com", ["analyst@bank.com"], body=material)[:-4]
                                       + [pk(p.ABORT)] + m("ceo@allient.com", ["analyst@bank.com"], body=material,
                                                           qid="4SECOND")[(0 if quiet else 4):], {}),
        "eom-without-data": ([x for x in m("bob@allient.com", ["analyst@bank.com"]) if x.cmd != p.DATA], {}),
    }


@pytest.mark.parametrize("quiet", [False, True], ids=["inet", "unix"])
@pytest.mark.parametrize("case", list(_cases(False)))
def test_session_and_libmilter_adapter_give_the_same_replies(directory, quiet, case):  # type: ignore[no-untyped-def]
    packets, opts = _cases(quiet)[case]
    scan = opts.get("scan", stub_scan)
    apps, sinks = [], []
    for _ in range(2):
        sink = RecordingSink(fail=opts.get("sink") == "fail")
        app, _s = make_app(directory, url=opts.get("url"), scan=scan, sink=sink, extra=opts.get("extra", ""))
        apps.append(app)
        sinks.append(sink)
    trace = run_both(apps[0], apps[1], quiet, [negotiation(), *packets, pk(p.QUIT)])
    assert trace[0][1][0][4:5] == p.OPTNEG
    mine, theirs = sinks
    assert [(v.action, v.reasons, f.queue_id, f.subject, f.message_id, f.mta_host, f.size, f.raw)
            for v, f in mine.calls] == [(v.action, v.reasons, f.queue_id, f.subject, f.message_id, f.mta_host,
                                          f.size, f.raw) for v, f in theirs.calls]
    expected_calls = {"employee-hold": ["hold"], "officer-tag": ["tag"], "embargo-reject-550": ["reject"],
                      "officer-clean-recorded": ["accept"], "two-messages-abort-between": ["tag"],
                      "oversized-skip-unscannable": ["tag"], "officer-tag-bcc-prefix": ["tag"]}
    assert [v.action for v, _ in mine.calls] == expected_calls.get(case, [])


@pytest.mark.parametrize(("offered", "sender"), [
    (0, "bob@allient.com"),  # hold; no actions offered is libmilter's version-1 set: no QUARANTINE
    (p.F_ADDHDRS | p.F_CHGHDRS | p.F_ADDRCPT, "bob@allient.com"),
    (p.F_QUARANTINE, "ceo@allient.com"),  # tag without ADDHDRS offered
])
def test_an_action_the_mta_did_not_offer_gets_the_failure_action(directory, offered, sender):  # type: ignore[no-untyped-def]
    """Regression (found by tests/test_fuzz_milter.py): the session sent quarantine and header actions the MTA
    had not offered, where libmilter's adapter (pymilter's DisabledAction) answers the failure action."""
    apps = [make_app(directory, sink=RecordingSink())[0] for _ in range(2)]
    negotiation_ = pk(p.OPTNEG, struct.pack(">III", 6, offered, ALL_PROTOCOL))
    trace = run_both(apps[0], apps[1], False, [negotiation_, *message(sender, ["analyst@bank.com"],
                                                                      body=b"We will miss the quarter.\r\n"),
                                               pk(p.QUIT)])
    eom = next(mine for cmd, mine, _ in trace if cmd == p.BODYEOB)
    assert eom == [p.replycode("451", "4.7.1", apps[0].failure.tempfail_text.replace("%", "%%"))]


def test_no_actions_offered_means_the_version_1_set_as_in_libmilter(directory):  # type: ignore[no-untyped-def]
    """Found by bench/bench_fuzz.py against the real libmilter: an MTA offering no actions gets libmilter's
    SMFI_V1_ACTS, so an officer's tag adds its headers on both engines."""
    apps = [make_app(directory, sink=RecordingSink())[0] for _ in range(2)]
    trace = run_both(apps[0], apps[1], False, [pk(p.OPTNEG, struct.pack(">III", 6, 0, ALL_PROTOCOL)),
                                               *message("ceo@allient.com", ["analyst@bank.com"],
                                                        body=b"We will miss the quarter.\r\n"), pk(p.QUIT)])
    eom = next(mine for cmd, mine, _ in trace if cmd == p.BODYEOB)
    assert [r[4:5] for r in eom] == [p.R_ADDHEADER, p.R_ADDHEADER, p.R_ACCEPT]


# ----------------------------------------------------------------------------- the session alone
def test_negotiation_asks_only_for_what_it_uses(directory):  # type: ignore[no-untyped-def]
    app, _ = make_app(directory)
    for quiet, wanted in ((False, INET_PROTOCOL), (True, UNIX_PROTOCOL)):
        s = Session(app, quiet=quiet)
        reply, = s.handle(negotiation())  # type: ignore[misc]
        pkt, = p.PacketParser().packets(reply)
        v, actions, proto = p.decode_optneg(pkt.data)
        assert v == 6 and actions == p.F_ADDHDRS | p.F_CHGHDRS | p.F_ADDRCPT | p.F_QUARANTINE | p.F_SETSYMLIST
        assert proto == wanted
        assert not proto & (p.P_NODATA | p.P_NR_DATA | p.P_NR_BODY)  # DATA and body are always answered
        assert b"{auth_authen}" in pkt.data and b"{rcpt_addr}" in pkt.data
    # an MTA that offers fewer actions and no SETSYMLIST gets no macro lists
    s = Session(app)
    reply, = s.handle(pk(p.OPTNEG, struct.pack(">III", 6, p.F_ADDHDRS, 0)))  # type: ignore[misc]
    assert reply == p.optneg(6, p.F_ADDHDRS, 0)


def test_data_and_end_of_message_are_jobs_for_the_engine(directory):  # type: ignore[no-untyped-def]
    app, sink = make_app(directory)
    s = Session(app)
    s.handle(negotiation())
    for pkt in message("bob@allient.com", ["analyst@bank.com"], body=b"We will miss the quarter.\r\n"):
        step = s.handle(pkt)
        if pkt.cmd == p.DATA:
            assert isinstance(step, Job) and step.stage == "data" and 0 < step.budget <= app.decision_timeout
            with pytest.raises(p.ProtocolError):  # nothing else until the job is answered
                s.handle(pk(p.HEADER, z("Subject", "x")))
            assert s.resume(step, step.run()) == [p.CONTINUE_PKT]
        elif pkt.cmd == p.BODYEOB:
            assert isinstance(step, Job) and step.stage == "eom"
            assert sink.calls == []  # nothing recorded before the engine runs the job
            out = s.resume(step, step.run())
            assert out[0][4:5] == p.R_QUARANTINE and out[-1] == p.ACCEPT_PKT
    assert [v.action for v, _ in sink.calls] == ["hold"] and app.inflight == 0


def test_timed_out_job_answers_the_failure_action_and_records_nothing(directory):  # type: ignore[no-untyped-def]
    from regfd.mta.session import DecisionFailed

    app, sink = make_app(directory)
    s = Session(app)
    s.handle(negotiation())
    for pkt in message("ceo@allient.com", ["analyst@bank.com"], body=b"We will miss the quarter.\r\n"):
        step = s.handle(pkt)
        if isinstance(step, Job) and step.stage == "data":
            s.resume(step, step.run())
        elif isinstance(step, Job):
            step.cancelled = True  # what the engine does when the budget is over
            out = s.resume(step, DecisionFailed("decision not finished within milter.decision_timeout"))
            assert out == [p.replycode("451", "4.7.1", app.failure.tempfail_text.replace("%", "%%"))]
            with pytest.raises(DecisionFailed):
                step.run()  # the scan finishing late does not record
    assert sink.calls == [] and app.inflight == 0


@pytest.mark.parametrize("first", [pk(p.MAIL, z("<a@b>")), pk(p.BODY, b"x"), pk(p.BODYEOB), pk(b"Z")])
def test_out_of_order_before_negotiation_is_a_protocol_error(directory, first):  # type: ignore[no-untyped-def]
    app, _ = make_app(directory)
    with pytest.raises(p.ProtocolError):
        Session(app).handle(first)


def test_out_of_order_message_events_fail_closed(directory):  # type: ignore[no-untyped-def]
    app, sink = make_app(directory)
    s = Session(app)
    s.handle(negotiation())
    assert s.handle(pk(p.BODY, b"body before any MAIL")) == [p.CONTINUE_PKT]
    out = run_inline(s, s.handle(pk(p.BODYEOB)))
    assert out[0][4:5] == p.R_REPLYCODE and b"451 4.7.1" in out[0]
    with pytest.raises(p.ProtocolError):
        s.handle(pk(b"Z", b"unknown command"))
    with pytest.raises(p.ProtocolError):
        s.handle(pk(p.HEADER, b"no NULs"))
    assert sink.calls == [] and app.inflight == 0


def test_a_body_that_never_ends_is_kept_bounded(directory):  # type: ignore[no-untyped-def]
    app, _ = make_app(directory, extra="[limits]\nmax_message_bytes = 100000\n")
    s = Session(app)
    s.handle(negotiation())
    for pkt in message("bob@allient.com", ["analyst@bank.com"])[:-3]:
        run_inline(s, s.handle(pkt))
    chunk = pk(p.BODY, b"y" * 65535)
    replies = [s.handle(chunk) for _ in range(200)]  # 13 MB
    assert s.buffered <= 100_001 and s.size > 13_000_000
    assert replies[0] == [p.CONTINUE_PKT] and replies[-1] == [p.SKIP_PKT]
