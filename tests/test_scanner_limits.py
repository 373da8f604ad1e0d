"""Every limit of ScanLimits turns into an `unscannable` finding, never a
crash and never a silent skip."""

from __future__ import annotations

import dataclasses
import io
import time
import zipfile
from collections.abc import Iterable
from email.message import Message
from email.mime.application import MIMEApplication
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

from regfd.config import ScanLimits
from regfd.core.finding import UNSCANNABLE, Finding
from tests.scanner_fixtures import encrypt_pdf, make_docx, make_pdf, scan, zip_bomb_docx


def _attach(msg: MIMEMultipart, data: bytes, subtype: str, filename: str) -> None:
    part = MIMEApplication(data, subtype)
    part.add_header("Content-Disposition", "attachment", filename=filename)
    msg.attach(part)


def _unscannable(findings: Iterable[Finding]) -> set[tuple[str, str]]:
    return {(f.category, f.location) for f in findings if f.kind == UNSCANNABLE}


def test_max_depth() -> None:
    inner: Message = MIMEText("we got hacked", "plain")
    for _ in range(6):
        outer = MIMEMultipart()
        outer.attach(inner)
        inner = outer
    assert ("max-depth", "body") in _unscannable(scan(inner.as_bytes(), ScanLimits(max_depth=3)))


def test_nested_messages_count_towards_depth() -> None:
    msg: Message = MIMEText("hello", "plain")
    for i in range(5):
        outer = MIMEMultipart()
        wrapped = MIMEMessage(msg)
        wrapped.add_header("Content-Disposition", "attachment", filename=f"m{i}.eml")
        outer.attach(wrapped)
        msg = outer
    got = _unscannable(scan(msg.as_bytes(), ScanLimits(max_depth=4)))
    assert any(cat == "max-depth" for cat, _ in got)


def test_max_parts() -> None:
    msg = MIMEMultipart()
    for i in range(30):
        msg.attach(MIMEText(f"part {i}", "plain"))
    assert ("max-parts", "body") in _unscannable(scan(msg.as_bytes(), ScanLimits(max_parts=10)))


def test_message_over_size_is_flagged_and_the_prefix_still_scanned() -> None:
    msg = MIMEText("We got hacked. " + "Regular words here. " * 5000, "plain")
    findings = scan(msg.as_bytes(), ScanLimits(max_message_bytes=10_000))
    assert ("over-size", "message") in _unscannable(findings)
    assert any(f.category == "cybersecurity" for f in findings)


def test_attachment_over_size() -> None:
    msg = MIMEMultipart()
    _attach(msg, make_pdf([["x" * 50]] * 50), "pdf", "big.pdf")
    assert ("over-size", "attachment:big.pdf") in _unscannable(scan(msg.as_bytes(), ScanLimits(max_attachment_bytes=1000)))


def test_text_limit() -> None:
    msg = MIMEText("hello world " * 2000, "plain")
    assert ("over-size", "body") in _unscannable(scan(msg.as_bytes(), ScanLimits(max_text_bytes=1000)))


def test_decompression_bomb_docx() -> None:
    msg = MIMEMultipart()
    _attach(msg, zip_bomb_docx(30_000_000), "octet-stream", "bomb.docx")
    findings = scan(msg.as_bytes(), ScanLimits(max_decompressed_bytes=10_000_000))
    assert ("decompression-bomb", "attachment:bomb.docx") in _unscannable(findings)


def test_zip_with_lying_sizes_is_cut_at_the_budget() -> None:
    """A member whose directory entry understates its size is still bounded."""
    data = bytearray(zip_bomb_docx(5_000_000))
    # Patch the declared uncompressed size of document.xml in the central directory to 10 bytes.
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        info = z.getinfo("word/document.xml")
    cd = data.rfind(b"PK\x01\x02")
    assert cd > 0
    data[cd + 24 : cd + 28] = (10).to_bytes(4, "little")
    msg = MIMEMultipart()
    _attach(msg, bytes(data), "octet-stream", "liar.docx")
    findings = scan(msg.as_bytes(), ScanLimits(max_decompressed_bytes=1_000_000))
    assert _unscannable(findings), info.file_size


def test_encrypted_zip() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("secret.txt", "x")
    data = bytearray(buf.getvalue())
    data[6] |= 0x1  # general purpose flag, local header
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 8] |= 0x1  # general purpose flag, central directory
    msg = MIMEMultipart()
    _attach(msg, bytes(data), "zip", "secret.zip")
    assert ("encrypted-zip", "attachment:secret.zip") in _unscannable(scan(msg.as_bytes()))


def test_encrypted_pdf() -> None:
    msg = MIMEMultipart()
    _attach(msg, encrypt_pdf(make_pdf([["We will cut the dividend."]])), "pdf", "locked.pdf")
    assert ("encrypted-pdf", "attachment:locked.pdf") in _unscannable(scan(msg.as_bytes()))


def test_pdf_with_only_an_owner_password_is_read() -> None:
    msg = MIMEMultipart()
    _attach(msg, encrypt_pdf(make_pdf([["We will cut the dividend."]]), user_password=""), "pdf", "owner.pdf")
    assert {f.category for f in scan(msg.as_bytes())} == {"dividends"}


def test_corrupt_pdf_and_docx() -> None:
    msg = MIMEMultipart()
    _attach(msg, b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage", "pdf", "broken.pdf")
    _attach(msg, b"PK\x03\x04 this is not a zip", "octet-stream", "broken.docx")
    got = _unscannable(scan(msg.as_bytes()))
    assert ("corrupt-pdf", "attachment:broken.pdf") in got
    assert ("corrupt-docx", "attachment:broken.docx") in got


def test_encrypted_office_document() -> None:
    msg = MIMEMultipart()
    _attach(msg, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512, "octet-stream", "locked.docx")
    assert ("encrypted-office", "attachment:locked.docx") in _unscannable(scan(msg.as_bytes()))


def test_time_budget() -> None:
    msg = MIMEMultipart()
    msg.attach(MIMEText("hello", "plain"))
    _attach(msg, make_pdf([[f"line {i} of a long report" for i in range(40)]] * 300), "pdf", "long.pdf")
    limits = ScanLimits(time_budget=0.05)
    start = time.monotonic()
    findings = scan(msg.as_bytes(), limits)
    elapsed = time.monotonic() - start
    assert ("time-budget", "message") in _unscannable(findings)
    assert next(f for f in findings if f.category == "time-budget").text == "time budget exceeded"
    assert elapsed < 1.0


def test_defaults_read_a_normal_docx_without_findings() -> None:
    msg = MIMEMultipart()
    _attach(msg, make_docx([["Agenda for the public investor day."]]), "octet-stream", "agenda.docx")
    assert scan(msg.as_bytes(), dataclasses.replace(ScanLimits())) == []
