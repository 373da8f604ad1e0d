"""Every readable piece of text in a message, with where it came from.

Walks the MIME tree (and attached messages and ZIP archives, recursively)
and yields `TextPart`s to scan and `Problem`s for what should have had text
but could not be read. Images, audio and unknown binaries are skipped on
purpose: they are not "unscannable", they simply carry no text to read.

Measured: `compat32` + `get_payload(decode=True)` parses about 9x faster
than `policy.default`, and is more forgiving of broken mail.
"""

from __future__ import annotations

import binascii
import email
import io
import re
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.header import decode_header, make_header
from email.message import Message
from email.parser import Parser
from email.utils import collapse_rfc2231_value
from typing import Any, cast

import pybase64

from regfd.config import ScanLimits
from regfd.scan.documents import (
    OOXML_KINDS,
    BudgetExceeded,
    Unreadable,
    checked_members,
    decode_text,
    html_to_text,
    ooxml_text,
    pdf_text,
    read_member,
)


@dataclass(frozen=True)
class TextPart:
    """Text to scan. `body` parts get quoted-text detection."""

    location: str
    text: str
    body: bool = False


@dataclass(frozen=True)
class Problem:
    """Something that should have had text and could not be read."""

    location: str
    reason: str


_TEXT_EXTENSIONS = {"txt", "text", "csv", "tsv", "md", "rtf", "log", "json", "xml", "ics", "vcf", "eml", "htm", "html"}
_TEXT_APPLICATION = {
    "application/json",
    "application/xml",
    "application/rtf",
    "application/x-rtf",
    "application/csv",
    "text/rtf",
}
_LEGACY_OFFICE = {"doc", "xls", "ppt", "msg"}


_ENCODED_WORD = re.compile(r"=\?[^?\s]*\?[bBqQ]\?[^?\s]*\?=")


def decode_header_text(value: object) -> str:
    """An RFC 2047 header as text; undecodable pieces are kept as they are.

    When one encoded word cannot be decoded (bad base64, an unknown charset)
    the stdlib gives up on the whole header; the others are then decoded one
    by one, so a bogus word next to a valid one does not hide the valid
    one's text (found by tests/test_scanner_property.py's structured MIME).
    """
    if value is None:
        return ""
    raw = str(value)
    if "=?" not in raw:  # no encoded word: the stdlib would hand back `raw` itself (one chunk, no charset)
        return raw
    try:
        return str(make_header(decode_header(raw)))
    except Exception:
        return _ENCODED_WORD.sub(_decode_word, raw)


def _decode_word(m: re.Match[str]) -> str:
    try:
        return str(make_header(decode_header(m.group(0))))
    except Exception:
        return m.group(0)


def _extension(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _sniff(data: bytes, ctype: str, name: str) -> str:
    """What a leaf is: html, text, pdf, docx/xlsx/pptx..., zip, legacy-office, message, or skip."""
    ext = _extension(name)
    if data[:1024].lstrip().startswith(b"%PDF") or ext == "pdf" or ctype == "application/pdf":
        return "pdf"
    if ext in OOXML_KINDS:
        return ext
    if "officedocument" in ctype:
        return "xlsx" if "spreadsheet" in ctype else "pptx" if "presentation" in ctype else "docx"
    if data.startswith(b"PK\x03\x04") or ext == "zip" or ctype in ("application/zip", "application/x-zip-compressed"):
        return "zip"
    if ext in _LEGACY_OFFICE or ctype in (
        "application/msword",
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
    ):
        return "legacy-office"
    if ctype == "text/html" or ext in ("htm", "html"):
        return "html"
    if ext == "eml" or ctype == "message/rfc822":
        return "message"
    if ctype.startswith("text/") or ctype in _TEXT_APPLICATION or ext in _TEXT_EXTENSIONS:
        return "text"
    return "skip"


# --- fast MIME split ---------------------------------------------------------
#
# `email.message_from_bytes` feeds the whole body through the feedparser line
# by line (about 16 ms for a 1 MB base64 body, half the scan). For ordinary
# well-formed mail, `_fast_parse` builds the same `Message` tree directly: the
# stdlib parser still parses every header block, but part bodies are found with
# one regex search per boundary and sliced out. Anything unusual (a lone CR, a
# header block without a blank line, message/* parts, multipart/digest, a
# missing close delimiter, an empty part, nesting deeper than
# `_FAST_MAX_DEPTH`) returns None and the stdlib parser takes the message.
# tests/test_scanner_fastmime.py compares both parsers on many shapes.

_HEADERS_ONLY = Parser(policy=policy.compat32)
_BLANK_LINE = re.compile(r"\n\r?\n")
_DELIMITER_TAIL = re.compile(r"(--)?[ \t]*(?:\r?\n|\Z)")
_LONE_CR = re.compile(rb"\r(?!\n)")
_FAST_MAX_DEPTH = 8


def _delimiters(text: str, boundary: str, start: int, end: int) -> list[tuple[int, int]] | None:
    """(line start, next line start) of each delimiter line in text[start:end]
    up to and including the close delimiter, the lines the feedparser's
    boundaryre matches; None without a close delimiter. `start` is a line start.
    """
    sep = "--" + boundary
    found = []
    pos = start
    while True:
        i = text.find(sep, pos, end)
        if i < 0:
            return None
        pos = i + 1
        if i != start and text[i - 1] != "\n":
            continue
        m = _DELIMITER_TAIL.match(text, i + len(sep), end)
        if m is None:
            continue
        found.append((i, m.end()))
        if m.group(1):
            return found


def _fast_entity(text: str, start: int, end: int, depth: int, strip_eol: bool) -> Message | None:
    if depth > _FAST_MAX_DEPTH:
        return None
    if text.startswith("\n", start, end):
        body = start + 1
    elif text.startswith("\r\n", start, end):
        body = start + 2
    else:
        m = _BLANK_LINE.search(text, start, end)
        if m is None:
            return None
        body = m.end()
    block = text[start:body]
    msg = _parse_header_block(block)
    if msg is None:
        msg = _HEADERS_ONLY.parsestr(block, headersonly=True)
    # `_payload` directly (typeshed does not declare it): no get_payload() call
    # on the hot path. Non-empty here: a line that is not a header before the
    # blank line.
    if msg._payload:  # type: ignore[attr-defined]
        return None
    fields = _Fields(msg)
    maintype = fields.content_type().split("/")[0]  # get_content_maintype()
    if maintype == "message":
        return None
    if maintype != "multipart":
        payload = text[body:end]
        if strip_eol:  # the line break before a delimiter belongs to it
            if payload.endswith("\r\n"):
                payload = payload[:-2]
            elif payload.endswith(("\n", "\r")):
                payload = payload[:-1]
        msg._payload = payload  # type: ignore[attr-defined]  # undeclared in typeshed; set as the feedparser does
        return msg
    boundary = fields.boundary()
    if not boundary or fields.content_type() == "multipart/digest":
        return None
    delimiters = _delimiters(text, boundary, body, end)
    if delimiters is None or len(delimiters) < 2:
        return None
    children = []
    for opening, closing in zip(delimiters, delimiters[1:], strict=False):
        child = _fast_entity(text, opening[1], closing[0], depth + 1, True)
        if child is None:
            return None
        children.append(child)
    msg._payload = children  # type: ignore[attr-defined]  # undeclared in typeshed; set as the feedparser does
    return msg


# A line the feedparser takes for a header field: a name (printable ASCII
# but the colon, at least one character) and its colon (its `headerRE`).
_FIELD = re.compile(r"[\041-\071\073-\176]+:")


def _parse_header_block(block: str) -> Message | None:
    """`_HEADERS_ONLY.parsestr(block, headersonly=True)` for a block of plain
    fields ending with its blank line, without the feedparser's line-by-line
    machinery (0.03 ms of the 0.11 ms a 10 KB message took to walk); None
    for anything else (a continuation line first, a "From " line, a line
    that is not a field), which the feedparser then parses."""
    lines = block.split("\n")  # no lone CR here (_fast_parse): every line ends with "\n" or "\r\n"
    if len(lines) < 2 or lines[-1] or lines[-2] not in ("", "\r"):
        return None
    msg = Message(policy=policy.compat32)
    headers: list[tuple[str, str]] = msg._headers  # type: ignore[attr-defined]  # undeclared in typeshed
    field: list[str] = []
    for line in lines[:-2]:
        if line[:1] in (" ", "\t"):
            if not field:
                return None
            field.append(line + "\n")
            continue
        if line.startswith("From ") or _FIELD.match(line) is None:
            return None
        if field:
            headers.append(_source_field(field))
        field = [line + "\n"]
    if field:
        headers.append(_source_field(field))
    msg._payload = ""  # type: ignore[attr-defined]  # what set_payload("") sets
    return msg


def _source_field(lines: list[str]) -> tuple[str, str]:
    """compat32's `header_source_parse`, as `set_raw` stores it (inline: one call less per field)."""
    name, value = lines[0].split(":", 1)
    return name, (value.lstrip(" \t") + "".join(lines[1:])).rstrip("\r\n")


def _fast_parse(raw: bytes) -> Message | None:
    """The `Message` tree `email.message_from_bytes(raw, policy=compat32)`
    builds, for well-formed mail; None when the stdlib parser must decide."""
    if b"\r" in raw and _LONE_CR.search(raw):
        return None
    text = raw.decode("ascii", "surrogateescape")
    return _fast_entity(text, 0, len(text), 0, False)


def parse_message(raw: bytes) -> Message:
    """`email.message_from_bytes(raw, policy=compat32)`, faster on ordinary mail."""
    msg = _fast_parse(raw)
    if msg is None:
        msg = email.message_from_bytes(raw, policy=policy.compat32)
    return msg


def decoded_payload(part: Message) -> bytes | None:
    """`part.get_payload(decode=True)`; valid base64 (the usual case) is
    decoded without the stdlib's splitlines/join copies of the whole body,
    by pybase64 (SIMD: 1 µs for a 10 KB body, where binascii takes 35 µs)
    where it accepts the text, else by binascii's strict decoder as before."""
    payload = part._payload  # type: ignore[attr-defined]  # undeclared in typeshed; read directly for speed
    if isinstance(payload, str) and str(part.get("content-transfer-encoding", "")).lower() == "base64":
        try:
            encoded = payload.encode("ascii", "surrogateescape").translate(None, b"\r\n")
        except UnicodeEncodeError:
            encoded = b"-"
        if len(encoded) % 4 == 0:  # what email._encoded_words.decode_b tries first
            try:
                return pybase64.b64decode(encoded, validate=True)
            except binascii.Error:
                pass  # e.g. "QUJD====": binascii's strict mode takes the padding after the end
            try:
                return binascii.a2b_base64(encoded, strict_mode=True)
            except binascii.Error:
                pass
    # a leaf's decoded payload is bytes (None for a multipart): typeshed's union is wider
    return cast("bytes | None", part.get_payload(decode=True))


_MISSING: Any = object()


class _Fields:
    """What the walk reads of one part's header, each field parsed once.

    The email package parses Content-Type anew for each of `get_content_type`, `get_boundary`,
    `get_filename` and `get_content_charset`: four parses of one line for every text part, a
    quarter of the fixed cost of a message. These give the values of those methods
    (the same code on the same parsed parameters; tests/test_scanner_fastmime.py compares them)."""

    __slots__ = ("msg", "_params", "_ctype")

    def __init__(self, msg: Message) -> None:
        self.msg = msg
        self._params: dict[str, Any] = {}
        self._ctype: str | None = None

    def content_type(self) -> str:
        if self._ctype is None:
            self._ctype = self.msg.get_content_type()
        return self._ctype

    def param(self, name: str, header: str = "content-type") -> Any:
        """`msg.get_param(name, _MISSING, header)`."""
        params = self._params.get(header, _MISSING)
        if params is _MISSING:
            params = self._params[header] = self.msg.get_params(None, header)
        for key, value in params or ():
            if key.lower() == name:
                return value
        return _MISSING

    def boundary(self) -> str | None:
        value = self.param("boundary")
        return None if value is _MISSING else str(collapse_rfc2231_value(value).rstrip())

    def filename(self) -> str | None:
        value = self.param("filename", "content-disposition")
        if value is _MISSING:
            value = self.param("name")
        return None if value is _MISSING else str(collapse_rfc2231_value(value).strip())

    def charset(self) -> str | None:
        """`get_content_charset()`."""
        value = self.param("charset")
        if value is _MISSING:
            return None
        if isinstance(value, tuple):  # RFC 2231: decoded, and it had better be ASCII
            try:
                value = str(value[2].encode("raw-unicode-escape"), value[0] or "us-ascii")
            except (LookupError, UnicodeError):
                value = value[2]
        try:
            value.encode("us-ascii")
        except UnicodeError:
            return None
        return str(value).lower()


class _Walk:
    """State of one extraction: counters and the deadline (never shared)."""

    def __init__(self, limits: ScanLimits, deadline: float) -> None:
        self.limits = limits
        self.deadline = deadline
        self.parts = 0
        self.text_bytes = 0
        self.over_parts = False

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise BudgetExceeded()

    def text(self, location: str, text: str, body: bool = False) -> Iterator[TextPart | Problem]:
        room = self.limits.max_text_bytes - self.text_bytes
        if len(text) > room:
            yield Problem(location, "over-size")
            text = text[: max(room, 0)]
        self.text_bytes += len(text)
        if text:
            yield TextPart(location, text, body)

    def message(self, msg: Message, prefix: str, depth: int) -> Iterator[TextPart | Problem]:
        subject = decode_header_text(msg.get("Subject"))
        if subject:
            yield from self.text(prefix + "subject", subject)
        yield from self.entity(msg, prefix, depth)

    def entity(self, part: Message, prefix: str, depth: int) -> Iterator[TextPart | Problem]:
        self.check_time()
        self.parts += 1
        if self.parts > self.limits.max_parts:
            if not self.over_parts:
                self.over_parts = True
                yield Problem(prefix + "body", "max-parts")
            return
        if depth > self.limits.max_depth:
            yield Problem(prefix + "body", "max-depth")
            return
        fields = _Fields(part)
        ctype = fields.content_type()
        payload = part.get_payload()
        if part.is_multipart() and isinstance(payload, list):
            if ctype == "message/rfc822" or ctype.startswith("message/"):
                name = decode_header_text(fields.filename()) or "message.eml"
                for inner in payload:
                    if isinstance(inner, Message):
                        yield from self.message(inner, f"{prefix}attachment:{name}/", depth + 1)
                return
            for child in payload:
                if isinstance(child, Message):
                    yield from self.entity(child, prefix, depth + 1)
            return
        yield from self.leaf(fields, prefix, depth)

    def leaf(self, fields: _Fields, prefix: str, depth: int) -> Iterator[TextPart | Problem]:
        part, ctype = fields.msg, fields.content_type()
        name = decode_header_text(fields.filename())
        disposition = part.get_content_disposition()
        data = decoded_payload(part)
        if not isinstance(data, bytes):
            data = str(part.get_payload()).encode("utf-8", "replace")
        is_body = not name and disposition != "attachment" and ctype.startswith("text/")
        location = prefix + "body" if is_body else f"{prefix}attachment:{name or 'unnamed'}"
        if len(data) > self.limits.max_attachment_bytes:
            yield Problem(location, "over-size")
            return
        kind = _sniff(data, ctype, name)
        yield from self.document(data, kind, fields.charset(), location, prefix, depth, is_body)

    def document(
        self, data: bytes, kind: str, charset: str | None, location: str, prefix: str, depth: int, is_body: bool
    ) -> Iterator[TextPart | Problem]:
        try:
            if kind == "skip":
                return
            if kind == "legacy-office":
                yield Problem(location, "unsupported-format")
            elif kind == "text":
                yield from self.text(location, decode_text(data, charset), is_body)
            elif kind == "html":
                yield from self.text(location, html_to_text(decode_text(data, charset)), is_body)
            elif kind == "pdf":
                yield from self.text(location, pdf_text(data, self.limits, self.deadline))
            elif kind in OOXML_KINDS:
                yield from self.text(location, ooxml_text(data, kind, self.limits, self.deadline))
            elif kind == "message":
                inner = parse_message(data)
                yield from self.message(inner, location + "/", depth + 1)
            elif kind == "zip":
                yield from self.archive(data, location, depth)
        except Unreadable as exc:
            yield Problem(location, exc.reason)

    def archive(self, data: bytes, location: str, depth: int) -> Iterator[TextPart | Problem]:
        if depth + 1 > self.limits.max_depth:
            yield Problem(location, "max-depth")
            return
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except Exception as exc:
            raise Unreadable("corrupt-zip") from exc
        with archive:
            infos = checked_members(archive, self.limits)
            budget = [self.limits.max_decompressed_bytes]
            for info in infos:
                self.check_time()
                self.parts += 1
                if self.parts > self.limits.max_parts:
                    yield Problem(location, "max-parts")
                    return
                try:
                    member = read_member(archive, info, self.limits, budget)
                except Unreadable:
                    raise
                except Exception as exc:
                    raise Unreadable("corrupt-zip") from exc
                kind = _sniff(member, "application/octet-stream", info.filename)
                inner = f"{location}/attachment:{info.filename}"
                yield from self.document(member, kind, None, inner, location + "/", depth + 1, False)


def iter_parts(raw: bytes, limits: ScanLimits, deadline: float) -> Iterator[TextPart | Problem]:
    """Text parts and problems of a raw message, in message order.

    Stops with a `Problem("message", "time-budget")` when `deadline`
    (a `time.monotonic()` value) passes.
    """
    walk = _Walk(limits, deadline)
    if len(raw) > limits.max_message_bytes:
        yield Problem("message", "over-size")
        raw = raw[: limits.max_message_bytes]
    try:
        msg = parse_message(raw)
        yield from walk.message(msg, "", 0)
    except BudgetExceeded:
        yield Problem("message", "time-budget")
