"""A held message as the console shows it: headers, text with every finding marked in place, attachments.

Pure: bytes and findings in, plain data out; the template escapes every
piece. The message's HTML is never rendered: an HTML-only body is turned
into text (scripts and styles dropped, tags removed), so nothing the sender
wrote runs or loads in the reviewer's browser.
"""

from __future__ import annotations

import email
import email.policy
import html
import re
from dataclasses import dataclass, field
from email.message import EmailMessage

from regfd.core.finding import Finding

HEADERS = ("From", "To", "Cc", "Reply-To", "Date", "Subject", "Message-ID")
MAX_TEXT = 200_000

_DROP = re.compile(r"<(script|style|head|title)\b.*?</\1\s*>", re.S | re.I)
_TAG = re.compile(r"<[^>]*>")


@dataclass(frozen=True)
class Segment:
    """A run of text, marked when it is what a finding matched (`finding`: its 1-based number)."""

    text: str
    finding: int = 0


@dataclass(frozen=True)
class Attachment:
    """An attachment as listed: its name, type, size, and the findings located in it."""

    index: int
    name: str
    content_type: str
    size: int
    findings: tuple[int, ...] = ()


@dataclass
class MessageView:
    """What the message page shows."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    body: list[Segment] = field(default_factory=list)
    body_from_html: bool = False
    truncated: int = 0
    attachments: list[Attachment] = field(default_factory=list)
    unplaced: list[int] = field(default_factory=list)  # findings not found in the body text (by number)


def html_to_text(markup: str) -> str:
    """Text of an HTML part: script, style and head dropped, tags removed, entities decoded once."""
    return html.unescape(_TAG.sub(" ", _DROP.sub(" ", markup)))


def mark(text: str, findings: list[tuple[int, Finding]]) -> tuple[list[Segment], list[int]]:
    """`text` cut into segments with each finding's matched words marked where they occur.

    Every occurrence is marked (a reviewer must see each place); where two
    matches overlap the earlier one wins. Returns the findings found nowhere.
    """
    spans: list[tuple[int, int, int]] = []
    missing: list[int] = []
    for n, f in findings:
        needle = f.text.strip()
        if not needle:
            missing.append(n)
            continue
        hits = [(m.start(), m.end(), n) for m in re.finditer(re.escape(needle), text, re.I)]
        if not hits:
            missing.append(n)
        spans.extend(hits)
    spans.sort()
    out: list[Segment] = []
    pos = 0
    for start, end, n in spans:
        if start < pos:
            continue
        if start > pos:
            out.append(Segment(text[pos:start]))
        out.append(Segment(text[start:end], n))
        pos = end
    if pos < len(text):
        out.append(Segment(text[pos:]))
    return out, missing


def _decoded(part: EmailMessage) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def parse(raw: bytes) -> EmailMessage:
    """The message, parsed leniently with the modern policy."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def attachments(raw: bytes) -> list[tuple[str, str, bytes]]:
    """(name, content type, decoded bytes) of each attachment, in order (index = position)."""
    out = []
    try:
        for part in parse(raw).iter_attachments():
            assert isinstance(part, EmailMessage)
            out.append((part.get_filename() or "(unnamed)", part.get_content_type(), _decoded(part)))
    except Exception:  # hostile MIME: list what could be read
        pass
    return out


def view(raw: bytes, findings: tuple[Finding, ...]) -> MessageView:
    """Headers, the body text with findings marked, and the attachments with the findings located in them."""
    v = MessageView()
    numbered = list(enumerate(findings, 1))
    if not raw:
        v.unplaced = [n for n, _ in numbered]
        return v
    msg = parse(raw)
    for h in HEADERS:
        for value in msg.get_all(h, []):
            v.headers.append((h, str(value)))
    text = ""
    try:
        part = msg.get_body(preferencelist=("plain", "html"))
        if part is not None:
            content = part.get_content()
            text = content if isinstance(content, str) else ""
            if part.get_content_subtype() == "html":
                text, v.body_from_html = html_to_text(text), True
    except Exception as exc:  # hostile MIME: still show what we can
        text = f"(could not decode the body: {type(exc).__name__})"
    if len(text) > MAX_TEXT:
        v.truncated = len(text) - MAX_TEXT
        text = text[:MAX_TEXT]
    in_body = [(n, f) for n, f in numbered if f.location in ("body", "quoted", "subject")]
    v.body, missing = mark(text, [(n, f) for n, f in in_body if f.location != "subject"])
    for i, (name, ctype, data) in enumerate(attachments(raw)):
        located = tuple(n for n, f in numbered if f.location.startswith(f"attachment:{name}"))
        v.attachments.append(Attachment(i, name, ctype, len(data), located))
    placed = {n for a in v.attachments for n in a.findings}
    v.unplaced = sorted(set(missing) | {n for n, f in numbered
                                        if f.location.startswith("attachment:") and n not in placed})
    return v
