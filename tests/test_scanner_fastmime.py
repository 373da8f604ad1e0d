"""The fast MIME split builds exactly the tree the stdlib parser builds, or steps aside.

`regfd.scan.mime.parse_message` is `email.message_from_bytes(raw,
policy=compat32)` with a fast path for ordinary mail. These tests compare
the two on many shapes of message, well-formed and not, and on random
mutations of them: whenever the fast path answers, every header, the
default type, the tree and every leaf payload must be identical (preamble,
epilogue and defects are not compared: the scanner never reads them).
"""

from __future__ import annotations

import base64
import email
import random
from email import policy
from email.message import Message
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest

from regfd.scan import mime as mimeparts
from regfd.scan.mime import _fast_parse, parse_message
from tests.scanner_fixtures import make_pdf


def _shape(msg: Message) -> tuple[object, ...]:
    # the raw tree, as the parsers left it: `_payload` and `_headers` are
    # undeclared in typeshed
    payload = msg._payload  # type: ignore[attr-defined]
    if isinstance(payload, list):
        payload = [_shape(p) for p in payload]
    return (msg.get_unixfrom(), list(msg._headers), msg.get_default_type(), payload)  # type: ignore[attr-defined]


def _stdlib(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=policy.compat32)


def _same_or_declined(raw: bytes) -> bool:
    """True when the fast path answered (and then it must agree)."""
    fast = _fast_parse(raw)
    if fast is None:
        assert _shape(parse_message(raw)) == _shape(_stdlib(raw))
        return False
    assert _shape(fast) == _shape(_stdlib(raw))
    return True


def _bench_like(crlf: bool = False) -> bytes:
    msg = MIMEMultipart()
    msg["From"] = "employee@corp.example"
    msg["To"] = "analyst@bank.example"
    msg["Subject"] = "Weekly update"
    msg.attach(MIMEText("Hi all,\n\nThe team reviewed the travel policy.\n\nThanks,\nDana\n", "plain", "utf-8"))
    part = MIMEApplication(make_pdf([["see the numbers"]]), "pdf")
    part.add_header("Content-Disposition", "attachment", filename="report.pdf")
    msg.attach(part)
    return msg.as_bytes(policy=policy.SMTP) if crlf else msg.as_bytes()


def _nested(crlf: bool = False) -> bytes:
    outer = MIMEMultipart("mixed")
    outer["Subject"] = "=?utf-8?q?R=C3=A9sultats?="
    alt = MIMEMultipart("alternative")
    alt.attach(MIMEText("plain body\nline two\n", "plain", "utf-8"))
    alt.attach(MIMEText("<p>html body</p>", "html", "utf-8"))
    outer.attach(alt)
    outer.attach(MIMEText("a,b\n1,2\n", "csv"))
    return outer.as_bytes(policy=policy.SMTP) if crlf else outer.as_bytes()


HAND_WRITTEN = {
    "single part": b"Subject: hi\nContent-Type: text/plain\n\nhello\nworld\n",
    "single part, no final newline": b"Subject: hi\n\nhello",
    "single part, crlf": b"Subject: hi\r\nX-A: 1\r\n\r\nhello\r\n\r\n",
    "no headers": b"\nbody only\n",
    "8-bit body and header": "Subject: caf\u00e9\nContent-Type: text/plain; charset=utf-8\n\nna\u00efve r\u00e9sum\u00e9\n".encode("utf-8"),
    "latin-1 body": "Subject: x\n\nna\u00efve\n".encode("latin-1"),
    "folded headers and unix from": b"From someone Mon Jan  1 00:00:00 2024\nSubject: a\n  folded\n\tmore\nTo: x\n\nbody\n",
    "preamble epilogue lookalikes": (
        b'Content-Type: multipart/mixed; boundary="b"\n\npreamble\n--bX\n --b\n'
        b"--b  \t\nContent-Type: text/plain\n\none\n--b-x\n--bb\n\n"
        b"--b\n\ntwo, no headers\n--b--  \nepilogue\n--b\nafter close\n"
    ),
    "empty body part": b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\n--b--\n',
    "body ends in blank lines": b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n\r\nx\r\n\r\n\r\n--b--\r\n',
    "close without newline": b'Content-Type: multipart/mixed; boundary="b"\n\n--b\n\nx\n--b--',
    "regex characters in boundary": b'Content-Type: multipart/mixed; boundary="=_a.b+c?(d)*[e]"\n\n--=_a.b+c?(d)*[e]\n\nx\n--=_a.b+c?(d)*[e]--\n',
    "boundary prefix of inner": (
        b'Content-Type: multipart/mixed; boundary="b"\n\n--b\n'
        b'Content-Type: multipart/alternative; boundary="b1"\n\n--b1\n\ninner\n--b1--\n'
        b"--b\n\nouter\n--b--\n"
    ),
    "inner boundary prefix of outer": (
        b'Content-Type: multipart/mixed; boundary="b1"\n\n--b1\n'
        b'Content-Type: multipart/alternative; boundary="b"\n\n--b\n\ninner\n--b--\n'
        b"--b1\n\nouter\n--b1--\n"
    ),
    "rfc2231 boundary": b"Content-Type: multipart/mixed; boundary*=us-ascii''xyz\n\n--xyz\n\nx\n--xyz--\n",
    # shapes the fast path leaves to the stdlib parser
    "missing close delimiter": b'Content-Type: multipart/mixed; boundary="b"\n\n--b\n\nx\n--b\n\ny\n',
    "no start delimiter": b'Content-Type: multipart/mixed; boundary="b"\n\njust text\n',
    "only a close delimiter": b'Content-Type: multipart/mixed; boundary="b"\n\n--b--\n',
    "lone cr": b"Subject: a\r\n\r\nline\rnext\r\n",
    "lone cr in multipart": b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n\r\nx\r--b\r\n\r\ny\r\n--b--\r\n',
    "message/rfc822": b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: message/rfc822\n\nSubject: in\n\nhi\n--b--\n',
    "digest": b'Content-Type: multipart/digest; boundary="b"\n\n--b\n\nSubject: in\n\nhi\n--b--\n',
    "no boundary": b"Content-Type: multipart/mixed\n\n--b\n\nx\n--b--\n",
    "empty boundary": b'Content-Type: multipart/mixed; boundary=""\n\n--\n\nx\n----\n',
    "consecutive delimiters": b'Content-Type: multipart/mixed; boundary="b"\n\n--b\n--b\n\nx\n--b--\n',
    "part without blank line": b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n--b--\n',
    "body line among headers": b"Subject: a\nthis is not a header\n\nbody\n",
    "headers only": b"Subject: a\nTo: b\n",
}

EXPECT_FAST = {
    "single part", "single part, no final newline", "single part, crlf", "no headers", "8-bit body and header",
    "latin-1 body", "folded headers and unix from", "preamble epilogue lookalikes", "empty body part",
    "body ends in blank lines", "close without newline", "regex characters in boundary", "boundary prefix of inner",
    "inner boundary prefix of outer", "rfc2231 boundary",
}


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_fast_split_matches_the_stdlib_parser(name: str) -> None:
    assert _same_or_declined(HAND_WRITTEN[name]) == (name in EXPECT_FAST)


@pytest.mark.parametrize("crlf", [False, True])
def test_generated_messages_take_the_fast_path(crlf: bool) -> None:
    assert _same_or_declined(_bench_like(crlf))
    assert _same_or_declined(_nested(crlf))


def test_deep_nesting_is_left_to_the_stdlib_parser() -> None:
    raw = b"Subject: deep\n"
    inner = b"\nleaf\n"
    for level in range(12):
        b = f"b{level}".encode()
        inner = b'Content-Type: multipart/mixed; boundary="' + b + b'"\n\n--' + b + b"\n" + inner + b"\n--" + b + b"--\n"
    assert not _same_or_declined(raw + inner)


def test_random_mutations_agree_with_the_stdlib_parser() -> None:
    rng = random.Random(1234)
    seeds = [_bench_like(), _bench_like(True), _nested(), _nested(True), *HAND_WRITTEN.values()]
    pieces = [b"\n", b"\r\n", b"\r", b"-", b"--", b" ", b"\t", b"\n\n", b":", b"x", b"\xe9", b"--b", b"--b--", b"\n--"]
    fast = 0
    for _ in range(1500):
        raw = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(raw) + 1)
            if rng.random() < 0.3 and pos < len(raw):
                del raw[pos : pos + rng.randint(1, 3)]
            else:
                raw[pos:pos] = rng.choice(pieces)
        fast += _same_or_declined(bytes(raw))
    assert fast > 300  # most mutations still take the fast path


def test_walk_gives_the_same_parts_with_and_without_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from regfd.config import ScanLimits

    raw = _nested(True)
    fast = list(mimeparts.iter_parts(raw, ScanLimits(), float("inf")))
    monkeypatch.setattr(mimeparts, "_fast_parse", lambda raw: None)
    slow = list(mimeparts.iter_parts(raw, ScanLimits(), float("inf")))
    assert fast == slow
    assert any("plain body" in getattr(p, "text", "") for p in fast)


@pytest.mark.parametrize(
    "body, cte",
    [
        (base64.encodebytes(b"caf\xc3\xa9 " * 200).decode(), "base64"),
        (base64.encodebytes(b"x" * 1000).decode().replace("\n", "\r\n"), "base64"),
        (base64.b64encode(b"abcd").decode()[:-2], "base64"),  # missing padding
        ("aGVsbG8*d29ybGQ=\n", "base64"),  # invalid character
        ("aGVs\udce9bG8=\n", "base64"),  # 8-bit byte in the body
        ("aGVsbG8=\naGVsbG8=\n", "base64"),  # padding in the middle
        ("QUJD====\n", "base64"),  # padding after the end: pybase64 refuses it, binascii's strict mode takes it
        (base64.encodebytes(bytes(range(256)) * 64).decode(), "base64"),  # long enough for pybase64's SIMD loop
        ("", "base64"),
        ("caf=C3=A9 =\nsoft break\n", "quoted-printable"),
        ("plain text\n", "7bit"),
        ("plain \udce9 text\n", "8bit"),
    ],
)
def test_decoded_payload_equals_get_payload_decode(body: str, cte: str) -> None:
    part = Message()
    part["Content-Type"] = "text/plain"
    part["Content-Transfer-Encoding"] = cte
    part._payload = body  # type: ignore[attr-defined]  # undeclared in typeshed; what the parsers set
    assert mimeparts.decoded_payload(part) == part.get_payload(decode=True)


def test_decoded_payload_without_transfer_encoding_header() -> None:
    part = Message()
    part._payload = "aGVsbG8=\n"  # type: ignore[attr-defined]  # undeclared in typeshed; what the parsers set
    assert mimeparts.decoded_payload(part) == part.get_payload(decode=True) == b"aGVsbG8=\n"


@pytest.mark.parametrize("block", [
    "Subject: a\n\n", "\n", "\r\n", "A: b\r\n c\r\n\r\n", "A:\n\n", "A: x\n\tfolded\n B: y\n\n", "A: \udce9t\xe9\n\n",
    'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n',
    "A: b\nA: c\n\n", "A:\tb \t\n\n", "A: b\x0bc\n\n", "A: b\x0c\n\n",
    # left to the feedparser: continuation first, unix From, no name, not a field, odd name characters
    " cont\nA: b\n\n", "From x\nA: b\n\n", ":x\n\n", "A:b\nB c\n\n", "X-\x7f: y\n\n", "A : spaced name\n\n",
])
def test_header_block_parser_agrees_with_the_feedparser(block: str) -> None:
    """The header fields of each part are read without the feedparser when they are plain fields."""
    fast = mimeparts._parse_header_block(block)
    reference = mimeparts._HEADERS_ONLY.parsestr(block, headersonly=True)
    odd = block.startswith((" ", "From ", ":", "X-\x7f", "A :")) or "\nB c" in block
    assert (fast is None) == odd
    if fast is not None:
        assert (_shape(fast), fast.defects) == (_shape(reference), reference.defects)


FIELD_HEADERS = [
    {},
    {"Content-Type": "text/plain"},
    {"Content-Type": 'text/plain; charset="UTF-8"'},
    {"Content-Type": "TEXT/HTML; CHARSET=ISO-8859-1; name=page.htm"},
    {"Content-Type": "text/plain; charset*=us-ascii''UTF-8"},
    {"Content-Type": "text/plain; charset*=bogus-charset''utf%2D8"},
    {"Content-Type": "text/plain; charset=\"caf\u00e9\""},
    {"Content-Type": "text"},  # invalid: text/plain
    {"Content-Type": "multipart/mixed; boundary=\"=_b oundary  \""},
    {"Content-Type": "multipart/mixed; boundary*0=\"ab\"; boundary*1=cd"},
    {"Content-Type": "application/pdf; name=\"re\\\"port.pdf\""},
    {"Content-Type": "application/pdf; name=\"=?utf-8?q?R=C3=A9sultats?=.pdf\""},
    {"Content-Type": "application/pdf", "Content-Disposition": "attachment; filename=\" report.pdf \""},
    {"Content-Type": "application/pdf; name=a.pdf", "Content-Disposition": "ATTACHMENT; filename*=utf-8''r%C3%A9sum%C3%A9.pdf"},
    {"Content-Type": "application/pdf; name=a.pdf", "Content-Disposition": "inline"},
    {"Content-Type": "application/pdf; name=a.pdf; name=b.pdf; NAME=c.pdf"},
    {"Content-Type": "text/plain; ; charset=utf-8;", "Content-Disposition": "attachment; filename="},
    {"Content-Type": "text/plain; charset=utf-8 (comment)"},
    {"Content-Type": "text/plain; charset=<utf-8>"},
]


@pytest.mark.parametrize("headers", FIELD_HEADERS, ids=range(len(FIELD_HEADERS)))
def test_fields_read_as_the_email_package_does(headers: dict[str, str]) -> None:
    """`_Fields` parses each field once; every value must be the one the email package's method gives."""
    part = Message()
    for name, value in headers.items():
        part[name] = value
    fields = mimeparts._Fields(part)
    assert fields.content_type() == part.get_content_type()
    assert fields.filename() == part.get_filename()
    assert fields.boundary() == part.get_boundary()
    assert fields.charset() == part.get_content_charset()


def test_fields_agree_on_every_part_of_the_shapes() -> None:
    seeds = [_bench_like(), _bench_like(True), _nested(), _nested(True), *HAND_WRITTEN.values()]
    seen = 0
    for raw in seeds:
        for part in parse_message(raw).walk():
            fields = mimeparts._Fields(part)
            assert (fields.content_type(), fields.filename(), fields.boundary(), fields.charset()) == (
                part.get_content_type(), part.get_filename(), part.get_boundary(), part.get_content_charset())
            seen += 1
    assert seen > 40
