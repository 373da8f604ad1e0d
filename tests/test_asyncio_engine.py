"""The asyncio engine as the operator runs it (`regfd milter --engine asyncio`), fed hostile input by hand.

Garbage, a 2^31 length field and a body that never ends must each cost the
engine one connection at most: the process keeps serving, its memory stays
bounded, and the next well-behaved connection gets its verdict.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from regfd.mta import protocol as p
from tests.conftest import free_port
from tests.mta import MilterProcess, make_mta_dir


def z(*parts: str) -> bytes:
    return b"".join(x.encode() + b"\0" for x in parts)


def rss_kb(pid: int) -> int:
    """Resident memory of `pid` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Client:
    """A hand-driven MTA side of one milter connection."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.parser = p.PacketParser(1 << 20)

    def send(self, *packets: bytes) -> None:
        self.sock.sendall(b"".join(packets))

    def replies(self, n: int) -> list[p.Packet]:
        out: list[p.Packet] = []
        while len(out) < n:
            pkt = self.parser.next()
            if pkt is not None:
                out.append(pkt)
                continue
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed after {len(out)} of {n} replies")
            self.parser.feed(data)
        return out

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
            return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


def negotiate(c: Client) -> None:
    c.send(p.packet(p.OPTNEG, struct.pack(">III", 6, 0x1FF, 0x1FFFFF)))
    reply, = c.replies(1)
    assert reply.cmd == p.OPTNEG


@pytest.fixture(params=["default-loop", "stdlib-loop"])
def engine(regfd: Any, request: Any) -> Iterator[tuple[MilterProcess, int]]:
    """`regfd milter --engine asyncio` on an inet socket, messages limited to 1 MB; on uvloop when it is
    installed (default-loop) and on asyncio's own loop (stdlib-loop)."""
    assert regfd("registry", "add", "bank.com", "--category", "analyst").rc == 0
    regfd.write_config(extra="[limits]\nmax_message_bytes = 1000000\n")
    d = make_mta_dir("regfd-asyncio-")
    port = free_port()
    env = {**regfd.env, **({"REGFD_EVENT_LOOP": "asyncio"} if request.param == "stdlib-loop" else {})}
    m = MilterProcess.start(regfd.config, f"inet:{port}@127.0.0.1", env, d / "milter.log", engine="asyncio")
    yield m, port
    assert m.stop() == 0, m.log.read_text()[-3000:]


def test_engine_is_a_checked_setting() -> None:
    from regfd.config import parse_config
    from regfd.errors import ConfigError

    assert parse_config({}).milter.engine == "asyncio"  # the default since the engine issue; libmilter on request
    assert parse_config({"milter": {"engine": "libmilter"}}).milter.engine == "libmilter"
    with pytest.raises(ConfigError, match="milter.engine"):
        parse_config({"milter": {"engine": "twisted"}})


def test_engine_logs_its_start_with_the_engine_and_sets_nodelay(engine: tuple[MilterProcess, int]) -> None:
    m, port = engine
    start = next(line for line in m.log.read_text().splitlines() if "milter.start" in line)
    assert '"engine": "asyncio"' in start and '"tcp_nodelay": true' in start


def test_hostile_input_costs_one_connection_and_bounded_memory(engine: tuple[MilterProcess, int]) -> None:
    m, port = engine
    negotiate(Client(port))  # warm up before the baseline
    base = rss_kb(m.proc.pid)

    c = Client(port)  # garbage: an HTTP request read as a length field of ~1.2 GB
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c.closed_by_peer()
    c = Client(port)  # a 2^31 length field
    c.send(struct.pack(">I", 2**31) + b"B" + b"x" * 1000)
    assert c.closed_by_peer()
    c = Client(port)  # a command before negotiation
    c.send(p.packet(p.BODY, b"x"))
    assert c.closed_by_peer()

    # a body that never ends: 40 MB of chunks, replies drained by a reader thread
    c = Client(port)
    negotiate(c)
    c.send(p.packet(p.MAIL, z("<bob@allient.com>")), p.packet(p.RCPT, z("<analyst@bank.com>")), p.packet(p.DATA))
    assert [r.cmd for r in c.replies(3)] == [p.R_CONTINUE] * 3
    replies: list[bytes] = []
    reader = threading.Thread(target=lambda: replies.extend(r.cmd for r in c.replies(640)), daemon=True)
    reader.start()
    chunk = p.packet(p.BODY, b"y" * 65535)
    peak = 0
    for i in range(640):
        c.send(chunk)
        if i % 64 == 0:
            peak = max(peak, rss_kb(m.proc.pid))
    reader.join(30)
    assert len(replies) == 640 and replies[-1] == p.R_SKIP  # over 1 MB: the MTA is asked to skip the rest
    peak = max(peak, rss_kb(m.proc.pid))
    assert peak - base < 30_000, f"RSS grew by {peak - base} KiB"
    c.close()

    # still serving: a well-behaved connection gets its verdict (inbound: accepted at MAIL)
    c = Client(port)
    negotiate(c)
    c.send(p.packet(p.MAIL, z("<someone@bank.com>")))
    assert c.replies(1)[0].cmd == p.R_ACCEPT
    c.close()
    assert m.proc.poll() is None
    assert m.log.read_text().count("milter.protocol_error") == 3


def test_slow_decision_gets_the_failure_action_within_the_timeout(regfd: Any) -> None:
    """decision_timeout enforced by the engine: Redis that never answers at DATA → 451 in time."""
    regfd.write_config(extra="[milter]\ndecision_timeout = 1.0\n")
    silent = socket.socket()  # accepts connections, never answers: a hung Redis
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    d = make_mta_dir("regfd-asyncio-")
    port = free_port()
    env = {**regfd.env, "REGFD_REDIS_URL": f"redis://127.0.0.1:{silent.getsockname()[1]}/0"}
    m = MilterProcess.start(regfd.config, f"inet:{port}@127.0.0.1", env, d / "milter.log", engine="asyncio")
    try:
        c = Client(port)
        negotiate(c)
        c.send(p.packet(p.MAIL, z("<bob@allient.com>")), p.packet(p.RCPT, z("<analyst@bank.com>")))
        assert [r.cmd for r in c.replies(2)] == [p.R_CONTINUE] * 2
        t = time.monotonic()
        c.send(p.packet(p.DATA))
        reply, = c.replies(1)
        assert reply.cmd == p.R_REPLYCODE and reply.data.startswith(b"451 4.7.1")
        assert time.monotonic() - t < 6
        c.close()
    finally:
        m.stop()
        silent.close()


# ----------------------------------------------------------------------------- in-process: the engine's timers
def _in_process(regfd: Any, scan: Any = None, extra: str = "") -> Any:
    from tests.test_milter import make_app, stub_scan

    assert regfd("registry", "add", "bank.com", "--category", "analyst").rc == 0
    assert regfd("officer", "add", "ceo@allient.com", "--role", "CEO").rc == 0
    return make_app(regfd, scan=scan or stub_scan, extra=extra)


def test_idle_connections_are_closed(regfd: Any) -> None:
    import asyncio

    from regfd.mta.asyncio_engine import Engine

    app, _ = _in_process(regfd)

    async def main() -> None:
        engine = Engine(app, quiet=False, idle_timeout=0.2)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(engine.protocol_factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert engine.close_idle(loop.time()) == 0  # not idle yet
        await asyncio.sleep(0.3)
        assert engine.close_idle(loop.time()) == 1
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
        server.close()
        engine.shutdown()

    asyncio.run(main())


def test_scan_over_the_deadline_answers_451_in_time_and_records_nothing(regfd: Any) -> None:
    """The engine's timer, not the scan, decides when the MTA is answered; the late verdict is not recorded."""
    import asyncio

    from regfd.mta.asyncio_engine import Engine

    finished = threading.Event()

    def slow(raw: bytes) -> list[Any]:
        time.sleep(1.0)
        finished.set()
        return []

    app, sink = _in_process(regfd, scan=slow, extra="[milter]\ndecision_timeout = 0.3\n")

    async def main() -> float:
        engine = Engine(app, quiet=False)
        loop = asyncio.get_running_loop()
        server = await loop.create_server(engine.protocol_factory, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        parser = p.PacketParser()

        async def replies(n: int) -> list[p.Packet]:
            out: list[p.Packet] = []
            while len(out) < n:
                out += parser.packets(await asyncio.wait_for(reader.read(65536), 5))
            return out

        writer.write(p.packet(p.OPTNEG, struct.pack(">III", 6, 0x1FF, 0x1FFFFF)))
        writer.write(p.packet(p.MAIL, z("<ceo@allient.com>")) + p.packet(p.RCPT, z("<analyst@bank.com>")))
        writer.write(p.packet(p.DATA))
        assert [r.cmd for r in await replies(4)] == [p.OPTNEG, p.R_CONTINUE, p.R_CONTINUE, p.R_CONTINUE]
        t = time.monotonic()
        writer.write(p.packet(p.HEADER, z("Subject", "Hi")) + p.packet(p.EOH) + p.packet(p.BODY, b"Hello\r\n")
                     + p.packet(p.BODYEOB))
        got = await replies(4)
        elapsed = time.monotonic() - t
        assert got[-1].cmd == p.R_REPLYCODE and got[-1].data.startswith(b"451 4.7.1"), got
        await asyncio.get_running_loop().run_in_executor(None, finished.wait, 5)
        await asyncio.sleep(0.1)
        writer.close()
        server.close()
        engine.shutdown()
        return elapsed

    elapsed = asyncio.run(main())
    assert elapsed < 0.9, elapsed  # answered at the deadline, not when the scan ended
    assert finished.is_set() and sink.calls == [] and app.inflight == 0
