"""How tools/fit_message_model.py chooses the model file's thresholds from out-of-fold probabilities.

Pure arithmetic on hand-made examples (no corpus, no scikit-learn): the
choice compliance relies on when it asks for "the best action accuracy
that holds at most N % of benign mail".
"""

from __future__ import annotations

from regfd.scan.message_model import Thresholds
from tools.fit_message_model import Example, choose, rates


def _ex(material: bool, found: bool = False, strongest: float = 0.0, phrase: bool = False) -> Example:
    """`found`: a finding that rests on the evidence score alone; `phrase`: one a lexicon phrase raised."""
    return Example("b", set(), material, frozenset(), phrase, found, strongest)


# Ten disclosures and ten benign messages with the probabilities a model fitted without them gave.
EXAMPLES = [_ex(True)] * 6 + [_ex(True, strongest=2.5)] * 2 + [_ex(True, found=True)] * 2 + \
    [_ex(False)] * 8 + [_ex(False, found=True)] + [_ex(False, strongest=2.5)]
PROBS = [(p, 0.5, False, 0.5) for p in [0.95, 0.9, 0.85, 0.72, 0.66, 0.3, 0.45, 0.5, 0.25, 0.12] +
         [0.02, 0.05, 0.1, 0.2, 0.3, 0.35, 0.6, 0.7, 0.15, 0.42]]


def test_rates_apply_each_threshold_as_the_scanner_does() -> None:
    # alone 0.8 catches 0.95, 0.9, 0.85; near 0.4 (strongest >= 2) catches 0.45 and 0.5;
    # confirm 0.1 keeps both lexicon findings (0.25, 0.12). Benign: the found one (0.15) and the near one (0.42).
    recall, flagged, _, _ = rates(EXAMPLES, PROBS, Thresholds(alone=0.8, near=0.4, near_score=2.0, confirm=0.1))
    assert recall == 70.0
    assert flagged == 20.0


def test_rates_without_thresholds_are_the_lexicons_alone() -> None:
    assert rates(EXAMPLES, PROBS, None)[:2] == (20.0, 10.0)


def _sent(material: bool, expected: str, actions: tuple[str, str]) -> Example:
    """A message whose action is `actions[0]` without a material finding and `actions[1]` with one."""
    return Example("b", set(), material, frozenset(), False, False, 0.0, (), expected, not material, actions)


def test_choose_gives_the_best_action_accuracy_within_the_benign_held_cap() -> None:
    # Four disclosures an employee sent to an analyst (held with a finding, tagged without), a benign
    # mail to an outsider who is no Specified Person (accepted whatever is found) and benign mail to
    # analysts (tagged, held with a finding). A finding on the outsider's mail changes no action, so
    # it costs nothing: with no benign mail held, alone comes down to 0.5, past that mail's 0.6.
    held, tagged = ("tag", "hold"), ("tag", "hold")
    exs = [_sent(True, "hold", held)] * 4 + [_sent(False, "accept", ("accept", "accept"))] + \
        [_sent(False, "tag", tagged)] * 4
    probs = [(p, 0.5, False, 0.5) for p in (0.9, 0.7, 0.5, 0.42, 0.6, 0.41, 0.1, 0.1, 0.1)]
    th = choose(exs, probs, 0.0)
    assert th == Thresholds(alone=0.5, near=0.5, near_score=3.0, confirm=0.4, veto=0.4)
    assert rates(exs, probs, th) == (75.0, 20.0, 0.0, 800 / 9)
    # One benign mail in five may be held: catching 0.42 costs the analyst's 0.41, the same accuracy;
    # the tie goes to recall.
    looser = choose(exs, probs, 20.0)
    assert looser is not None and looser.alone == 0.4
    assert rates(exs, probs, looser) == (100.0, 40.0, 20.0, 800 / 9)


def test_choose_recall_first_trades_accuracy_for_recall_within_the_cap() -> None:
    # Catching the last disclosure (0.42) costs two benign messages to analysts (0.45, 0.43): accuracy
    # first keeps alone at 0.8, recall first goes down to 0.4 where the cap allows the two held.
    sent = ("tag", "hold")
    exs = [_sent(True, "hold", sent)] * 3 + [_sent(False, "tag", sent)] * 3
    probs = [(p, 0.5, False, 0.5) for p in (0.9, 0.8, 0.42, 0.45, 0.43, 0.1)]
    assert choose(exs, probs, 100.0) == Thresholds(alone=0.8, near=0.7, near_score=3.0, confirm=0.4, veto=0.4)
    th = choose(exs, probs, 100.0, recall_first=True)
    assert th is not None and rates(exs, probs, th)[0] == 100.0 and rates(exs, probs, th)[2] == 200 / 3
    assert choose(exs, probs, 50.0, recall_first=True) == choose(exs, probs, 50.0)


def test_choose_returns_none_when_no_threshold_meets_the_cap() -> None:
    everything_held = [_sent(False, "tag", ("hold", "hold"))] * 3
    assert choose(everything_held, [(0.99, 0.99, False, 0.99)] * 3, 0.0) is None


def test_a_lexicon_phrase_stands_under_confirm_and_falls_under_veto_unless_its_sentence_leans() -> None:
    # As the scanner does it: confirm drops findings resting on the evidence score alone; a lexicon
    # phrase's finding drops only where the words alone read under veto, and not when its own sentence
    # leans to a disclosure. The officer's restated guidance (benign, words 0.03) goes with veto 0.05;
    # the disclosure in trade words (0.08) stays; the one in a message whose other paragraph reads as
    # public (0.01) stays because its sentence leans. (The last figure of each reading: the words of the
    # rest of the message, without the phrase's sentence; here as harmless as the whole.)
    exs = [_ex(True, phrase=True), _ex(False, phrase=True), _ex(True, found=True), _ex(True, phrase=True)]
    probs = [(0.08, 0.08, False, 0.08), (0.03, 0.03, False, 0.03), (0.08, 0.08, False, 0.08), (0.01, 0.01, True, 0.01)]
    assert rates(exs, probs, Thresholds(alone=0.8, near=0.8, near_score=2.0, confirm=0.1, veto=0.05))[:2] == (
        200 / 3, 0.0)
    exs, probs = exs[:3], probs[:3]
    assert rates(exs, probs, Thresholds(alone=0.8, near=0.8, near_score=2.0, confirm=0.1))[:2] == (50.0, 100.0)
    assert rates(exs, probs, Thresholds(alone=0.8, near=0.8, near_score=2.0, confirm=0.1, veto=0.05))[:2] == (50.0, 0.0)
    assert rates(exs, probs, Thresholds(alone=0.8, near=0.8, near_score=2.0, confirm=0.05))[:2] == (100.0, 100.0)


def test_veto_reads_the_words_without_the_prior() -> None:
    # A one-line "bankruptcy is on the table": the prior alone makes p 0.14, but its few words say
    # nothing either way (0.45): not "clearly harmless", so the phrase stands.
    th = Thresholds(alone=0.8, near=0.8, near_score=2.0, confirm=0.3, veto=0.2)
    assert th.flags(0.14, 0.45, 0.0, phrase=True, evidence=False)
    assert not th.flags(0.02, 0.1, 0.0, phrase=True, evidence=False, rest=0.1)


def test_veto_is_the_rest_of_the_message_not_the_phrase_sentence_s_own_words() -> None:
    # "Bankruptcy is on the table." alone in its mail: its words read 0.24 ("table" is mostly benign
    # in the corpus), under a veto of 0.3, but nothing else in the mail says it is harmless (the rest
    # reads 0.5): it stands. The same sentence under a paragraph that restates the public record
    # (the rest reads 0.05) goes.
    th = Thresholds(alone=0.8, near=0.8, near_score=2.0, confirm=0.3, veto=0.3)
    assert th.flags(0.06, 0.24, 0.0, phrase=True, evidence=False, leaning=False, rest=0.5)
    assert not th.flags(0.01, 0.03, 0.0, phrase=True, evidence=False, leaning=False, rest=0.05)
    exs = [_ex(True, phrase=True), _ex(False, phrase=True)]
    assert rates(exs, [(0.06, 0.24, False, 0.5), (0.01, 0.03, False, 0.05)], th)[:2] == (100.0, 0.0)
