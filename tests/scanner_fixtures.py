"""Builders for scanner tests: real messages, PDFs and Office files made in the test."""

from __future__ import annotations

import io
import shutil
import zipfile
import zlib
from functools import lru_cache
from pathlib import Path

from regfd.config import ScanLimits
from regfd.core.finding import Finding
from regfd.scan.lexicon import Lexicons, load_lexicons
from regfd.scan.scanner import scan_message, scan_text

LEXICON_DIR = Path(__file__).resolve().parent.parent / "lexicons"


@lru_cache(maxsize=1)
def lexicons() -> Lexicons:
    return load_lexicons(LEXICON_DIR)


def copy_lexicons(dest: Path, without: tuple[str, ...] = ()) -> Path:
    """The shipped lexicon files copied into `dest`, but for the files named in `without`."""
    for f in LEXICON_DIR.glob("*.toml"):
        if f.name not in without:
            shutil.copy(f, dest / f.name)
    return dest


def scan(raw: bytes, limits: ScanLimits | None = None) -> list[Finding]:
    return scan_message(raw, lexicons(), limits or ScanLimits())


def text_findings(text: str, location: str = "body") -> list[Finding]:
    return scan_text(text, lexicons(), location)


def kinds(findings: list[Finding]) -> set[tuple[str, str]]:
    return {(f.kind, f.category) for f in findings}


def _pdf_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: list[list[str]], compress: bool = True) -> bytes:
    """A minimal valid PDF: one Helvetica text line per string, one page per list."""
    objects: list[bytes] = []
    font_id = 3
    page_ids = []
    content_objects = []
    next_id = 4
    for lines in pages:
        ops = ["BT /F1 11 Tf 50 780 Td 14 TL"]
        ops += [f"({_pdf_escape(line)}) Tj T*" for line in lines]
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1", "replace")
        if compress:
            data = zlib.compress(stream)
            content = b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data + b"\nendstream"
        else:
            content = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
        page_ids.append(next_id)
        content_objects.append((next_id, next_id + 1, content))
        next_id += 2
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{pid} 0 R" for pid in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(page_ids)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for _page_id, content_id, content in content_objects:
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 {font_id} 0 R >> >> "
            f"/Contents {content_id} 0 R >>".encode()
        )
        objects.append(content)
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(f"{i} 0 obj\n".encode() + obj + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for off in offsets:
        out.write(f"{off:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def encrypt_pdf(data: bytes, user_password: str = "secret") -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(data)).pages:
        writer.add_page(page)
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="xml" ContentType="application/xml"/></Types>'
)


def make_docx(paragraphs: list[list[str]]) -> bytes:
    """A DOCX whose paragraphs consist of the given runs (Word splits words into runs)."""
    body = "".join(
        "<w:p>" + "".join(f'<w:r><w:t xml:space="preserve">{run}</w:t></w:r>' for run in runs) + "</w:p>"
        for runs in paragraphs
    )
    document = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        f"<w:body>{body}</w:body></w:document>"
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", _CONTENT_TYPES)
        z.writestr("word/document.xml", document)
    return out.getvalue()


def make_xlsx(strings: list[str]) -> bytes:
    shared = "".join(f"<si><t>{s}</t></si>" for s in strings)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", _CONTENT_TYPES)
        z.writestr("xl/sharedStrings.xml", f'<?xml version="1.0"?><sst>{shared}</sst>')
    return out.getvalue()


def zip_bomb_docx(size: int) -> bytes:
    """A DOCX whose document.xml inflates to `size` bytes of zeros-like text."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", _CONTENT_TYPES)
        z.writestr("word/document.xml", b"<w:t>" + b" " * size + b"</w:t>")
    return out.getvalue()
