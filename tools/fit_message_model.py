"""Fit lexicons/message_model.toml: word weights that read a whole message, from the development corpus.

Offline and reproducible (no network): reads the development part of the
corpus only (never the held-out part). Each message's features are the
words and word pairs of its text parts, exactly as regfd computes them
(regfd.scan.message_model.features over the normalized text of every part);
its label is the reviewer's: material or not. Words the corpus writes as
names (its fictional people, firms and places: `Names`) are not weighed, nor
are the company's own names (lexicons/company.toml, its ticker included).
A logistic regression (scikit-learn, L2, balanced classes) gives the
weights of "discloses", and a multinomial one over the material messages
gives a table per category.
The weights are written as a TOML file a reviewer can read; regfd itself
never needs scikit-learn.

    .venv/bin/pip install scikit-learn
    .venv/bin/python tools/fit_message_model.py [--c 0.3] [--alone 0.7] [--confirm 0.1]
    .venv/bin/python tools/fit_message_model.py --cv     # leave one batch out: what it adds on unseen batches
    .venv/bin/python tools/fit_message_model.py --choose 3  # thresholds: best accuracy holding <= 3 % of benign
    .venv/bin/python tools/fit_message_model.py --list-names  # the words not weighed as names
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from regfd.config import ScanLimits, load_config  # noqa: E402
from regfd.core.decision import decide  # noqa: E402
from regfd.core.envelope import Envelope  # noqa: E402
from regfd.core.finding import MATERIAL, MATERIAL_CATEGORIES, Finding  # noqa: E402
from regfd.core.policy import Policy  # noqa: E402
from regfd.evaluation.corpus import as_received, manifests, read_manifest  # noqa: E402
from regfd.evaluation.scoring import STOPPING  # noqa: E402
from regfd.scan.company import load_company  # noqa: E402
from regfd.scan.evidence import Strongest, rests_on_evidence  # noqa: E402
from regfd.scan.lexicon import Lexicons, load_lexicons  # noqa: E402
from regfd.scan.message_model import ANSWERED, Thresholds, features, sentence_of, sigmoid  # noqa: E402
from regfd.scan.message_model import message_features as part_features  # noqa: E402
from regfd.scan.mime import Problem, iter_parts  # noqa: E402
from regfd.scan.normalize import normalize, normalize_forms  # noqa: E402
from regfd.scan.quoting import reply_spans  # noqa: E402
from regfd.scan.scanner import scan_message  # noqa: E402
from regfd.store.directory_file import load_directory_file  # noqa: E402

MODEL_FILE = "message_model.toml"
TOP_PER_CATEGORY = 400  # the heaviest weights kept per category table (naming a category needs few)
# Weights lighter than this are left out: every scanned message pays for each word of the vocabulary
# (measured with the Hyperscan pass the C word pass replaced: ~0.09 ms per 10 KB at 35 900 words and pairs,
# ~0.06 ms at 21 600), and on 71 batches left out one at a time the curve moved by 0.1 point at most (at 0.1:
# 0.3 points).
MIN_WEIGHT = 0.05
# The corpus's fictional world (its people, customers, deals, banks and towns) recurs from batch to
# batch, so a weight on "Kestrel" or "Marcus" scores well on left-out batches and means nothing in
# another company's mail. Words the development corpus writes as names are therefore not weighed
# (`Names`): capitalized where they do not begin a sentence, in at least NAME_SHARE of at least
# NAME_MIN such occurrences; except the words below, capitalized there but meaning the same in any
# company's mail ("I'm", rating agencies and grades, news services, titles, days and months, plural acronyms).
NAME_SHARE = 0.9
NAME_MIN = 3
_NOT_NAMES_TEXT = """
    i'm i'll i'd i've fitch moody's nasdaq nyse creditwatch ba1 ba2 ba3 baa1 baa2 baa3 sec's regulation specified
    registrant's chief officer secretary relations representative deputy inc industries solutions resources human labor
    reform justice commerce journal chapter ceo's cfo's cto's mr ms mrs dr sir madam certifying diligent disclaimer
    monday tuesday wednesday thursday friday saturday sunday mon tue wed thu fri sat sun
    january february march april may june july august september october november december
    jan feb mar apr jun jul aug sep sept oct nov dec thanksgiving christmas easter halloween
    ssns rsus skus kpis oems pms vps ids pdfs ndas fbi's q1's midcap impairments unveils rsvps rsvp'd
    insolvenz insolvenzantrag schutzschirmverfahren entwurf zahlen reuters bloomberg linkedin talent
"""
NOT_NAMES = frozenset(_NOT_NAMES_TEXT.split())
_WORD = re.compile(r"[A-Za-z0-9']+")
_OPENS_SENTENCE = frozenset('.!?\n\r>:"\u201c(-*\u2022')


@dataclass
class Example:
    batch: str
    feats: set[str]
    material: bool
    categories: frozenset[str]
    phrase: bool  # a lexicon phrase raises a material finding (without this model)
    evidence: bool  # a material finding rests on the evidence score alone
    strongest: float  # the best evidence score of any sentence
    sentences: tuple[frozenset[str], ...] = ()  # the features of each lexicon phrase finding's sentence
    expected: str = ""  # the reviewer's action
    benign: bool = False  # no finding expected (what `regfd evaluate` counts as benign)
    # The gateway's action without, and with, a material finding (the other findings as scanned).
    actions: tuple[str, str] = ("", "")

    @property
    def found(self) -> bool:
        """The lexicons and evidence, without this model, raise a material finding."""
        return self.phrase or self.evidence


@dataclass
class Names:
    """How often each word is written capitalized, and in lower case, where it does not begin a sentence."""

    capitalized: Counter[str] = field(default_factory=Counter)
    lower: Counter[str] = field(default_factory=Counter)

    def count(self, text: str) -> None:
        """Count the words of one text part (original case, before normalization)."""
        for m in _WORD.finditer(text):
            w, start, end = m.group(), m.start(), m.end()
            i = start - 1
            while i >= 0 and text[i] in " \t":
                i -= 1
            if i < 0 or text[i] in _OPENS_SENTENCE or w.isupper():  # a sentence's first word; an acronym
                continue
            if text[i] in "@/_" or (i == start - 1 and text[i] == ".") or text[end:end + 1] in ("@", "_") \
                    or (text[end:end + 1] == "." and text[end + 1:end + 2].isalnum()):
                continue  # part of an address or a file name: "dana.whitfield@", "allient.com"
            if w[0].isupper():
                self.capitalized[w.lower()] += 1
            elif w.islower():
                self.lower[w] += 1

    def names(self) -> frozenset[str]:
        """The words written as names (see NAME_SHARE): the model does not weigh them."""
        return frozenset(w for w, n in self.capitalized.items()
                         if n >= NAME_MIN and n >= NAME_SHARE * (n + self.lower[w])
                         and w.removesuffix("'s") not in NOT_NAMES and not w[0].isdigit())


def company_words() -> frozenset[str]:
    """The words of lexicons/company.toml's names, tickers and people (`Company.words`; none without the file)."""
    path = ROOT / "lexicons" / "company.toml"
    return load_company(path).words() if path.exists() else frozenset()


def named(feature: str, names: frozenset[str]) -> bool:
    """Whether a feature (a word or pair, own or answered) holds one of `names`."""
    return any(w in names for w in feature.removeprefix(ANSWERED).split(" "))


def message_features(raw: bytes, names: Names | None = None) -> set[str]:
    """What the scanner gives the model for one message (regfd.scan.scanner.scan_message);
    the words of its text parts are counted into `names`, when given."""
    out: set[str] = set()
    for item in iter_parts(raw, ScanLimits(), time.monotonic() + 10):
        if not isinstance(item, Problem):
            norm = normalize_forms(item.text)[0]
            out |= part_features(norm.text, [(norm.at(lo), norm.at(hi)) for lo, hi in reply_spans(item.text)])
            if names is not None:
                names.count(item.text)
    return out


def lexicons_without_model() -> Lexicons:
    """The shipped lexicons minus this model: what the model is a second opinion on."""
    with tempfile.TemporaryDirectory() as tmp:
        for f in (ROOT / "lexicons").glob("*.toml"):
            if f.name != MODEL_FILE:
                shutil.copy(f, Path(tmp) / f.name)
        return load_lexicons(Path(tmp))


def examples(parts: list[str], with_found: bool, names: Names | None = None) -> list[Example]:
    directory = load_directory_file(ROOT / "corpus" / "directory.toml")
    lexicons = lexicons_without_model() if with_found else None
    # The policy table regfd runs with ($REGFD_CONFIG, /etc/regfd/regfd.toml, else the built-in one), with
    # the corpus's directory: as `regfd evaluate --directory corpus/directory.toml` decides.
    shipped = Policy.from_config(load_config(None))
    policy = Policy(shipped.table, directory.internal_domains or shipped.internal_domains,
                    directory.authorized_roles, shipped.system_sender, shipped.mode)
    out = []
    for part in parts:
        for manifest in manifests([ROOT / "corpus" / part]):
            for lab in read_manifest(manifest, directory.tz, frozenset(MATERIAL_CATEGORIES)):
                raw = as_received(lab.raw)
                strongest = Strongest()
                found = scan_message(raw, lexicons, ScanLimits(), strongest) if lexicons else []
                material = [f for f in found if f.kind == MATERIAL]
                phrases = [f for f in material if not rests_on_evidence(f.rule)]
                others = [f for f in found if f.kind != MATERIAL]
                envelope = Envelope.from_raw(lab.sender, lab.recipients)
                snap = directory.snapshot(envelope.sender, envelope.recipients)
                at = lab.at or directory.at
                assert at is not None, f"{lab.name}: no instant"
                actions = tuple(decide(envelope, snap, others + extra, at, policy).action
                                for extra in ([], [Finding(MATERIAL, "", "", "", "body")]))
                out.append(Example(manifest.parent.name, message_features(raw, names), "material" in lab.findings,
                                   lab.categories, bool(phrases), len(phrases) < len(material), strongest.score,
                                   tuple(frozenset(features(normalize(sentence_of(f.excerpt, f.text)).text))
                                         for f in phrases),
                                   lab.action, not lab.findings, (actions[0], actions[1])))
    return out


Weights = dict[str, float]


def vocabulary(train: list[Example], min_df: int, names: frozenset[str] = frozenset()) -> set[str]:
    """The features the regression may weigh: seen in at least `min_df` messages, holding none of `names`."""
    return weighable((ex.feats for ex in train), min_df, names)


def weighable(examples: Iterable[Iterable[str]], min_df: int, names: frozenset[str]) -> set[str]:
    """The features seen in at least `min_df` of the examples (each a collection of features) that hold
    none of `names`: the rule of both fitters (this one, and fit_word_model.py's sentences)."""
    df: Counter[str] = Counter()
    for feats in examples:
        df.update(feats)
    return {f for f, n in df.items() if n >= min_df and not named(f, names)}


def fit(train: list[Example], c: float, min_df: int, categories: bool = True, names: frozenset[str] = frozenset(),
        ) -> tuple[float, Weights, dict[str, tuple[float, Weights]]]:
    """(bias, weights, {category: (bias, weights)}); `categories` False leaves the tables out (faster);
    features holding one of `names` are not weighed."""
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression

    keep = vocabulary(train, min_df, names)
    vec = DictVectorizer()
    x = vec.fit_transform([{f: 1 for f in ex.feats if f in keep} for ex in train])
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
    clf.fit(x, [ex.material for ex in train])
    columns = vec.get_feature_names_out()
    weights = {str(f): float(w) for f, w in zip(columns, clf.coef_[0], strict=True) if abs(w) >= MIN_WEIGHT}
    rows = [(ex, cat) for ex in train if categories and ex.material for cat in sorted(ex.categories)]
    cats: dict[str, tuple[float, dict[str, float]]] = {}
    if rows:
        xc = vec.transform([{f: 1 for f in ex.feats if f in keep} for ex, _ in rows])
        mc = LogisticRegression(C=c, max_iter=5000).fit(xc, [cat for _, cat in rows])
        for k, cat in enumerate(mc.classes_):
            coef = mc.coef_[k] if len(mc.classes_) > 2 else (mc.coef_[0] if k == 1 else -mc.coef_[0])
            top = sorted(zip(columns, coef, strict=True), key=lambda t: -abs(t[1]))[:TOP_PER_CATEGORY]
            bias = float(mc.intercept_[k] if len(mc.classes_) > 2 else (mc.intercept_[0] if k == 1 else 0.0))
            cats[str(cat)] = (bias, {str(f): float(w) for f, w in top if abs(w) >= MIN_WEIGHT})
    return float(clf.intercept_[0]), weights, cats


# What a model says of one message: its probability, the same without the prior (its words alone),
# whether some lexicon phrase's own sentence weighs towards a disclosure, and the best words-only
# probability of the message without one such sentence (MessageModel.reading, .spares).
Reading = tuple[float, float, bool, float]


def reading(ex: Example, bias: float, weights: dict[str, float]) -> Reading:
    """What the scanner reads of `ex` with this model (`MessageModel.reading` and `.spares`)."""
    z = sum(weights.get(f, 0.0) for f in ex.feats)
    own = [sum(weights.get(f, 0.0) for f in words) for words in ex.sentences]
    rests = [sum(weights.get(f, 0.0) for f in ex.feats - words - {ANSWERED + w for w in words})
             for words in ex.sentences]
    return sigmoid(bias + z), sigmoid(z), any(w > 0.0 for w in own), max(map(sigmoid, rests), default=0.0)


def out_of_fold(exs: list[Example], c: float, min_df: int, names: frozenset[str] = frozenset()) -> list[Reading]:
    """Each message's reading by a model fitted without its batch (leave one batch out)."""
    probs: list[Reading] = [(0.0, 0.0, False, 0.0)] * len(exs)
    for held in sorted({ex.batch for ex in exs}):
        bias, weights, _ = fit([ex for ex in exs if ex.batch != held], c, min_df, categories=False, names=names)
        for i, ex in enumerate(exs):
            if ex.batch == held:
                probs[i] = reading(ex, bias, weights)
    return probs


class Rates(NamedTuple):
    """What a choice of thresholds does on the left-out batches, in %, as `regfd evaluate` counts it."""

    recall: float  # of material messages, with a material finding
    flagged: float  # of non-material messages, with one
    held: float  # of benign messages (no finding expected), held or rejected where the reviewer would not
    accuracy: float  # of messages, the gateway's action is the reviewer's


def rates(exs: list[Example], probs: list[Reading], th: Thresholds | None) -> Rates:
    """`Rates` of these readings; `th` None: the lexicons and evidence alone."""
    pos = tp = fp = benign = held = right = 0
    for ex, (p, words, leaning, rest) in zip(exs, probs, strict=True):
        flagged = ex.found if th is None else th.flags(p, words, ex.strongest, ex.phrase, ex.evidence, leaning,
                                                       rest)
        action = ex.actions[flagged]
        pos += ex.material
        tp += ex.material and flagged
        fp += not ex.material and flagged
        right += action == ex.expected
        benign += ex.benign
        held += ex.benign and action in STOPPING and ex.expected not in STOPPING
    return Rates(100 * tp / max(1, pos), 100 * fp / max(1, len(exs) - pos), 100 * held / max(1, benign),
                 100 * right / max(1, len(exs)))


def _line(r: Rates) -> str:
    return (f"recall {r.recall:.1f} %, benign flagged {r.flagged:.1f} %, benign held {r.held:.1f} %, "
            f"action accuracy {r.accuracy:.1f} %")


def cross_validate(exs: list[Example], probs: list[Reading], th: Thresholds) -> None:
    """`Rates`, lexicons alone and with the model, on each batch left out of the fit."""
    for held in [*sorted({ex.batch for ex in exs}), ""]:
        part = [(ex, p) for ex, p in zip(exs, probs, strict=True) if ex.batch == held or not held]
        r0, r1 = (rates([e for e, _ in part], [p for _, p in part], t) for t in (None, th))
        print(f"  {held or 'all'}: recall {r0.recall:5.1f} -> {r1.recall:5.1f}   benign flagged {r0.flagged:5.1f} -> "
              f"{r1.flagged:5.1f}   benign held {r0.held:5.1f} -> {r1.held:5.1f}   "
              f"accuracy {r0.accuracy:5.1f} -> {r1.accuracy:5.1f}")


GRID = (
    (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9),  # alone
    (0.3, 0.4, 0.5, 0.6, 0.7),  # near
    (1.0, 1.5, 2.0, 2.5, 3.0),  # near_score
    (0.05, 0.1, 0.15, 0.2, 0.3, 0.4),  # confirm
    (0.0, 0.05, 0.1, 0.2, 0.3, 0.4),  # veto
)


def measure_grid(exs: list[Example], probs: list[Reading]) -> list[tuple[Rates, Thresholds]]:
    """`Rates` for every point of GRID; `near` never above `alone` (it lowers the bar where a
    sentence half agrees, never raises it), `veto` never above `confirm`."""
    out = []
    for alone in GRID[0]:
        for near in (n for n in GRID[1] if n <= alone):
            for near_score in GRID[2]:
                for confirm in GRID[3]:
                    for veto in (v for v in GRID[4] if v <= confirm):
                        th = Thresholds(alone, near, near_score, confirm, veto)
                        out.append((rates(exs, probs, th), th))
    return out


def choose(exs: list[Example], probs: list[Reading], max_held: float,
           grid: list[tuple[Rates, Thresholds]] | None = None, recall_first: bool = False) -> Thresholds | None:
    """The thresholds of GRID with the best out-of-fold action accuracy that hold at most `max_held` % of
    benign mail: the two figures the gateway is judged by, measured on batches the model has not seen.

    Ties go to the higher recall ("when in doubt, presume it is material"), then to the higher
    thresholds (fewer findings the model raises on its own, more it may drop).
    `grid`: `measure_grid(exs, probs)`, when the caller has it. `recall_first`: the best recall
    instead (ties to accuracy), for compliance to see what more recall would cost.
    """
    best: tuple[float, float, float, float, float, float, float] | None = None
    for r, th in measure_grid(exs, probs) if grid is None else grid:
        first, second = (r.recall, r.accuracy) if recall_first else (r.accuracy, r.recall)
        key = (first, second, th.alone, th.near, th.near_score, th.confirm, th.veto)
        if r.held <= max_held and (best is None or key > best):
            best = key
    return None if best is None else Thresholds(*best[2:])


def main() -> None:
    """Fit on the development corpus and write the model file (or, with --cv, only measure)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--c", type=float, default=2.0, help="inverse regularization strength (L2)")
    ap.add_argument("--min-df", type=int, default=3, help="keep features seen in at least this many messages")
    ap.add_argument("--alone", type=float, default=0.8, help="probability from which a message alone is a finding")
    ap.add_argument("--near", type=float, default=0.6, help="--alone where a sentence scored --near-score")
    ap.add_argument("--near-score", type=float, default=2.0, help="evidence score of a sentence near the threshold")
    ap.add_argument("--confirm", type=float, default=0.1, help="probability under which evidence-only findings drop")
    ap.add_argument("--veto", type=float, default=0.0, help="probability under which lexicon phrases' findings drop")
    ap.add_argument("--parts", default="dev", help="corpus parts to fit on, comma separated (never heldout)")
    ap.add_argument("--cv", action="store_true", help="leave one batch out, print what the model adds; write nothing")
    ap.add_argument("--choose", type=float, metavar="PERCENT",
                    help="choose --alone, --near, --near-score, --confirm and --veto: the best "
                         "leave-one-batch-out action accuracy that holds at most PERCENT %% of benign messages")
    ap.add_argument("--weigh-names", dest="names_weighed", action="store_true",
                    help="weigh the corpus's names too (people, firms, places: see NAME_SHARE); for comparison")
    ap.add_argument("--list-names", action="store_true", help="print the words not weighed as names, and stop")
    ap.add_argument("--out", type=Path, default=ROOT / "lexicons" / MODEL_FILE)
    a = ap.parse_args()
    parts = a.parts.split(",")
    if any(p.startswith("heldout") for p in parts):
        ap.error("the held-out part is never used for fitting")
    th = Thresholds(a.alone, a.near, a.near_score, a.confirm, a.veto)
    counted = Names()
    exs = examples(parts, with_found=(a.cv or a.choose is not None) and not a.list_names, names=counted)
    # The company's own names (lexicons/company.toml: its name, ticker, officers, site) are names too, in
    # whatever case the corpus writes them: "ALNT" is an acronym to `Names`, and the company's ticker.
    names = frozenset() if a.names_weighed else counted.names() | company_words()
    if a.list_names:
        print(" ".join(sorted(names)))
        return
    if a.cv or a.choose is not None:
        probs = out_of_fold(exs, a.c, a.min_df, names)
        if a.choose is not None:
            print(f"given: {th}: {_line(rates(exs, probs, th))}")
            grid = measure_grid(exs, probs)
            for cap in (2.0, 2.5, 3.0, 3.5, 4.0, 4.5):
                for recall_first in (False, True):
                    alt = choose(exs, probs, cap, grid, recall_first)
                    if alt is not None:
                        print(f"at most {cap} % held, best {'recall' if recall_first else 'accuracy'}: {alt}: "
                              f"{_line(rates(exs, probs, alt))}")
            chosen = choose(exs, probs, a.choose, grid)
            if chosen is None:
                raise SystemExit(f"no thresholds of the grid hold at most {a.choose} % of benign messages")
            th = chosen
            print(f"chosen (benign held <= {a.choose} %): {th}")
        cross_validate(exs, probs, th)
        if a.cv:
            return
    bias, weights, cats = fit(exs, a.c, a.min_df, names=names)
    positives = sum(ex.material for ex in exs)
    lines = [
        "# Word weights that read a whole message: a second opinion beside the lexicons. Generated by",
        "# tools/fit_message_model.py from the development corpus (corpus/dev); do not edit the weights by",
        "# hand: change the corpus or the script's options and fit again, then measure with `regfd evaluate`.",
        "# `alone`: a message with no material finding whose probability reaches it is a finding (the",
        "# heaviest sentence is the excerpt); `near` replaces `alone` when some sentence's evidence score",
        "# reached `near_score` (just under the evidence threshold). `confirm`: under it, material findings",
        "# that rest on the evidence score alone are dropped; `veto`: under it, lexicon phrases' too.",
        "# alone = near = 1.0 and confirm = veto = 0.0: no effect.",
        'kind = "message-model"',
        f'description = "logistic regression (L2), C={a.c}, min_df={a.min_df}, {len(exs)} messages '
        f'({positives} disclosing, {len(exs) - positives} not), {len(names)} names not weighed"',
        f"bias = {bias:.4f}",
        f"alone = {th.alone}",
        f"near = {th.near}",
        f"near_score = {th.near_score}",
        f"confirm = {th.confirm}",
        f"veto = {th.veto}",
        "",
        "[weights]",
    ]
    lines += [f'"{f}" = {w:.4f}' for f, w in sorted(weights.items(), key=lambda t: -t[1])]
    for cat, (cb, cw) in sorted(cats.items()):
        lines += ["", f"[categories.{cat}]", f"bias = {cb:.4f}", "", f"[categories.{cat}.weights]"]
        lines += [f'"{f}" = {w:.4f}' for f, w in sorted(cw.items(), key=lambda t: -t[1])]
    a.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{a.out}: {len(weights)} weights from {len(exs)} messages ({positives} material), {len(cats)} categories")


if __name__ == "__main__":
    main()
