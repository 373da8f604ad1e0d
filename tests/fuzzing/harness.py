"""The fuzz properties, each a plain function: the suite wraps them in @given, bench/bench_fuzz.py runs them at scale.

What is driven is the real thing: the sans-IO core (`PacketParser` +
`Session`) the way an engine drives it, the asyncio engine in this process
over a real socket (loopback TCP, or unix with the quiet protocol),
`regfd milter --engine libmilter` as a subprocess over loopback TCP, and
the scanner. The directory is a real
redis-server (tests/conftest.py), the scanner the real one on the
repository's lexicons. One stand-in: `CountingSink`, which counts the
decisions the session records instead of writing records to Redis, so that
100 000 inputs do not grow the store (the record path has its own tests).

Every check raises `AssertionError` (with the script's kind) on a broken
property; anything else escaping is a crash, and a failure too.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import socket
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regfd.config import ScanLimits, load_config
from regfd.core.decision import Decider
from regfd.core.finding import FINDING_KINDS, UNSCANNABLE, Finding
from regfd.core.policy import Policy
from regfd.mta import protocol as p
from regfd.mta.asyncio_engine import Engine, MilterConnection
from regfd.mta.libmilter import MilterApp
from regfd.mta.session import Session, run_inline
from regfd.scan.scanner import MAX_FINDINGS, scan_message
from regfd.store.client import client_from_url
from regfd.store.redis_store import RedisStore
from tests.fuzzing.strategies import Message, Script, negotiation

# ----- the configuration every fuzzed milter runs with
MAX_MESSAGE_BYTES = 100_000  # small, so that an endless body passes the limit within a few chunks
TEMPFAIL_TEXT = "fuzz: no decision, try again"
REJECT_TEXT = "fuzz: refused"
# Per-input memory bound (tracemalloc peak above the start of the input): one message kept (the limit,
# one join of it, the scanner's decoded and normalized copies: about 10x), plus one packet buffered in the
# parser and the largest read. Measured peaks are far below (bench/bench_fuzz.py prints them).
MEMORY_LIMIT = 10 * MAX_MESSAGE_BYTES + 2 * p.DEFAULT_MAX_PACKET + 4 * 1024 * 1024
FINAL = {p.R_ACCEPT, p.R_REJECT, p.R_TEMPFAIL, p.R_REPLYCODE, p.R_DISCARD}
REPLY_CMDS = FINAL | {p.OPTNEG, p.R_CONTINUE, p.R_SKIP, p.R_ADDHEADER, p.R_CHGHEADER, p.R_ADDRCPT, p.R_QUARANTINE}
FOLLOW_UP = Message("bob@allient.com", ("analyst@bank.com",), (("Subject", b"Q3"),),
                    b"We will miss the quarter.\r\n", 65535, "4FOLLOW", True)


class CountingSink:
    """A DecisionSink that counts recorded decisions by action (see the module docstring)."""

    def __init__(self) -> None:
        self.actions: Counter[str] = Counter()

    def on_decision(self, verdict: Any, facts: Any) -> None:
        """Count it; nothing is kept, so memory stays flat over any number of inputs."""
        self.actions[verdict.action] += 1


def populate(regfd: Any) -> None:
    """The directory every script assumes: bank.com Specified, the CEO an officer."""
    assert regfd("registry", "add", "bank.com", "--category", "analyst").rc == 0
    assert regfd("officer", "add", "ceo@allient.com", "--role", "CEO").rc == 0


def config_text(failure_action: str = "tempfail", decision_timeout: float = 30.0) -> str:
    """The [milter] and [limits] tables of a fuzzed milter (appended to the test config)."""
    return (f'[milter]\nfailure_action = "{failure_action}"\ndecision_timeout = {decision_timeout}\n'
            f'tempfail_text = "{TEMPFAIL_TEXT}"\nreject_text = "{REJECT_TEXT}"\n'
            f"[limits]\nmax_message_bytes = {MAX_MESSAGE_BYTES}\n")


def make_app(regfd: Any, failure_action: str = "tempfail") -> tuple[MilterApp, CountingSink]:
    """A MilterApp on the real store and the real scanner, as Services.milter_app builds it."""
    from tests.scanner_fixtures import lexicons

    regfd.write_config(extra=config_text(failure_action))
    config = load_config(regfd.config)
    lex, limits = lexicons(), config.limits

    def scan(raw: bytes) -> list[Finding]:
        return scan_message(raw, lex, limits)

    store = RedisStore(client_from_url(regfd.redis_url, timeout=5), regfd.prefix)
    sink = CountingSink()
    return MilterApp.from_config(config, store, sink, Decider(Policy.from_config(config), scan,
                                                              config.limits.max_message_bytes)), sink


# ============================================================================ replies
@dataclass
class Conversation:
    """One script through the sans-IO core: what was sent, what came back, how it ended."""

    sent: list[bytes] = field(default_factory=list)
    replies: list[p.Packet] = field(default_factory=list)
    ended: str = "eof"  # eof | quit | protocol-error
    error: str = ""
    messages: int = 0  # MAIL packets the session took
    answered: int = 0  # final replies given to a message
    aborted: int = 0
    actions: int = 0  # the actions the session agreed to (what the MTA offered of what it wants)


def parse_replies(data: bytes) -> tuple[list[p.Packet], bytes]:
    """Reply packets in `data`, and any bytes after the last whole one."""
    parser = p.PacketParser(1 << 20)
    out = parser.packets(data)
    return out, data[len(data) - parser.buffered:] if parser.buffered else b""


def check_reply(pkt: p.Packet, failure_action: str, kind: str) -> None:
    """A reply the MTA understands; a reply code only the configured failure's or the policy's reject."""
    assert pkt.cmd in REPLY_CMDS, f"[{kind}] reply command {pkt.cmd!r}"
    if pkt.cmd == p.R_REPLYCODE:
        allowed = {b"550 5.7.1 " + REJECT_TEXT.encode() + b"\0"}
        if failure_action == "tempfail":
            allowed.add(b"451 4.7.1 " + TEMPFAIL_TEXT.encode() + b"\0")
        assert pkt.data in allowed, f"[{kind}] reply code {pkt.data!r} with failure action {failure_action}"


def _is_final(replies: list[bytes]) -> bool:
    return bool(replies) and replies[-1][4:5] in FINAL


def converse(app: MilterApp, script: Script, quiet: bool = False,
             max_packet: int = p.DEFAULT_MAX_PACKET) -> Conversation:
    """`script` through a parser and a session as an engine drives them, checking the bounds on the way.

    A valid script is sent as an MTA sends it: after a final reply, nothing
    more of that message. Raises AssertionError on a broken bound; any
    exception but `ProtocolError` escaping the core is a crash and is raised.
    """
    conv = Conversation()
    parser, session = p.PacketParser(max_packet), Session(app, quiet=quiet)
    skipping = False
    in_message = False
    try:
        for write in script.writes:
            if script.valid:
                cmd = write[4:5]
                if skipping and cmd not in (p.MAIL, p.QUIT, p.ABORT, p.OPTNEG) and not (
                        cmd == p.MACRO and write[5:6] in (p.MAIL, p.CONNECT)):
                    continue
                if quiet and cmd in (p.CONNECT, p.HELO) and session.protocol & (p.P_NOCONNECT | p.P_NOHELO):
                    continue  # negotiated away: the MTA does not send them
            conv.sent.append(write)
            parser.feed(write)
            assert parser.buffered <= max_packet + 4 + len(write), f"[{script.kind}] parser holds {parser.buffered}"
            while not session.closed and (pkt := parser.next()) is not None:
                if pkt.cmd == p.MAIL:
                    skipping, in_message = False, True
                    conv.messages += 1
                elif pkt.cmd == p.ABORT and in_message:
                    in_message = False
                    conv.aborted += 1
                out = run_inline(session, session.handle(pkt))
                for b in out:
                    conv.replies.append(p.PacketParser(1 << 20).packets(b)[0])
                if _is_final(out) and in_message:
                    conv.answered += 1
                    in_message = False
                    skipping = True
                assert session.buffered <= app.max_message_bytes + 1, f"[{script.kind}] session kept {session.buffered}"
                assert sum(map(len, session.chunks)) <= app.max_message_bytes + 1
            if session.closed:
                conv.ended = "quit"
                break
            assert parser.buffered < max_packet + 4, f"[{script.kind}] parser kept {parser.buffered} after draining"
    except p.ProtocolError as exc:
        conv.ended, conv.error = "protocol-error", str(exc)
    session.close()
    conv.actions = session.actions
    assert app.inflight == 0, f"[{script.kind}] {app.inflight} message(s) still counted in flight"
    return conv


def check_conversation(conv: Conversation, script: Script, failure_action: str) -> None:
    """The reply-level properties of one conversation."""
    for pkt in conv.replies:
        check_reply(pkt, failure_action, script.kind)
    if script.valid:
        assert conv.ended != "protocol-error", f"valid script refused: {conv.error}"
        assert conv.answered + conv.aborted == conv.messages, (
            f"{conv.messages} messages, {conv.answered} answered, {conv.aborted} aborted")
        needed = p.F_ADDHDRS | p.F_QUARANTINE  # without them a tag or hold gets the failure action, by design
        assert conv.actions & needed != needed or not any(
            r.cmd == p.R_REPLYCODE and r.data.startswith(b"451") for r in conv.replies), (
            "the failure action on a valid dialogue")


def follow_up_packets() -> list[bytes]:
    """A well-behaved connection after whatever came before: one message an employee sends a Specified Person."""
    return [negotiation(), *FOLLOW_UP.packets(), p.packet(p.QUIT)]


def check_follow_up(replies: list[p.Packet]) -> None:
    """The follow-up message is held (quarantine, then accept): the milter still decides."""
    cmds = [r.cmd for r in replies]
    assert cmds[0] == p.OPTNEG and cmds[-2:] == [p.R_QUARANTINE, p.R_ACCEPT], f"follow-up got {cmds}"


# ============================================================================ memory
@contextmanager
def traced_peak(limit: int, what: str) -> Iterator[None]:
    """When tracemalloc traces, the peak above the start of the block must stay under `limit` bytes."""
    if not tracemalloc.is_tracing():
        yield
        return
    start = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    yield
    peak = tracemalloc.get_traced_memory()[1] - start
    PEAKS[what] = max(PEAKS.get(what, 0), peak)
    assert peak <= limit, f"[{what}] traced peak {peak} bytes over {limit}"


PEAKS: dict[str, int] = {}  # the largest per-input peak seen, per property (the bench prints it)


# ============================================================================ (a) the sans-IO core
def check_session(app: MilterApp, script: Script, failure_action: str, quiet: bool = False) -> Conversation:
    """Property (a): no exception but ProtocolError escapes, replies are valid, bounds hold, a follow-up works."""
    with traced_peak(MEMORY_LIMIT, "session"):
        conv = converse(app, script, quiet)
        check_conversation(conv, script, failure_action)
    follow = converse(app, Script(tuple(follow_up_packets()), True, "follow-up"), quiet)
    check_follow_up(follow.replies)
    return conv


# ============================================================================ (b) the asyncio engine
class _Measured(MilterConnection):
    """The engine's connection, noting how much its parser holds after each read (the bound the engine keeps)."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        limit = self.engine.max_packet + 4 + len(data)
        if self.parser.buffered > limit:
            ENGINE_BREACHES.append(f"parser holds {self.parser.buffered} after a read of {len(data)}")


ENGINE_BREACHES: list[str] = []


class EngineUnderTest:
    """The asyncio engine on its own event loop thread, listening on 127.0.0.1 or, given `unix` (a path),
    on a unix socket with the quiet protocol, as `regfd milter` does."""

    def __init__(self, app: MilterApp, unix: str | None = None) -> None:
        self.app = app
        self.unix = unix
        self.quiet = unix is not None
        self.engine = Engine(app, quiet=self.quiet)
        self.engine.protocol_factory = lambda: _Measured(self.engine)  # type: ignore[method-assign]
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True, name="fuzz-engine")
        self.thread.start()
        ready.wait(10)
        self.address: int | str = unix if unix is not None else self.server.sockets[0].getsockname()[1]

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        listening = (self.loop.create_unix_server(self.engine.protocol_factory, self.unix) if self.unix
                     else self.loop.create_server(self.engine.protocol_factory, "127.0.0.1", 0))
        self.server = self.loop.run_until_complete(listening)
        ready.set()
        self.loop.run_forever()

    def connections(self) -> int:
        """Connections the engine still holds."""
        return len(self.engine.connections)

    def close(self) -> None:
        """Stop listening, stop the loop, drop the pool."""
        def stop() -> None:
            self.server.close()
            self.loop.stop()
        self.loop.call_soon_threadsafe(stop)
        self.thread.join(10)
        self.engine.shutdown()
        self.loop.close()


def exchange(address: int | str, writes: list[bytes] | tuple[bytes, ...],
             timeout: float = 20.0) -> tuple[bytes, str]:
    """Connect to 127.0.0.1:`address` (a port) or the unix socket `address` (a path), write `writes` while
    reading, half-close, read to the end.

    Returns everything the milter wrote and how the connection ended ("eof" or "reset"); when the
    milter closes before all was written, the rest is not sent.
    """
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(address)
    else:
        sock = socket.create_connection(("127.0.0.1", address), timeout=5)
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    pending = b"".join(writes)
    view, sent = memoryview(pending), 0
    got = bytearray()
    how = ""
    deadline = time.monotonic() + timeout
    try:
        while not how:
            if time.monotonic() > deadline:
                raise AssertionError(f"milter neither answered nor closed within {timeout}s "
                                     f"({sent} of {len(pending)} bytes written, {len(got)} read)")
            for _key, events in sel.select(0.5):
                if events & selectors.EVENT_READ:
                    try:
                        data = sock.recv(262144)
                    except ConnectionResetError:
                        how = "reset"
                        break
                    if not data:
                        how = "eof"
                        break
                    got += data
                if events & selectors.EVENT_WRITE and sent < len(pending):
                    try:
                        sent += sock.send(view[sent:sent + 262144])
                    except (BrokenPipeError, ConnectionResetError):
                        pending, sent = b"", 0  # the milter closed: stop writing, read what it said
                        sel.modify(sock, selectors.EVENT_READ)
                        continue
                    if sent >= len(pending):
                        with contextlib.suppress(OSError):  # the milter may have closed already
                            sock.shutdown(socket.SHUT_WR)
                        sel.modify(sock, selectors.EVENT_READ)
    finally:
        view.release()
        sel.close()
        sock.close()
    return bytes(got), how


def check_engine(eut: EngineUnderTest, app_ref: MilterApp, script: Script, failure_action: str) -> None:
    """Property (b): the engine answers exactly what the sans-IO core answers to the same bytes, keeps its
    bounds, forgets the connection, and serves a valid follow-up connection."""
    with traced_peak(MEMORY_LIMIT + 4 * 1024 * 1024, "asyncio"):  # plus the client's copy of the script
        expected = converse(app_ref, script, quiet=eut.quiet)
        raw, how = exchange(eut.address, expected.sent)
        replies, tail = parse_replies(raw)
    for pkt in replies:
        check_reply(pkt, failure_action, script.kind)
    want = b"".join(p.packet(r.cmd, r.data) for r in expected.replies)
    assert raw == want or (expected.ended == "protocol-error" and want.startswith(raw)), (
        f"[{script.kind}] engine replied {[r.cmd for r in replies]}+{len(tail)}B, "
        f"the core {[r.cmd for r in expected.replies]} ({expected.ended} {expected.error})")
    assert not ENGINE_BREACHES, ENGINE_BREACHES[:3]
    wait_for(lambda: eut.connections() == 0 and eut.app.inflight == 0, 5,
             f"[{script.kind}] the engine still holds {eut.connections()} connection(s), "
             f"{eut.app.inflight} in flight")
    follow, _ = exchange(eut.address, follow_up_packets())
    check_follow_up(parse_replies(follow)[0])


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `pred` (the engine's loop runs on another thread); AssertionError naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.002)


# ============================================================================ (c) the libmilter engine
class LogTail:
    """What a process appended to its log since the last call (the log grows with every decision)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def new(self) -> str:
        """The text appended since the last call."""
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        return data.decode("utf-8", "replace")


# pymilter's C layer decodes connect and helo host names (and an unknown command) as strict UTF-8 before any
# regfd code runs; on other bytes it answers this tempfail itself and logs the UnicodeDecodeError (no
# traceback). Allowed on hostile input only; an uncaught exception in the log is a failure whatever the reply.
PYMILTER_UNTRAPPED = b"451 4.3.0 pymilter: untrapped exception in regfd\0"


def check_libmilter(port: int, alive: Callable[[], bool], app_ref: MilterApp, script: Script,
                    log: LogTail | None = None) -> None:
    """Property (c): `regfd milter --engine libmilter` (pymilter on libmilter, a subprocess) gives replies the
    MTA understands, the same decisions as the core on a valid dialogue, no uncaught exception in its log,
    stays up, and serves a follow-up."""
    expected = converse(app_ref, script)
    raw, _how = exchange(port, expected.sent)
    replies, _tail = parse_replies(raw)
    assert alive(), f"[{script.kind}] regfd milter (libmilter) died"
    for pkt in replies:
        if pkt.cmd == p.OPTNEG or (not script.valid and pkt.cmd == p.R_REPLYCODE and pkt.data == PYMILTER_UNTRAPPED):
            continue
        check_reply(pkt, "tempfail", script.kind)
    if script.valid:  # libmilter negotiates its own way; every other reply is the same
        mine = [r for r in replies if r.cmd != p.OPTNEG]
        core = [r for r in expected.replies if r.cmd != p.OPTNEG]
        assert mine == core, f"libmilter {[r.cmd for r in mine]}, the core {[r.cmd for r in core]}"
    follow, _ = exchange(port, follow_up_packets())
    check_follow_up(parse_replies(follow)[0])
    if log is not None:  # an exception nothing caught (pymilter prints it raw; regfd's own failures are JSON)
        text = "\n" + log.new()
        assert "\nTraceback" not in text, f"[{script.kind}] {text[text.index(chr(10) + 'Traceback'):][:1500]}"


# ============================================================================ the scanner
SCAN_LIMITS = ScanLimits(max_message_bytes=2 * 1024 * 1024, time_budget=2.0)
SCAN_SLACK = 1.0  # CPU seconds over the budget allowed for one input
SCAN_WALL: list[float] = [0.0]  # the slowest scan's wall time (the bench prints it)


def check_scan(raw: bytes, limits: ScanLimits = SCAN_LIMITS) -> list[Finding]:
    """The scanner's property: findings of known kinds, never an internal error, at most MAX_FINDINGS,
    and the work bounded by the time budget.

    The bound is on the scan's CPU time (its thread's): on a shared machine
    the wall clock also counts the other processes' turns, and the scanner
    stops itself by the wall clock, so a scan whose CPU time passes the
    budget is one that did not stop."""
    from tests.scanner_fixtures import lexicons

    lex = lexicons()  # compiled once per process, before the clock starts
    start, cpu = time.monotonic(), time.thread_time()
    with traced_peak(64 * 1024 * 1024, "scanner"):
        findings = scan_message(raw, lex, limits)
    cpu = time.thread_time() - cpu
    SCAN_WALL[0] = max(SCAN_WALL[0], time.monotonic() - start)
    assert isinstance(findings, list)
    assert all(isinstance(f, Finding) and f.kind in FINDING_KINDS for f in findings)
    crashed = [f for f in findings if f.kind == UNSCANNABLE and f.category.startswith("scanner-error")]
    assert not crashed, f"the scanner raised internally: {crashed}"
    assert len(findings) <= MAX_FINDINGS
    assert cpu < limits.time_budget + SCAN_SLACK, f"scan used {cpu:.2f}s of CPU"
    return findings
