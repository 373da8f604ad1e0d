"""Hypothesis strategies for what a hostile or broken peer can send regfd.

Two families, importable by the suite (tests/test_fuzz_*.py,
tests/test_scanner_property.py) and by bench/bench_fuzz.py:

- `milter_scripts()`: what an MTA side writes on one milter connection, as
  a `Script` of writes. Valid dialogues (negotiation, macros, connect, helo,
  mail, rcpt, data, headers, end of headers, body chunks, end of message,
  abort, quit, as Postfix sends them) and hostile ones: truncated packets,
  length fields over the limit (2^31 and friends) or of 0, unknown command
  bytes, known commands with malformed data, events out of order, a body
  that never ends, random bytes; split into reads at random places.
- `mime_messages()`: structured RFC 5322 messages for the scanner: nested
  multipart/mixed, alternative and related parts and attached messages,
  base64, quoted-printable, 8bit and bogus transfer encodings (correctly or
  wrongly encoded), broken, missing or mismatched boundaries, huge headers,
  valid and broken RFC 2047 encoded words, bogus charset names, and
  attachments declared pdf/docx/htm holding real documents or garbage.

The directory every dialogue assumes (tests/fuzzing/harness.py sets it up):
bank.com is a Specified Person domain, ceo@allient.com an officer,
allient.com the internal domain.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import struct
from dataclasses import dataclass

from hypothesis import strategies as st

from regfd.mta import protocol as p

# ============================================================================ milter protocol

ALL_ACTIONS = 0x1FF
ALL_PROTOCOL = 0x1FFFFF
BODY_CHUNK = 65535  # Postfix's largest body chunk

SENDERS = ("bob@allient.com", "ceo@allient.com", "someone@bank.com", "regfd@allient.com")  # employee, officer,
# inbound, the gateway itself
RECIPIENTS = ("analyst@bank.com", "friend@example.org", "colleague@allient.com", "pm@bank.com")
BODY_LINES = (b"Hello.", b"We will miss the quarter.", b"Embargoed until Monday.", b"Adjusted EBITDA rose 4%.",
              b"> quoted: we got hacked", b"Lunch?", b"\xff\xfe broken utf-8 \xc3", b"", b".", b"100% sure")


@dataclass(frozen=True)
class Script:
    """The bytes an MTA side writes on one milter connection, write by write.

    `valid`: a well-formed dialogue. Its drivers play the MTA's part (after
    a final reply the rest of that message is not sent) and every message
    must get a decision, never the failure action. A hostile script is sent
    as it is, whatever the replies.
    """

    writes: tuple[bytes, ...]
    valid: bool
    kind: str

    @property
    def size(self) -> int:
        """Bytes written in all."""
        return sum(len(w) for w in self.writes)


def _z(*parts: str | bytes) -> bytes:
    return b"".join((x.encode() if isinstance(x, str) else x) + b"\0" for x in parts)


def _macros(stage: bytes, **values: str) -> bytes:
    data = b"".join(_z(k if len(k) == 1 else "{" + k + "}", v) for k, v in values.items())
    return p.packet(p.MACRO, stage + data)


def negotiation(actions: int = ALL_ACTIONS, protocol: int = ALL_PROTOCOL, version: int = 6) -> bytes:
    """SMFIC_OPTNEG as Postfix 3.7 sends it (every action, every protocol bit)."""
    return p.packet(p.OPTNEG, struct.pack(">III", version, actions, protocol))


@dataclass(frozen=True)
class Message:
    """One message of a valid dialogue, packet by packet."""

    sender: str
    recipients: tuple[str, ...]
    headers: tuple[tuple[str, bytes], ...]
    body: bytes
    chunk: int
    qid: str
    with_macros: bool

    def packets(self) -> list[bytes]:
        """MAIL .. end of message, as Postfix sends them."""
        m = self.with_macros
        out = []
        if m:
            out.append(_macros(p.MAIL, i=self.qid, auth_authen="", mail_addr=self.sender, client_addr="127.0.0.1"))
        out.append(p.packet(p.MAIL, _z(f"<{self.sender}>", "SIZE=100")))
        for r in self.recipients:
            if m:
                out.append(_macros(p.RCPT, i=self.qid, rcpt_addr=r))
            out.append(p.packet(p.RCPT, _z(f"<{r}>")))
        if m:
            out.append(_macros(p.DATA, i=self.qid))
        out.append(p.packet(p.DATA))
        out += [p.packet(p.HEADER, _z(name, value)) for name, value in self.headers]
        out.append(p.packet(p.EOH))
        out += [p.packet(p.BODY, self.body[i:i + self.chunk]) for i in range(0, len(self.body), self.chunk)]
        if m:
            out.append(_macros(p.BODYEOB, i=self.qid, j="mx.allient.com"))
        out.append(p.packet(p.BODYEOB))
        return out


_header_value = st.one_of(
    st.sampled_from([b"Hi", b"Q3 results", b"=?utf-8?b?UTMgcmVzdWx0cw==?=", b"=?bogus?q?x?=", b"", b" lead space"]),
    st.binary(max_size=40).map(lambda b: b.replace(b"\0", b"")),
)
_headers = st.lists(
    st.tuples(st.sampled_from(["Subject", "Message-ID", "From", "To", "X-Thing", "Content-Type", "subject"]),
              _header_value),
    max_size=5,
).map(tuple)
_bodies = st.lists(st.sampled_from(BODY_LINES), max_size=8).map(lambda lines: b"\r\n".join(lines) + b"\r\n")


@st.composite
def messages(draw: st.DrawFn) -> Message:
    """One message from the pools above (an employee, an officer, inbound or system mail; Specified or not)."""
    return Message(
        sender=draw(st.sampled_from(SENDERS)),
        recipients=tuple(draw(st.lists(st.sampled_from(RECIPIENTS), min_size=1, max_size=3))),
        headers=draw(_headers),
        body=draw(_bodies),
        chunk=draw(st.sampled_from([BODY_CHUNK, 7, 1])),
        qid=draw(st.sampled_from(["4ABC123", "4DEF456", ""])),
        with_macros=draw(st.booleans()),
    )


def _connect(with_macros: bool) -> list[bytes]:
    out = [_macros(p.CONNECT, j="mx.allient.com", client_addr="127.0.0.1")] if with_macros else []
    out += [p.packet(p.CONNECT, _z("client") + b"4\x0f\xa0" + _z("127.0.0.1"))]
    if with_macros:
        out.append(_macros(p.HELO))
    out.append(p.packet(p.HELO, _z("client.example")))
    return out


@st.composite
def valid_packets(draw: st.DrawFn) -> list[bytes]:
    """A well-formed dialogue, packet by packet: negotiation, connect, helo, 1-3 messages (an abort, maybe,
    between them), then quit or the MTA closing the connection."""
    out = [negotiation(draw(st.sampled_from([ALL_ACTIONS, p.F_ADDHDRS | p.F_QUARANTINE, 0])),
                       draw(st.sampled_from([ALL_PROTOCOL, 0, p.P_SKIP])))]
    out += _connect(draw(st.booleans()))
    for m in draw(st.lists(messages(), min_size=1, max_size=3)):
        pkts = m.packets()
        if draw(st.integers(0, 9)) == 0:  # RSET after RCPT: the MTA aborts this message
            out += pkts[: 1 + 2 * len(m.recipients)] + [p.packet(p.ABORT)]
            continue
        out += pkts
    if draw(st.booleans()):
        out.append(p.packet(p.QUIT))
    return out


# ----- the hostile pieces
_COMMAND_BYTES = sorted(p.COMMANDS)
_unknown_cmd = st.binary(min_size=1, max_size=1).filter(lambda b: b not in p.COMMANDS)


def _oversized(max_packet: int) -> st.SearchStrategy[bytes]:
    """A length field over the limit (the hostile 2^31, 2^32-1, just over) followed by some data."""
    return st.builds(
        lambda n, cmd, tail: struct.pack(">I", n) + cmd + tail,
        st.one_of(st.sampled_from([2**31, 2**32 - 1, max_packet + 1, 2**31 - 1]),
                  st.integers(max_packet + 1, 2**32 - 1)),
        st.sampled_from(_COMMAND_BYTES),
        st.binary(max_size=64),
    )


_zero_length = st.builds(lambda tail: struct.pack(">I", 0) + tail, st.binary(max_size=16))
_unknown = st.builds(lambda c, d: p.packet(c, d), _unknown_cmd, st.binary(max_size=32))
_malformed = st.builds(  # a known command, data that is not what it should be (no NUL, short, random)
    lambda c, d: p.packet(c, d), st.sampled_from(_COMMAND_BYTES),
    st.one_of(st.binary(max_size=40), st.sampled_from([b"", b"\0", b"x", b"4", b"client\0", b"client\0" + b"4",
                                                       b"a\0b", b"L\0", b"\0\0\0"])))
_random_bytes = st.binary(min_size=1, max_size=200)
_loose_packet = st.sampled_from([  # a well-formed packet, wherever it lands (out of order)
    negotiation(), p.packet(p.MAIL, _z("<bob@allient.com>")), p.packet(p.RCPT, _z("<analyst@bank.com>")),
    p.packet(p.DATA), p.packet(p.HEADER, _z("Subject", "x")), p.packet(p.EOH), p.packet(p.BODY, b"we will miss"),
    p.packet(p.BODYEOB), p.packet(p.ABORT), p.packet(p.QUIT_NC), p.packet(p.HELO, _z("h")),
    p.packet(p.UNKNOWN, _z("VRFY x")), _macros(p.MAIL, i="Q1"), _macros(b"Z", x="y"), p.packet(p.MACRO, b"M"),
    p.packet(p.CONNECT, _z("c") + b"6\0\x19" + _z("::1")), p.packet(p.CONNECT, _z("c") + b"L\0\0" + _z("/s")),
    p.packet(p.OPTNEG, struct.pack(">III", 1, 0, 0)), p.packet(p.OPTNEG, struct.pack(">III", 2**32 - 1, 0, 0)),
])


def _truncate(data: bytes, cut: int) -> bytes:
    return data[: max(1, min(cut, len(data) - 1))] if len(data) > 1 else data


@st.composite
def endless_body(draw: st.DrawFn) -> list[bytes]:
    """A message to a Specified Person whose body never ends: chunk after chunk, no end of message."""
    sender = draw(st.sampled_from(["bob@allient.com", "ceo@allient.com"]))
    out = [negotiation(), p.packet(p.MAIL, _z(f"<{sender}>")), p.packet(p.RCPT, _z("<analyst@bank.com>")),
           p.packet(p.DATA), p.packet(p.HEADER, _z("Subject", "x")), p.packet(p.EOH)]
    chunk = p.packet(p.BODY, b"y" * draw(st.sampled_from([BODY_CHUNK, 4096, 1000])))
    out += [chunk] * draw(st.integers(1, 40))  # the same bytes object: no memory for the repeats
    return out


@st.composite
def hostile_packets(draw: st.DrawFn, max_packet: int = p.DEFAULT_MAX_PACKET) -> list[bytes]:
    """Valid packets with hostile pieces put in, valid ones dropped, repeated or swapped (out of order),
    or a truncated last packet."""
    base = draw(valid_packets())
    if draw(st.integers(0, 9)) == 0:
        base = base[1:]  # no negotiation at all
    ops = draw(st.lists(st.tuples(st.sampled_from(["insert", "drop", "dup", "swap"]), st.integers(0, 10**6)),
                        min_size=1, max_size=6))
    pieces = st.one_of(_oversized(max_packet), _zero_length, _unknown, _malformed, _random_bytes, _loose_packet)
    for op, where in ops:
        i = where % (len(base) + 1)
        if op == "insert" or not base:
            base.insert(i, draw(pieces))
        elif op == "drop":
            del base[i % len(base)]
        elif op == "dup":
            base.insert(i, base[i % len(base)])
        else:
            j = draw(st.integers(0, len(base) - 1))
            k = i % len(base)
            base[j], base[k] = base[k], base[j]
    if base and draw(st.integers(0, 4)) == 0:
        base[-1] = _truncate(base[-1], draw(st.integers(1, 64)))
    return base


def _split(data: bytes, cuts: list[int]) -> tuple[bytes, ...]:
    """`data` as writes cut at `cuts` (reads of any size; a packet may straddle two)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return tuple(data[a:b] for a, b in zip(points, points[1:], strict=False) if b > a)


@st.composite
def milter_scripts(draw: st.DrawFn, max_packet: int = p.DEFAULT_MAX_PACKET) -> Script:
    """A valid or hostile dialogue on one milter connection (about one in three valid)."""
    kind = draw(st.sampled_from(["valid", "valid", "hostile", "hostile", "hostile", "endless", "random"]))
    if kind == "random":
        return Script((draw(st.binary(min_size=1, max_size=2000)),), False, kind)
    if kind == "endless":
        return Script(tuple(draw(endless_body())), False, kind)
    pkts = draw(valid_packets()) if kind == "valid" else draw(hostile_packets(max_packet))
    if kind == "valid" or draw(st.booleans()):
        return Script(tuple(pkts), kind == "valid", kind)  # one write per packet
    data = b"".join(pkts)
    return Script(_split(data, draw(st.lists(st.integers(0, 10**6), max_size=8))), False, kind + "-split")


# ============================================================================ MIME messages

MATERIAL_TEXT = ("We will miss the quarter and guidance will be cut.", "Embargoed until Monday 8am.",
                 "Adjusted EBITDA was 42 million.", "See you at lunch.", "\u0421ontract \u200bsigned",
                 "Revenue fell 30% — do not share.", "")
CHARSETS = ("utf-8", "us-ascii", "iso-8859-1", "utf-16", "windows-1252", "x-bogus-charset", "utf-8'", "",
            "unicode-1-1-utf-7", "utf-32", "\u00e9\u00e9", "ks_c_5601-1987")
ENCODINGS = ("7bit", "8bit", "base64", "quoted-printable", "binary", "x-uuencode", "base65", "")
LEAF_TYPES = ("text/plain", "text/html", "application/pdf", "application/octet-stream",
              "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "application/zip",
              "message/rfc822", "text/x-bogus", "image/png", "application/msword")
FILENAMES = ("", "report.pdf", "minutes.docx", "page.htm", "x.html", "notes.txt", "a.zip", "old.doc",
             "=?utf-8?b?cmVwb3J0LnBkZg==?=", "=?broken?q?", "\u00fc.pdf")


def _encode(body: bytes, cte: str, correctly: bool) -> bytes:
    """`body` in transfer encoding `cte`: correctly, or as a sender with a bug would (declared, not done)."""
    if not correctly:
        return body
    if cte == "base64":
        return base64.encodebytes(body).replace(b"\n", b"\r\n")
    if cte == "quoted-printable":
        return quopri.encodestring(body).replace(b"\n", b"\r\n")
    return body


@st.composite
def _document(draw: st.DrawFn) -> bytes:
    """Attachment bytes: a real PDF or DOCX with text, a truncated one, a ZIP, or garbage."""
    from tests.scanner_fixtures import make_docx, make_pdf

    text = draw(st.sampled_from(MATERIAL_TEXT))
    kind = draw(st.sampled_from(["pdf", "docx", "garbage", "pdf-head", "zip-head", "html"]))
    if kind == "pdf":
        data = make_pdf([[text[:60]]], compress=draw(st.booleans()))
    elif kind == "docx":
        data = make_docx([[text]])
    elif kind == "pdf-head":
        data = b"%PDF-1.4\n" + draw(st.binary(max_size=300))
    elif kind == "zip-head":
        data = b"PK\x03\x04" + draw(st.binary(max_size=300))
    elif kind == "html":
        data = f"<html><body><p>{text}</p><script>x</script><p".encode()
    else:
        data = draw(st.binary(max_size=400))
    if kind in ("pdf", "docx") and draw(st.integers(0, 3)) == 0:
        data = data[: draw(st.integers(0, len(data)))]  # truncated in transit
    return data


def _text_body(text: str, charset: str) -> bytes:
    try:
        return text.encode(charset or "utf-8")
    except (LookupError, UnicodeError):
        return text.encode("utf-8")


def _header_line(name: str, value: str) -> bytes:
    return f"{name}: {value}\r\n".encode("utf-8", "surrogateescape")


encoded_words = st.one_of(
    st.sampled_from(MATERIAL_TEXT).map(lambda t: "=?utf-8?b?" + base64.b64encode(t.encode()).decode() + "?="),
    st.sampled_from(MATERIAL_TEXT).map(
        lambda t: "=?utf-8?q?" + binascii.b2a_qp(t.encode(), header=True).decode() + "?="),
    st.sampled_from(["=?utf-8?b?not base64!?=", "=?x-bogus?q?abc?=", "=?utf-8?q?unterminated", "=?utf-8?x?abc?=",
                     "=??b??=", "=?iso-8859-1?q?=E9=?=", "=?utf-8?b?" + "QUFB" * 2000 + "?=",
                     "=?utf-8*en?q?lang?=", "=?utf-16?b?//4=?="]),
)


@st.composite
def _leaf(draw: st.DrawFn) -> bytes:
    """One leaf entity: headers, blank line, body (encoded rightly or wrongly)."""
    ctype = draw(st.sampled_from(LEAF_TYPES))
    charset = draw(st.sampled_from(CHARSETS))
    cte = draw(st.sampled_from(ENCODINGS))
    name = draw(st.sampled_from(FILENAMES))
    if ctype.startswith("text/"):
        body = _text_body(draw(st.sampled_from(MATERIAL_TEXT)) * draw(st.integers(1, 4)), charset)
        if ctype == "text/html":
            body = b"<div>" + body + b"</div><!--"
    elif ctype == "message/rfc822":
        body = b"Subject: inner\r\n\r\n" + _text_body(draw(st.sampled_from(MATERIAL_TEXT)), "utf-8")
    else:
        body = draw(_document())
    head = _header_line("Content-Type", ctype + (f'; charset="{charset}"' if charset else "")
                        + (f'; name="{name}"' if name and draw(st.booleans()) else ""))
    if cte:
        head += _header_line("Content-Transfer-Encoding", cte)
    if name:
        disposition = draw(st.sampled_from(["attachment", "inline", "bogus", ""]))
        head += _header_line("Content-Disposition", f'{disposition}; filename="{name}"')
    return head + b"\r\n" + _encode(body, cte, draw(st.integers(0, 4)) > 0)


@st.composite
def _multipart(draw: st.DrawFn, children: st.SearchStrategy[bytes]) -> bytes:
    """multipart/mixed, alternative, related (or bogus) around some children; the boundary right, missing,
    mismatched, empty, never closed, or occurring inside a part."""
    sub = draw(st.sampled_from(["mixed", "alternative", "related", "digest", "x-bogus"]))
    parts = draw(st.lists(children, min_size=0, max_size=4))
    boundary = draw(st.sampled_from(["b1", "=_boundary_" + "x" * 70, "with space", "b1--", "\u00e9"]))
    mode = draw(st.sampled_from(["ok", "ok", "ok", "no-close", "missing-param", "mismatch", "empty", "in-body",
                                 "no-preamble-break"]))
    declared = {"missing-param": None, "mismatch": "other", "empty": ""}.get(mode, boundary)
    head = _header_line("Content-Type", f"multipart/{sub}"
                        + ("" if declared is None else f'; boundary="{declared}"'))
    delim = f"--{boundary}".encode("utf-8", "surrogateescape")
    body = b"preamble\r\n" if mode != "no-preamble-break" else b""
    for part in parts:
        if mode == "in-body":
            part = part + b"\r\n" + delim + b"X\r\n"
        body += delim + b"\r\n" + part + b"\r\n"
    if mode != "no-close":
        body += delim + b"--\r\n"
    return head + b"\r\n" + body


@st.composite
def _attached_message(draw: st.DrawFn, children: st.SearchStrategy[bytes]) -> bytes:
    inner = draw(children)
    name = draw(st.sampled_from(["", "fwd.eml"]))
    head = _header_line("Content-Type", "message/rfc822")
    if name:
        head += _header_line("Content-Disposition", f'attachment; filename="{name}"')
    return head + b"\r\n" + _header_line("Subject", draw(encoded_words)) + inner


def _nest(depth: int, leaf: bytes, kind: str) -> bytes:
    """`leaf` wrapped `depth` times in multipart/mixed or message/rfc822 (deeper than any limit)."""
    out = leaf
    for i in range(depth):
        if kind == "multipart":
            out = (f'Content-Type: multipart/mixed; boundary="n{i}"\r\n\r\n--n{i}\r\n'.encode() + out
                   + f"\r\n--n{i}--\r\n".encode())
        else:
            out = b"Content-Type: message/rfc822\r\n\r\nSubject: level\r\n" + out
    return out


entities: st.SearchStrategy[bytes] = st.recursive(
    _leaf(), lambda children: st.one_of(_multipart(children), _attached_message(children)), max_leaves=10)


@st.composite
def _top_headers(draw: st.DrawFn) -> bytes:
    """From/To/Subject, with encoded words valid or broken, sometimes a huge header or thousands of them."""
    out = b"From: bob@allient.com\r\nTo: analyst@bank.com\r\nMIME-Version: 1.0\r\n"
    out += _header_line("Subject", " ".join(draw(st.lists(encoded_words, min_size=0, max_size=3))) or "Hi")
    size = draw(st.sampled_from(["plain", "plain", "plain", "huge-line", "huge-folded", "many"]))
    if size == "huge-line":
        out += b"X-Huge: " + b"a" * draw(st.integers(10_000, 300_000)) + b"\r\n"
    elif size == "huge-folded":
        out += b"Subject: " + b"merger talk\r\n " * draw(st.integers(1000, 20_000)) + b"end\r\n"
    elif size == "many":
        out += b"X-Many: value\r\n" * draw(st.integers(1000, 10_000))
    return out


@st.composite
def mime_messages(draw: st.DrawFn) -> bytes:
    """A whole raw message: top headers and a structured (possibly broken) MIME body."""
    top = draw(_top_headers())
    shape = draw(st.sampled_from(["tree", "tree", "tree", "deep", "bare-body"]))
    if shape == "deep":
        leaf = draw(_leaf())
        body = _nest(draw(st.integers(5, 60)), leaf, draw(st.sampled_from(["multipart", "message"])))
    elif shape == "bare-body":
        body = b"\r\n" + _text_body(draw(st.sampled_from(MATERIAL_TEXT)), "utf-8")
    else:
        body = draw(entities)
    raw = top + body
    eol = draw(st.sampled_from(["crlf", "crlf", "lf", "cr"]))
    if eol == "lf":
        raw = raw.replace(b"\r\n", b"\n")
    elif eol == "cr":
        raw = raw.replace(b"\r\n", b"\r")
    return raw
