"""Text normalization that defeats simple evasion while remembering offsets.

The lexicons are matched against a *normalized* form of the text (NFKC,
case-folded, accents, zero-width characters and soft hyphens removed,
look-alike letters mapped to Latin, spaced-out letters and words hyphenated
across line breaks joined), but a reviewer must see what the sender actually
wrote. So every transformation records a piece map from normalized offsets
back to original offsets.

Joining spaced letters is a guess: prose has single letters too ("losing a
U.S. contract" would read "losing aus contract"). So `normalize_forms` gives,
besides the joined form, the forms a different guess produces (nothing
joined; only runs with one kind of separator joined, "u.s. gaap"; a first or
last spaced letter kept apart, "a merger"), and the scanner matches all of
them: no joining decision can hide a phrase. Text without spaced letters has
one form, so this costs nothing there.

Speed (measured): a per-character Python loop caps throughput at
about 14 MB/s, so the common ASCII text is handled by C-level `str.lower()`
and regex searches; Python only loops over runs of non-ASCII characters and
over the few spans that a join rule rewrites.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from regfd.scan.patternset import PatternSet

# Characters that are invisible or only formatting: removed outright.
_INVISIBLE = (
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c\u200d\u200e\u200f"
    "\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068"
    "\u2069\u206a\u206b\u206c\u206d\u206e\u206f\u3164\ufeff\uffa0"
)

# Look-alike letters mapped to the Latin letter they imitate. Applied after
# NFKC (which already folds fullwidth and mathematical letters) and before
# case folding, because case matters for some shapes (Greek capital Eta looks
# like "H", small eta like "n").
_CONFUSABLES = {
    # Cyrillic capitals
    "А": "a", "В": "b", "С": "c", "Е": "e", "Н": "h", "І": "i", "Ј": "j", "К": "k",
    "М": "m", "О": "o", "Р": "p", "Ѕ": "s", "Т": "t", "Х": "x", "У": "y", "Ү": "y",
    "Ԁ": "d", "Ԛ": "q", "Ԝ": "w", "Ӏ": "l", "Ѵ": "v", "Ꙅ": "s",
    # Cyrillic small
    "а": "a", "в": "b", "с": "c", "е": "e", "ё": "e", "һ": "h", "н": "h", "і": "i",
    "ї": "i", "ј": "j", "к": "k", "м": "m", "о": "o", "р": "p", "ѕ": "s", "т": "t",
    "х": "x", "у": "y", "ү": "y", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l", "ѵ": "v",
    "ь": "b", "п": "n", "г": "r", "ц": "u", "и": "u", "л": "n",
    # Greek capitals
    "Α": "a", "Β": "b", "Ε": "e", "Ζ": "z", "Η": "h", "Ι": "i", "Κ": "k", "Μ": "m",
    "Ν": "n", "Ο": "o", "Ρ": "p", "Τ": "t", "Υ": "y", "Χ": "x",
    # Greek small
    "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v",
    "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ς": "c", "σ": "o",
    # Latin oddities and Armenian/Cherokee shapes commonly used in spoofing
    "ı": "i", "ȷ": "j", "ɑ": "a", "ɡ": "g", "ɩ": "i", "ʏ": "y", "ᴀ": "a", "ᴄ": "c",
    "ᴅ": "d", "ᴇ": "e", "ᴋ": "k", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ʀ": "r",
    "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ᴢ": "z", "օ": "o", "ս": "u", "ց": "g",
    # Punctuation people paste from word processors
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",
    "\u2015": "-", "\u2212": "-",
}
# Unicode line breaks and spaces that NFKC leaves alone: as separators they
# must split words like ASCII whitespace does ("miss\u2028the quarter"); the
# lexicon matches in ASCII mode, where these are neither space nor word.
_SPACES = {"\x85": "\n", "\u2028": "\n", "\u2029": "\n\n", "\u1680": " "}
_TRANSLATE = str.maketrans({**_CONFUSABLES, **_SPACES, **{c: None for c in _INVISIBLE}})


@lru_cache(maxsize=8192)
def fold_char(c: str) -> str:
    """Normalized form of one non-ASCII character ('' when it should vanish)."""
    decomposed = unicodedata.normalize("NFKD", c)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return unicodedata.normalize("NFKC", stripped).translate(_TRANSLATE).casefold().translate(_TRANSLATE)


def fold(s: str) -> str:
    """Normalize a short string the way `normalize` does (for lexicon patterns)."""
    if s.isascii():
        return s.lower()
    return "".join(c.lower() if c.isascii() else fold_char(c) for c in s)


@dataclass(frozen=True)
class PieceMap:
    """Maps offsets of a derived string back to its source string.

    Piece i covers derived[dst[i]:dst[i+1]] and source[src[i]:src[i]+srclen[i]];
    a piece is `linear` when both sides have the same length, so offsets inside
    it map one to one; otherwise the whole piece maps to its whole source span.
    """

    dst: tuple[int, ...]
    src: tuple[int, ...]
    srclen: tuple[int, ...]
    linear: tuple[bool, ...]

    def start(self, n: int) -> int:
        i = bisect_right(self.dst, n) - 1
        if i < 0:
            return 0
        if self.linear[i]:
            return self.src[i] + min(n - self.dst[i], self.srclen[i])
        return self.src[i]

    def end(self, n: int) -> int:
        if n <= 0:
            return 0
        i = bisect_right(self.dst, n - 1) - 1
        if i < 0:
            return 0
        if self.linear[i]:
            return self.src[i] + min(n - self.dst[i], self.srclen[i])
        return self.src[i] + self.srclen[i]


def _identity(length: int) -> PieceMap:
    return PieceMap((0,), (0,), (length,), (True,))


class _Builder:
    """Accumulates derived text and its piece map."""

    __slots__ = ("parts", "dst", "src", "srclen", "linear", "pos")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.dst: list[int] = []
        self.src: list[int] = []
        self.srclen: list[int] = []
        self.linear: list[bool] = []
        self.pos = 0

    def add(self, text: str, src: int, srclen: int) -> None:
        self.parts.append(text)
        self.dst.append(self.pos)
        self.src.append(src)
        self.srclen.append(srclen)
        self.linear.append(len(text) == srclen)
        self.pos += len(text)

    def result(self) -> tuple[str, PieceMap]:
        if not self.dst:
            return "", _identity(0)
        return "".join(self.parts), PieceMap(tuple(self.dst), tuple(self.src), tuple(self.srclen), tuple(self.linear))


_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+")


def _fold_run(b: _Builder, run: str, offset: int) -> None:
    folded = [fold_char(c) for c in run]
    if all(len(f) == 1 for f in folded):
        b.add("".join(folded), offset, len(run))
        return
    start = 0
    for i, f in enumerate(folded):
        if len(f) != 1:
            if i > start:
                b.add("".join(folded[start:i]), offset + start, i - start)
            b.add(f, offset + i, 1)
            start = i + 1
    if start < len(run):
        b.add("".join(folded[start:]), offset + start, len(run) - start)


def _non_ascii_runs(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of the runs of non-ASCII characters (the same runs as
    `_NON_ASCII_RUN`, split at any literal '?'). The ASCII encoder turns
    each into '?' at C speed and `bytes.find` (memchr) finds those, where a
    `re` scan of the whole text is about ten times slower."""
    data = text.encode("ascii", "replace")
    find = data.find
    i = find(b"?")
    while i >= 0:
        if text[i] == "?":
            i = find(b"?", i + 1)
            continue
        j = i + 1
        while j < len(text) and data[j] == 63 and text[j] != "?":  # 63 == ord("?")
            j += 1
        yield i, j
        i = find(b"?", j)


def _char_fold(text: str) -> tuple[str, PieceMap]:
    """Stage 1: per-character folding (NFKC, casefold, look-alikes, invisibles)."""
    if text.isascii():
        return text.lower(), _identity(len(text))
    b = _Builder()
    last = 0
    for s, e in _non_ascii_runs(text):
        if s > last:
            b.add(text[last:s].lower(), last, s - last)
        _fold_run(b, text[s:e], s)
        last = e
    if last < len(text):
        b.add(text[last:].lower(), last, len(text) - last)
    return b.result()


# Stage 2 rules, each a (pattern, replacement) over the folded text.
# Spaced-out letters: "e b i t d a", "m.e.r.g.e.r", "c-u-t" (three letters or
# more, single separators, so ordinary prose with "a" and "i" is untouched).
_SPACED = re.compile(r"(?<![a-z0-9'])[a-z](?:(?:[.\-_*~/+] ?| )[a-z](?![a-z0-9])){2,}\.?")
# A word hyphenated across a line break: "mer-\n  ger" (also inside "> " quotes).
_HYPHENATED = re.compile(r"(?<=[a-z])-[ \t]*\r?\n[ \t>]*(?=[a-z])")
# Reply-quote markers at the start of a line, so a phrase wrapped across two
# quoted lines still reads as one phrase.
_QUOTE_MARK = re.compile(r"(?<=\n)[ \t]*>[> \t]*")
_NOT_LETTER = re.compile(r"[^a-z]")


# Hyperscan prefilter for the three rules: on ASCII text it says where a
# rule may apply, so the Python regexes above only run around those places.
_JOIN_HINTS = PatternSet(
    [
        r"(?:^|[^a-z0-9'])[a-z](?:[.\-_*~/+] ?| )[a-z](?:[.\-_*~/+] ?| )[a-z](?:[^a-z0-9]|$)",
        r"[a-z]-[ \t]*\r?\n",
        r"\n[ \t]*>",
    ],
    single_match=False,
)
_JOIN_RULES = (_SPACED, _HYPHENATED, _QUOTE_MARK)
_HINT_LIMIT = 20_000


def _join_spans(text: str) -> list[tuple[int, int, str]]:
    """Spans to rewrite, found by the prefilter and confirmed by the regexes."""
    spans: list[tuple[int, int, str]] = []
    # One byte per character, so hint offsets are character offsets: a
    # non-ASCII character becomes '?', which like any non-ASCII character is
    # outside every class of the rules and hints ([a-z], [ \t], [.\-_*~/+]).
    hints: list[tuple[int, int]] | None
    hints, truncated = _JOIN_HINTS.matches(text.encode("ascii", "replace"), limit=_HINT_LIMIT)
    if truncated:
        hints = None
    if hints is None:  # a flood: full regex passes
        for rule in _JOIN_RULES:
            for fm in rule.finditer(text):
                spans.append((fm.start(), fm.end(), _NOT_LETTER.sub("", fm.group()) if rule is _SPACED else ""))
        return spans
    done = [-1, -1, -1]  # per rule: end of the last span already found
    for rule_id, end in hints:
        if end <= done[rule_id]:
            continue
        rule = _JOIN_RULES[rule_id]
        m = rule.search(text, max(0, end - 16))
        while m is not None and m.end() <= done[rule_id]:
            m = rule.search(text, m.end())
        if m is None or m.start() > end:
            continue
        done[rule_id] = m.end()
        spans.append((m.start(), m.end(), _NOT_LETTER.sub("", m.group()) if rule is _SPACED else ""))
    return spans


# A replacement: one string for the whole span, or pieces (text, src, srclen)
# that cover the span in order (so offsets inside it stay exact).
_Pieces = tuple[tuple[str, int, int], ...]
_Span = tuple[int, int, "str | _Pieces"]


def _apply(text: str, spans: Sequence[_Span]) -> tuple[str, PieceMap]:
    """`text` with each span replaced; overlapping spans: the first one wins."""
    if not spans:
        return text, _identity(len(text))
    b = _Builder()
    last = 0
    for s, e, repl in sorted(
        spans, key=lambda sp: (sp[0], sp[1], isinstance(sp[2], tuple), sp[2] if isinstance(sp[2], str) else "")
    ):
        if s < last:  # overlapping rules: the first one wins
            continue
        if s > last:
            b.add(text[last:s], last, s - last)
        if isinstance(repl, str):
            b.add(repl, s, e - s)
        else:
            for piece, src, srclen in repl:
                b.add(piece, src, srclen)
        last = e
    if last < len(text):
        b.add(text[last:], last, len(text) - last)
    return b.result()


def _joins(text: str) -> tuple[str, PieceMap]:
    """Stage 2: join spaced letters and hyphenated words; drop quote markers."""
    return _apply(text, _join_spans(text))


# Inside a span `_SPACED` joined: the runs whose separators are all the same
# ("u.s" and "g.a.a.p" in "u.s. g.a.a.p", "a u" and "u.s" in "a u.s"), three
# letters or more. Group 2 is the separator.
_UNIFORM = re.compile(r"(?<![a-z0-9'])[a-z]([.\-_*~/+] ?| )[a-z](?![a-z0-9])(?:\1[a-z](?![a-z0-9]))+\.?")
_LEAD, _TRAIL = 1, 2  # split masks: keep the first / last spaced letter apart


def _uniform_runs(text: str, s: int, e: int) -> list[tuple[int, int, str]]:
    """(start, end, separator) of the one-separator runs inside [s, e). A run
    keeps a trailing dot only when its separator is a dot ("e.b.i.t.d.a.")."""
    runs = []
    for m in _UNIFORM.finditer(text, s, e):
        us, ue = m.span()
        sep = m.group(1)
        if text[ue - 1] == "." and sep[0] != ".":
            ue -= 1
        runs.append((us, ue, sep))
    return runs


def _uniform_pieces(text: str, s: int, e: int, runs: list[tuple[int, int, str]], mask: int) -> _Pieces:
    """Pieces for the spaced span [s, e): each run joined (with its first or
    last letter kept apart as `mask` says, for space-separated runs whose
    rest is still three letters), the rest of the span as written."""
    pieces: list[tuple[str, int, int]] = []
    pos = s
    for us, ue, sep in runs:
        if us > pos:
            pieces.append((text[pos:us], pos, us - pos))
        lo, hi = us, ue
        if sep == " ":  # letters at us, us+2, ...: one character each
            n = (ue - us + 1) // 2
            lead = bool(mask & _LEAD) and n - 1 - bool(mask & _TRAIL) >= 3
            trail = bool(mask & _TRAIL) and n - 1 - bool(mask & _LEAD) >= 3
            if lead:
                pieces.append((text[us : us + 2], us, 2))  # the letter and its space
                lo = us + 2
            if trail:
                hi = ue - 2
        letters = _NOT_LETTER.sub("", text[lo:hi])
        pieces.append((letters, lo, hi - lo))
        if hi < ue:
            pieces.append((text[hi:ue], hi, ue - hi))
        pos = ue
    if pos < e:
        pieces.append((text[pos:e], pos, e - pos))
    return tuple(pieces)


def _alternative_joins(text: str, spans: list[tuple[int, int, str]]) -> list[tuple[str, PieceMap]]:
    """The other readings of the spaced letters in `spans` (see the module
    docstring); none when no spaced letters were joined."""
    spaced = [(s, e) for s, e, repl in spans if repl]
    if not spaced:
        return []
    others: list[_Span] = [sp for sp in spans if not sp[2]]
    runs = {(s, e): _uniform_runs(text, s, e) for s, e in spaced}
    masks = [0]
    if any(sep == " " and ue - us >= 7 for rs in runs.values() for us, ue, sep in rs):  # four letters or more
        masks += [_LEAD, _TRAIL, _LEAD | _TRAIL]
    out = [_apply(text, list(others))]
    for mask in masks:
        alt = others + [(s, e, _uniform_pieces(text, s, e, runs[(s, e)], mask)) for s, e in spaced]
        out.append(_apply(text, alt))
    return out


@dataclass(frozen=True)
class NormalizedText:
    """The original text, its normalized form, and the way back."""

    original: str
    text: str
    _fold_map: PieceMap
    _join_map: PieceMap

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Original [start, end) for a normalized [start, end)."""
        s1 = self._join_map.start(start)
        e1 = self._join_map.end(end)
        s0 = self._fold_map.start(s1)
        e0 = self._fold_map.end(e1)
        return s0, max(s0, e0)

    def at(self, offset: int) -> int:
        """The normalized offset of original `offset` (of the next character kept, when it was dropped)."""
        return bisect_left(range(len(self.text) + 1), offset, key=lambda n: self.span(n, n)[0])

    def excerpt(self, start: int, end: int, width: int = 80) -> str:
        """About `width` characters of original text around normalized [start, end)."""
        s, e = self.span(start, end)
        pad = max(0, (width - (e - s)) // 2)
        lo, hi = max(0, s - pad), min(len(self.original), e + pad)
        snippet = " ".join(self.original[lo:hi].split())
        return ("…" if lo > 0 else "") + snippet + ("…" if hi < len(self.original) else "")


def normalize(text: str) -> NormalizedText:
    """Normalize `text` for matching, keeping a map back to the original."""
    folded, fold_map = _char_fold(text)
    joined, join_map = _joins(folded)
    return NormalizedText(text, joined, fold_map, join_map)


def normalize_forms(text: str) -> list[NormalizedText]:
    """Every form of `text` to match, `normalize(text)` first, no two alike.

    Only text with spaced-out letters has more than one form: the joined one
    ("losing aus contract"), the one with nothing joined ("losing a u.s.
    contract"), the one joining only runs of one separator kind ("u.s. gaap"
    from "U.S. G.A.A.P.") and its variants keeping the first or last of a
    space-separated run apart ("a merger" from "a m e r g e r"). A phrase in
    any of them is a hit; each maps back to the original text.
    """
    folded, fold_map = _char_fold(text)
    spans = _join_spans(folded)
    joined, join_map = _apply(folded, spans)
    forms = [NormalizedText(text, joined, fold_map, join_map)]
    if not any(repl for _, _, repl in spans):
        return forms
    seen = {joined}
    for alt, alt_map in _alternative_joins(folded, spans):
        if alt not in seen:
            seen.add(alt)
            forms.append(NormalizedText(text, alt, fold_map, alt_map))
    return forms
