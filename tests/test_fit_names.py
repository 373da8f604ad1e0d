"""Which words tools/fit_message_model.py leaves unweighed as the corpus's names, and that they get no weight.

The development corpus is one fictional company's mail: its officers, customers and towns recur in
every batch, so a weight on them would score on left-out batches and mean nothing in another
company's mail. Pure: hand-written text and hand-made examples (no corpus, no scikit-learn).
"""

from __future__ import annotations

import pytest

from tools.fit_message_model import Example, Names, named, vocabulary, weighable
from tools.fit_word_model import features

MAIL = """Hi Priya,

Marcus says the Kestrel award is ours; Kestrel will sign Friday. I told Marcus the Kestrel team
was pleased. The memo to Marcus (ask Marcus) is on SharePoint; see marcus.lee@corp.example and kestrel.com.
Our Brno plant, the Brno line and the Brno staff are fine.
Moody's and Fitch may move; Moody's said so, Fitch too, Moody's again, Fitch again.
We meet Monday; the Monday call, then Monday's notes. The CFO and the CFO's team agree, CFO said.
Yes, I'm sure, I'm told, and I'm glad. Revenue was fine. Revenue grew. Revenue, as the Revenue line says, grew. revenue
"""


def test_names_are_words_written_capitalized_where_no_sentence_begins() -> None:
    counted = Names()
    counted.count(MAIL)
    names = counted.names()
    assert {"marcus", "kestrel", "brno"} <= names
    # Rating agencies, days, acronyms (all capitals) and words capitalized only at a sentence's start are no names.
    assert not {"moody's", "fitch", "monday", "monday's", "cfo", "i'm", "revenue", "priya", "sharepoint"} & names


def test_an_address_or_a_domain_does_not_count_as_lower_case() -> None:
    counted = Names()
    counted.count("Ask Dana, tell Dana, thank Dana; dana.whitfield@allient.com or dana_w agree.")
    assert counted.lower["dana"] == 0
    assert "dana" in counted.names()


@pytest.mark.parametrize(("feature", "expected"), [
    ("kestrel", True), ("q:kestrel", True), ("the kestrel", True), ("q:lost kestrel", True),
    ("lost", False), ("q:lost the", False), ("walking", False),
])
def test_a_feature_is_named_when_any_of_its_words_is_a_name(feature: str, expected: bool) -> None:
    assert named(feature, frozenset({"kestrel"})) is expected


def test_the_regression_is_given_no_named_feature() -> None:
    exs = [Example("b", {"walking", "kestrel", "walking kestrel", "q:kestrel"}, True, frozenset(), False, False, 0.0)
           for _ in range(3)] + [Example("b", {"lunch", "rare"}, False, frozenset(), False, False, 0.0)] * 2
    assert vocabulary(exs, 2) == {"walking", "kestrel", "walking kestrel", "q:kestrel", "lunch", "rare"}
    assert vocabulary(exs, 2, frozenset({"kestrel"})) == {"walking", "lunch", "rare"}
    assert vocabulary(exs, 3, frozenset({"kestrel"})) == {"walking"}


def test_the_sentence_model_is_given_no_named_feature_either() -> None:
    """tools/fit_word_model.py (lexicons/model.toml) keeps the same rule over its topic sentences:
    its features are words, pairs and signal groups ("g:secrecy"), never a name."""
    rows = [features("marcus will step down before the call", ["secrecy"]) for _ in range(3)]
    keep = weighable(rows, 3, frozenset({"marcus"}))
    assert "g:secrecy" in keep and "step down" in keep and "step" in keep
    assert not [f for f in keep if "marcus" in f.split(" ")]
    assert "marcus will" in weighable(rows, 3, frozenset())
