"""Compositional evidence: a sentence is a disclosure by what it combines.

People leaking in email rarely use the formal term: "the big customer in
Detroit is walking, keep it under your hat" has no lexicon phrase in it,
but it names a material topic (a customer), the company as the one
affected, and secrecy. So besides the phrase lexicons, every sentence that
names a topic (signals.toml) is scored by the other signal groups around
it, with weights from evidence.toml, and one that reaches the threshold is
a `material` finding whose rule lists the signals and the score.

Speed: topics and the other signals are two Hyperscan databases. Text
without any topic word pays one scan; only text with topics pays the second
scan and the per-sentence arithmetic, which runs over the few topic hits.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import regex

from regfd.core.finding import MATERIAL_CATEGORIES
from regfd.errors import ConfigError
from regfd.scan.message_model import read_model_file
from regfd.scan.patternset import PatternSet
from regfd.scan.quoting import reply_spans

# Compact's offset maps (`separator_runs`): run starts, ends, their compact offsets, removed counts, paragraphs.
Runs = tuple[list[int], list[int], list[int], list[int], list[int]]
_native_compact: Callable[[str], bytes] | None
_native_sentence_ends: Callable[[bytes], list[tuple[int, int]]] | None
_native_runs: Callable[[str], Runs] | None
try:  # the compact text, its offset maps and its sentence ends in C where regfd was built with them
    # (setup.py); `compact_text`, `separator_runs` and `sentence_ends` are their references
    from regfd.scan._wordset import compact
    from regfd.scan._wordset import sentence_ends as native_sentence_ends
    from regfd.scan._wordset import separator_runs as native_runs

    _native_compact, _native_sentence_ends, _native_runs = compact, native_sentence_ends, native_runs
except ImportError:
    _native_compact = _native_sentence_ends = _native_runs = None

SCOPES = ("sentence", "neighbours", "paragraph", "part")
# Weights evidence.toml may give besides the signal groups of signals.toml:
# the hit itself (a topic word, or a phrase of the material lexicon), a
# sentence that is a question, and a hit inside a quoted reply.
STRUCTURAL = ("topic", "phrase", "question", "quoted", "event")
TOPIC_PREFIX = "topic:"
_FILE_KEYS = {"kind", "description", "threshold", "weights", "scope", "elsewhere", "elsewhere_unless", "anchors",
              "default_category"}

# Sentence and paragraph breaks in normalized text; CRLF line ends included.


EVIDENCE_RULE = "evidence score"  # how the rule of a finding the evidence score alone raised begins


def rests_on_evidence(rule: str) -> bool:
    """Whether a finding with this rule rests on the evidence score alone (a lexicon phrase's rule names its entry)."""
    return rule.startswith(EVIDENCE_RULE)


@dataclass(frozen=True)
class EvidenceModel:
    """Weights per signal group, where each counts, and the threshold (evidence.toml)."""

    weights: Mapping[str, float]
    scopes: Mapping[str, str]
    threshold: float
    origin: str
    anchors: tuple[str, ...] = ()  # groups that make a sentence a candidate even without a topic word
    default_category: str = "prospects-strategy"  # for an anchored sentence with no topic anywhere near
    # A group's weight when it is in the text part but outside its scope ("the 8-K is linked at the top").
    elsewhere: Mapping[str, float] = field(default_factory=dict)
    # ... unless one of these groups is in the part too ("it'll be in the Q2 10-Q": the filing is still to come).
    elsewhere_unless: tuple[str, ...] = ()

    def scope(self, group: str) -> str:
        """Where a group counts; the topic's own sentence unless configured."""
        return self.scopes.get(group, "sentence")

    def scanned_whole(self, group: str) -> bool:
        """Whether a group must be looked for in the whole text part, not only around hits."""
        return self.scope(group) == "part" or group in self.elsewhere or group in self.elsewhere_unless


def load_model(path: Path, groups: set[str]) -> EvidenceModel:
    """Validate evidence.toml against the signal groups that exist; one line per mistake."""
    data, where = read_model_file(path, set(_FILE_KEYS))
    threshold = data.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold <= 0:
        raise ConfigError(f"{where}: threshold must be a positive number")
    weights: dict[str, float] = {}
    raw_weights = data.get("weights", {})
    if not isinstance(raw_weights, dict) or "topic" not in raw_weights:
        raise ConfigError(f"{where}: [weights] must give at least `topic`")
    known = {g for g in groups if not g.startswith(TOPIC_PREFIX)} | set(STRUCTURAL)
    for group, w in raw_weights.items():
        if group not in known:
            raise ConfigError(f"{where}: weight for unknown signal group {group!r} "
                              f"(groups: {', '.join(sorted(known))})")
        if isinstance(w, bool) or not isinstance(w, (int, float)):
            raise ConfigError(f"{where}: weight of {group!r} must be a number")
        weights[group] = float(w)
    scopes: dict[str, str] = {}
    for group, scope in dict(data.get("scope", {})).items():
        if group not in known:
            raise ConfigError(f"{where}: scope for unknown signal group {group!r}")
        if scope not in SCOPES:
            raise ConfigError(f"{where}: scope of {group!r} must be one of {', '.join(SCOPES)}")
        scopes[group] = scope
    elsewhere: dict[str, float] = {}
    for group, w in dict(data.get("elsewhere", {})).items():
        if group not in known - set(STRUCTURAL) or scopes.get(group, "sentence") == "part":
            raise ConfigError(f"{where}: elsewhere for {group!r}: not a signal group counted short of the whole part")
        if isinstance(w, bool) or not isinstance(w, (int, float)):
            raise ConfigError(f"{where}: elsewhere weight of {group!r} must be a number")
        elsewhere[group] = float(w)
    unless = data.get("elsewhere_unless", [])
    if not isinstance(unless, list) or any(a not in known - set(STRUCTURAL) for a in unless):
        raise ConfigError(f"{where}: elsewhere_unless must be a list of signal groups")
    anchors = data.get("anchors", [])
    if not isinstance(anchors, list) or any(a not in known - set(STRUCTURAL) for a in anchors):
        raise ConfigError(f"{where}: anchors must be a list of signal groups")
    default = data.get("default_category", "prospects-strategy")
    if default not in MATERIAL_CATEGORIES:
        raise ConfigError(f"{where}: default_category {default!r} is not a material category")
    return EvidenceModel(weights, scopes, float(threshold), path.name, tuple(anchors), default, elsewhere,
                         tuple(unless))


_TOKEN = regex.compile(r"[a-z0-9']+")


@dataclass(frozen=True)
class WordModel:
    """A linear model over a sentence's words, word pairs and signal groups (model.toml).

    Fitted offline on the development corpus (tools/fit_word_model.py); it
    only decides the sentences that the evidence score leaves just under the
    threshold (within `gray_zone`) and in which nothing argues against a
    disclosure (no public reference, refusal, quoted reply ...), so every
    finding still has signals a reviewer can read, plus the words that
    tipped it.
    """

    bias: float
    weights: Mapping[str, float]
    threshold: float  # the probability from which a sentence in the gray zone is a finding
    gray_zone: float
    origin: str

    def probability(self, sentence: str, groups: Iterable[str]) -> tuple[float, list[str]]:
        """The model's probability that `sentence` discloses, and its strongest positive features."""
        words = _TOKEN.findall(sentence)
        features = {*words, *(f"{a} {b}" for a, b in zip(words, words[1:], strict=False)), *(f"g:{g}" for g in groups)}
        found = [(self.weights[f], f) for f in features if f in self.weights]
        z = self.bias + sum(w for w, _ in found)
        top = [f for w, f in sorted(found, reverse=True)[:4] if w > 0]
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z)))), top


def load_word_model(path: Path) -> WordModel:
    """Validate model.toml; one line per mistake."""
    data, where = read_model_file(path, {"kind", "description", "bias", "threshold", "gray_zone", "weights", "fitted"})
    numbers = {}
    for key in ("bias", "threshold", "gray_zone"):
        v = data.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{where}: {key} must be a number")
        numbers[key] = float(v)
    if not 0 < numbers["threshold"] < 1:
        raise ConfigError(f"{where}: threshold is a probability, between 0 and 1")
    weights = data.get("weights", {})
    if not isinstance(weights, dict) or not all(isinstance(w, (int, float)) and not isinstance(w, bool)
                                                for w in weights.values()):
        raise ConfigError(f"{where}: [weights] must map words to numbers")
    return WordModel(numbers["bias"], {str(k): float(v) for k, v in weights.items()}, numbers["threshold"],
                     numbers["gray_zone"], path.name)


@dataclass(frozen=True)
class Evidence:
    """A topic sentence that reached the threshold."""

    category: str  # the material category of the topic
    start: int  # the topic word, in normalized text
    end: int
    lo: int  # the sentence
    hi: int
    score: float
    signals: tuple[str, ...]  # "group 'phrase'" for each signal that counted
    origin: str

    def explain(self) -> str:
        """The rule behind the finding, for the reviewer."""
        return f"{EVIDENCE_RULE} {self.score:g} ({' + '.join(self.signals)}); {self.origin}"


@dataclass
class Strongest:
    """The highest evidence score any sentence of a message reached, finding or not.

    The message model (message_model.py) trusts its own probability less
    where no sentence came near the evidence threshold: ordinary mail about
    meetings and rooms is full of the timing words leaks are made of.
    """

    score: float = -math.inf
    # Signal groups counted "elsewhere" (evidence.toml) that some text part of the message holds: a subject
    # line ("New COO") is read after the body, so the body's "as announced" counts for it too. Only parts
    # with a topic or phrase hit are searched for them (a part without one costs no more than before).
    groups: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Signals:
    """Topic and modifier signals compiled, plus the model that scores them."""

    topics: PatternSet
    topic_categories: tuple[str, ...]  # per topic pattern id
    topic_rx: tuple[regex.Pattern[str], ...]  # reverse-searching, to find a topic's start from its end
    modifiers: PatternSet  # groups that count at most in a topic's paragraph: scanned there only
    modifier_groups: tuple[str, ...]  # per modifier pattern id; ids of `wide` follow those of `modifiers`
    modifier_rx: tuple[regex.Pattern[str], ...]
    model: EvidenceModel
    word_model: WordModel | None = None
    wide: PatternSet | None = None  # groups that count in the whole text part (secrecy, tips, published)

    def find(self, text: str, phrases: Sequence[tuple[int, int, str]] = (), topics: bool = True,
             strongest: Strongest | None = None, replies: Sequence[tuple[int, int]] | None = None,
             compact: Compact | None = None,
             ) -> tuple[list[Evidence], dict[int, Evidence]]:
        """Score every topic sentence, and every material phrase hit of the lexicons, in `text`.

        `text` is normalized, `phrases` the (start, end, category) of material
        lexicon hits in it; without `topics`, only the phrases are scored.
        Matching and scoring run on the compact form of
        the text (`Compact`); what is returned is in `text`'s offsets. Returns the topic sentences that
        reach the threshold, and for each phrase hit (by index) that keeps
        it, its evidence: a phrase in a sentence that refuses to comment,
        cites the public record or tells history is not a disclosure either.
        `strongest`, when given, is raised to the best score of any hit.
        `replies`: the spans of `text` that quote the mail being answered,
        found on the original text (normalization drops "> " markers); by
        default they are looked for in `text` itself.
        `compact`: `Compact(text)`, when the caller has it already.
        """
        if not topics and not phrases:
            return [], {}
        compact = Compact(text) if compact is None else compact
        data = compact.data
        topic_reports = self.topics.matches(data, limit=5000)[0] if topics else []
        if not topic_reports and not phrases:
            return [], {}
        to_compact = compact.to_compact
        breaks = _Breaks(compact)
        # Paragraph-bound groups are scanned only in the paragraphs that hold a hit (a mail
        # of ten paragraphs with one topic sentence pays for one); whole-part groups everywhere.
        located: list[tuple[int, int, int]] = []  # (pattern id, start, end) of each topic or anchor hit
        for pid, end in topic_reports:
            m = self.topic_rx[pid].match(compact.text, 0, end)
            located.append((pid, m.start() if m is not None else max(0, end - 1), end))
        hits = [(start, end) for _, start, end in located]
        hits += [(to_compact(s), to_compact(e)) for s, e, _ in phrases]
        spans: list[tuple[int, int]] = []
        for start, end in sorted(hits):
            b = breaks.bounds(start, end)
            if spans and b[4] <= spans[-1][1]:
                spans[-1] = (spans[-1][0], max(spans[-1][1], b[5]))
            else:
                spans.append((b[4], b[5]))
        mod_reports: list[tuple[int, int]] = []
        for lo, hi in spans:
            found, _ = self.modifiers.matches(data[lo:hi], limit=50_000)
            mod_reports.extend((pid, end + lo) for pid, end in found)
        if self.wide is not None:
            offset = self.modifiers.size
            mod_reports.extend((pid + offset, end) for pid, end in self.wide.matches(data, limit=50_000)[0])
        ends: dict[str, list[tuple[int, int]]] = {}
        for pid, end in mod_reports:
            ends.setdefault(self.modifier_groups[pid], []).append((end, pid))
        for v in ends.values():
            v.sort()
        replies = [(to_compact(a), to_compact(b)) for a, b in (reply_spans(text) if replies is None else replies)]
        outside: frozenset[str] = frozenset()
        if strongest is not None:
            outside = frozenset(strongest.groups)
            strongest.groups.update(g for g, v in ends.items() if v and self.model.scanned_whole(g))
        scorer = _Scorer(self, compact.text, ends, replies, breaks, outside)
        text = compact.text
        best: dict[tuple[int, str], Evidence] = {}
        anchors: list[tuple[int, int]] = []
        topic_hits: list[tuple[int, str]] = []
        for pid, start, end in located:
            category = self.topic_categories[pid]
            if not category:  # an anchor: scored below, if its sentence has no finding yet
                anchors.append((start, end))
                continue
            topic_hits.append((end, category))
            ev = scorer.score(category, start, end, "topic")
            if ev is None:
                continue
            key = (ev.lo, ev.category)
            prev = best.get(key)
            if prev is None or ev.score > prev.score:
                best[key] = ev
        covered = {ev.lo for ev in best.values()}
        for start, end in anchors:
            nearest = min(topic_hits, key=lambda t: abs(t[0] - end), default=(0, self.model.default_category))
            ev = scorer.score(nearest[1], start, end, "topic", event_ok=False)  # the anchor is not the topic
            if ev is not None and ev.lo not in covered:
                covered.add(ev.lo)
                best[(ev.lo, ev.category)] = ev
        kept: dict[int, Evidence] = {}
        for i, (start, end, category) in enumerate(phrases):
            ev = scorer.score(category, to_compact(start), to_compact(end), "phrase")
            if ev is not None:
                kept[i] = compact.back(ev)
        if strongest is not None:
            strongest.score = max(strongest.score, scorer.best)
        return sorted((compact.back(ev) for ev in best.values()), key=lambda ev: (ev.start, ev.category)), kept


class _Scorer:
    """Scores one text's hits; sentence bounds are computed once per hit end."""

    def __init__(self, signals: Signals, text: str, ends: dict[str, list[tuple[int, int]]],
                 replies: list[tuple[int, int]], breaks: _Breaks, outside: frozenset[str] = frozenset()) -> None:
        self.s = signals
        self.text = text
        self.ends = ends
        self.replies = replies
        self.bounds: dict[int, tuple[int, int, int, int, int, int]] = {}
        self.breaks = breaks
        self.probabilities: dict[tuple[int, int, int, int, int, int], tuple[float, list[str]]] = {}
        self.contexts: dict[tuple[int, int, int, int, int, int], tuple[float, list[tuple[str, int, int]]]] = {}
        unless = signals.model.elsewhere_unless
        self.elsewhere = {} if any(ends.get(g) or g in outside for g in unless) else signals.model.elsewhere
        # Groups only another text part of the message holds (see Strongest.groups).
        self.outside = [g for g in self.elsewhere if g in outside and not ends.get(g)]
        self.best = -math.inf  # the highest score seen, finding or not

    def score(self, category: str, start: int, end: int, base: str, event_ok: bool = True) -> Evidence | None:
        """The evidence for the hit [start, end) as `base` ("topic" or "phrase"), or None under the threshold."""
        model = self.s.model
        b = self.bounds.get(end)
        if b is None:
            b = self.bounds[end] = self.breaks.bounds(start, end)
        context = self.contexts.get(b)
        if context is None:
            context = self.contexts[b] = self._context(b)
        total, present = context
        score = model.weights.get(base, 1.0) + total
        event = model.weights.get("event", 0.0)
        is_event = bool(event) and event_ok and base == "topic" and self.text.count(" ", start, end) >= 2
        if is_event:  # a topic of three words or more names an event ("broke into our system"), not a subject
            score += event
        quoted = model.weights.get("quoted", 0.0)
        in_reply = bool(quoted) and any(lo <= start < hi for lo, hi in self.replies)
        if in_reply:
            score += quoted
        self.best = max(self.best, score)
        verdict = ""
        if score < model.threshold:
            wm = self.s.word_model
            if wm is None or score < model.threshold - wm.gray_zone or in_reply:
                return None
            if any(model.weights.get(group.split(" ")[0], 0.0) < 0 for group, _, _ in present):
                return None  # the model tips a sentence over; it never overrides what makes it harmless
            p, top = self._probability(wm, b, present)
            if p < wm.threshold:
                return None
            verdict = f"{wm.origin} p={p:.2f}" + (f" ({', '.join(top)})" if top else "")
        text = self.text
        signals = [f"{'event' if is_event else base} {text[start:end]!r}"]
        for group, e, mpid in present:
            if mpid < 0:
                signals.append(group)
                continue
            mm = self.s.modifier_rx[mpid].match(text, 0, e)
            signals.append(f"{group} {text[mm.start():e] if mm is not None else '…'!r}")
        if in_reply:
            signals.append("quoted reply")
        if verdict:
            signals.append(verdict)
        return Evidence(category, start, end, b[0], b[1], round(score, 2), tuple(signals), model.origin)

    def _probability(self, wm: WordModel, b: tuple[int, int, int, int, int, int],
                     present: list[tuple[str, int, int]]) -> tuple[float, list[str]]:
        cached = self.probabilities.get(b)
        if cached is None:
            cached = self.probabilities[b] = wm.probability(self.text[b[0]:b[1]], (g for g, _, _ in present))
        return cached

    def _context(self, b: tuple[int, int, int, int, int, int]) -> tuple[float, list[tuple[str, int, int]]]:
        """The weight of every signal group present around one sentence, and where each was found."""
        model = self.s.model
        total = 0.0
        present: list[tuple[str, int, int]] = []
        n = len(self.text)
        for group, found in self.ends.items():
            weight = model.weights.get(group)
            if not weight:
                continue
            lo, hi = _SCOPE_SPAN[model.scope(group)](b, n)
            i = bisect.bisect_right(found, (lo, 1 << 30))
            if i < len(found) and found[i][0] <= hi:
                total += weight
                present.append((group, found[i][0], found[i][1]))
            elif found and group in self.elsewhere:
                total += self.elsewhere[group]
                present.append((f"{group} elsewhere", found[0][0], found[0][1]))
        for group in self.outside:
            total += self.elsewhere[group]
            present.append((f"{group} elsewhere in the message", 0, -1))
        question = model.weights.get("question", 0.0)
        if question and self.text[b[0]:b[1]].rstrip().endswith("?"):
            total += question
            present.append(("question", 0, -1))
        return total, present


# Where a group counts, from the bounds of a hit (see _Breaks.bounds) and the text's length.
_Bounds = tuple[int, int, int, int, int, int]
_SCOPE_SPAN: dict[str, Callable[[_Bounds, int], tuple[int, int]]] = {
    "sentence": lambda b, n: (b[0], b[1]),
    "neighbours": lambda b, n: (b[2], b[3]),
    "paragraph": lambda b, n: (b[4], b[5]),
    "part": lambda b, n: (0, n),
}


_SENTENCE_END_RX = re.compile(rb"[.!?;][\"')\]]* ")  # in the compact text: a sentence ends, and its space

# What a space in a lexicon pattern stands for, each made a space (length kept) ...
_TO_SPACE = bytes(0x20 if chr(b) in "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f-/()[]:" else b for b in range(256))
# ... and then each run of spaces made one (re.sub: 26 us on 10 KB; the maps back, with bytes.find, only on demand).
_RUNS = re.compile(rb"  +")


def _spaced(text: str) -> bytes:
    """One byte per character (non-ASCII "?"), each separator a space: the compact text before its runs
    are made one space, and what `Compact`'s offset maps are counted on."""
    return text.encode("ascii", "replace").translate(_TO_SPACE)


def compact_text(text: str, native: bool = True) -> bytes:
    """`text` as the lexicons read it: one byte per character (non-ASCII is "?", which no pattern
    matches), each run of separators one space. In C where it was built (0.010 ms on 10 KB, against
    0.024 ms for this encode, translate and re.sub, which stay as its reference and fallback)."""
    if native and _native_compact is not None:
        return _native_compact(text)
    return _RUNS.sub(b" ", _spaced(text))


def sentence_ends(data: bytes, native: bool = True) -> list[tuple[int, int]]:
    """The (start, end) of each sentence end in compact text `data` (`_SENTENCE_END_RX`'s matches): in C
    where it was built (0.010 ms on 10 KB, against 0.054 ms for this regular expression, its reference)."""
    if native and _native_sentence_ends is not None:
        return _native_sentence_ends(data)
    return [m.span() for m in _SENTENCE_END_RX.finditer(data)]


def separator_runs(text: str, native: bool = True) -> Runs:
    """`Compact`'s offset maps: for each run of two or more separators in `text`, its start and end, its
    space in the compact text and the characters removed up to and including it; and the compact offsets
    of the runs that hold a blank line. In C where it was built (0.011 ms on 10 KB, against 0.030 ms for
    this, its reference)."""
    if native and _native_runs is not None:
        return _native_runs(text)
    starts: list[int] = []
    ends: list[int] = []
    at: list[int] = []
    removed_upto: list[int] = []
    paragraphs: list[int] = []
    spaced = _spaced(text)
    removed = 0
    n = len(spaced)
    i = spaced.find(b"  ")
    while i >= 0:
        j = i + 2
        while j < n and spaced[j] == 0x20:
            j += 1
        starts.append(i)
        ends.append(j)
        at.append(i - removed)
        if text.count("\n", i, j) >= 2:
            paragraphs.append(i - removed)
        removed += j - i - 1
        removed_upto.append(removed)
        i = spaced.find(b"  ", j)
    return starts, ends, at, removed_upto, paragraphs


class Compact:
    """Normalized text with every run of separators made one space, and the way back.

    Lexicon patterns let a space stand for any run of white space, hyphens,
    slashes, brackets or colons; matched against this form, the space is a
    single literal, which Hyperscan runs about three times faster than a
    repeated class (0.41 -> 0.14 ms for the signals on 10 KB). Only runs of
    two or more characters shift offsets, and there are few (line ends).
    The offset maps are built on first use: most text has no topic or
    phrase hit and never needs them (a CRLF-wrapped 10 KB mail has ~150 runs).
    """

    def __init__(self, text: str) -> None:
        self._source = text
        self.data = compact_text(text)
        self.text = self.data.decode("ascii")
        self._mapped = False
        self.starts: list[int] = []  # each run of two or more: start and end in `text` ...
        self.ends: list[int] = []
        self.at: list[int] = []  # ... its one space in the compact text ...
        self.removed: list[int] = []  # ... and the characters removed up to and including it
        self._paragraphs: list[int] = []  # compact offsets of the runs that held a blank line

    def _map(self) -> None:
        if self._mapped:
            return
        self._mapped = True
        self.starts, self.ends, self.at, self.removed, self._paragraphs = separator_runs(self._source)

    @property
    def paragraphs(self) -> list[int]:
        """Compact offsets of the runs that held a blank line."""
        self._map()
        return self._paragraphs

    def to_compact(self, pos: int) -> int:
        """A `text` offset in the compact text (inside a run: its space)."""
        self._map()
        k = bisect.bisect_right(self.starts, pos)
        if k and pos < self.ends[k - 1]:
            return self.at[k - 1]
        return pos - (self.removed[k - 1] if k else 0)

    def to_text(self, pos: int) -> int:
        """A compact offset back in `text`."""
        self._map()
        k = bisect.bisect_left(self.at, pos)
        return pos + (self.removed[k - 1] if k else 0)

    def back(self, ev: Evidence) -> Evidence:
        """Evidence with its offsets in `text`."""
        t = self.to_text
        return replace(ev, start=t(ev.start), end=t(ev.end), lo=t(ev.lo), hi=t(ev.hi))


class _Breaks:
    """Sentence and paragraph breaks of one compact text, found in one pass, looked up by bisection.

    A sentence ends at . ! ? or ; before a space, or at a paragraph break (a
    blank line, recorded by `Compact`); CRLF and LF text give the same breaks.
    """

    def __init__(self, compact: Compact) -> None:
        self.n = len(compact.text)
        paragraphs = [(p, p + 1) for p in compact.paragraphs]
        ends = sentence_ends(compact.data)
        sentences = sorted(set(ends) | set(paragraphs))
        self.s_starts = [a for a, _ in sentences]
        self.s_ends = [b for _, b in sentences]
        self.p_starts = [a for a, _ in paragraphs]
        self.p_ends = [b for _, b in paragraphs]

    def bounds(self, start: int, end: int) -> tuple[int, int, int, int, int, int]:
        """Sentence, neighbouring sentences and paragraph around [start, end)."""
        i = bisect.bisect_right(self.s_ends, start)  # breaks ending at or before start: i of them
        s_lo = self.s_ends[i - 1] if i else 0
        n_lo = self.s_ends[i - 2] if i >= 2 else 0
        j = bisect.bisect_left(self.s_starts, end)  # first break starting at or after end
        s_hi = self.s_starts[j] if j < len(self.s_starts) else self.n
        n_hi = self.s_starts[j + 1] if j + 1 < len(self.s_starts) else self.n
        k = bisect.bisect_right(self.p_ends, start)
        p_lo = self.p_ends[k - 1] if k else 0
        m = bisect.bisect_left(self.p_starts, end)
        p_hi = self.p_starts[m] if m < len(self.p_starts) else self.n
        s_lo, s_hi = min(s_lo, start), max(s_hi, end)
        return s_lo, s_hi, min(max(n_lo, p_lo), s_lo), max(min(n_hi, p_hi), s_hi), min(p_lo, s_lo), max(p_hi, s_hi)


def build_signals(entries: Sequence[Any], model_path: Path | None, cache_dir: Path | None,
                  compact_regex: Callable[[str], str], compile_reverse: Any,
                  word_model_path: Path | None = None) -> Signals | None:
    """Compile the signal entries (kind "signal") into the two databases; None without signals."""
    if not entries:
        return None
    if model_path is None:
        raise ConfigError("lexicon: signals.toml needs evidence.toml (the weights) beside it")
    model = load_model(model_path, {e.category for e in entries})
    anchors = [e for e in entries if e.category in model.anchors]
    topics = [e for e in entries if e.category.startswith(TOPIC_PREFIX)]
    mods = [e for e in entries if not e.category.startswith(TOPIC_PREFIX)]
    if not topics:
        raise ConfigError("lexicon: signals need at least one topic: group")
    for e in topics:
        if e.category[len(TOPIC_PREFIX):] not in MATERIAL_CATEGORIES:
            raise ConfigError(f"lexicon {e.origin}: {e.category!r} is not a material category "
                              f"(topic:{', topic:'.join(MATERIAL_CATEGORIES)})")
    candidates = topics + anchors  # an anchor's category is "": see Signals.find
    candidate_rx = [compact_regex(e.pattern) for e in candidates]
    near = [e for e in mods if not model.scanned_whole(e.category)]
    wide = [e for e in mods if model.scanned_whole(e.category)]
    mods = near + wide
    mod_rx = [compact_regex(e.pattern) for e in mods]
    return Signals(
        PatternSet(candidate_rx, single_match=False, cache_dir=cache_dir),
        tuple(e.category[len(TOPIC_PREFIX):] if e in topics else "" for e in candidates),
        tuple(compile_reverse(x) for x in candidate_rx),
        PatternSet(mod_rx[:len(near)], single_match=False, cache_dir=cache_dir),
        tuple(e.category for e in mods),
        tuple(compile_reverse(x) for x in mod_rx),
        model,
        load_word_model(word_model_path) if word_model_path is not None else None,
        PatternSet(mod_rx[len(near):], single_match=False, cache_dir=cache_dir) if wide else None,
    )
