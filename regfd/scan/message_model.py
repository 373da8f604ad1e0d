"""A second opinion on the whole message: a linear model over its words (message_model.toml).

The lexicons and the evidence score read one sentence at a time and need a
topic word; people leaking in plain words often give none ("Brenner is
pulling its business at year end"). This model reads every word and word
pair of the message's text parts at once, as a reviewer skims a mail, and
gives the probability that the message discloses material information.
The words of the mail a reply answers (what it quotes: `reply_spans`) are
features apart, "q:" + the word: the analyst's question quoted under an
answer is not the sender's own words, but it is what gives a one-line
answer its meaning.
It was fitted offline on the development corpus (tools/fit_message_model.py,
scikit-learn; regfd itself only reads the weights), and measured on
batches it had not seen (leave one batch out) before being shipped.

Its thresholds, in the file for compliance to tune (`Thresholds`):
- `alone`: a message with no material finding whose probability reaches it
  becomes one, under the category the model's category tables favour, with
  the sentence that weighs most as the excerpt and its heaviest words as
  the rule ("message model p=0.83: 'pulling' +0.91 …"); `near` replaces it
  where some sentence's evidence score reached `near_score`;
- `confirm`: a message whose probability stays under it (and under
  `alone`) keeps only the material findings that came from a lexicon
  phrase; findings that rest on the evidence score alone are dropped as
  noise (a vendor's "plowing contract renewal ... 620 spaces");
- `veto`: where the message's words alone (the probability without the
  model's prior, so that a short message with few words is never "clearly
  harmless") stay under it, a lexicon phrase's material finding drops too,
  unless the words of its own sentence weigh towards a disclosure or the
  rest of the message, without that sentence, does not read under it
  (`Thresholds.spares`): an officer's "we're on track for the guidance
  range we gave in May" amid a restated public record goes; "we will miss
  the quarter, the numbers look soft" stays however harmless the rest of
  the message reads (a public reference in another paragraph must not
  cancel it), and so does "Bankruptcy is on the table." alone in its mail.
With `alone = 1.0` and `confirm = veto = 0.0` the model changes nothing.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

from regfd.core.finding import MATERIAL_CATEGORIES
from regfd.errors import ConfigError
from regfd.ports import WordIndex
from regfd.scan.normalize import normalize
from regfd.scan.quoting import in_spans
from regfd.scan.wordindex import word_index

_TOKEN = re.compile(r"[a-z0-9']+")  # the stdlib's engine: twice as fast as `regex` on this
# Every digit is read as 0: "$45m" and "$38m" are one feature, "00m", as "Q3" and "Q4" are "q0". A figure
# seldom recurs from one mail to the next; its shape does ("at 00", "00 million", "up 0 percent"), and
# the bare unannounced figure is the disclosure the words around it least often name. Measured on the
# development corpus, each batch left out of the fit: 95.1 -> 95.7 % recall at the same 3 % of benign
# mail held (README, "The message model").
_FOLD_DIGITS = str.maketrans("123456789", "000000000")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n\s*\n")
# Words too common to mean anything alone: features are words that are not
# these, and pairs of words not both these (the word model's fitter uses the same set).
_STOPWORD_TEXT = (
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this "
    "that these those there here i me my we our us you your he she they them his her their what which who "
    "will would can could should may might do does did have has had not no so than then too very just "
    "also about into over after before up down out off again further once all any both each few more most "
    "other some such only own same s t don now team group"
)
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def tokens(text: str) -> list[str]:
    """The words of `text` as the model reads them: letters, digits and apostrophes, lower case, digits as 0."""
    return _TOKEN.findall(text.lower().translate(_FOLD_DIGITS))


def features(text: str) -> set[str]:
    """The words and word pairs of normalized `text` that the model can weigh."""
    words = tokens(text)
    out = {w for w in words if w not in STOPWORDS}
    out.update(f"{a} {b}" for a, b in zip(words, words[1:], strict=False)
               if not (a in STOPWORDS and b in STOPWORDS))
    return out


# A feature of the mail being answered ("q:guidance"): the analyst's question quoted under a reply
# is not the sender's own words, and weighs apart from them (regfd.scan.quoting.reply_spans).
ANSWERED = "q:"

Spans = Sequence[tuple[int, int]]


def zones(text: str, answered: Spans) -> tuple[list[str], list[str]]:
    """`text` cut into the sender's own stretches and the stretches of `answered` (spans that may overlap)."""
    own: list[str] = []
    quoted: list[str] = []
    pos = 0
    for lo, hi in sorted(answered):
        if hi <= pos:
            continue
        if quoted and lo <= pos:  # overlaps the last stretch: one stretch, so no word pair is cut
            quoted[-1] += text[pos:hi]
        else:
            own.append(text[pos:lo])
            quoted.append(text[lo:hi])
        pos = hi
    own.append(text[pos:])
    return own, quoted


def message_features(text: str, answered: Spans = ()) -> set[str]:
    """The features of one normalized text part: its own words, and the answered mail's as ANSWERED + word."""
    own, quoted = zones(text, answered)
    out: set[str] = set()
    for stretch in own:
        out |= features(stretch)
    for stretch in quoted:
        out.update(ANSWERED + f for f in features(stretch))
    return out


def sentence_of(excerpt: str, text: str) -> str:
    """The sentence of `excerpt` that holds `text` (a finding's matched words), or the whole excerpt."""
    needle = " ".join(text.split())  # an excerpt has its white space made single spaces
    pos = excerpt.casefold().find(needle.casefold())
    if pos < 0:
        return excerpt
    start = 0
    for m in _SENTENCE.finditer(excerpt):
        if m.start() >= pos + len(needle):
            return excerpt[start:m.start()]
        start = m.end() if m.end() <= pos else start
    return excerpt[start:]


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


@dataclass(frozen=True)
class Explanation:
    """Why the model leans to a disclosure: the heaviest sentence and its words."""

    start: int  # the sentence, in the normalized text it came from
    end: int
    words: tuple[tuple[str, float], ...]


ALL, PHRASES, LEANING = "all", "phrases", "leaning"  # which material findings stand (`Thresholds.standing`)


@dataclass(frozen=True)
class Thresholds:
    """What the model's probability does to a message's material findings.

    One rule for the scanner, which applies it, and for
    tools/fit_message_model.py, which chooses the values by measuring it.
    """

    alone: float
    near: float  # `alone` where some sentence's evidence score reached `near_score`
    near_score: float
    confirm: float
    veto: float = 0.0

    def alone_at(self, strongest: float) -> float:
        """The probability from which a message is a finding by itself, given its best evidence score."""
        return self.near if strongest >= self.near_score else self.alone

    def standing(self, p: float, words: float, strongest: float) -> str:
        """Which material findings stand: ALL, the lexicon PHRASES', or only the phrases whose sentence is LEANING.

        `p`: the model's probability; `words`: the same without its prior (`MessageModel.reading`).
        """
        if p >= self.confirm or p >= self.alone_at(strongest):
            return ALL
        return PHRASES if words >= self.veto else LEANING

    def spares(self, leaning: bool, rest: float) -> bool:
        """Whether a lexicon phrase stands when the message's words read under `veto` (LEANING).

        `leaning`: its own sentence's words weigh towards a disclosure; `rest`: the words-only
        probability of the rest of the message, without that sentence. The veto is the rest of the
        message saying the phrase is harmless: where there is no rest ("bankruptcy is on the table",
        alone in its mail: 0.5), or it does not read harmless, the phrase stands whatever one of its
        own words weighs ("table" is mostly benign in the corpus).
        """
        return leaning or rest >= self.veto

    def flags(self, p: float, words: float, strongest: float, phrase: bool, evidence: bool,
              leaning: bool = False, rest: float = 0.5) -> bool:
        """Whether a message ends with a material finding.

        `phrase`: a lexicon phrase raised one; `evidence`: a finding rests on the evidence score alone;
        `leaning` and `rest`: of the phrase whose sentence best survives the veto (`spares`); the
        default rest, 0.5, is the reading of no words at all.
        """
        standing = self.standing(p, words, strongest)
        return (p >= self.alone_at(strongest) or (standing == ALL and evidence)
                or (phrase and (standing != LEANING or self.spares(leaning, rest))))

    def __str__(self) -> str:
        return (f"alone = {self.alone}, near = {self.near}, near_score = {self.near_score}, "
                f"confirm = {self.confirm}, veto = {self.veto}")


@dataclass(frozen=True)
class MessageModel:
    """Weights for "discloses material information", and per-category weights to name the category."""

    bias: float
    weights: Mapping[str, float]
    thresholds: Thresholds
    category_bias: Mapping[str, float]
    category_weights: Mapping[str, Mapping[str, float]]
    origin: str
    vocabulary: tuple[str, ...] = ()  # every feature any table weighs
    cache_dir: Path | None = None
    native: bool = True  # the C word pass where it is built (wordindex.py); False: the Hyperscan reference
    # Every word and word pair, once for a feature and its ANSWERED twin (`present`); by index, the
    # feature's name in the sender's own text and in answered text, or "" where no table weighs it.
    index: WordIndex = field(init=False, repr=False, compare=False)
    _own: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _answered: tuple[str, ...] = field(init=False, repr=False, compare=False)
    # The same, as the weights of "discloses" (0.0 where that table does not weigh the feature): most
    # mail reads under every threshold, and its probability is summed from the word pass's ids directly.
    _own_weights: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _answered_weights: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        known = frozenset(self.vocabulary)
        words = sorted({f.removeprefix(ANSWERED) for f in known})
        object.__setattr__(self, "index", word_index(words, self.cache_dir, self.native))
        own = tuple(w if w in known else "" for w in words)
        answered = tuple(ANSWERED + w if ANSWERED + w in known else "" for w in words)
        object.__setattr__(self, "_own", own)
        object.__setattr__(self, "_answered", answered)
        object.__setattr__(self, "_own_weights", tuple(self.weights.get(f, 0.0) for f in own))
        object.__setattr__(self, "_answered_weights", tuple(self.weights.get(f, 0.0) for f in answered))

    def present(self, text: str) -> frozenset[str]:
        """`features(text)` restricted to the vocabulary, with no Python loop over the words.

        Every scanned message pays for this, so it runs in C (wordindex.py);
        its tokens are `tokens`': ASCII letters, digits (read as 0) and the
        apostrophe, whatever else a separator. Measured on 10 KB: 0.20 ms with a set
        intersection of every word and pair, 0.12 ms with the Hyperscan pass
        (the reference), 0.03 ms in C.
        """
        return self._present(text, self._own)

    def _present(self, text: str, names: tuple[str, ...]) -> frozenset[str]:
        """The `names` (`_own` or `_answered`) of the vocabulary's words in `text`."""
        return _named(self._ids(text), names)

    def _ids(self, text: str) -> set[int]:
        """The indexes of the vocabulary's words and pairs in `text`."""
        return self.index.ids(text)

    def read(self, text: str, answered: Spans = ()) -> frozenset[str]:
        """`message_features(text, answered)` restricted to the vocabulary (`present` on each stretch)."""
        own: set[int] = set()
        quoted: set[int] = set()
        self.collect(text, answered, own, quoted)
        return self.named(own, quoted)

    def collect(self, text: str, answered: Spans, own: set[int], quoted: set[int]) -> None:
        """Add to `own` and `quoted` the ids of the vocabulary's words in `text`'s own and answered stretches."""
        if not answered:
            own |= self._ids(text)
            return
        mine, theirs = zones(text, answered)
        for t in mine:
            if t:
                own |= self._ids(t)
        for t in theirs:
            if t:
                quoted |= self._ids(t)

    def named(self, own: AbstractSet[int], quoted: AbstractSet[int]) -> frozenset[str]:
        """The features of the ids `collect` found: what `read` gives."""
        return _named(own, self._own) | _named(quoted, self._answered)

    def reading_ids(self, own: AbstractSet[int], quoted: AbstractSet[int]) -> tuple[float, float]:
        """`reading(self.named(own, quoted))`, summed from the ids without naming them (every message pays it)."""
        z = sum(map(self._own_weights.__getitem__, own)) + sum(map(self._answered_weights.__getitem__, quoted))
        return sigmoid(self.bias + z), sigmoid(z)

    def spares(self, excerpt: str, text: str, feats: AbstractSet[str]) -> bool:
        """Whether a lexicon phrase finding (its `excerpt` and matched `text`) stands under the veto
        in a message with these features (`Thresholds.spares`). Its sentence leaves the rest of the
        message in either zone, wherever it was found."""
        ids = self._ids(normalize(sentence_of(excerpt, text)).text)
        own = _named(ids, self._own)
        leaning = sum(map(self.weights.get, own, repeat(0.0))) > 0.0
        rest = feats - own - _named(ids, self._answered)
        return self.thresholds.spares(leaning, sigmoid(sum(map(self.weights.get, rest, repeat(0.0)))))

    def reading(self, feats: Iterable[str]) -> tuple[float, float]:
        """P(material) for a message with these features, and the same from its words alone (without the prior)."""
        # map() over the same iteration: the same additions in the same order as a generator, in C
        z = sum(map(self.weights.get, feats, repeat(0.0)))
        return sigmoid(self.bias + z), sigmoid(z)

    def category(self, feats: AbstractSet[str]) -> str:
        """The material category whose table scores these features highest."""
        best, best_z = "", -math.inf
        for cat, table in self.category_weights.items():
            z = self.category_bias.get(cat, 0.0) + sum(table.get(f, 0.0) for f in feats)
            if z > best_z:
                best, best_z = cat, z
        return best or "prospects-strategy"

    def explain(self, text: str, answered: Spans = ()) -> Explanation:
        """The sentence of `text` whose words weigh most towards a disclosure (weighed as answered
        mail where it starts in `answered`)."""
        best = Explanation(0, 0, ())
        best_sum = -math.inf
        pos = 0
        for m in [*_SENTENCE.finditer(text), None]:
            end = m.start() if m is not None else len(text)
            names = self._answered if in_spans(answered, pos) else self._own
            found = sorted(((self.weights[f], f) for f in self._present(text[pos:end], names)
                            if self.weights.get(f, 0.0) > 0), reverse=True)
            total = sum(w for w, _ in found)
            if found and total > best_sum:
                best_sum = total
                best = Explanation(pos, end, tuple((f, w) for w, f in found[:4]))
            if m is not None:
                pos = m.end()
        return best

    def rule(self, p: float, why: Explanation) -> str:
        """The finding's rule line: probability and the words that tipped it ("(quoted)": in the mail answered)."""
        words = ", ".join(f"'{f.removeprefix(ANSWERED)}'{' (quoted)' if f.startswith(ANSWERED) else ''} {w:+.2f}"
                          for f, w in why.words)
        return f"message model p={p:.2f} ({words}); {self.origin}"


def _named(ids: Iterable[int], names: tuple[str, ...]) -> frozenset[str]:
    """The features named by literal ids in one zone's table (`MessageModel._own`, `._answered`);
    "" names a word no table weighs in that zone."""
    return frozenset(map(names.__getitem__, ids)).difference(("",))


def _number(data: Mapping[str, object], key: str, where: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    v = data.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{where}: {key} must be a number")
    if not lo <= float(v) <= hi:
        raise ConfigError(f"{where}: {key} must be between {lo:g} and {hi:g} (got {v})")
    return float(v)


def _table(data: object, where: str) -> dict[str, float]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a table of \"feature\" = weight")
    out: dict[str, float] = {}
    for k, v in data.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{where}: weight of {k!r} must be a number")
        out[k] = float(v)
    return out


def read_model_file(path: Path, keys: set[str]) -> tuple[dict[str, Any], str]:
    """A weights file's TOML (evidence.toml, model.toml, this one) and the prefix of its errors.

    A key not in `keys` is refused: a misspelt threshold must not be ignored.
    """
    where = f"lexicon {path.name}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read: {exc}") from None
    unknown = set(data) - keys
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    return data, where


def load_message_model(path: Path, cache_dir: Path | None = None) -> MessageModel:
    """Validate message_model.toml; one line per mistake. `cache_dir`: as `load_lexicons`'."""
    data, where = read_model_file(path, {"kind", "description", "bias", "alone", "near", "near_score", "confirm",
                                         "veto", "weights", "categories"})
    cats = data.get("categories", {})
    if not isinstance(cats, dict):
        raise ConfigError(f"{where}: categories must be a table of [categories.<category>] tables")
    cat_bias: dict[str, float] = {}
    cat_weights: dict[str, dict[str, float]] = {}
    for cat, table in cats.items():
        if cat not in MATERIAL_CATEGORIES:
            raise ConfigError(f"{where}: [categories.{cat}] is not a material category")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [categories.{cat}] must be a table")
        cat_bias[cat] = _number(table, "bias", f"{where} [categories.{cat}]")
        cat_weights[cat] = _table(table.get("weights", {}), f"{where} [categories.{cat}.weights]")
    weights = _table(data.get("weights", {}), f"{where} [weights]")
    vocabulary = tuple(sorted(frozenset(weights).union(*cat_weights.values())))
    for f in vocabulary:
        if f != f.translate(_FOLD_DIGITS):
            raise ConfigError(f"{where}: {f!r}: the model reads every digit as 0 (write {f.translate(_FOLD_DIGITS)!r})")
    confirm = _number(data, "confirm", where, 0.0, 1.0)
    veto = _number(data, "veto", where, 0.0, confirm) if "veto" in data else 0.0
    thresholds = Thresholds(alone=_number(data, "alone", where, 0.0, 1.0), near=_number(data, "near", where, 0.0, 1.0),
                            near_score=_number(data, "near_score", where), confirm=confirm, veto=veto)
    return MessageModel(
        bias=_number(data, "bias", where),
        weights=weights,
        thresholds=thresholds,
        category_bias=cat_bias,
        category_weights=cat_weights,
        origin=path.name,
        vocabulary=vocabulary,
        cache_dir=cache_dir,
    )
