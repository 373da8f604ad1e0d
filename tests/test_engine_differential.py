"""Both real engines, the same packets, every reply compared.

`regfd milter --engine libmilter` (pymilter on Sendmail's libmilter, the
reference for protocol behaviour) and `regfd milter --engine asyncio` run as
the operator runs them, side by side on the same config, the same private
redis-server and the same directory, each on its own socket: both on unix
sockets (the quiet protocol: no connect/helo, no-reply headers) and both on
inet (every stage answered). A small MTA side (`Conversation`) sends each
hand-built packet sequence to one engine and then the other, the way an MTA
does: it waits for a reply only where the negotiated protocol says one
comes, stops sending a message after its final reply, and stops sending
body chunks after SKIP. Compared, unnormalised: every reply packet
(command and payload, negotiation included) and each engine's
`milter.decision` log lines (all fields but the timings). Nothing in a
reply is random (the queue ids come from the test's macros), so nothing
is normalised but the durations in the log.

Macros come the way each MTA names them: Postfix (`i` from RCPT on, no
queue id at MAIL, `{client_addr}` at MAIL) and Sendmail (`{i}` at MAIL, `j`
and `_` at connect, `{msg_id}` at end of message).
"""

from __future__ import annotations

import concurrent.futures
import shutil
import socket
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from regfd.mta import protocol as p
from tests.conftest import RedisServer, Regfd, free_port, start_redis, stop_redis
from tests.mta import MilterProcess, make_mta_dir, wait_until

MATERIAL = b"Between us, we will miss the quarter and the guidance will be lowered next week.\r\n"
EMBARGO = b"Attached is the draft press release, embargoed until Thursday 8:00.\r\n"
CLEAN = b"Shall we have lunch on Friday? The usual place is fine.\r\n"
MAX_MESSAGE_BYTES = 100_000
FINAL = {p.R_ACCEPT, p.R_CONTINUE, p.R_REJECT, p.R_TEMPFAIL, p.R_REPLYCODE, p.R_DISCARD, p.R_SKIP}
MESSAGE_OVER = {p.R_ACCEPT, p.R_REJECT, p.R_TEMPFAIL, p.R_REPLYCODE, p.R_DISCARD}
ENGINES = ("libmilter", "asyncio")


def pk(cmd: bytes, data: bytes = b"") -> p.Packet:
    return p.Packet(cmd, data)


def z(*parts: str | bytes) -> bytes:
    return b"".join((x.encode() if isinstance(x, str) else x) + b"\0" for x in parts)


def macros(stage: bytes, *pairs: tuple[str, str]) -> p.Packet:
    return pk(p.MACRO, stage + b"".join(z(k, v) for k, v in pairs))


def negotiation(version: int = 6, actions: int = 0x1FF, protocol: int = 0x1FFFFF) -> p.Packet:
    """Postfix 3.x's offer by default: version 6, every action, every protocol bit."""
    return pk(p.OPTNEG, struct.pack(">III", version, actions, protocol))


def message(sender: str, rcpts: list[str], body: bytes, qid: str, mta: str = "postfix", auth: str = "",
            subject: str | bytes = "Update", first: bool = True, client: bytes = b"4\x0f\xa0192.0.2.7\0",
            rcpt_args: tuple[str, ...] = ()) -> list[p.Packet]:
    """One message as Postfix or Sendmail sends it, with connect and helo when it is the connection's `first`
    (the client drops what the negotiated protocol leaves out)."""
    postfix = mta == "postfix"
    connect = (macros(p.CONNECT, ("j", "mx.allient.com"), ("{daemon_name}", "smtpd"), ("v", "Postfix 3.7"))
               if postfix else macros(p.CONNECT, ("j", "mx.allient.com"), ("_", "client [192.0.2.7]"),
                                      ("{daemon_name}", "MTA"), ("{client_addr}", "192.0.2.7")))
    out = [connect, pk(p.CONNECT, z("client") + client),
           macros(p.HELO), pk(p.HELO, z("client.example"))] if first else []
    mail = [("{mail_addr}", sender), ("{client_addr}", "192.0.2.7")] if postfix else [("{i}", qid),
                                                                                     ("{mail_addr}", sender)]
    if auth:
        mail.append(("{auth_authen}", auth))
    out += [macros(p.MAIL, *mail), pk(p.MAIL, z(f"<{sender}>", "SIZE=1000"))]
    for r in rcpts:
        out += [macros(p.RCPT, *([("i", qid)] if postfix else []), ("{rcpt_addr}", r)),
                pk(p.RCPT, z(f"<{r}>", *rcpt_args))]
    out += [macros(p.DATA, ("i", qid)) if postfix else macros(p.DATA), pk(p.DATA),
            pk(p.HEADER, z("From", f"<{sender}>")), pk(p.HEADER, z("Subject", subject)),
            pk(p.HEADER, z("Message-ID", f"<{qid}@allient.com>")),
            macros(p.EOH, ("i", qid)) if postfix else macros(p.EOH), pk(p.EOH)]
    for i in range(0, len(body), 65535):
        out.append(pk(p.BODY, body[i:i + 65535]))
    out += [macros(p.BODYEOB, ("i", qid)) if postfix else macros(p.BODYEOB, ("{msg_id}", f"<{qid}@allient.com>")),
            pk(p.BODYEOB)]
    return out


def body_of(msg: list[p.Packet]) -> int:
    """Where the body of a message's packets starts (for an abort mid-body)."""
    return next(i for i, x in enumerate(msg) if x.cmd == p.BODY)


Reply = tuple[bytes, bytes]


class Conversation:
    """The MTA side of one milter connection, on a unix socket path or an inet port."""

    def __init__(self, address: str | int) -> None:
        if isinstance(address, str):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(20)
            self.sock.connect(address)
        else:
            self.sock = socket.create_connection(("127.0.0.1", address), timeout=20)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no delayed-ACK stalls: a fast test
        self.parser = p.PacketParser(1 << 20)
        self.protocol = 0

    def _read(self) -> p.Packet:
        while (pkt := self.parser.next()) is None:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the milter closed the connection")
            self.parser.feed(data)
        return pkt

    def _answer(self) -> list[Reply]:
        """Packets up to and including a final reply (modifications come before it)."""
        out: list[Reply] = []
        while True:
            pkt = self._read()
            out.append((pkt.cmd, pkt.data))
            if pkt.cmd in FINAL:
                return out

    def run(self, packets: list[p.Packet]) -> list[tuple[bytes, list[Reply]]]:
        """Send `packets` as an MTA would; (command sent, the replies to it) for every packet sent."""
        trace: list[tuple[bytes, list[Reply]]] = []
        over = skipping_body = False
        for pkt in packets:
            if pkt.cmd in (p.MAIL, p.ABORT, p.QUIT_NC) or (pkt.cmd == p.MACRO and pkt.data[:1] in (p.MAIL, p.CONNECT)):
                over = False
            if over or (skipping_body and pkt.cmd == p.BODY):
                continue
            if pkt.cmd == p.BODYEOB:
                skipping_body = False
            stage = pkt.data[:1] if pkt.cmd == p.MACRO else pkt.cmd
            if (stage == p.CONNECT and self.protocol & p.P_NOCONNECT) or (
                    stage == p.HELO and self.protocol & p.P_NOHELO):
                continue  # negotiated away: the MTA sends neither the stage nor its macros
            self.sock.sendall(p.packet(pkt.cmd, pkt.data))
            if pkt.cmd == p.OPTNEG:
                reply = self._read()
                assert reply.cmd == p.OPTNEG
                self.protocol = p.decode_optneg(reply.data)[2]
                trace.append((pkt.cmd, [(reply.cmd, reply.data)]))
                continue
            if pkt.cmd in (p.MACRO, p.ABORT, p.QUIT_NC) or self.protocol & p.NO_REPLY_BIT.get(pkt.cmd, 0):
                trace.append((pkt.cmd, []))
                continue
            replies = self._answer()
            trace.append((pkt.cmd, replies))
            final = replies[-1][0]
            if final in MESSAGE_OVER:
                over = True
            elif final == p.R_SKIP:
                skipping_body = True
        self.sock.sendall(p.packet(p.QUIT))
        self.sock.settimeout(10)
        rest = b""
        while data := self.sock.recv(65536):
            rest += data
        assert rest == b"", f"replies after QUIT: {rest!r}"
        self.sock.close()
        return trace


@dataclass
class World:
    """The config, private redis-server and directory both engines share (the store-down case restarts Redis)."""

    runner: Regfd
    redis: RedisServer
    redis_dir: Path


@dataclass
class Pair:
    """Both engines on one transport."""

    transport: str
    milters: dict[str, MilterProcess]
    addresses: dict[str, str | int]
    world: World

    def converse(self, packets: list[p.Packet]) -> dict[str, list[tuple[bytes, list[Reply]]]]:
        out = {}
        for e in ENGINES:
            try:
                out[e] = Conversation(self.addresses[e]).run(packets)
            except (OSError, AssertionError) as exc:
                raise AssertionError(f"{e}: {type(exc).__name__}: {exc}") from exc
        return out

    def decisions(self, keys: set[str]) -> dict[str, list[dict[str, Any]]]:
        """Each engine's decisions on these queue ids or senders, without the timings."""
        def keep(d: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in d.items() if k not in ("timestamp", "duration_ms", "elapsed_ms", "pid")}

        return {e: [keep(d) for d in m.decisions() if d.get("queue_id") in keys or d.get("sender") in keys]
                for e, m in self.milters.items()}

    def last_decisions(self, keys: set[str], n: int) -> dict[str, list[dict[str, Any]]] | None:
        """The last `n` decisions of each engine on these keys, once both have made them."""
        d = self.decisions(keys)
        return {e: v[-n:] for e, v in d.items()} if all(len(v) >= n for v in d.values()) else None


def populate(runner: Regfd) -> None:
    for args in (("registry", "add", "bank.com", "--category", "analyst"),
                 ("registry", "add", "fund.example", "--category", "institutional-investor"),
                 ("officer", "add", "ceo@allient.com", "--role", "CEO")):
        r = runner(*args)
        assert r.rc == 0, r.err


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One config and state_dir (so the second pair reuses the compiled lexicons), one private redis-server."""
    tmp = tmp_path_factory.mktemp("differential")
    redis = start_redis(tmp / "redis")
    runner = Regfd(tmp, redis.url, f"diff{uuid.uuid4().hex[:6]}:",
                   extra=f"[limits]\nmax_message_bytes = {MAX_MESSAGE_BYTES}\n")
    populate(runner)
    w = World(runner, redis, tmp / "redis")
    yield w
    stop_redis(w.redis)


@pytest.fixture(scope="module", params=["unix", "inet"])
def pair(request: Any, world: World) -> Iterator[Pair]:
    """`regfd milter` with each engine on its own socket, started side by side."""
    d = make_mta_dir("regfd-differential-")
    addresses: dict[str, str | int] = {}
    specs: dict[str, Path | str] = {}
    for engine in ENGINES:
        if request.param == "unix":
            specs[engine] = d / f"{engine}.sock"
            addresses[engine] = str(specs[engine])
        else:
            port = free_port()
            addresses[engine], specs[engine] = port, f"inet:{port}@127.0.0.1"
    milters: dict[str, MilterProcess] = {}

    def start(engine: str) -> None:
        milters[engine] = MilterProcess.start(world.runner.config, specs[engine], world.runner.env,
                                              d / f"{engine}.log", engine=engine)

    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(start, ENGINES))
        yield Pair(request.param, milters, addresses, world)
    finally:
        for m in milters.values():
            assert m.stop() == 0, m.log.read_text()[-3000:]
        shutil.rmtree(d, ignore_errors=True)


def qid() -> str:
    return "Q" + uuid.uuid4().hex[:10].upper()


Cases = dict[str, tuple[list[p.Packet], list[str]]]


def cases(mta: str) -> tuple[Cases, set[str]]:
    """Packets (after negotiation) and the decisions expected, in order; the queue ids they use."""
    q = [qid() for _ in range(2)]
    outsider = f"analyst.{uuid.uuid4().hex[:8]}@bank.com"  # Postfix has no queue id at MAIL: found by sender
    # (so is a null sender's: "" is a key too, the last decision on it is this test's)

    def m(sender: str, rcpts: list[str], body: bytes, n: int = 0, **k: Any) -> list[p.Packet]:
        return message(sender, rcpts, body, q[n], mta=mta, **k)

    two = m("bob@allient.com", ["analyst@bank.com"], MATERIAL) + m("ceo@allient.com", ["pm@fund.example"],
                                                                    MATERIAL, 1, auth="ceo", first=False)
    aborted = m("bob@allient.com", ["analyst@bank.com"], EMBARGO)
    aborted = aborted[:body_of(aborted) + 1] + [pk(p.ABORT)]
    return {
        "clean-to-specified": (m("ceo@allient.com", ["analyst@bank.com"], CLEAN), ["eom:accept"]),
        "officer-finding-tag": (m("ceo@allient.com", ["analyst@bank.com"], MATERIAL, auth="ceo"), ["eom:tag"]),
        "employee-material-hold": (m("bob@allient.com", ["analyst@bank.com", "friend@example.org"], MATERIAL),
                                   ["eom:hold"]),
        "embargo-reject": (m("carol@allient.com", ["pm@fund.example"], EMBARGO + b"100% final.\r\n"),
                           ["eom:reject"]),
        "no-specified-accept-at-data": (m("bob@allient.com", ["friend@example.org"], MATERIAL), ["data:accept"]),
        "inbound-accept-at-mail": (m(outsider, ["ir@allient.com"], EMBARGO), ["mail:accept"]),
        "two-messages-one-connection": (two, ["eom:hold", "eom:tag"]),
        "abort-mid-body-then-new-message": (
            aborted + m("ceo@allient.com", ["analyst@bank.com"], MATERIAL, 1, first=False), ["eom:tag"]),
        "oversized-skip-unscannable": (m("ceo@allient.com", ["analyst@bank.com"], CLEAN * 5000), ["eom:tag"]),
        "null-sender-bounce": (m("", ["analyst@bank.com"], MATERIAL), ["mail:accept"]),
        "esmtp-args-8bit-subject-ipv6-client": (
            m("bob@allient.com", ["analyst@bank.com"], MATERIAL, rcpt_args=("NOTIFY=NEVER", "ORCPT=rfc822;x@y"),
              subject=b"R\xe9sultats \xe0 venir", client=b"6\x0f\xa02001:db8::7\0"), ["eom:hold"]),
        "unix-socket-client": (m("ceo@allient.com", ["analyst@bank.com"], MATERIAL, client=b"L\0\0/run/smtpd\0"),
                               ["eom:tag"]),
        # QUIT_NC: the connection stays, and what was negotiated with it (libmilter ignores a CONNECT there,
        # so the next message comes without one)
        "quit-nc-then-a-message": (m("bob@allient.com", ["analyst@bank.com"], MATERIAL) + [pk(p.QUIT_NC)]
                                   + m("ceo@allient.com", ["analyst@bank.com"], MATERIAL, 1, first=False),
                                   ["eom:hold", "eom:tag"]),
    }, {*q, outsider, ""}


def differences(decisions: dict[str, list[dict[str, Any]]]) -> list[dict[str, tuple[Any, Any]]]:
    """Per decision, the fields where the engines differ: (libmilter's, asyncio's)."""
    return [{k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
            for a, b in zip(decisions["libmilter"], decisions["asyncio"], strict=True)]


def compare(pair: Pair, packets: list[p.Packet], offer: p.Packet | None = None) -> list[tuple[bytes, list[Reply]]]:
    traces = pair.converse([offer or negotiation(), *packets])
    lib, aio = traces["libmilter"], traces["asyncio"]
    for i, (a, b) in enumerate(zip(lib, aio, strict=False)):
        assert a == b, f"packet {i} ({a[0]!r}): libmilter {a[1]!r} asyncio {b[1]!r}"
    assert len(lib) == len(aio)
    return lib


@pytest.mark.parametrize("mta", ["postfix", "sendmail"])
@pytest.mark.parametrize("case", list(cases("postfix")[0]))
def test_both_engines_give_the_same_replies(pair: Pair, case: str, mta: str) -> None:
    all_cases, qids = cases(mta)
    packets, expected = all_cases[case]
    trace = compare(pair, packets)
    finals = [replies[-1][0] for _, replies in trace[1:] if replies]
    decisions = wait_until(lambda: pair.last_decisions(qids, len(expected)), 10, what="both engines' decisions")
    assert decisions["libmilter"] == decisions["asyncio"], differences(decisions)
    assert [f"{d['stage']}:{d['action']}" for d in decisions["asyncio"]] == expected
    if case == "oversized-skip-unscannable":
        assert p.R_SKIP in finals
        assert any(f.startswith("unscannable") for f in decisions["asyncio"][0]["findings"])


def test_store_down_gives_the_failure_action_on_both(pair: Pair) -> None:
    """The private redis-server stopped: DATA answers the failure action (451 4.7.1) on both engines."""
    w = pair.world
    stop_redis(w.redis)
    try:
        trace = compare(pair, message("bob@allient.com", ["analyst@bank.com"], MATERIAL, qid()))
        data = next(replies for cmd, replies in trace if cmd == p.DATA)
        assert data[-1][0] == p.R_REPLYCODE and data[-1][1].startswith(b"451 4.7.1 ")
    finally:
        w.redis = start_redis(w.redis_dir)
        populate(w.runner)


@pytest.mark.parametrize("offer", [(2, 0, 0), (2, 0x1F, 0x7F), (6, 0x1FF, 0x3FF)], ids=["v1-mta", "v2-mta", "no-nr"])
def test_an_older_mta_gets_the_same_negotiation_and_replies(pair: Pair, offer: tuple[int, int, int]) -> None:
    """Offers with fewer actions and protocol steps (no actions: libmilter's version-1 set; no protocol bits:
    its version-1 protocol; no no-reply steps: libmilter answers them itself)."""
    q = qid()
    trace = compare(pair, message("ceo@allient.com", ["analyst@bank.com"], MATERIAL, q), negotiation(*offer))
    assert trace[-1][1][-1][0] == p.R_ACCEPT


def test_macros_are_kept_and_searched_as_libmilter_does(pair: Pair) -> None:
    """libmilter's macro bookkeeping, which the order real MTAs send in does not show (measured here):
    end-of-message macros are searched before end-of-headers ones, macros sent for the header stage are
    ignored, and an ABORT keeps the MAIL macros until the next MAIL replaces them (here the next MAIL comes
    without any, so the first message's authentication still counts for the second)."""
    qa, qb, qc, qd = qid(), qid(), qid(), qid()

    def with_macros(packets: list[p.Packet], stage: bytes, new: p.Packet | None) -> list[p.Packet]:
        """`packets` with the macro packet of `stage` replaced by `new` (None: left out)."""
        out = [x for x in packets if not (x.cmd == p.MACRO and x.data[:1] == stage)]
        if new is not None:
            out.insert(next(i for i, x in enumerate(out) if x.cmd == stage), new)
        return out

    first = message("ceo@allient.com", ["analyst@bank.com"], MATERIAL, qa)
    first = with_macros(first, p.EOH, macros(p.EOH, ("i", qb)))
    first = with_macros(first, p.BODYEOB, macros(p.BODYEOB, ("i", qc)))
    second = message("ceo@allient.com", ["analyst@bank.com"], MATERIAL, qd, mta="sendmail", first=False)
    second = with_macros(second, p.EOH, macros(p.HEADER, ("{i}", qb)))
    second = with_macros(second, p.BODYEOB, None)
    outsider = f"consultant.{uuid.uuid4().hex[:6]}@outside.example"
    third = message(outsider, ["analyst@bank.com"], CLEAN, qa, mta="sendmail", auth="consultant", first=False)
    third = third[:next(i for i, x in enumerate(third) if x.cmd == p.RCPT) + 1] + [pk(p.ABORT)]
    fourth = with_macros(message(outsider, ["analyst@bank.com"], CLEAN, qa, first=False), p.MAIL, None)
    compare(pair, first + second + third + fourth)
    decisions = wait_until(lambda: pair.last_decisions({qa, qb, qc, qd, outsider}, 3), 10,
                           what="both engines' decisions")
    assert decisions["libmilter"] == decisions["asyncio"], differences(decisions)
    got = [(d["queue_id"], d["sender"], d["stage"]) for d in decisions["asyncio"]]
    assert got == [(qc, "ceo@allient.com", "eom"), (qd, "ceo@allient.com", "eom"), (qa, outsider, "eom")]

