"""`regfd evaluate`: the corpus through the milter's decision path, scores, floors and bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from regfd.core.decision import Decider
from regfd.core.envelope import Envelope
from regfd.core.finding import MATERIAL_CATEGORIES, Finding
from regfd.core.policy import Policy, load_policy_table
from regfd.evaluation.corpus import Labelled
from regfd.evaluation.scoring import Outcome, Tally, score
from regfd.store.directory_file import load_directory_file
from tests.conftest import REPO, Regfd

CORPUS = REPO / "corpus"
DIRECTORY = CORPUS / "directory.toml"

# Agreed floors for the development part (what CI enforces). Measured when set:
# recall 0.940, benign held 0.038, action accuracy 0.967 (520 messages); with
# dev/h and dev/i (840 messages): 0.933, 0.034, 0.971; with dev/j and dev/k,
# the two batches written against keyword filters (1 160 messages): 0.889,
# 0.038, 0.941; with dev/l, dev/m and the message model (1 480 messages, the
# model fitted on them: in-sample): 0.992, 0.026, 0.982; with dev/p (200
# ordinary benign messages) and the model's cascade (1 680): 0.972, 0.023,
# 0.975; with dev/r and dev/s, the model refitted on all 2 000 (in-sample):
# 0.996, 0.019, 0.987; with dev/u, dev/v and dev/w (2 480, refitted, in-sample):
# 0.999, 0.017, 0.988; with dev/y and dev/z (2 800, refitted): 0.999, 0.014,
# 0.990; with dev/ab, dev/ac and dev/ad (3 280, refitted): 0.999, 0.017, 0.987;
# with dev/af, dev/ag and dev/ah (3 760, refitted): 0.999, 0.019, 0.986; with
# forty-seven more batches (11 360, refitted, thresholds chosen by
# `--choose 5.5`): 1.000, 0.016, 0.987; with 153 batches (24 390, thresholds by
# `--choose 3`): 1.000, 0.012, 0.991; with 158 (25 190): 1.000, 0.013, 0.991. The
# floors leave a little room so that an unrelated lexicon edit does not fail CI
# by one message; they are not the product's goals
# (97 % recall, at most 3 % of benign mail held, 98 % accuracy: README).
DEV_FLOORS = ("--min-recall", "0.96", "--max-benign-held", "0.03", "--min-accuracy", "0.965")
DEV_MESSAGES = 25190  # the development part never shrinks below what the floors were measured on


def test_development_corpus_meets_the_agreed_floors(regfd: Regfd) -> None:
    r = regfd("evaluate", CORPUS / "dev", "--directory", DIRECTORY, "--json", *DEV_FLOORS)
    assert r.rc == 0, r.err
    parts = {p["part"]: p for p in json.loads(r.out)["parts"]}
    batches = {f"dev/{m.parent.name}" for m in (CORPUS / "dev").glob("*/manifest.csv")}
    assert set(parts) == {*batches, "all"}
    total = parts["all"]
    assert total["messages"] == sum(parts[p]["messages"] for p in batches) >= DEV_MESSAGES
    assert sum(sum(row.values()) for row in total["confusion"].values()) == total["messages"]
    assert set(total["categories"]) == set(MATERIAL_CATEGORIES)
    for miss in total["misses"]:  # every miss names its message and shows the evidence a reviewer needs
        assert miss["message"].startswith("dev/") and miss["note"]
        assert all({"kind", "category", "excerpt", "location", "rule"} <= set(e) for e in miss["evidence"])


def test_a_floor_that_is_not_met_exits_4_with_one_line(regfd: Regfd) -> None:
    r = regfd("evaluate", CORPUS / "dev" / "j", "--directory", DIRECTORY, "--summary", "--min-recall", "100%")
    assert r.rc == 4
    assert r.err.count("\n") == 1 and "below the floor: material recall" in r.err
    assert "== dev/j: 160 messages" in r.out and "expected \\ got" in r.out
    assert "\n- " not in r.out  # --summary: figures only, no miss is shown


def _corpus(tmp: Path, row: str, body: str = "Between us, we will miss the quarter.\n") -> Path:
    part = tmp / "mine" / "p1"
    (part / "messages").mkdir(parents=True)
    (part / "messages" / "001.eml").write_text(
        f"From: bob@allient.com\nTo: ana@northbridgesec.com\nSubject: hi\n\n{body}")
    (part / "manifest.csv").write_text("file,from,to,at,action,findings,categories,note\n" + row + "\n")
    return tmp / "mine"


def test_own_archive_is_scored_and_each_miss_shown_with_its_evidence(regfd: Regfd, tmp_path: Path) -> None:
    corpus = _corpus(tmp_path, "messages/001.eml,bob@allient.com,ana@northbridgesec.com,,accept,,,said nothing")
    r = regfd("evaluate", corpus, "--directory", DIRECTORY)
    assert r.rc == 0, r.err
    assert "- mine/p1/messages/001.eml: expected accept, got hold (extra material) — said nothing" in r.out
    assert "material/earnings in body:" in r.out


@pytest.mark.parametrize(("row", "problem"), [
    ("messages/001.eml,bob@allient.com,ana@northbridgesec.com,,allow,,,x", "unknown action 'allow'"),
    ("messages/001.eml,bob@allient.com,ana@northbridgesec.com,,hold,secret,,x", "unknown finding 'secret'"),
    ("messages/001.eml,bob@allient.com,ana@northbridgesec.com,,hold,material,gossip,x", "unknown category 'gossip'"),
    ("messages/002.eml,bob@allient.com,ana@northbridgesec.com,,hold,,,x", "No such file"),
    ("messages/001.eml,bob@allient.com,,,hold,,,x", "no recipients"),
    ("messages/001.eml,bob@allient.com,ana@northbridgesec.com,yesterday,hold,,,x", "is not a date"),
])
def test_a_bad_manifest_row_is_one_line_naming_file_and_line(regfd: Regfd, tmp_path: Path, row: str,
                                                             problem: str) -> None:
    r = regfd("evaluate", _corpus(tmp_path, row), "--directory", DIRECTORY)
    assert r.rc == 1
    assert r.err.count("\n") == 1 and "manifest.csv:2:" in r.err and problem in r.err


def test_a_bad_directory_file_is_one_line(regfd: Regfd, tmp_path: Path) -> None:
    bad = tmp_path / "dir.toml"
    bad.write_text('[[registry]]\npattern = "bank.com"\ncategory = "hedge-fund"\n')
    r = regfd("evaluate", CORPUS / "dev" / "a", "--directory", bad)
    assert r.rc == 1 and r.err.count("\n") == 1
    assert "[[registry]] 1: unknown category 'hedge-fund'" in r.err


def test_the_directory_file_classifies_like_the_registry() -> None:
    d = load_directory_file(DIRECTORY)
    snap = d.snapshot("ir@allient.com", ["m.tan@research.northbridgesec.com", "pm@lakeshore-advisers.com",
                                         "ops@lakeshore-advisers.com", "p@kessler-wynn.com"])
    assert set(snap.registry) == {"northbridgesec.com", "pm@lakeshore-advisers.com"}
    assert set(snap.exemptions) == {"kessler-wynn.com"}
    assert snap.authorization is not None and snap.officer is None
    assert d.snapshot("dana.whitfield@allient.com", []).officer is not None


def _outcome(expected: frozenset[str], action: str, found: tuple[Finding, ...], got: str) -> Outcome:
    d = load_directory_file(DIRECTORY)
    policy = Policy(load_policy_table(REPO / "config" / "policy.toml"), d.internal_domains, d.authorized_roles,
                    "regfd@allient.com")
    env = Envelope.from_raw("bob@allient.com", ["ana@northbridgesec.com"])
    verdict = Decider(policy, lambda raw: found, 10_000).decide(env, d.snapshot(env.sender, env.recipients), b"x",
                                                                 d.at or datetime.now(UTC))
    assert verdict.action == got
    cats = frozenset(f.category for f in found if f.kind == "material") if expected else frozenset()
    lab = Labelled("p/m.eml", b"", "bob@allient.com", ("ana@northbridgesec.com",), None, action, expected, cats)
    return Outcome(lab, verdict, found)


def test_scores_count_messages_not_findings() -> None:
    material = Finding("material", "earnings", "miss", "we will miss", "body")
    outcomes = [
        _outcome(frozenset({"material"}), "hold", (material, material), "hold"),  # found (twice: one message)
        _outcome(frozenset({"material"}), "hold", (), "tag"),  # missed
        _outcome(frozenset(), "tag", (material,), "hold"),  # benign, held: a false alarm that stops mail
        _outcome(frozenset(), "tag", (), "tag"),
    ]
    r = score("p", outcomes, MATERIAL_CATEGORIES)
    assert (r.kinds["material"].tp, r.kinds["material"].fn, r.kinds["material"].fp) == (1, 1, 1)
    assert r.material_recall == 0.5 and r.benign == 2 and r.benign_held == 1 and r.benign_held_rate == 0.5
    assert r.action_accuracy == 0.5 and r.confusion[("hold", "tag")] == 1
    assert len(r.misses) == 2


def test_tally_rates_are_none_without_cases() -> None:
    t = Tally()
    assert t.precision is None and t.recall is None
    t.add(expected=False, found=False)
    assert t.to_json() == {"tp": 0, "fp": 0, "fn": 0, "precision": None, "recall": None}
