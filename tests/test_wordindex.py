"""The scanner's passes in C give their references' answers: the message model's word pass (its Hyperscan
reference, regfd/scan/wordindex.py), the signals' compact text, its offset maps and its sentence ends
(evidence.compact_text, separator_runs and sentence_ends in Python)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regfd.config import ScanLimits
from regfd.core.finding import MATERIAL_CATEGORIES
from regfd.evaluation.corpus import manifests, read_manifest
from regfd.scan.evidence import compact_text, sentence_ends, separator_runs
from regfd.scan.message_model import ANSWERED, features, load_message_model
from regfd.scan.mime import Problem, iter_parts
from regfd.scan.normalize import normalize_forms
from regfd.scan.wordindex import HyperscanWords, native_available, word_index
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not native_available(), reason="see test_the_c_word_pass_is_built")


def test_the_c_word_pass_is_built() -> None:
    """setup.py builds it where a C compiler is (the README's commands install one); without it every
    message costs ~0.1 ms more, silently, so the suite says so."""
    assert native_available()


@pytest.fixture(scope="module")
def vocabulary() -> list[str]:
    model = load_message_model(REPO / "lexicons" / "message_model.toml")
    return sorted({f.removeprefix(ANSWERED) for f in model.vocabulary})


def test_every_text_part_of_the_development_corpus_reads_the_same(vocabulary: list[str]) -> None:
    native, reference = word_index(vocabulary), word_index(vocabulary, native=False)
    assert isinstance(reference, HyperscanWords) and not isinstance(native, HyperscanWords)
    texts = 0
    found = 0
    for path in manifests([REPO / "corpus" / "dev"]):
        for msg in read_manifest(path, ZoneInfo("UTC"), frozenset(MATERIAL_CATEGORIES)):
            for part in iter_parts(msg.raw, ScanLimits(), time.monotonic() + 60):
                if isinstance(part, Problem):
                    continue
                for text in (part.text, *(n.text for n in normalize_forms(part.text))):
                    ids = native.ids(text)
                    assert ids == reference.ids(text), f"{msg.name} {part.location}"
                    compact = compact_text(text)
                    assert compact == compact_text(text, native=False), f"{msg.name} {part.location}"
                    assert sentence_ends(compact) == sentence_ends(compact, native=False), f"{msg.name} {part.location}"
                    assert separator_runs(text) == separator_runs(text, native=False), f"{msg.name} {part.location}"
                    texts += 1
                    found += len(ids)
    assert texts > 40_000 and found > 1_000_000  # the whole corpus was read, and the vocabulary found in it


_WORDS = ["miss", "the", "quarter", "we're", "q2", "10-k", "o'brien", "ceo", "Ünïcode", "plant", "a"]
_PIECES = [" ", "  ", "\r\n", ".", "-", "\u2019", "é", "\x00", "\ud800", "MISS", "The"]  # separators and capitals
_TEXT = st.lists(st.one_of(st.sampled_from(_WORDS), st.text(max_size=6), st.sampled_from(_PIECES)),
                 max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(_TEXT)
def test_any_text_reads_as_the_reference_reads_it(text: str) -> None:
    vocab = sorted({f for w in _WORDS for f in features(w.lower())} | {"miss the", "the quarter", "q0 00", "we're a"})
    ids = word_index(vocab).ids(text)
    assert ids == word_index(vocab, native=False).ids(text)
    if text.isascii():  # and what the fitter weighed (`features`)
        assert {vocab[i] for i in ids} == features(text.lower()) & set(vocab)


_SEPARATORS = ["\t", "\x0b", "\x1c", "(", ")", "[", "]", ":", "/", "\U0001f600", "\x7f"]  # and non-ASCII


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=6), st.sampled_from([*_SEPARATORS, *_PIECES])), max_size=40).map("".join))
def test_any_text_compacts_as_the_reference_compacts_it(text: str) -> None:
    assert compact_text(text) == compact_text(text, native=False)
    assert separator_runs(text) == separator_runs(text, native=False)


def test_separator_runs_map_the_compact_text_back() -> None:
    text = "Miss  the\r\n\r\nquarter -- now\n"
    starts, ends, at, removed, paragraphs = separator_runs(text)
    assert (starts, ends, at) == ([4, 9, 20], [6, 13, 24], [4, 8, 16])  # a lone line end is no run
    assert removed == [1, 4, 7] and paragraphs == [8]  # and only the blank line is a paragraph break
    assert compact_text(text) == b"Miss the quarter now "
    with pytest.raises(TypeError):
        separator_runs(b"bytes")  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([".", "!", "?", ";", '"', "'", ")", "]", " ", "x", "..", ". ", "\n"]), max_size=40)
       .map("".join))
def test_sentence_ends_are_found_as_the_reference_finds_them(text: str) -> None:
    data = text.encode()
    assert sentence_ends(data) == sentence_ends(data, native=False)


def test_sentence_ends_in_a_compact_text() -> None:
    assert sentence_ends(b'Done. "Really?" Yes;  no.) ok!') == [(4, 6), (13, 16), (19, 21), (24, 27)]
    assert sentence_ends(b"") == [] and sentence_ends(b"3.5 million.") == []
    with pytest.raises(TypeError):
        sentence_ends("text")  # type: ignore[arg-type]


def test_compact_text_separators_and_non_ascii() -> None:
    assert compact_text("Miss  the -- (Q2)\r\n\r\nquarter: caf\u00e9\ud800 ") == b"Miss the Q2 quarter caf?? "
    with pytest.raises(TypeError):
        compact_text(b"bytes")  # type: ignore[arg-type]


def test_what_counts_as_a_word() -> None:
    vocab = ["miss", "miss the", "the quarter", "we're", "q0", "k"]
    index = word_index(vocab)

    def found(text: str) -> set[str]:
        return {vocab[i] for i in index.ids(text)}

    assert found("We'RE going to MISS\r\n   the Quarter in Q2.") == {"we're", "miss", "miss the", "the quarter", "q0"}
    assert found("missed the quarters") == set()  # whole words only
    assert found("miss—the quarter") == {"miss", "miss the", "the quarter"}  # any non-token character separates
    assert found("missé the") == {"miss", "miss the"}  # so does a non-ASCII one ("é" is not a letter here)
    assert found("10-K") == {"k"} and found("") == set() and found("... \u2019 ...") == set()
    assert found("miss " * 100_000) == {"miss"}  # hostile sizes: one long run, one long token
    assert found("q" * 1_000_000 + " miss") == {"miss"}


@pytest.mark.parametrize("bad", ["Miss", "miss  the", "miss the quarter", " miss", "miss ", "", "mi-ss", "café", "q3"])
def test_a_vocabulary_entry_that_could_never_match_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not one word or a pair of words"):
        word_index(["ok", bad])


def test_a_vocabulary_entry_given_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="given twice"):
        word_index(["miss", "quarter", "miss"])
    with pytest.raises(TypeError):
        word_index(["miss", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        word_index(["miss"]).ids(b"miss")  # type: ignore[arg-type]


@pytest.mark.parametrize("native", [True, False])
def test_every_digit_reads_as_0(native: bool) -> None:
    index = word_index(["q0", "00m", "at 00"], native=native)
    assert index.ids("Q3 came in at 45, not $38M") == {0, 1, 2}
    assert index.ids("Q came in at a") == set()


def test_the_c_type_cannot_be_misused_into_a_crash() -> None:
    from regfd.scan._wordset import WordSet

    with pytest.raises(TypeError, match="not initialized"):
        WordSet.__new__(WordSet).ids("miss")
    index = WordSet(["miss"])
    with pytest.raises(TypeError, match="initialized twice"):  # another thread may be reading it
        index.__init__(["quarter"])  # type: ignore[misc]
    assert index.ids("miss the quarter") == {0} and len(index) == 1


def test_threads_read_one_index_at_once(vocabulary: list[str]) -> None:
    """The scan runs in worker threads and the C pass lets go of the GIL: one shared index, the same answers."""
    index = word_index(vocabulary)
    texts = [f"we will miss the quarter by {n} and the plant in dayton closes, {n} jobs " * (n % 50 + 1)
             for n in range(400)]
    expected = [index.ids(t) for t in texts]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(index.ids, texts)) == expected
    assert all(expected)
