"""Text out of the document formats people attach: HTML, PDF, Office Open XML.

Every extractor is bounded: attachments come from anyone, and a 40 KB PDF or
DOCX can expand to gigabytes. A document that should contain text but cannot
be read raises `Unreadable` with a short reason ("encrypted-pdf",
"corrupt-docx", "decompression-bomb" ...) that becomes the category of an
`unscannable` finding.

Library choices (pure-Python wheels): `pypdf` for PDF (maintained, no
dependencies, handles encryption detection and caps each decompressed stream
at 75 MB itself); Office files are ZIP archives of XML, so the standard
library's `zipfile` plus a regular expression over the XML gives the text of
DOCX, XLSX and PPTX with exact control of decompressed sizes, no entity
expansion and no C extension (python-docx needs lxml and builds a whole
object model).
"""

from __future__ import annotations

import codecs
import html
import io
import re
import time
import zipfile

from regfd.config import ScanLimits


class Unreadable(Exception):
    """A document that should contain text could not be read."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BudgetExceeded(Exception):
    """The per-message time budget ran out while reading a document."""


# --- charsets ---------------------------------------------------------------

_LATIN_LABELS = {
    "iso-8859-1",
    "latin-1",
    "latin1",
    "l1",
    "iso8859-1",
    "iso_8859-1",
    "windows-1252",
    "cp1252",
    "us-ascii",
    "ascii",
    "ansi_x3.4-1968",
}


def decode_text(data: bytes, charset: str | None) -> str:
    """Decode bytes whose declared charset may be wrong or missing.

    Order: byte-order marks; a declared UTF-16/32; UTF-16 sniffed from NUL
    bytes; ASCII; strict UTF-8 (valid UTF-8 is almost never an accident, so it
    wins over a wrong Latin label); the declared charset; else windows-1252,
    which is what "iso-8859-1" and unlabelled 8-bit mail usually really is.
    """
    if data.startswith(codecs.BOM_UTF8):
        return data[3:].decode("utf-8", "replace")
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return data.decode("utf-32", "replace")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", "replace")
    label = (charset or "").strip().strip('"').lower()
    if label.startswith(("utf-16", "utf16", "utf-32", "utf32")):
        try:
            return data.decode(label, "replace")
        except LookupError:
            pass
    head = data[:4096]
    if head and head.count(0) * 4 > len(head):
        odd_nuls = head[1::2].count(0)
        return data.decode("utf-16-le" if odd_nuls * 2 > head.count(0) else "utf-16-be", "replace")
    if data.isascii():
        return data.decode("ascii")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if label and label not in _LATIN_LABELS and label not in ("utf-8", "utf8"):
        try:
            return data.decode(label)
        except (LookupError, UnicodeDecodeError, ValueError):
            pass
    return data.decode("cp1252", "replace")


# --- HTML -----------------------------------------------------------------

_BLOCK_TAGS = re.compile(
    r"<\s*/?\s*(?:p|div|br|li|ul|ol|tr|table|h[1-6]|blockquote|section|article|header|footer|hr|pre|dt|dd|title|center)\b[^>]*>",
    re.IGNORECASE,
)
_CELL_TAGS = re.compile(r"<\s*/?\s*(?:td|th)\b[^>]*>", re.IGNORECASE)
_ANY_TAG = re.compile(r"<[!/?a-zA-Z][^>]*>")
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


def _drop_elements(markup: str, name: str) -> str:
    """Remove <name ...>...</name> with a linear scan (no backtracking on hostile input)."""
    lower = markup.lower()
    if f"<{name}" not in lower:
        return markup
    out: list[str] = []
    pos = 0
    while True:
        start = lower.find(f"<{name}", pos)
        if start < 0:
            out.append(markup[pos:])
            break
        out.append(markup[pos:start])
        end = lower.find(f"</{name}", start)
        if end < 0:
            break
        close = lower.find(">", end)
        pos = len(markup) if close < 0 else close + 1
    return "".join(out)


_BLOCKQUOTE = re.compile(r"<\s*(/?)\s*blockquote\b[^>]*>", re.IGNORECASE)
_QUOTE_OPEN, _QUOTE_CLOSE = "\x00\x01", "\x00\x02"  # markers no text keeps (NUL is dropped first)


def _quote_lines(text: str) -> str:
    """Lines inside <blockquote> get "> " per level, as a plain-text reply quotes them.

    Mail clients quote the mail being answered in a blockquote; with the
    markers the quoting rules (quoting.py) read an HTML reply as they read
    its plain-text twin.
    """
    out: list[str] = []
    depth = 0
    for n, piece in enumerate(re.split("(\x00[\x01\x02])", text)):
        if n % 2:
            depth = depth + 1 if piece == _QUOTE_OPEN else max(0, depth - 1)
        elif depth:
            out.append("\n".join(("> " * depth + line) if line.strip() else line for line in piece.split("\n")))
        else:
            out.append(piece)
    return "".join(out)


def html_to_text(markup: str) -> str:
    """Visible text of an HTML document: scripts and styles dropped, inline tags
    removed without a space (so "mer<b>ger</b>" reads "merger"), blocks on lines,
    blockquoted lines marked "> "."""
    text = _COMMENT.sub("", markup) if "<!--" in markup else markup
    for name in ("script", "style"):
        text = _drop_elements(text, name)
    quotes = "blockquote" in text.lower()
    if quotes:
        text = _BLOCKQUOTE.sub(lambda m: "\n" + (_QUOTE_CLOSE if m.group(1) else _QUOTE_OPEN), text.replace("\x00", ""))
    text = _BLOCK_TAGS.sub("\n", text)
    text = _CELL_TAGS.sub(" ", text)
    text = html.unescape(_ANY_TAG.sub("", text))
    return _quote_lines(text) if quotes else text


# --- PDF --------------------------------------------------------------------


def pdf_text(data: bytes, limits: ScanLimits, deadline: float) -> str:
    """Text of every page, within the time budget and the text limit."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            # Owner-password-only PDFs open with an empty user password.
            try:
                if not reader.decrypt(""):
                    raise Unreadable("encrypted-pdf")
            except (FileNotDecryptedError, NotImplementedError, DependencyError) as exc:
                raise Unreadable("encrypted-pdf") from exc
        out: list[str] = []
        size = 0
        for page in reader.pages:
            if time.monotonic() > deadline:
                raise BudgetExceeded()
            text = page.extract_text() or ""
            size += len(text)
            out.append(text)
            if size > limits.max_text_bytes:
                raise Unreadable("over-size")
        return "\n".join(out)
    except (Unreadable, BudgetExceeded):
        raise
    except Exception as exc:  # pypdf raises many types on hostile input
        if type(exc).__name__ == "LimitReachedError":
            raise Unreadable("decompression-bomb") from exc
        if isinstance(exc, PdfReadError) and "decrypt" in str(exc).lower():
            raise Unreadable("encrypted-pdf") from exc
        raise Unreadable("corrupt-pdf") from exc


# --- ZIP and Office Open XML --------------------------------------------------

OOXML_KINDS = {"docx": "word/", "docm": "word/", "xlsx": "xl/", "xlsm": "xl/", "pptx": "ppt/", "pptm": "ppt/"}
_OOXML_SKIP = re.compile(
    r"(?:styles|settings|fontTable|webSettings|theme\d*|numbering|stylesWithEffects"
    r"|app|core|calcChain|presProps|viewProps|tableStyles)\.xml$"
)
_XML_BREAKS = re.compile(r"</(?:w:p|a:p|si|row|w:tr)>|<w:br\b[^>]*/>|<w:cr\b[^>]*/>")
_XML_SPACES = re.compile(r"<w:tab\b[^>]*/>|</c>|</w:tc>")


def checked_members(archive: zipfile.ZipFile, limits: ScanLimits) -> list[zipfile.ZipInfo]:
    """Members after checking for encryption and compression bombs."""
    infos = [i for i in archive.infolist() if not i.is_dir()]
    if len(infos) > limits.max_parts:
        raise Unreadable("max-parts")
    total = 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise Unreadable("encrypted-zip")
        total += info.file_size
        ratio_ok = (
            info.file_size <= 1_000_000
            or info.file_size <= max(info.compress_size, 1) * limits.max_compression_ratio
        )
        if not ratio_ok or total > limits.max_decompressed_bytes:
            raise Unreadable("decompression-bomb")
    return infos


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: ScanLimits, budget: list[int]) -> bytes:
    """A member's bytes, never more than the remaining decompression budget
    (the sizes in the ZIP directory are declared by the sender, not trusted)."""
    with archive.open(info) as f:
        data = f.read(budget[0] + 1)
    if len(data) > budget[0] or (
        info.compress_size
        and len(data) > max(info.compress_size, 1) * limits.max_compression_ratio
        and len(data) > 1_000_000
    ):
        raise Unreadable("decompression-bomb")
    budget[0] -= len(data)
    return data


def xml_text(xml: bytes) -> str:
    """Text content of an Office XML part: runs joined, paragraphs on lines."""
    text = xml.decode("utf-8", "replace")
    text = _XML_BREAKS.sub("\n", text)
    text = _XML_SPACES.sub(" ", text)
    text = _ANY_TAG.sub("", text)
    return html.unescape(text)


def ooxml_text(data: bytes, kind: str, limits: ScanLimits, deadline: float) -> str:
    """Text of a DOCX/XLSX/PPTX (and macro-enabled variants)."""
    if data.startswith(b"\xd0\xcf\x11\xe0"):
        raise Unreadable("encrypted-office")  # an encrypted OOXML file is an OLE container
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = checked_members(archive, limits)
            root = OOXML_KINDS[kind]
            budget = [limits.max_decompressed_bytes]
            out: list[str] = []
            for info in infos:
                name = info.filename
                if not (name.startswith(root) and name.endswith(".xml")) or _OOXML_SKIP.search(name):
                    continue
                if time.monotonic() > deadline:
                    raise BudgetExceeded()
                out.append(xml_text(read_member(archive, info, limits, budget)))
            if not any(i.filename == "[Content_Types].xml" for i in infos):
                raise Unreadable(f"corrupt-{kind}")
            return "\n".join(out)
    except (Unreadable, BudgetExceeded):
        raise
    except Exception as exc:  # BadZipFile, zlib.error, EOFError, ...
        raise Unreadable(f"corrupt-{kind}") from exc
