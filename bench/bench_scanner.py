"""Scanner throughput on one core, with all lexicons loaded.

Run: .venv/bin/python bench/bench_scanner.py [--before REV]
Prints MB/s of raw message for: a 10 KB business message without triggers
(multipart, its text base64-encoded as Python's email package writes UTF-8,
13.9 KB raw), the same with triggers, the same text as one text/plain 7bit
part (10.2 KB raw), with accented text, with abbreviations ("a U.S.
client", which give normalization several forms to match), a 1 MB message
(plain and with abbreviations), and a message with a ~5 MB PDF; then the
multi-pattern matchers compared on the same 1 MB of text.

`--before REV` (a git revision, e.g. a tag or `HEAD~5`) also loads the
lexicons/ directory as it was at REV and measures every 10 KB and 1 MB case
with both, alternating, in the same run: a lexicon change's cost on this
machine today, not against a figure from another day.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import random
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from regfd.config import ScanLimits  # noqa: E402
from regfd.scan import normalize as textnorm  # noqa: E402
from regfd.scan.evidence import Compact  # noqa: E402
from regfd.scan.lexicon import Lexicons, load_lexicons  # noqa: E402
from regfd.scan.message_model import ANSWERED  # noqa: E402
from regfd.scan.normalize import normalize  # noqa: E402
from regfd.scan.scanner import scan_message  # noqa: E402
from regfd.scan.wordindex import native_available, word_index  # noqa: E402
from tests.scanner_fixtures import make_pdf  # noqa: E402

_SUBJECTS = ["the team", "our vendor", "the regional office", "finance", "the project group", "marketing", "our partner", "the customer success team", "legal", "the facilities crew"]
_VERBS = ["reviewed", "updated", "scheduled", "discussed", "finalized", "circulated", "approved", "summarized", "drafted", "moved"]
_OBJECTS = ["the onboarding checklist", "the travel policy", "next week's offsite agenda", "the vendor invoices", "the hiring plan for the support desk", "the training calendar", "the slides for Thursday", "the office move timeline", "the meeting notes", "the updated org chart", "the parking assignments", "the benefits enrollment reminder"]
_TAILS = ["before Friday", "after lunch", "as discussed on the call", "so everyone has the latest version", "and shared it in the usual folder", "with a few small corrections", "ahead of the holiday break", "in time for the review", "per your request", "without any open questions"]
_OPENERS = ["Hi all,", "Hello Sarah,", "Good morning team,", "Hi Mark,", "Dear colleagues,"]
_CLOSERS = ["Thanks,\nDana", "Best regards,\nPriya", "Cheers,\nTom", "Kind regards,\nAlex"]
TRIGGERS = [
    "Between us, we're going to miss the quarter.",
    "The CFO is leaving at the end of the month.",
    "Adjusted EBITDA came in at $45 million.",
    "The deal should close before we report.",
]


def english(size: int, rng: random.Random) -> str:
    """Plausible office English of about `size` characters, wrapped at 72 columns."""
    paragraphs = [rng.choice(_OPENERS)]
    length = 0
    while length < size:
        sentences = []
        for _ in range(rng.randint(2, 5)):
            s = f"{rng.choice(_SUBJECTS).capitalize()} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}."
            sentences.append(s)
        para = " ".join(sentences)
        paragraphs.append("\n".join(textwrap.wrap(para, 72)))
        length += len(para) + 2
    paragraphs.append(rng.choice(_CLOSERS))
    return "\n\n".join(paragraphs)


def accented(text: str, rng: random.Random) -> str:
    """The same text with a few euro amounts and accented names, as in real mail."""
    words = text.split(" ")
    extras = ["€4.2 million", "José Müller", "Zoë Ångström", "the Société Générale desk", "Fran\u00e7ois", "€ 350k", "Björn Ødegaard"]
    for i, extra in enumerate(extras):
        words.insert((i + 1) * len(words) // (len(extras) + 1), extra)
    return " ".join(words)


def abbreviated(text: str, rng: random.Random, spelled: bool = False) -> str:
    """The same text with the abbreviations and single-letter words of real
    mail ("a U.S. client", "U.S. G.A.A.P."), which make normalization build
    more than one form of the text (3 here); `spelled` adds a spelled-out
    run of four letters next to "I", the most forms there are (5)."""
    words = text.split(" ")
    extras = ["a U.S. client", "the U.S.A. team", "e.g. the C.F.O. office", "i.e. by 9 a.m. I called", "U.S. G.A.A.P. figures", "I.B.M. and a U.K. vendor"]
    if spelled:
        extras.append("the A G M I attended")
    for i, extra in enumerate(extras):
        words.insert((i + 1) * len(words) // (len(extras) + 1), extra)
    return " ".join(words)


def message(body: str, attachments: Sequence[tuple[str, bytes]] = ()) -> bytes:
    msg = MIMEMultipart()
    msg["From"] = "employee@corp.example"
    msg["To"] = "analyst@bank.example"
    msg["Subject"] = "Weekly update"
    msg.attach(MIMEText(body, "plain", "utf-8"))
    for name, data in attachments:
        part = MIMEApplication(data, "pdf")
        part.add_header("Content-Disposition", "attachment", filename=name)
        msg.attach(part)
    return msg.as_bytes()


def plain_message(body: str) -> bytes:
    """The same text as a single text/plain part in 7bit, as most mail programs send plain ASCII
    text: nothing to decode, and fewer raw bytes for the same text than `message` (base64)."""
    msg = MIMEText(body, "plain", "us-ascii")
    msg["From"] = "employee@corp.example"
    msg["To"] = "analyst@bank.example"
    msg["Subject"] = "Weekly update"
    return msg.as_bytes()


def measure(label: str, raw: bytes, lexicons: Lexicons, limits: ScanLimits, min_seconds: float = 1.0) -> None:
    findings = scan_message(raw, lexicons, limits)
    runs, start = 0, time.perf_counter()
    while True:
        scan_message(raw, lexicons, limits)
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            break
    per = elapsed / runs
    print(f"{label:<34} {len(raw) / 1e6:8.3f} MB  {per * 1000:9.2f} ms  {len(raw) / per / 1e6:8.1f} MB/s  findings={len(findings)}")


def compare_matchers(text: str, lexicons: Lexicons) -> None:
    """The multi-pattern matchers (Hyperscan, pyahocorasick, one `regex`
    alternation) and normalization, on this lexicon and this text."""
    import regex

    norm = normalize(text).text
    data = norm.encode()
    print(f"\nmatcher comparison on {len(data) / 1e6:.1f} MB of normalized text, {len(lexicons.entries)} patterns:")

    def rate(fn: Callable[[], object], repeat: int = 3) -> float:
        best = min(_timed(fn) for _ in range(repeat))
        return len(data) / best / 1e6

    print(f"  hyperscan, all reports                 {rate(lambda: lexicons.matcher.matches(data)):9.1f} MB/s")
    print(f"  hyperscan, SINGLEMATCH presence        {rate(lambda: lexicons.presence.ids(data)):9.1f} MB/s")
    prefilter = lexicons.prefilter
    if prefilter is not None:  # whether any phrase can hit: the exact database runs only then
        compact = Compact(norm).data
        print(f"  hyperscan, compact prefilter (any hit) {rate(lambda: prefilter.any(compact)):9.1f} MB/s")
    print(f"  normalize() (fold + joins, offset map) {rate(lambda: normalize(text)):9.1f} MB/s")
    model = lexicons.message_model
    if model is not None:  # the message model's word pass (~30 000 words and pairs), and its reference
        words = sorted({f.removeprefix(ANSWERED) for f in model.vocabulary})
        for label, native in (("C (the scanner's)", True), ("Hyperscan (the reference)", False)):
            index = word_index(words, native=native)
            print(f"  word pass, {label:<28} {rate(functools.partial(index.ids, norm)):9.1f} MB/s"
                  + ("" if native_available() or not native else " (C part not built: this is the reference)"))
    if hasattr(textnorm, "normalize_forms"):
        abbr = abbreviated(text, random.Random(1))
        print(f"  normalize_forms(), with abbreviations  {rate(lambda: textnorm.normalize_forms(abbr)):9.1f} MB/s")
    try:
        import ahocorasick

        automaton = ahocorasick.Automaton()
        literals = {e.pattern.lower() for e in lexicons.entries if regex.fullmatch(r"[a-z0-9 '\-]+", e.pattern.lower())}
        for p in literals:
            automaton.add_word(p, p)
        automaton.make_automaton()
        print(f"  pyahocorasick, {len(literals):3d} literal phrases only  {rate(lambda: sum(1 for _ in automaton.iter(norm))):9.1f} MB/s (no word boundaries)")
    except ImportError:
        print("  pyahocorasick not installed (pip install pyahocorasick to compare)")
    alternation = regex.compile("|".join(f"(?:{e.expression})" for e in lexicons.entries), regex.ASCII)
    sample = norm[:200_000]
    start = time.perf_counter()
    sum(1 for _ in alternation.finditer(sample))
    print(f"  regex, one alternation of all patterns {len(sample) / (time.perf_counter() - start) / 1e6:9.1f} MB/s")


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def lexicons_at(rev: str, into: Path) -> Path:
    """The lexicons/ directory as committed at `rev`, extracted under `into`."""
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "lexicons"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(into, filter="data")
    return into / "lexicons"


def compare(label: str, raw: bytes, before: Lexicons, after: Lexicons, limits: ScanLimits, rounds: int = 3) -> None:
    """Median ms per message with each lexicon set, measured in alternation."""
    times: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(rounds):
        for name, lx in (("before", before), ("after", after)):
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < 0.5:
                scan_message(raw, lx, limits)
                n += 1
            times[name].append((time.perf_counter() - t0) / n)
    b, a = sorted(times["before"])[rounds // 2], sorted(times["after"])[rounds // 2]
    mb = len(raw) / 1e6
    print(f"{label:<34} {b * 1000:8.2f} ms {mb / b:7.1f} MB/s  | {a * 1000:8.2f} ms {mb / a:7.1f} MB/s  "
          f"findings {len(scan_message(raw, before, limits))} -> {len(scan_message(raw, after, limits))}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", metavar="REV", help="also measure the lexicons of this git revision, in the same run")
    args = ap.parse_args()
    rng = random.Random(42)
    start = time.perf_counter()
    lexicons = load_lexicons(ROOT / "lexicons")
    print(f"lexicons loaded and compiled: {len(lexicons.entries)} patterns in {(time.perf_counter() - start) * 1000:.0f} ms")
    limits = ScanLimits()
    quiet = english(10_000, rng)
    words = quiet.split(" ")
    for i, trigger in enumerate(TRIGGERS):
        words.insert((i + 1) * len(words) // (len(TRIGGERS) + 1), trigger)
    loud = " ".join(words)
    big = english(1_000_000, rng)
    pdf_pages = [[line for line in english(9_000, rng).splitlines() if line] for _ in range(60)]
    pdf = make_pdf(pdf_pages * 10, compress=False)
    if args.before:
        with tempfile.TemporaryDirectory() as tmp:
            before = load_lexicons(lexicons_at(args.before, Path(tmp)))
        print(f"{'case':<34} {'before (' + args.before + ')':>27}  | {'after (working tree)':>27}")
        compare("10 KB text/plain 7bit, no trigger", plain_message(quiet), before, lexicons, limits)
        for label, body in (("10 KB, no trigger", quiet), ("10 KB, with triggers", loud),
                            ("10 KB non-ASCII, no trigger", accented(quiet, rng)),
                            ("10 KB abbreviations, no trigger", abbreviated(quiet, rng)),
                            ("1 MB message", big)):
            compare(label, message(body), before, lexicons, limits)
        return
    print(f"{'case':<34} {'size':>11}  {'per message':>12}  {'throughput':>10}")
    measure("10 KB, no trigger", message(quiet), lexicons, limits)
    measure("10 KB, with triggers", message(loud), lexicons, limits)
    measure("10 KB text/plain 7bit, no trigger", plain_message(quiet), lexicons, limits)
    measure("10 KB non-ASCII, no trigger", message(accented(quiet, rng)), lexicons, limits)
    measure("10 KB non-ASCII, with triggers", message(accented(loud, rng)), lexicons, limits)
    measure("10 KB abbreviations, no trigger", message(abbreviated(quiet, rng)), lexicons, limits)
    measure("10 KB abbreviations, with triggers", message(abbreviated(loud, rng)), lexicons, limits)
    measure("10 KB spelled-out letters, no trig.", message(abbreviated(quiet, rng, spelled=True)), lexicons, limits)
    measure("1 MB message", message(big), lexicons, limits)
    measure("1 MB message with abbreviations", message(abbreviated(big, rng)), lexicons, limits)
    measure("1 MB with spelled-out letters", message(abbreviated(big, rng, spelled=True)), lexicons, limits)
    measure(f"{len(pdf) / 1e6:.1f} MB PDF attachment", message("see attached", [("report.pdf", pdf)]), lexicons, dataclasses.replace(limits, time_budget=120.0), min_seconds=0.1)
    measure("same PDF, default 5 s budget", message("see attached", [("report.pdf", pdf)]), lexicons, limits, min_seconds=0.1)
    compare_matchers(big, lexicons)


if __name__ == "__main__":
    main()
