"""CPU per message of the asyncio engine's sans-IO session alone: packets in, reply bytes out.

    .venv/bin/python bench/bench_session.py [--messages 20000] [--repeat 5]

No sockets, no Redis, no scanner: the directory is a fixed snapshot (one
Specified Person domain) and the scan finds nothing, so what is measured is
the session's own work per packet (decoding, the core's events, encoding
the replies) for three kinds of message as Postfix sends them on a unix
socket (the quiet protocol): `sp` (a Specified Person: every stage, 10 KB
of body in one chunk, the EOM job), `long` (the same with 60 headers and
the body in 60 chunks: mostly the per-packet path) and `none` (accepted at
DATA). The jobs run inline. Prints the best of `--repeat` runs in µs per message and per
packet. bench_mta.py measures the same path behind a real Postfix, where
this is a small share of the time; this one shows a change in the session
itself above the noise of a shared machine.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from regfd.config import parse_config  # noqa: E402
from regfd.core.decision import Decider  # noqa: E402
from regfd.core.directory import DirectorySnapshot, RegistryEntry  # noqa: E402
from regfd.core.policy import Policy  # noqa: E402
from regfd.mta import protocol as p  # noqa: E402
from regfd.mta.app import MilterApp  # noqa: E402
from regfd.mta.session import Session, run_inline  # noqa: E402


class Directory:
    """bank.com is a Specified Person; nobody is an officer."""

    snap = DirectorySnapshot(registry={"bank.com": RegistryEntry("bank.com", "analyst")})

    def snapshot(self, sender: str, recipients: Any) -> DirectorySnapshot:
        """The same snapshot for every envelope."""
        return self.snap


class Sink:
    """Records nothing."""

    def on_decision(self, verdict: Any, facts: Any) -> None:
        """Nothing to do."""


def z(*parts: str) -> bytes:
    return b"".join(x.encode() + b"\0" for x in parts)


def message(rcpt: str, headers: int = 12, chunks: int = 1) -> list[p.Packet]:
    """One message's packets, as Postfix sends them on the quiet protocol."""
    m = [p.Packet(p.MACRO, p.MAIL + z("i", "4ABC", "{mail_addr}", "bob@allient.com", "{client_addr}", "127.0.0.1")),
         p.Packet(p.MAIL, z("<bob@allient.com>", "SIZE=10000")),
         p.Packet(p.MACRO, p.RCPT + z("i", "4ABC", "{rcpt_addr}", rcpt)), p.Packet(p.RCPT, z(f"<{rcpt}>")),
         p.Packet(p.MACRO, p.DATA + z("i", "4ABC")), p.Packet(p.DATA, b"")]
    m += [p.Packet(p.HEADER, z(f"X-Header-{i}", "value " * 8)) for i in range(headers)]
    m += [p.Packet(p.HEADER, z("Subject", "Lunch")), p.Packet(p.EOH, b"")]
    m += [p.Packet(p.BODY, b"Lunch? " * (1450 // chunks)) for _ in range(chunks)]
    m += [p.Packet(p.MACRO, p.BODYEOB + z("i", "4ABC", "j", "mx")), p.Packet(p.BODYEOB, b"")]
    return m


def run(app: MilterApp, packets: list[p.Packet], n: int) -> float:
    """Seconds for `n` messages on one connection (checked first: each one is accepted at its last packet)."""
    s = Session(app, quiet=True)
    s.handle(p.Packet(p.OPTNEG, struct.pack(">III", 6, 0x1FF, 0x1FFFFF)))
    for _ in range(2):
        replies = [run_inline(s, s.handle(pkt)) for pkt in packets]
        assert replies[-1][-1] == p.ACCEPT_PKT and sum(map(len, replies)) > 1, replies
    t = time.perf_counter()
    for _ in range(n):
        for pkt in packets:
            run_inline(s, s.handle(pkt))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    config = parse_config({"internal_domains": ["allient.com"]})
    decider = Decider(Policy.from_config(config), lambda raw: [], config.limits.max_message_bytes)
    app = MilterApp.from_config(config, Directory(), Sink(), decider)
    import structlog

    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # the log lines cost the same either way
    for kind, rcpt in (("sp", "analyst@bank.com"), ("long", "analyst@bank.com"), ("none", "friend@example.org")):
        packets = message(rcpt) if kind != "long" else message(rcpt, headers=60, chunks=60)
        todo = packets if kind != "none" else packets[:6]
        best = min(run(app, todo, a.messages) for _ in range(a.repeat))
        per = best / a.messages * 1e6
        print(f"{kind:5} {len(todo):3} packets/message  {per:8.1f} µs/message  {per / len(todo):6.2f} µs/packet")


if __name__ == "__main__":
    main()
