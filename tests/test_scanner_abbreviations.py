"""Abbreviations and single-letter words do not hide material phrases.

Normalization joins letters spread out with spaces, dots or hyphens
("E B I T D A", "m.e.r.g.e.r") to defeat evasion. Ordinary prose has runs of
single letters too: "a U.S. contract" (the word "a" next to "U.S."),
"U.S. G.A.A.P.", "A.G.M. I sold". Joining those ("aus contract") must never
make the scanner miss a phrase it finds with "the" instead of "a", and the
deliberate evasions must still be caught, including the ones where a
single-letter word sits right next to them ("a m e r g e r").
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regfd.core.finding import MATERIAL, NON_GAAP_UNRECONCILED
from regfd.scan import normalize as textnorm
from regfd.scan.normalize import normalize
from tests.scanner_fixtures import text_findings


def _material(text: str) -> list[tuple[str, str]]:
    return [(f.category, f.text) for f in text_findings(text) if f.kind == MATERIAL]


# ---------------------------------------------------------------------------
# Prose: a single-letter word or an abbreviation next to or inside a phrase.


@pytest.mark.parametrize(
    ("text", "category", "phrase"),
    [
        ("We are losing a U.S. contract.", "products-customers-contracts", "losing a U.S. contract"),
        ("We lost a U.K. customer last week.", "products-customers-contracts", "lost a U.K. customer"),
        ("We are about to lose a U.S.A. account.", "products-customers-contracts", "about to lose a U.S.A. account"),
        ("By 9 a.m. we will lose a U.S. account, i.e. a big one.", "products-customers-contracts", "lose a U.S. account"),
        ("FYI, e.g. we are losing a U.S. contract to them.", "products-customers-contracts", "losing a U.S. contract"),
        ("In the U.S. I am selling my stock.", "insider-trading", "I am selling my stock"),
        ("After the A.G.M. I sold 5000 shares.", "insider-trading", "I sold 5000 shares"),
        ("After the A G M I sold 5000 shares.", "insider-trading", "I sold 5000 shares"),
    ],
)
def test_single_letter_word_next_to_an_abbreviation(text: str, category: str, phrase: str) -> None:
    found = _material(text)
    # the lexicon phrase, or the sentence's evidence finding that contains it (the longer hit is kept)
    assert any(c == category and phrase in t for c, t in found), found


@pytest.mark.parametrize(
    ("text", "category", "phrase"),
    [
        ("We are losing the U.S. contract.", "products-customers-contracts", "losing the U.S. contract"),
        ("We are losing the U.S.A. contract.", "products-customers-contracts", "losing the U.S.A. contract"),
        ("we will miss the quarter in the U.K. and the U.S.", "earnings", "will miss the quarter"),
        ("the C.F.O. is leaving", "management-changes", "C.F.O. is leaving"),
        ("the C F O is leaving", "management-changes", "C F O is leaving"),
        ("I.B.M. aside, we are going to miss the quarter.", "earnings", "going to miss the quarter"),
        ("J. P. Morgan says S&P will downgrade us", "debt-ratings", "S&P will downgrade us"),
    ],
)
def test_abbreviations_that_already_worked_still_do(text: str, category: str, phrase: str) -> None:
    found = _material(text)
    # the lexicon phrase, or the sentence's evidence finding that contains it (the longer hit is kept)
    assert any(c == category and phrase in t for c, t in found), found


def test_one_finding_per_phrase_whichever_form_found_it() -> None:
    """The phrase is visible in several forms (joined and not): one finding."""
    for text, phrase in (("We are losing the U.S.A. contract.", "losing the U.S.A. contract"),
                         ("We are losing a U.S. contract.", "losing a U.S. contract")):
        findings = text_findings(text)
        assert [(f.kind, f.category) for f in findings] == [(MATERIAL, "products-customers-contracts")], findings
        assert phrase in findings[0].text


@pytest.mark.parametrize(
    "text",
    [
        "Adjusted EBITDA was $9M; U.S. G.A.A.P. net income: $2M.",
        "Adjusted EBITDA was $9M versus U.S. G.A.A.P. operating income of $5M.",
        "Adjusted EBITDA is shown next to the most comparable U.S. G.A.A.P. measure.",
        "Adjusted EBITDA was $9M, presented in accordance with U.S. G.A.A.P. rules.",
    ],
)
def test_dotted_gaap_after_us_is_a_reconciliation(text: str) -> None:
    """"U.S. G.A.A.P." reads as "u.s. gaap", not as one word "usgaap"."""
    assert NON_GAAP_UNRECONCILED not in {f.kind for f in text_findings(text)}


def test_non_gaap_still_unreconciled_without_gaap() -> None:
    assert NON_GAAP_UNRECONCILED in {f.kind for f in text_findings("Adjusted EBITDA was $9M in the U.S. and the U.K.")}


@pytest.mark.parametrize(
    "text",
    [
        "The A B test ran from 9 a.m. to 5 p.m., e.g. on the U.S. site, i.e. not in the U.K.",
        "J. P. Morgan and I.B.M. will join the U.S.A. offsite; bring a U.S. adapter.",
        "Plan A, B or C for the team lunch; I think a U.S. venue is best.",
    ],
)
def test_ordinary_prose_with_abbreviations_has_no_findings(text: str) -> None:
    assert text_findings(text) == []


# ---------------------------------------------------------------------------
# Evasion is still caught, with the original characters reported.


@pytest.mark.parametrize(
    ("text", "kind", "category", "shown"),
    [
        ("Our E B I T D A grew", NON_GAAP_UNRECONCILED, "ebitda", "E B I T D A"),
        ("Our e-b-i-t-d-a grew", NON_GAAP_UNRECONCILED, "ebitda", "e-b-i-t-d-a"),
        ("Our E.B.I.T.D.A. grew", NON_GAAP_UNRECONCILED, "ebitda", "E.B.I.T.D.A."),
        ("Our E. B. I. T. D. A. grew", NON_GAAP_UNRECONCILED, "ebitda", "E. B. I. T. D. A."),
        ("the m.e.r.g.e.r with Acme", MATERIAL, "mergers-acquisitions", "m.e.r.g.e.r"),
        ("the m e r g e r talks with Acme", MATERIAL, "mergers-acquisitions", "m e r g e r"),
        ("the M e R g E r talks with Acme", MATERIAL, "mergers-acquisitions", "M e R g E r"),
        ("the m.\u0435.r.g.\u0435.r with Acme", MATERIAL, "mergers-acquisitions", "m.\u0435.r.g.\u0435.r"),  # Cyrillic е
        ("the \uff4d \uff45 \uff52 \uff47 \uff45 \uff52 with Acme", MATERIAL, "mergers-acquisitions", "\uff4d \uff45 \uff52 \uff47 \uff45 \uff52"),
        ("the m\u200b.e.r.g.e.r with Acme", MATERIAL, "mergers-acquisitions", "m\u200b.e.r.g.e.r"),
        ("the m.e-r g.e.r with Acme", MATERIAL, "mergers-acquisitions", "m.e-r g.e.r"),  # mixed separators
        ("we got h a c k e d last night", MATERIAL, "cybersecurity", "we got h a c k e d"),
        # A single-letter word right next to the spelled-out word.
        ("We discussed a m e r g e r with Acme", MATERIAL, "mergers-acquisitions", "m e r g e r"),
        ("I think a m.e.r.g.e.r is coming", MATERIAL, "mergers-acquisitions", "m.e.r.g.e.r"),
        ("The m e r g e r I mentioned is on", MATERIAL, "mergers-acquisitions", "m e r g e r"),
        ("It is a E B I T D A number", NON_GAAP_UNRECONCILED, "ebitda", "E B I T D A"),
        ("a m e r g e r I mentioned", MATERIAL, "mergers-acquisitions", "m e r g e r"),
        ("In the U.S. I think a m e r g e r is coming", MATERIAL, "mergers-acquisitions", "m e r g e r"),
    ],
)
def test_spelled_out_evasion_still_caught(text: str, kind: str, category: str, shown: str) -> None:
    findings = text_findings(text)
    got = [(f.kind, f.category, f.text) for f in findings]
    assert (kind, category, shown) in got, got
    for f in findings:
        assert f.text in text  # the sender's characters, not the normalized form


def test_evasion_and_prose_in_one_message() -> None:
    text = "We are losing a U.S. contract and the m.e.r.g.e.r is on; E B I T D A is up."
    got = {(f.kind, f.category, f.text) for f in text_findings(text)}
    assert {
        (MATERIAL, "products-customers-contracts", "losing a U.S. contract"),
        (MATERIAL, "mergers-acquisitions", "m.e.r.g.e.r"),
        (NON_GAAP_UNRECONCILED, "ebitda", "E B I T D A"),
    } <= got, got


# ---------------------------------------------------------------------------
# The forms themselves.


def test_forms_primary_is_normalize_and_plain_keeps_letters() -> None:
    text = "We are losing a U.S. contract; E B I T D A"
    forms = textnorm.normalize_forms(text)
    assert forms[0].text == normalize(text).text == "we are losing aus contract; ebitda"
    texts = [f.text for f in forms]
    assert "we are losing a u.s. contract; e b i t d a" in texts  # nothing joined
    assert "we are losing a u.s. contract; ebitda" in texts  # one separator per run
    assert len(set(texts)) == len(texts)


def test_no_join_means_one_form() -> None:
    for text in ["We reviewed the travel policy before Friday.", "the U.S. and the U.K.", "mer-\n  ger", "Zoë and José"]:
        assert len(textnorm.normalize_forms(text)) == 1


@pytest.mark.parametrize(
    "text",
    ["a m e r g e r I mentioned", "In the U.S. I am selling; U.S. G.A.A.P.", "x a.b.c d e f g-h-i a", "Zoë a m é r g e r ß I"],
)
def test_every_form_maps_back_to_the_original(text: str) -> None:
    for form in textnorm.normalize_forms(text):
        assert form.original == text
        n = len(form.text)
        for a in range(n + 1):
            for b in range(a, n + 1):
                s, e = form.span(a, b)
                assert 0 <= s <= e <= len(text), (form.text, a, b)


_form_piece = st.sampled_from(
    ["a", "I", "u.s.", "U.S.A.", "g.a.a.p.", "e b i t d a", "m.e.r.g.e.r", "c-u-t", "x", "é", "Zoë", "€", "ß", "ﬁ",
     " ", "  ", ". ", ".", "-", "/", "\n", "mer-\n  ger", "\n> ", "merger", "the", "'", "q3", "\u200b", "е"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_form_piece, max_size=30))
def test_forms_only_move_separators_and_map_back(pieces: list[str]) -> None:
    """Each form is the folded text with some separators removed (or kept):
    its pieces tile the folded text, and its letters are the same letters."""
    text = "".join(pieces)
    folded, _ = textnorm._char_fold(text)
    letters = textnorm._NOT_LETTER.sub("", folded)
    forms = textnorm.normalize_forms(text)
    assert forms[0].text == normalize(text).text
    assert len({f.text for f in forms}) == len(forms)
    for form in forms:
        assert textnorm._NOT_LETTER.sub("", form.text) == letters, (text, form.text)
        m = form._join_map
        assert m.src[0] == 0 and m.src[-1] + m.srclen[-1] == len(folded)
        assert all(m.src[i] + m.srclen[i] == m.src[i + 1] for i in range(len(m.src) - 1))
        prev = 0
        for n in range(len(form.text) + 1):
            s, _ = form.span(n, n)
            assert prev <= s <= len(text)
            prev = s
