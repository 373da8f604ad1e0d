"""Content scanner: raw message bytes in, findings out.

Pure: no I/O, no shared mutable state, and it never raises. Anything that
goes wrong becomes an `unscannable` finding, because the policy presumes
that what could not be read is material. The scanner only reports; the
policy decides what a finding means.
"""

from __future__ import annotations

import time

from regfd.config import ScanLimits
from regfd.core.finding import EMBARGO, MATERIAL, NON_GAAP_UNRECONCILED, UNSCANNABLE, Finding
from regfd.scan.evidence import Strongest, rests_on_evidence
from regfd.scan.lexicon import EMBARGO as LEX_EMBARGO
from regfd.scan.lexicon import GAAP_RECONCILIATION, NON_GAAP, Lexicons
from regfd.scan.lexicon import MATERIAL as LEX_MATERIAL
from regfd.scan.message_model import ALL, PHRASES, Explanation, MessageModel
from regfd.scan.mime import Problem, TextPart, iter_parts
from regfd.scan.normalize import NormalizedText, normalize_forms
from regfd.scan.quoting import in_spans, quoted_spans, reply_spans

MAX_FINDINGS = 50
_MAX_TEXT_CHARS = 200
_KIND = {LEX_MATERIAL: MATERIAL, LEX_EMBARGO: EMBARGO, NON_GAAP: NON_GAAP_UNRECONCILED}
_REASON_TEXT = {
    "time-budget": "time budget exceeded",
    "over-size": "over a size limit",
    "max-depth": "nested too deeply",
    "max-parts": "too many parts",
    "encrypted-pdf": "encrypted PDF",
    "encrypted-zip": "encrypted ZIP archive",
    "encrypted-office": "encrypted Office document",
    "decompression-bomb": "decompresses beyond the limits",
    "unsupported-format": "document format that cannot be read",
}
# Order in which findings survive the cap: what the reviewer must see first.
_PRIORITY = {UNSCANNABLE: 0, EMBARGO: 1, MATERIAL: 2, NON_GAAP_UNRECONCILED: 3}


def _unscannable(location: str, reason: str) -> Finding:
    return Finding(UNSCANNABLE, reason, _REASON_TEXT.get(reason, reason.replace("-", " ")), "", location)


def _quoted_location(location: str) -> str:
    return location[: -len("body")] + "quoted"


_Hit = tuple[str, Finding, int, int]  # lexicon kind, finding, original start, end


# What the message model reads of a text part: the part, its first normalized form, and the spans
# of that form that quote the mail being answered (`reply_spans`).
_Read = tuple[TextPart, NormalizedText, list[tuple[int, int]]]


def _hits(part: TextPart, lexicons: Lexicons, read: list[_Read] | None = None,
          strongest: Strongest | None = None) -> list[tuple[str, Finding]]:
    """(lexicon kind, finding) for every hit in one text part.

    Every normalized form of the text is matched (more than one only where
    spaced-out letters could be read two ways, "a U.S. contract"); hits are
    taken back to original offsets, where the same phrase found in two forms
    is one hit. Exclusions apply within the form that found them. The first
    form of each part goes to `read`, for the message model, with its answered spans."""
    quoted: list[tuple[int, int]] | None = None
    answered = reply_spans(part.text)  # on the original: normalization drops the "> " markers
    out = []
    for n, norm in enumerate(normalize_forms(part.text)):
        replies = [(norm.at(lo), norm.at(hi)) for lo, hi in answered]
        if n == 0 and read is not None:
            read.append((part, norm, replies))
        # Topic sentences are read in the first form only: the other forms only
        # re-read spaced-out letters, an evasion of phrases, not of plain words.
        for hit in lexicons.find(norm.text, topics=n == 0, strongest=strongest, replies=replies):
            if quoted is None:
                quoted = quoted_spans(part.text) if part.body else []
            start, end = norm.span(hit.start, hit.end)
            location = part.location
            if quoted and in_spans(quoted, start):
                location = _quoted_location(location)
            text = part.text[start:end][:_MAX_TEXT_CHARS]
            kind = _KIND.get(hit.entry.kind, hit.entry.kind)
            if hit.why:  # evidence: the reviewer reads the whole sentence and why it scored
                excerpt = norm.excerpt(hit.excerpt_start, hit.excerpt_end, width=_MAX_TEXT_CHARS)
                rule = hit.why
            else:
                excerpt, rule = norm.excerpt(hit.start, hit.end), hit.entry.origin
            finding = Finding(kind, hit.entry.category, text, excerpt, location, hit.entry.severity, rule)
            out.append((hit.entry.kind, finding, start, end))
    return _drop_nested(out) if out else []


def _second_opinion(model: MessageModel, pairs: list[tuple[str, Finding]], read: list[_Read], strongest: float,
                    ) -> list[tuple[str, Finding]]:
    """The message model's say on the material findings (message_model.py): drop or add, never both."""
    own: set[int] = set()
    quoted: set[int] = set()
    for _, norm, replies in read:
        model.collect(norm.text, replies, own, quoted)
    p, words = model.reading_ids(own, quoted)
    th = model.thresholds
    if any(kind == LEX_MATERIAL for kind, _ in pairs):
        standing = th.standing(p, words, strongest)
        if standing == ALL:
            return pairs
        feats = model.named(own, quoted)
        return [(kind, f) for kind, f in pairs
                if kind != LEX_MATERIAL or (not rests_on_evidence(f.rule)
                                            and (standing == PHRASES or model.spares(f.excerpt, f.text, feats)))]
    if p < th.alone_at(strongest) or not read:
        return pairs
    feats = model.named(own, quoted)
    best: tuple[float, TextPart, NormalizedText, Explanation] | None = None
    for part, norm, replies in read:
        why = model.explain(norm.text, replies)
        weight = sum(w for _, w in why.words)
        if why.words and (best is None or weight > best[0]):
            best = (weight, part, norm, why)
    if best is None:
        return pairs
    _, part, norm, why = best
    start, end = norm.span(why.start, why.end)
    location = part.location
    if part.body and in_spans(quoted_spans(part.text), start):
        location = _quoted_location(location)
    finding = Finding(MATERIAL, model.category(feats), part.text[start:end][:_MAX_TEXT_CHARS].strip(),
                      norm.excerpt(why.start, why.end, width=_MAX_TEXT_CHARS), location, "medium", model.rule(p, why))
    return [*pairs, (LEX_MATERIAL, finding)]


def _tidy(findings: list[Finding]) -> list[Finding]:
    """De-duplicate (same kind, category, location and text once) and cap."""
    seen: set[tuple[str, str, str, str]] = set()
    out = []
    for f in sorted(findings, key=lambda f: _PRIORITY.get(f.kind, 9)):
        key = (f.kind, f.category, f.location, " ".join(f.text.casefold().split()))
        if key in seen:
            continue
        seen.add(key)
        out.append(f)
    return out[:MAX_FINDINGS]


def _drop_nested(hits: list[_Hit]) -> list[tuple[str, Finding]]:
    """Within one category and location, keep only the longest of overlapping
    hits ("going to miss the quarter", not also "miss the quarter")."""
    out: list[tuple[str, Finding]] = []
    last: dict[tuple[str, str, str], _Hit] = {}
    for hit in sorted(hits, key=lambda h: (h[2], -h[3])):
        kind, f, start, end = hit
        key = (kind, f.category, f.location)
        prev = last.get(key)
        if prev is not None and start < prev[3]:
            if end - start > prev[3] - prev[2]:
                last[key] = hit  # rare: a longer hit starting later replaces it
            continue
        if prev is not None:
            out.append((prev[0], prev[1]))
        last[key] = hit
    out.extend((h[0], h[1]) for h in last.values())
    return out


def _collect(parts: list[tuple[str, Finding]]) -> list[Finding]:
    """Material and embargo findings, plus the message-level non-GAAP rule."""
    findings = [f for kind, f in parts if kind in (LEX_MATERIAL, LEX_EMBARGO)]
    reconciled = any(kind == GAAP_RECONCILIATION for kind, _ in parts)
    if not reconciled:
        findings += [f for kind, f in parts if kind == NON_GAAP]
    return findings


def scan_text(text: str, lexicons: Lexicons, location: str = "body") -> list[Finding]:
    """Findings in one plain string (tests, the CLI). Quoted-text detection
    applies when `location` is "body"."""
    try:
        pairs = _hits(TextPart(location, text, body=location.endswith("body")), lexicons)
        return _tidy(_collect(pairs))
    except Exception as exc:  # never raise: an unexpected error is a finding
        return [_unscannable(location, f"scanner-error:{type(exc).__name__}")]


def scan_message(raw: bytes, lexicons: Lexicons, limits: ScanLimits, strongest: Strongest | None = None
                 ) -> list[Finding]:
    """Every finding in a raw RFC 5322 message, within `limits.time_budget`.

    `strongest`, when given, ends with the best evidence score of any sentence
    (tools/fit_message_model.py measures the model's cascade with it)."""
    deadline = time.monotonic() + limits.time_budget
    pairs: list[tuple[str, Finding]] = []
    problems: list[Finding] = []
    read: list[_Read] | None = [] if lexicons.message_model is not None else None
    strongest = strongest if strongest is not None else Strongest()
    subject: TextPart | None = None
    try:
        for item in iter_parts(raw, limits, deadline):
            if isinstance(item, Problem):
                problems.append(_unscannable(item.location, item.reason))
                continue
            if item.location == "subject" and subject is None:
                subject = item  # read last: the body's "as announced" then counts for it (Strongest.groups)
                continue
            pairs.extend(_hits(item, lexicons, read, strongest))
            if time.monotonic() > deadline:
                problems.append(_unscannable("message", "time-budget"))
                break
        if subject is not None:
            pairs.extend(_hits(subject, lexicons, read, strongest))
        if lexicons.message_model is not None and read is not None and not problems:
            pairs = _second_opinion(lexicons.message_model, pairs, read, strongest.score)
    except Exception as exc:  # a parser bug on hostile input must not lose the message
        problems.append(_unscannable("message", f"scanner-error:{type(exc).__name__}"))
    return _tidy(problems + _collect(pairs))
