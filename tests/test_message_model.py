"""The message model (message_model.toml): a whole-message second opinion that adds or drops material findings."""

from __future__ import annotations

import functools
from email.message import EmailMessage
from pathlib import Path

import pytest

from regfd.config import ScanLimits
from regfd.core.finding import MATERIAL, Finding
from regfd.errors import ConfigError
from regfd.scan.company import load_company
from regfd.scan.evidence import load_word_model
from regfd.scan.lexicon import load_lexicons
from regfd.scan.message_model import MessageModel, features, load_message_model, message_features, zones
from regfd.scan.scanner import scan_message
from tests.conftest import REPO
from tests.scanner_fixtures import copy_lexicons

LEXICON_DIR = REPO / "lexicons"

# "zorblat" stands for words the model learnt to weigh; "frobnic" for words it learnt point away.
MODEL = """kind = "message-model"
bias = -2.0
alone = {alone}
near = {near}
near_score = 2.0
confirm = {confirm}
veto = {veto}

[weights]
"zorblat" = 6.0
"zorblat soon" = 1.0
"frobnic" = -9.0
"talked" = 0.5
"table" = -1.5
"q:zorblat" = 2.5

[categories.liquidity]
bias = 0.0
[categories.liquidity.weights]
"cash" = 2.0

[categories.earnings]
bias = 0.5
[categories.earnings.weights]
"quarter" = 1.0
"""


@functools.cache
def _shipped_model() -> MessageModel:
    """The shipped message_model.toml as regfd loads it, once per test process (no lexicon compile needed)."""
    return load_message_model(LEXICON_DIR / "message_model.toml")


def _lexicons(tmp_path: Path, alone: float = 0.7, confirm: float = 0.1, text: str | None = None,  # type: ignore[no-untyped-def]
              near: float | None = None, veto: float = 0.0):
    copy_lexicons(tmp_path, without=("message_model.toml",))
    model = MODEL.format(alone=alone, near=alone if near is None else near, confirm=confirm, veto=veto)
    (tmp_path / "message_model.toml").write_text(text if text is not None else model)
    return load_lexicons(tmp_path)


def _message(body: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "bob@allient.com"
    msg["To"] = "ana@bank.example"
    msg["Subject"] = "Catching up"
    msg.set_content(body)
    return bytes(msg).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _material(lx, body: str) -> list[Finding]:  # type: ignore[no-untyped-def]
    return [f for f in scan_message(_message(body), lx, ScanLimits()) if f.kind == MATERIAL]


def test_a_message_the_model_reads_as_a_disclosure_is_a_finding_with_its_sentence_and_words(tmp_path: Path) -> None:
    lx = _lexicons(tmp_path)
    found = _material(lx, "Hi Ana,\n\nLovely weather. We zorblat soon, the cash is there.\n\nBob\n")
    assert len(found) == 1
    f = found[0]
    assert f.category == "liquidity"  # the category table that scores the message highest
    assert f.text == "We zorblat soon, the cash is there." and f.location == "body"
    assert f.rule.startswith("message model p=0.99 ('zorblat' +6.00, 'zorblat soon' +1.00)")
    assert f.rule.endswith("message_model.toml")


def test_words_that_point_away_keep_the_message_clean(tmp_path: Path) -> None:
    lx = _lexicons(tmp_path)
    assert _material(lx, "Hi Ana,\n\nWe zorblat soon. Frobnic as usual.\n\nBob\n") == []


def test_a_quoted_sentence_is_reported_as_quoted(tmp_path: Path) -> None:
    lx = _lexicons(tmp_path, alone=0.6)
    found = _material(lx, "Thanks, noted.\n\n> We zorblat soon, the quarter is fine.\n")
    assert [f.location for f in found] == ["quoted"]
    assert found[0].category == "earnings"
    assert found[0].rule.startswith("message model p=0.62 ('zorblat' (quoted) +2.50)")


def test_the_question_a_reply_quotes_weighs_as_the_asker_s_words_not_the_sender_s(tmp_path: Path) -> None:
    # "zorblat" weighs 6.0 in the sender's own words, 2.5 in the mail being answered (q:zorblat).
    lx = _lexicons(tmp_path)
    assert _material(lx, "Sorry, I can't say.\n\nOn Mon, 2 Nov 2026, Ana wrote:\n> Will you zorblat soon?\n") == []
    assert len(_material(lx, "Yes, we zorblat soon.\n\nOn Mon, 2 Nov 2026, Ana wrote:\n> Any news?\n")) == 1


def test_zones_cut_a_text_into_own_and_answered_stretches() -> None:
    text = "yes, soon. > will you zorblat? > and when? bye"
    own, quoted = zones(text, [(11, 29), (20, 42), (0, 0)])  # overlapping and empty spans
    assert own == ["yes, soon. ", " bye"] and quoted == ["> will you zorblat? > and when?"]
    assert message_features("yes, soon. zorblat", [(11, 18)]) == {"yes", "soon", "yes soon", "q:zorblat"}


def test_under_confirm_evidence_findings_drop_but_a_lexicon_phrase_stays(tmp_path: Path) -> None:
    evidence_only = "Ana,\n\nJust between us, we're going to be light on revenue this quarter.\n\nBob\n"
    phrase = "Ana,\n\nBetween us, we will miss the quarter. Frobnic.\n\nBob\n"
    (tmp_path / "off").mkdir()
    (tmp_path / "strict").mkdir()
    off = _lexicons(tmp_path / "off", alone=1.0, confirm=0.0)
    assert any(f.rule.startswith("evidence score") for f in _material(off, evidence_only))
    strict = _lexicons(tmp_path / "strict", confirm=0.99)
    assert _material(strict, evidence_only) == []  # p < 0.99: the evidence alone does not stand
    kept = _material(strict, phrase)
    assert kept and not any(f.rule.startswith("evidence score") for f in kept)


def test_under_veto_a_lexicon_phrase_drops_too_unless_its_own_sentence_leans(tmp_path: Path) -> None:
    phrase = "Ana,\n\nBetween us, we will miss the quarter. Frobnic.\n\nBob\n"  # p = 0.00 ("frobnic" -9)
    (tmp_path / "short").mkdir()
    vetoed = _lexicons(tmp_path, confirm=0.99, veto=0.01)
    assert _material(vetoed, phrase) == []
    trade_words = "Ana,\n\nBetween us, we will miss the quarter.\n\nBob\n"  # p = 0.12: over the veto
    assert [f.category for f in _material(vetoed, trade_words)] == ["earnings"]
    # The same p = 0.00, but "frobnic" is in another paragraph, out of the finding's excerpt, and
    # the excerpt's own words lean ("talked" +0.5): a harmless paragraph does not cancel this one.
    elsewhere = ("Ana,\n\nWe talked: we will miss the quarter.\n\n"
                 "Separately, the parking garage on Elm Street closes for repairs next week. Frobnic.\n\nBob\n")
    assert [f.category for f in _material(vetoed, elsewhere)] == ["earnings"]
    # A short message: p = 0.12 is the prior's, its words weigh nothing either way (0.5): it stands.
    assert [f.category for f in _material(_lexicons(tmp_path / "short", confirm=0.99, veto=0.3),
                                          "Bankruptcy is on the table.\n")] == ["bankruptcy"]
    # Its own words read 0.18 ("table" -1.5), under the veto, but the veto is the rest of the message
    # saying the phrase is harmless, and there is no rest: it stands; under a harmless paragraph it goes.
    (tmp_path / "alone").mkdir()
    strict = _lexicons(tmp_path / "alone", confirm=0.99, veto=0.3)
    assert [f.category for f in _material(strict, "Bankruptcy is on the table.\n")] == ["bankruptcy"]
    assert _material(strict, "Bankruptcy is on the table.\n\nFrobnic, see you at the game.\n") == []


def test_near_the_evidence_threshold_the_model_needs_less(tmp_path: Path) -> None:
    # p = 0.18 ("talked" +0.5); "we" + "dividend" make an evidence score of 2.0 here, under the threshold
    lx = _lexicons(tmp_path, alone=0.99, near=0.1)
    near = "Hi Ana,\n\nWe talked about the dividend.\n\nBob\n"
    assert [f.rule for f in _material(lx, near)] == ["message model p=0.18 ('talked' +0.50); message_model.toml"]
    assert _material(lx, "Hi Ana,\n\nThe weather is lovely.\n\nBob\n") == []  # p = 0.12, no sentence near


def test_alone_one_and_confirm_zero_change_nothing(tmp_path: Path) -> None:
    lx = _lexicons(tmp_path, alone=1.0, confirm=0.0)
    assert _material(lx, "Hi Ana,\n\nWe zorblat soon, the cash is there.\n\nBob\n") == []


def test_features_are_words_and_pairs_without_stopword_pairs() -> None:
    assert features("We will zorblat the Cash soon") == {
        "zorblat", "cash", "soon", "will zorblat", "zorblat the", "the cash", "cash soon"}


def test_a_figure_is_read_by_its_shape_not_its_value() -> None:
    """A bare unannounced figure seldom recurs from one mail to the next; its shape does."""
    assert features("Q3 came in at $45.2M") == {"q0", "came", "00", "0m", "q0 came", "came in", "at 00", "00 0m"}
    model = _shipped_model()
    one = "Between us, Q3 revenue came in at $45.2M, about 12% under the plan we showed you in 2025."
    other = "Between us, Q4 revenue came in at $38.9M, about 17% under the plan we showed you in 2026."
    assert model.read(one) == model.read(other) and "00 0m" in model.read(one)  # the fitter weighs "00 0m"
    assert model.reading(model.read(one)) == model.reading(model.read(other))


@pytest.mark.parametrize(("text", "message"), [
    ('kind = "message-model"\nbias = 0\nalone = 1.5\nnear = 0.5\nnear_score = 2\nconfirm = 0.1\n',
     "alone must be between 0 and 1"),
    ('kind = "message-model"\nbias = "low"\nalone = 0.5\nnear = 0.5\nnear_score = 2\nconfirm = 0.1\n',
     "bias must be a number"),
    ('kind = "message-model"\nbias = 0\nalone = 0.5\nnear_score = 2\nconfirm = 0.1\n', "near must be a number"),
    ('kind = "message-model"\nbias = 0\nalone = 0.5\nnear = 0.5\nnear_score = 2\nconfirm = 0.1\n'
     '[weights]\nword = "heavy"\n', "weight of 'word' must be a number"),
    ('kind = "message-model"\nbias = 0\nalone = 0.5\nnear = 0.5\nnear_score = 2\nconfirm = 0.1\n'
     '[categories.gossip]\nbias = 0\n', "gossip] is not a material category"),
    ('kind = "message-model"\nbias = 0\nalone = 0.5\nnear = 0.5\nnear_score = 2\nconfirm = 0.1\nthreshold = 2\n',
     "unknown key 'threshold'"),
    ('kind = "message-model"\nbias = 0\nalone = 0.5\nnear = 0.5\nnear_score = 2\nconfirm = 0.1\nveto = 0.2\n',
     "veto must be between 0 and 0.1"),
    ('kind = "message-model"\nbias = 0\nalone = 0.5\nnear = 0.5\nnear_score = 2\nconfirm = 0.1\n'
     '[weights]\n"q3 revenue" = 1.0\n', "'q3 revenue': the model reads every digit as 0 \\(write 'q0 revenue'\\)"),
])
def test_a_bad_message_model_stops_loading_with_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as exc:
        _lexicons(tmp_path, text=text)
    assert "\n" not in str(exc.value) and "message_model.toml" in str(exc.value)


def test_ordinary_office_mail_is_not_a_finding() -> None:
    """Mail about meetings, rooms and laptops, written for the benchmarks (never in the model's training data).

    The model once read "Please keep the kitchen tidy … next week … on Monday" as a disclosure (p=0.97):
    the corpus's benign mail was mostly hard negatives about the company, and scheduling words had learnt
    to mean news. Ordinary mail must stay clean, long or short.
    """
    import random

    from bench.bench_mta import SENTENCES, realistic_message

    lx = load_lexicons(LEXICON_DIR)
    long_flagged = [seed for seed in range(10)
                    if any(f.kind == MATERIAL for f in scan_message(realistic_message(seed=seed), lx, ScanLimits()))]
    assert long_flagged == []
    rng = random.Random(0)
    lines = [s for s in SENTENCES if s]
    short = [_message("Hi,\n\n" + " ".join(rng.sample(lines, rng.randint(1, 5))) + "\n\nThanks\n") for _ in range(100)]
    flagged = sum(any(f.kind == MATERIAL for f in scan_message(raw, lx, ScanLimits())) for raw in short)
    assert flagged <= 3


@pytest.mark.parametrize("text", [
    "we're moving brenner's order next week — 3.5% in q3, don't tell",
    "l'été à 10h, d'accord? x'y naïve café\tand\nnew  lines",
    "",
    "'''' -- ''' a'b",
])
def test_the_fast_path_reads_the_same_features_as_the_fitter(text: str) -> None:
    model = _shipped_model()
    assert model.present(text) == {f for f in features(text) if f in model.vocabulary}
    answered = [(len(text) // 3, len(text) // 2), (len(text) // 2 - 1, len(text))]
    assert model.read(text, answered) == {f for f in message_features(text, answered) if f in model.vocabulary}
    own: set[int] = set()
    quoted: set[int] = set()
    model.collect(text, answered, own, quoted)  # what the scanner sums, without naming the features
    assert model.named(own, quoted) == model.read(text, answered)
    assert model.reading_ids(own, quoted) == pytest.approx(model.reading(model.read(text, answered)), abs=1e-12)


def test_the_shipped_model_weighs_none_of_the_corpus_s_names() -> None:
    """The corpus is one fictional company's mail (tools/fit_message_model.py, `Names`): a weight on its
    officers, customers or towns would mean nothing in another company's mail, so the same disclosure
    reads the same whoever and wherever it names."""
    model = _shipped_model()
    names = {"allient", "marcus", "dana", "oyelaran", "whitfield", "kestrel", "veltra", "brenner", "dayton", "brno"}
    names |= load_company(LEXICON_DIR / "company.toml").words()  # the ticker "alnt" too, though written ALNT
    assert "alnt" in names
    assert not {w for f in model.vocabulary for w in f.removeprefix("q:").split(" ")} & names
    # Nor the sentence word model of the evidence's gray zone (model.toml, tools/fit_word_model.py).
    sentences = load_word_model(LEXICON_DIR / "model.toml")
    assert len(sentences.weights) > 1000 and not {w for f in sentences.weights for w in f.split(" ")} & names
    told = "Marcus told me Kestrel is pulling its business from our Dayton plant at year end. ALNT is a sell."
    other = "Priyanka told me Zorblatt is pulling its business from our Tulsa plant at year end. ZRBX is a sell."
    assert model.reading(model.read(told)) == model.reading(model.read(other))
