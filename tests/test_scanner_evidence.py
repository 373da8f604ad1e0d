"""Compositional evidence: plain-language disclosures, the harmless look-alikes, and CRLF mail.

Sentences here are written for these tests (not taken from the corpus): each
states a disclosure the way people write it, with no trade term, or a
harmless sentence that shares its words.
"""

from __future__ import annotations

import base64
import shutil
from email.message import EmailMessage
from pathlib import Path

import pytest

from regfd.config import ScanLimits
from regfd.core.finding import MATERIAL
from regfd.errors import ConfigError
from regfd.scan.lexicon import load_lexicons
from regfd.scan.scanner import scan_message
from tests.scanner_fixtures import LEXICON_DIR, lexicons, scan, text_findings

PLAIN_DISCLOSURES = [
    ("products-customers-contracts",
     "Between you and me, the big customer in Ohio is walking. They told us last week and nobody outside knows."),
    ("management-changes", "Keep this one close: Marcus told the board he is leaving at the end of the quarter."),
    ("mergers-acquisitions", "We are in advanced talks to buy a German drives maker, hoping to sign next month."),
    ("liquidity", "Honestly money is tight: if the revolver draw slips we won't make payroll on Friday."),
    ("cybersecurity", "Someone got into our email system for three months and took customer files; not public yet."),
    ("earnings", "We did 212 this quarter against a plan of 240, so expect a rough print."),
    ("dividends", "Heads up, the board will raise the dividend to $0.04 when it meets on the 13th."),
]

HARMLESS = [
    "As announced in our press release on May 5, first-quarter revenue was $142.6 million.",
    "We don't comment on market rumors; any offering would be announced publicly.",
    "Congratulations on your firm's acquisition of Harbor Capital, a great deal for your team.",
    "The 1998 purchase of the Swiss stepper business is the deal people still talk about.",
    "Allient will release second-quarter results after the market close on July 29, with a webcast.",
    "Did our margins hold up in the second quarter?",
    "Our travel policy covers economy fares for flights under six hours.",
]


@pytest.mark.parametrize(("category", "sentence"), PLAIN_DISCLOSURES)
def test_plain_language_disclosure_is_material_with_its_evidence(category: str, sentence: str) -> None:
    findings = [f for f in text_findings(sentence) if f.kind == MATERIAL]
    assert category in {f.category for f in findings}, findings
    f = next(f for f in findings if f.category == category)
    assert "score" in f.rule and "evidence.toml" in f.rule  # the reviewer sees why
    assert f.severity in ("medium", "high")


@pytest.mark.parametrize("sentence", HARMLESS)
def test_harmless_sentence_with_the_same_words_is_quiet(sentence: str) -> None:
    assert [f for f in text_findings(sentence) if f.kind == MATERIAL] == []


def test_lexicon_phrase_is_dropped_when_its_sentence_refuses_to_comment() -> None:
    assert text_findings("We will miss the quarter.")
    assert not [f for f in text_findings("Is it true you will miss the quarter?") if f.kind == MATERIAL]


def _message(body: str, subject: str = "Catching up", crlf: bool = True) -> bytes:
    msg = EmailMessage()
    msg["From"] = "bob@allient.com"
    msg["To"] = "ana@bank.example"
    msg["Subject"] = subject
    msg.set_content(body)
    raw = bytes(msg)
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") if crlf else raw.replace(b"\r\n", b"\n")


@pytest.mark.parametrize("crlf", [True, False])
def test_a_later_public_reference_does_not_cancel_an_earlier_paragraph(crlf: bool) -> None:
    body = ("Ana,\n\nWe will miss the quarter, the numbers look soft.\n\n"
            "Separately, as announced in our press release last week, the dividend is unchanged.\n\nBob\n")
    found = [f for f in scan(_message(body, crlf=crlf)) if f.kind == MATERIAL]
    assert any(f.category == "earnings" for f in found), found


@pytest.mark.parametrize("scope_text", [
    # phrase scope
    "Earnings call registration is open.",
    # sentence scope, public reference in the same sentence
    "As announced in our press release, we will miss the quarter.",
    # paragraph scope, safe harbour
    "This message contains forward-looking statements.\nActual results may differ materially; we will miss the quarter.",
])
@pytest.mark.parametrize("crlf", [True, False])
def test_every_exclusion_scope_applies_alike_with_crlf_and_lf(scope_text: str, crlf: bool) -> None:
    body = f"Ana,\n\n{scope_text}\n\nBob\n"
    assert [f for f in scan(_message(body, crlf=crlf)) if f.kind == MATERIAL] == []


def test_material_text_only_in_a_base64_subject_with_a_typographic_apostrophe() -> None:
    subject = "=?utf-8?B?" + base64.b64encode("We’re going to miss the quarter".encode()).decode() + "?="
    raw = (f"From: bob@allient.com\r\nTo: ana@bank.example\r\nSubject: {subject}\r\n"
           "Content-Type: text/plain; charset=utf-8\r\n\r\nSee you Sunday.\r\n").encode()
    found = [f for f in scan(raw) if f.kind == MATERIAL]
    assert [f.location for f in found] == ["subject"], found


def test_material_text_only_in_an_attached_htm_file() -> None:
    msg = EmailMessage()
    msg["From"] = "bob@allient.com"
    msg["To"] = "ana@bank.example"
    msg["Subject"] = "notes"
    msg.set_content("Notes attached.")
    msg.add_attachment(b"<html><body><p>Between us, we are going to miss the quarter.</p></body></html>",
                       maintype="text", subtype="html", filename="notes.htm")
    found = [f for f in scan(bytes(msg)) if f.kind == MATERIAL]
    assert found and all(f.location == "attachment:notes.htm" for f in found), found


def test_quoted_reply_from_the_recipient_weighs_less_than_the_senders_own_words() -> None:
    own = "Ana,\n\nBetween us, Allient will go bankrupt this summer.\n\nBob\n"
    quoted = ("Ana,\n\nWe don't comment on speculation; please see our 10-Q.\n\nBob\n\n"
              "On Tue, Jun 2, 2026 at 9:00 AM, Ana <ana@bank.example> wrote:\n"
              "> People on the message board say Allient will go bankrupt. Should I sell?\n")
    assert [f for f in scan(_message(own)) if f.kind == MATERIAL]
    assert [f for f in scan(_message(quoted)) if f.kind == MATERIAL] == []


def test_scanner_without_signal_files_still_runs_the_phrase_lexicons(tmp_path: Path) -> None:
    for f in LEXICON_DIR.glob("*.toml"):
        if f.name not in ("signals.toml", "evidence.toml"):
            shutil.copy(f, tmp_path / f.name)
    lx = load_lexicons(tmp_path)
    assert lx.signals is None
    raw = _message("Ana,\n\nWe will miss the quarter.\n\nBob\n")
    assert [f.category for f in scan_message(raw, lx, ScanLimits()) if f.kind == MATERIAL] == ["earnings"]


def _lexicons_with(tmp_path: Path, evidence: str) -> None:
    for f in LEXICON_DIR.glob("*.toml"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "evidence.toml").write_text(evidence)
    load_lexicons(tmp_path)


@pytest.mark.parametrize(("evidence", "message"), [
    ('kind = "evidence"\n[weights]\ntopic = 1.0\n', "threshold must be a positive number"),
    ('kind = "evidence"\nthreshold = 2\n[weights]\ntopic = 1\nsecrecy = "high"\n', "weight of 'secrecy' must be a number"),
    ('kind = "evidence"\nthreshold = 2\n[weights]\ntopic = 1\nsecrcy = 3\n', "unknown signal group 'secrcy'"),
    ('kind = "evidence"\nthreshold = 2\n[weights]\ntopic = 1\n[scope]\nsecrecy = "message"\n',
     "scope of 'secrecy' must be one of"),
    ('kind = "evidence"\nthreshold = 2\ndefault_category = "gossip"\n[weights]\ntopic = 1\n',
     "'gossip' is not a material category"),
])
def test_a_bad_evidence_file_stops_loading_with_one_line(tmp_path: Path, evidence: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as exc:
        _lexicons_with(tmp_path, evidence)
    assert "\n" not in str(exc.value) and "evidence.toml" in str(exc.value)


def test_signals_without_weights_are_refused(tmp_path: Path) -> None:
    for f in LEXICON_DIR.glob("*.toml"):
        if f.name != "evidence.toml":
            shutil.copy(f, tmp_path / f.name)
    with pytest.raises(ConfigError, match="needs evidence.toml"):
        load_lexicons(tmp_path)


def test_topic_group_must_name_a_material_category(tmp_path: Path) -> None:
    for f in LEXICON_DIR.glob("*.toml"):
        shutil.copy(f, tmp_path / f.name)
    with (tmp_path / "signals.toml").open("a") as fh:
        fh.write('\n[[entry]]\ncategory = "topic:weather"\npatterns = ["rain"]\n')
    with pytest.raises(ConfigError, match="'topic:weather' is not a material category"):
        load_lexicons(tmp_path)


def test_lexicons_fixture_has_signals() -> None:
    assert lexicons().signals is not None


def _with_model(tmp_path: Path, model: str) -> Path:
    for f in LEXICON_DIR.glob("*.toml"):
        if f.name != "model.toml":
            shutil.copy(f, tmp_path / f.name)
    (tmp_path / "model.toml").write_text(model)
    return tmp_path


def test_the_word_model_decides_only_sentences_just_under_the_threshold(tmp_path: Path) -> None:
    model = ('kind = "model"\nbias = -3.0\nthreshold = 0.7\ngray_zone = 0.5\n'
             '[weights]\n"zorblat" = 10.0\n"g:company" = 0.1\n')
    lx = load_lexicons(_with_model(tmp_path, model))

    def material(text: str) -> list[str]:
        raw = _message(f"Ana,\n\n{text}\n\nBob\n")
        return [f.rule for f in scan_message(raw, lx, ScanLimits()) if f.kind == MATERIAL]

    # topic + company = 2.0, within 0.5 of the 2.5 threshold: the model decides, and says so
    rules = material("We zorblat the quarter.")
    assert rules and "model.toml p=1.00 (zorblat" in rules[0]
    assert material("We discussed the quarter.") == []  # same score, the model says no
    assert material("Zorblat the quarter.") == []  # topic alone (1.0): too far under for the model


@pytest.mark.parametrize(("model", "message"), [
    ('kind = "model"\nbias = 0\nthreshold = 1.5\ngray_zone = 0.5\n', "threshold is a probability"),
    ('kind = "model"\nbias = "low"\nthreshold = 0.5\ngray_zone = 0.5\n', "bias must be a number"),
    ('kind = "model"\nbias = 0\nthreshold = 0.5\ngray_zone = 0.5\n[weights]\nword = "heavy"\n',
     "must map words to numbers"),
])
def test_a_bad_model_file_stops_loading_with_one_line(tmp_path: Path, model: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as exc:
        load_lexicons(_with_model(tmp_path, model))
    assert "\n" not in str(exc.value) and "model.toml" in str(exc.value)


def test_a_topic_of_three_words_or_more_counts_as_an_event() -> None:
    [f] = [f for f in text_findings("Somebody broke into our payroll system and took everyone's bank details.")
           if f.category == "cybersecurity"]
    assert "event 'broke into our payroll system'" in f.rule
