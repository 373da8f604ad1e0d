"""The milter wire protocol, sans-IO: bytes in, packets out; replies and actions to bytes.

No sockets, no threads: an engine feeds what it read into `PacketParser`
and writes what the encoders return. Every packet is a 4-byte big-endian
length (command byte included), one command byte and its data
(Sendmail's libmilter/mfdef.h, protocol version 6; Postfix's milter8.c speaks
the same). The parser never holds more than one packet of at most
`max_packet` bytes beyond what the engine gave it in one read: a length
field over the limit (a hostile 2^31) is a `ProtocolError` at once, before
any of its data is awaited.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# ----- commands from the MTA (SMFIC_*)
ABORT = b"A"
BODY = b"B"
CONNECT = b"C"
MACRO = b"D"
BODYEOB = b"E"
HELO = b"H"
QUIT_NC = b"K"
HEADER = b"L"
MAIL = b"M"
EOH = b"N"
OPTNEG = b"O"
QUIT = b"Q"
RCPT = b"R"
DATA = b"T"
UNKNOWN = b"U"
COMMANDS = frozenset({ABORT, BODY, CONNECT, MACRO, BODYEOB, HELO, QUIT_NC, HEADER, MAIL, EOH, OPTNEG, QUIT, RCPT,
                      DATA, UNKNOWN})

# ----- replies and actions to the MTA (SMFIR_*)
R_ADDRCPT = b"+"
R_DELRCPT = b"-"
R_ACCEPT = b"a"
R_REPLBODY = b"b"
R_CONTINUE = b"c"
R_DISCARD = b"d"
R_ADDHEADER = b"h"
R_INSHEADER = b"i"
R_CHGHEADER = b"m"
R_PROGRESS = b"p"
R_QUARANTINE = b"q"
R_REJECT = b"r"
R_SKIP = b"s"
R_TEMPFAIL = b"t"
R_REPLYCODE = b"y"

# ----- actions a milter may ask for (SMFIF_*)
F_ADDHDRS = 0x01
F_CHGBODY = 0x02
F_ADDRCPT = 0x04
F_DELRCPT = 0x08
F_CHGHDRS = 0x10
F_QUARANTINE = 0x20
F_CHGFROM = 0x40
F_ADDRCPT_PAR = 0x80
F_SETSYMLIST = 0x100
# What libmilter assumes an MTA that offers no actions at all allows (SMFI_V1_ACTS, a version-1 MTA).
V1_ACTIONS = F_ADDHDRS | F_CHGBODY | F_ADDRCPT | F_DELRCPT

# ----- protocol steps (SMFIP_*): what the MTA may leave out, and where it expects no reply
P_NOCONNECT = 0x1
P_NOHELO = 0x2
P_NOMAIL = 0x4
P_NORCPT = 0x8
P_NOBODY = 0x10
P_NOHDRS = 0x20
P_NOEOH = 0x40
P_NR_HDR = 0x80
P_NOUNKNOWN = 0x100
P_NODATA = 0x200
P_SKIP = 0x400
P_RCPT_REJ = 0x800
P_NR_CONN = 0x1000
P_NR_HELO = 0x2000
P_NR_MAIL = 0x4000
P_NR_RCPT = 0x8000
P_NR_DATA = 0x10000
P_NR_UNKN = 0x20000
P_NR_EOH = 0x40000
P_NR_BODY = 0x80000
P_HDR_LEADSPC = 0x100000

# What libmilter assumes an MTA that offers no protocol steps at all means (SMFI_V1_PROT, a version-1 MTA).
V1_PROTOCOL = P_NOCONNECT | P_NOHELO | P_NOMAIL | P_NORCPT | P_NOBODY | P_NOHDRS

# Which no-reply bit silences which command.
NO_REPLY_BIT: dict[bytes, int] = {CONNECT: P_NR_CONN, HELO: P_NR_HELO, MAIL: P_NR_MAIL, RCPT: P_NR_RCPT,
                                  DATA: P_NR_DATA, UNKNOWN: P_NR_UNKN, HEADER: P_NR_HDR, EOH: P_NR_EOH,
                                  BODY: P_NR_BODY}

# ----- macro stages for SETSYMLIST (SMFIM_*)
M_CONNECT = 0
M_HELO = 1
M_ENVFROM = 2
M_ENVRCPT = 3
M_DATA = 4
M_EOM = 5
M_EOH = 6

VERSION = 6
DEFAULT_MAX_PACKET = 256 * 1024  # Postfix sends body chunks of at most 65 535 bytes, headers up to ~100 KB
_LEN = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer broke the protocol (oversized, truncated or malformed packet): close the connection."""


@dataclass(frozen=True, slots=True)
class Packet:
    """One packet from the MTA: its command byte and its data."""

    cmd: bytes
    data: bytes


class PacketParser:
    """Bytes in, whole packets out; never buffers past one packet of `max_packet` bytes plus one read.

    `feed` keeps what arrived; `next` returns the next complete packet, None
    when more bytes are needed, and raises `ProtocolError` on a length field
    of 0 or over `max_packet` (its data is never awaited). An engine that
    stops calling `next` while a decision is pending must stop reading too,
    so the buffer stays bounded by one read.
    """

    __slots__ = ("_buf", "_pos", "max_packet")

    def __init__(self, max_packet: int = DEFAULT_MAX_PACKET) -> None:
        self.max_packet = max_packet
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        """Keep `data` for `next`."""
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as a packet."""
        return len(self._buf) - self._pos

    def next(self) -> Packet | None:
        """The next complete packet, or None until more bytes arrive."""
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 4:
            return None
        (n,) = _LEN.unpack_from(buf, pos)
        if n == 0:
            raise ProtocolError("packet of length 0 (no command byte)")
        if n > self.max_packet:
            raise ProtocolError(f"packet of {n} bytes over the limit of {self.max_packet}")
        end = pos + 4 + n
        if len(buf) < end:
            return None
        cmd = bytes(buf[pos + 4: pos + 5])
        data = bytes(buf[pos + 5: end])
        self._pos = end
        if self._pos == len(buf):
            buf.clear()
            self._pos = 0
        return Packet(cmd, data)

    def packets(self, data: bytes) -> list[Packet]:
        """`feed` then every complete packet (for tests and simple callers)."""
        self.feed(data)
        out = []
        while (p := self.next()) is not None:
            out.append(p)
        return out


# ----- decoding packet data
def cstrings(data: bytes) -> list[bytes]:
    """NUL-terminated strings; a missing final NUL is a protocol error (a truncated packet)."""
    if not data:
        return []
    if not data.endswith(b"\0"):
        raise ProtocolError("string not NUL-terminated")
    return data[:-1].split(b"\0")


def decode_optneg(data: bytes) -> tuple[int, int, int]:
    """SMFIC_OPTNEG: (version, actions, protocol) the MTA offers."""
    if len(data) < 12:
        raise ProtocolError(f"option negotiation of {len(data)} bytes (needs 12)")
    v, a, p = struct.unpack_from(">III", data)
    return v, a, p


def decode_macros(data: bytes) -> tuple[bytes, dict[str, str]]:
    """SMFIC_MACRO: the command the macros are for, and name → value (braces of one-letter names dropped)."""
    if not data:
        raise ProtocolError("macro packet without a command")
    parts = cstrings(data[1:]) if len(data) > 1 else []
    out: dict[str, str] = {}
    for i in range(0, len(parts) - 1, 2):
        out[macro_name(parts[i].decode("utf-8", "surrogateescape"))] = parts[i + 1].decode("utf-8", "surrogateescape")
    return data[:1], out


def macro_name(name: str) -> str:
    """`{i}` and `i` are the same macro (libmilter's smfi_getsymval tries both)."""
    if len(name) == 3 and name[0] == "{" and name[2] == "}":
        return name[1]
    return name


def decode_connect(data: bytes) -> tuple[str, str]:
    """SMFIC_CONNECT: (client host name, client address: IP, socket path, or '' when unknown)."""
    host, sep, rest = data.partition(b"\0")
    if not sep or not rest:
        raise ProtocolError("connect packet truncated")
    family = rest[:1]
    if family in (b"4", b"6"):
        if len(rest) < 4:
            raise ProtocolError("connect packet truncated")
        addr = rest[3:]
    elif family == b"L":
        addr = rest[3:] if len(rest) >= 3 else b""
    else:
        addr = b""
    return host.decode("utf-8", "surrogateescape"), addr.rstrip(b"\0").decode("utf-8", "surrogateescape")


def decode_header(data: bytes) -> tuple[bytes, bytes]:
    """SMFIC_HEADER: (name, value) as bytes."""
    parts = cstrings(data)
    if len(parts) != 2:
        raise ProtocolError("header packet is not name NUL value NUL")
    return parts[0], parts[1]


# ----- encoding
def packet(cmd: bytes, data: bytes = b"") -> bytes:
    """One packet on the wire."""
    return _LEN.pack(len(data) + 1) + cmd + data


def _z(s: str | bytes) -> bytes:
    return (s.encode("utf-8", "surrogateescape") if isinstance(s, str) else s) + b"\0"


CONTINUE_PKT = packet(R_CONTINUE)
ACCEPT_PKT = packet(R_ACCEPT)
TEMPFAIL_PKT = packet(R_TEMPFAIL)
REJECT_PKT = packet(R_REJECT)
SKIP_PKT = packet(R_SKIP)


def optneg(version: int, actions: int, protocol: int, macros: Mapping[int, Iterable[str]] | None = None) -> bytes:
    """The milter's SMFIC_OPTNEG reply, with per-stage macro lists (sent only if SETSYMLIST was agreed)."""
    data = struct.pack(">III", version, actions, protocol)
    for stage, names in (macros or {}).items():
        data += struct.pack(">I", stage) + _z(" ".join(names))
    return packet(OPTNEG, data)


def replycode(code: str, xcode: str, text: str) -> bytes:
    """SMFIR_REPLYCODE: the SMTP reply the MTA gives for a reject or tempfail (`550 5.7.1 text`)."""
    return packet(R_REPLYCODE, _z(f"{code} {xcode} {text}"))


def addheader(name: str, value: str) -> bytes:
    """SMFIR_ADDHEADER: append a header."""
    return packet(R_ADDHEADER, _z(name) + _z(value))


def chgheader(name: str, index: int, value: str) -> bytes:
    """SMFIR_CHGHEADER: change the `index`th (1-based) header of that name; an empty value deletes it."""
    return packet(R_CHGHEADER, struct.pack(">I", index) + _z(name) + _z(value))


def addrcpt(rcpt: str) -> bytes:
    """SMFIR_ADDRCPT: add an envelope recipient (`<addr>`)."""
    return packet(R_ADDRCPT, _z(rcpt))


def quarantine(reason: str) -> bytes:
    """SMFIR_QUARANTINE: put the message on hold (Postfix: the hold queue) with a reason."""
    return packet(R_QUARANTINE, _z(reason))
