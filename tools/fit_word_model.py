"""Fit lexicons/model.toml: word weights for sentences the evidence score leaves just under its threshold.

Offline and reproducible (no network): reads the development part of the
corpus only (never the held-out part), collects every sentence that names a
material topic with its signal groups, labels it by the reviewer's labels
of its message (a sentence of a message labelled material in that sentence's
category is positive; a sentence of a benign message is negative; others are
left out), and fits a logistic regression (scikit-learn) over the sentence's
words, word pairs and signal groups. Words the corpus writes as names, and
the company's own (lexicons/company.toml), are not weighed: the same rule
as the message model's (tools/fit_message_model.py). The weights are
written as a TOML file a reviewer can read; regfd itself never needs
scikit-learn.

    .venv/bin/pip install scikit-learn
    .venv/bin/python tools/fit_word_model.py [--c 0.5] [--out lexicons/model.toml]
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from regfd.config import ScanLimits  # noqa: E402
from regfd.core.finding import MATERIAL_CATEGORIES  # noqa: E402
from regfd.evaluation.corpus import manifests, read_manifest  # noqa: E402
from regfd.scan.evidence import _TOKEN  # noqa: E402
from regfd.scan.lexicon import load_lexicons  # noqa: E402
from regfd.scan.message_model import STOPWORDS  # noqa: E402
from regfd.scan.mime import Problem, iter_parts  # noqa: E402
from regfd.scan.normalize import normalize_forms  # noqa: E402
from regfd.store.directory_file import load_directory_file  # noqa: E402
from tools.fit_message_model import Names, company_words, weighable  # noqa: E402

CANDIDATE_FLOOR = 0.5  # sentences scoring at least this are training candidates
STRUCTURAL = {"topic", "phrase", "quoted"}


def features(sentence: str, groups: list[str]) -> dict[str, int]:
    """What the runtime model sees (regfd.scan.evidence.WordModel.probability)."""
    words = _TOKEN.findall(sentence)
    out = {w: 1 for w in words if w not in STOPWORDS}
    out.update({f"{a} {b}": 1 for a, b in zip(words, words[1:], strict=False)
                if not (a in STOPWORDS and b in STOPWORDS)})
    out.update({f"g:{g}": 1 for g in groups})
    return out


def candidates(lexicon_dir: Path, parts: list[str], names: Names) -> list[tuple[dict[str, int], int]]:
    """(features, label) for every topic sentence of the corpus parts, scored with a low threshold;
    the words of every text part are counted into `names`."""
    with tempfile.TemporaryDirectory() as tmp:
        for f in lexicon_dir.glob("*.toml"):
            if f.name != "model.toml":
                shutil.copy(f, Path(tmp) / f.name)
        ev = Path(tmp) / "evidence.toml"
        ev.write_text(re.sub(r"(?m)^threshold = [0-9.]+", f"threshold = {CANDIDATE_FLOOR}", ev.read_text()))
        lexicons = load_lexicons(Path(tmp))
    assert lexicons.signals is not None
    directory = load_directory_file(ROOT / "corpus" / "directory.toml")
    rows: list[tuple[dict[str, int], int]] = []
    for part in parts:
        for manifest in manifests([ROOT / "corpus" / part]):
            for lab in read_manifest(manifest, directory.tz, frozenset(MATERIAL_CATEGORIES)):
                if lab.findings and "material" not in lab.findings:
                    continue
                seen: set[str] = set()
                for item in iter_parts(lab.raw, ScanLimits(), time.monotonic() + 10):
                    if isinstance(item, Problem):
                        continue
                    names.count(item.text)
                    text = normalize_forms(item.text)[0].text
                    found, _ = lexicons.signals.find(text)
                    for e in found:
                        sentence = text[e.lo:e.hi]
                        if sentence in seen:
                            continue
                        if lab.findings and e.category not in lab.categories:
                            continue
                        seen.add(sentence)
                        groups = [s.split(" ", 1)[0] for s in e.signals]
                        groups = [g for g in groups if g not in STRUCTURAL]
                        rows.append((features(sentence, groups), 1 if lab.findings else 0))
    return rows


def main() -> None:
    """Fit on the development corpus and write the model file."""
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--c", type=float, default=1.0, help="inverse regularization strength (L1)")
    ap.add_argument("--min-df", type=int, default=3, help="keep features seen in at least this many sentences")
    ap.add_argument("--threshold", type=float, default=0.7, help="runtime probability threshold")
    ap.add_argument("--gray-zone", type=float, default=0.5, help="how far under the evidence threshold it decides")
    ap.add_argument("--out", type=Path, default=ROOT / "lexicons" / "model.toml")
    ap.add_argument("--parts", default="dev", help="corpus parts to fit on, comma separated (never heldout)")
    a = ap.parse_args()
    parts = a.parts.split(",")
    if any(p.startswith("heldout") for p in parts):
        ap.error("the held-out part is never used for fitting")
    counted = Names()
    rows = candidates(ROOT / "lexicons", parts, counted)
    names = counted.names() | company_words()
    keep = weighable((feats for feats, _ in rows), a.min_df, names)
    vec = DictVectorizer()
    x = vec.fit_transform([{f: v for f, v in feats.items() if f in keep} for feats, _ in rows]).tocsr()
    x.indices, x.indptr = x.indices.astype("int32"), x.indptr.astype("int32")  # liblinear takes 32-bit indices only
    y = [label for _, label in rows]
    # liblinear on the sparse matrix: seconds, where saga on a dense copy took over half an hour
    clf = LogisticRegression(C=a.c, class_weight="balanced", max_iter=20000, l1_ratio=1.0, solver="liblinear")
    clf.fit(x, y)
    weights = sorted(((float(w), f) for f, w in zip(vec.get_feature_names_out(), clf.coef_[0], strict=True)
                      if abs(w) >= 0.05), reverse=True)
    positives = sum(y)
    lines = [
        "# Word weights for sentences just under the evidence threshold. Generated by",
        "# tools/fit_word_model.py from the development corpus (corpus/dev); do not edit by",
        "# hand: change the corpus or the script's options and fit again, then measure with",
        "# `regfd evaluate`. A sentence whose evidence score is within `gray_zone` of the",
        "# threshold is a finding when bias + the weights of its words, word pairs and",
        "# signal groups (g:...) give a probability of at least `threshold`.",
        'kind = "model"',
        f'description = "logistic regression (L1), C={a.c}, min_df={a.min_df}, {len(rows)} sentences '
        f'({positives} disclosing, {len(rows) - positives} not), {len(names)} names not weighed"',
        f"bias = {float(clf.intercept_[0]):.4f}",
        f"threshold = {a.threshold}",
        f"gray_zone = {a.gray_zone}",
        "",
        "[weights]",
    ]
    lines += [f'"{f}" = {w:.4f}' for w, f in weights]
    a.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{a.out}: {len(weights)} weights from {len(rows)} sentences ({positives} positive)")


if __name__ == "__main__":
    main()
