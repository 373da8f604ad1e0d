"""`regfd evaluate`: the gateway's detection and decisions measured on a labelled corpus.

Compliance runs it on its own archive before deploying a lexicon or policy
change; CI runs it on the development part of the repository's corpus and
fails under agreed floors. Every message goes through the milter's decision
path (`Decider`), with CRLF line ends as the milter receives them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TextIO

from regfd.cli import Context
from regfd.core.decision import Decider
from regfd.core.envelope import Envelope
from regfd.core.finding import MATERIAL_CATEGORIES, Finding
from regfd.core.policy import ACTIONS, Policy
from regfd.errors import InvalidInput
from regfd.evaluation.corpus import Labelled, manifests, read_manifest
from regfd.evaluation.scoring import Outcome, Report, score
from regfd.store.directory_file import load_directory_file

EXIT_BELOW_FLOOR = 4


def _pct(x: float | None) -> str:
    return "   n/a" if x is None else f"{100 * x:5.1f}%"


def _write_report(r: Report, out: TextIO, misses: bool) -> None:
    out.write(f"== {r.name}: {r.messages} messages\n")
    out.write(f"material recall {_pct(r.material_recall)}   action accuracy {_pct(r.action_accuracy)}   "
              f"benign held {_pct(r.benign_held_rate)} ({r.benign_held}/{r.benign})   "
              f"benign with a finding {_pct(r.benign_flagged_rate)}\n")
    out.write(f"  {'finding':<28} {'tp':>4} {'fp':>4} {'fn':>4} {'precision':>10} {'recall':>8}\n")
    for label, tally in [*r.kinds.items(), *[(f"  {c}", t) for c, t in r.categories.items()]]:
        if tally.tp or tally.fp or tally.fn:
            out.write(f"  {label:<28} {tally.tp:4d} {tally.fp:4d} {tally.fn:4d} {_pct(tally.precision):>10} "
                      f"{_pct(tally.recall):>8}\n")
    out.write("  expected \\ got  " + " ".join(f"{a:>7}" for a in ACTIONS) + "\n")
    for exp in ACTIONS:
        out.write(f"  {exp:<15} " + " ".join(f"{r.confusion.get((exp, got), 0):7d}" for got in ACTIONS) + "\n")
    if not misses:
        return
    for m in r.misses:
        what = []
        if m["missed_findings"]:
            what.append("missed " + ", ".join(m["missed_findings"]))
        if m["extra_findings"]:
            what.append("extra " + ", ".join(m["extra_findings"]))
        out.write(f"- {m['message']}: expected {m['expected_action']}, got {m['action']}"
                  f"{' (' + '; '.join(what) + ')' if what else ''} — {m['note']}\n")
        if m["expected_categories"]:
            out.write(f"    expected categories: {' '.join(m['expected_categories'])}\n")
        for e in m["evidence"][:6]:
            out.write(f"    {e['kind']}/{e['category']} in {e['location']}: {e['excerpt']!r}\n")


def evaluate_cmd(ctx: Context, a: argparse.Namespace) -> int:
    """Read every manifest, decide every message, print the reports; exit 4 under a floor."""
    config = ctx.config
    directory = load_directory_file(Path(a.directory)) if a.directory else None
    services = ctx.services
    policy = services.policy
    if directory is not None:
        policy = Policy(policy.table, directory.internal_domains or policy.internal_domains,
                        directory.authorized_roles, policy.system_sender, policy.mode)
    tz = directory.tz if directory is not None else config.tz

    parts: dict[str, list[Labelled]] = {}
    for manifest in manifests([Path(p) for p in a.corpus]):
        for lab in read_manifest(manifest, tz, frozenset(MATERIAL_CATEGORIES)):
            parts.setdefault(lab.part, []).append(lab)
    outcomes: dict[str, list[Outcome]] = {}
    for part, labelled in parts.items():
        for lab in labelled:
            content = tuple(services.scan(lab.raw))

            def scan(raw: bytes, found: tuple[Finding, ...] = content) -> tuple[Finding, ...]:
                return found  # the same bytes were scanned once above

            decider = Decider(policy, scan, config.limits.max_message_bytes)
            at = lab.at or (directory.at if directory is not None else None)
            if at is None:
                raise InvalidInput(f"{lab.name}: no instant (column 'at', or 'at' in the directory file)")
            envelope = Envelope.from_raw(lab.sender, lab.recipients)
            reader: Any = directory if directory is not None else ctx.store
            verdict = decider.decide(envelope, reader.snapshot(envelope.sender, envelope.recipients), lab.raw, at)
            outcomes.setdefault(part, []).append(Outcome(lab, verdict, content))
    reports = [score(part, outs, MATERIAL_CATEGORIES) for part, outs in outcomes.items()]
    if len(reports) > 1:
        reports.append(score("all", [o for outs in outcomes.values() for o in outs], MATERIAL_CATEGORIES))
    if a.json:
        ctx.out.write(json.dumps({"parts": [r.to_json(not a.summary) for r in reports]}, ensure_ascii=False,
                                 indent=2) + "\n")
    else:
        for r in reports:
            _write_report(r, ctx.out, misses=not a.summary)
    total = reports[-1]
    failures = []
    if a.min_recall is not None and (total.material_recall or 0.0) < a.min_recall:
        failures.append(f"material recall {_pct(total.material_recall).strip()} < {a.min_recall:.0%}")
    if a.max_benign_held is not None and (total.benign_held_rate or 0.0) > a.max_benign_held:
        failures.append(f"benign held {_pct(total.benign_held_rate).strip()} > {a.max_benign_held:.0%}")
    if a.min_accuracy is not None and (total.action_accuracy or 0.0) < a.min_accuracy:
        failures.append(f"action accuracy {_pct(total.action_accuracy).strip()} < {a.min_accuracy:.0%}")
    if failures:
        import sys

        print("regfd: below the floor: " + "; ".join(failures), file=sys.stderr)
        return EXIT_BELOW_FLOOR
    return 0


def _rate(text: str) -> float:
    value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate between 0 and 1 (or 0% and 100%)")
    return value


def register(sub: Any) -> None:
    """Add `regfd evaluate` to the command line."""
    p = sub.add_parser("evaluate", help="measure detection and decisions on a labelled corpus",
                       description="Run labelled messages (folders holding manifest.csv, or manifest files) "
                                   "through the gateway's decision path and print precision and recall per "
                                   "finding and category, the action confusion table, the benign-held rate "
                                   "and every miss with its evidence.")
    p.add_argument("corpus", nargs="+", metavar="CORPUS",
                   help="a folder with manifest.csv files below it, or a manifest")
    p.add_argument("--directory", metavar="FILE.toml",
                   help="the directory the corpus is labelled against (default: the live registry)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--summary", action="store_true", help="figures only, no misses (for a held-out part)")
    p.add_argument("--min-recall", type=_rate, metavar="RATE", help="exit 4 when material recall is lower")
    p.add_argument("--max-benign-held", type=_rate, metavar="RATE", help="exit 4 when more benign mail is held")
    p.add_argument("--min-accuracy", type=_rate, metavar="RATE", help="exit 4 when action accuracy is lower")
    p.set_defaults(func=evaluate_cmd)
