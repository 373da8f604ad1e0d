"""Scores of the gateway on a labelled corpus: pure arithmetic over outcomes.

What counts (message level, as a reviewer judges a message):
- a finding kind is found when the message has at least one finding of that
  kind; a material category when it has a material finding of that category;
- *material recall*: labelled-material messages with any material finding;
- *benign held*: messages with no expected finding whose expected action is
  accept or tag but which the gateway held or rejected (a false alarm that
  stops mail), over all messages with no expected finding;
- *action accuracy*: the gateway's action equals the expected action.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from regfd.core.finding import MATERIAL, Finding
from regfd.core.policy import ACTIONS, HOLD, REJECT
from regfd.core.verdict import Verdict
from regfd.evaluation.corpus import Labelled

STOPPING = (HOLD, REJECT)


@dataclass(frozen=True)
class Outcome:
    """What the gateway did with one labelled message.

    `content` are the scanner's findings whatever the envelope (detection is
    measured on every message); `verdict` is the gateway's decision, which
    scans only when the content can matter.
    """

    labelled: Labelled
    verdict: Verdict
    content: tuple[Finding, ...]

    @property
    def kinds(self) -> frozenset[str]:
        """Finding kinds the scanner raised."""
        return frozenset(f.kind for f in self.content)

    @property
    def categories(self) -> frozenset[str]:
        """Material categories the scanner raised."""
        return frozenset(f.category for f in self.content if f.kind == MATERIAL)


@dataclass
class Tally:
    """True positives, false positives and false negatives of one label."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, expected: bool, found: bool) -> None:
        """Count one message."""
        if expected and found:
            self.tp += 1
        elif found:
            self.fp += 1
        elif expected:
            self.fn += 1

    @property
    def precision(self) -> float | None:
        """None when nothing was found."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        """None when nothing was expected."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    def to_json(self) -> dict[str, Any]:
        """Counts and rates, rates rounded to 4 places."""
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": _r(self.precision),
                "recall": _r(self.recall)}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


@dataclass
class Report:
    """Every figure `regfd evaluate` prints, for one corpus part or the whole."""

    name: str
    messages: int = 0
    kinds: dict[str, Tally] = field(default_factory=dict)
    categories: dict[str, Tally] = field(default_factory=dict)
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)
    benign: int = 0
    benign_flagged: int = 0
    benign_held: int = 0
    misses: list[dict[str, Any]] = field(default_factory=list)

    @property
    def material_recall(self) -> float | None:
        """Share of labelled-material messages with a material finding."""
        t = self.kinds.get(MATERIAL)
        return t.recall if t else None

    @property
    def action_accuracy(self) -> float | None:
        """Share of messages whose action is the expected one."""
        if not self.messages:
            return None
        return sum(n for (exp, got), n in self.confusion.items() if exp == got) / self.messages

    @property
    def benign_held_rate(self) -> float | None:
        """Share of benign messages held or rejected although a reviewer would let them pass."""
        return self.benign_held / self.benign if self.benign else None

    @property
    def benign_flagged_rate(self) -> float | None:
        """Share of benign messages with any content finding (tagged, held or not)."""
        return self.benign_flagged / self.benign if self.benign else None

    def to_json(self, with_misses: bool = True) -> dict[str, Any]:
        """The machine-readable report (`--json`)."""
        out: dict[str, Any] = {
            "part": self.name,
            "messages": self.messages,
            "material_recall": _r(self.material_recall),
            "action_accuracy": _r(self.action_accuracy),
            "benign": self.benign,
            "benign_held": self.benign_held,
            "benign_held_rate": _r(self.benign_held_rate),
            "benign_flagged": self.benign_flagged,
            "benign_flagged_rate": _r(self.benign_flagged_rate),
            "findings": {k: t.to_json() for k, t in sorted(self.kinds.items())},
            "categories": {k: t.to_json() for k, t in sorted(self.categories.items())},
            "confusion": {exp: {got: self.confusion.get((exp, got), 0) for got in ACTIONS} for exp in ACTIONS},
        }
        if with_misses:
            out["misses"] = self.misses
        return out


def _evidence(findings: Iterable[Finding]) -> list[dict[str, str]]:
    return [{"kind": f.kind, "category": f.category, "text": f.text, "excerpt": f.excerpt, "location": f.location,
             "rule": f.rule} for f in findings]


def score(name: str, outcomes: Sequence[Outcome], categories: Iterable[str]) -> Report:
    """Tally every outcome into one report."""
    kinds_seen = sorted({k for o in outcomes for k in o.labelled.findings | o.kinds})
    report = Report(name, kinds={k: Tally() for k in kinds_seen}, categories={c: Tally() for c in categories})
    for o in outcomes:
        lab = o.labelled
        report.messages += 1
        for kind, tally in report.kinds.items():
            tally.add(kind in lab.findings, kind in o.kinds)
        for cat, tally in report.categories.items():
            tally.add(cat in lab.categories, cat in o.categories)
        got = o.verdict.action
        report.confusion[(lab.action, got)] += 1
        if not lab.findings:
            report.benign += 1
            report.benign_flagged += bool(o.kinds)
            report.benign_held += got in STOPPING and lab.action not in STOPPING
        missing_kinds = sorted(lab.findings - o.kinds)
        extra_kinds = sorted(o.kinds - lab.findings)
        missing_cats = sorted(lab.categories - o.categories) if MATERIAL in o.kinds else []
        if got != lab.action or missing_kinds or extra_kinds:
            report.misses.append({
                "message": lab.name,
                "note": lab.note,
                "expected_action": lab.action,
                "action": got,
                "expected_findings": sorted(lab.findings),
                "missed_findings": missing_kinds,
                "extra_findings": extra_kinds,
                "expected_categories": sorted(lab.categories),
                "missed_categories": missing_cats,
                "evidence": _evidence(o.content),
                "rule": o.verdict.rule.number if o.verdict.rule else None,
            })
    return report
