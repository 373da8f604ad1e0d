"""The message model's word pass: which of its words and word pairs a text holds.

Every scanned message pays for this pass, so it runs in C
(`regfd.scan._wordset`, built with regfd; setup.py): one hash lookup per
token and per pair of neighbouring tokens. `HyperscanWords` is the reference
it is tested against (tests/test_wordindex.py, on every text part of the
development corpus) and the fallback where the C part was not built: it joins
the tokens by single spaces and finds " word " and " word pair " with one
Hyperscan literal database. Measured on the 10 KB benchmark message
(bench/bench_scanner.py prints both): 0.12 ms with Hyperscan, whose 3.9 MB
database also evicts the evidence signals' databases from the cache; see the
README for the figures in the whole scan.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from regfd.ports import WordIndex
from regfd.scan.patternset import PatternSet

_WordSet: type[WordSet] | None
try:
    from regfd.scan._wordset import WordSet

    _WordSet = WordSet
except ImportError:  # not built (no C compiler where regfd was installed): the reference does the work
    _WordSet = None

# Token characters kept (capitals lowered, every digit read as 0), every other byte a space: in UTF-8
# every byte of a non-ASCII character is >= 128, so it separates, as any non-ASCII character does in the C pass.
_TOKEN_BYTES = bytes(c if chr(c) in "abcdefghijklmnopqrstuvwxyz'" else 48 if 48 <= c <= 57
                     else c + 32 if 65 <= c <= 90 else 32 for c in range(256))
_SPACE_RUNS = re.compile(rb"  +")


class HyperscanWords:
    """The reference: the text's tokens joined by single spaces, searched for " entry " in one Hyperscan pass."""

    def __init__(self, vocabulary: Sequence[str], cache_dir: Path | None = None) -> None:
        self.literals = PatternSet([f" {w} " for w in vocabulary], single_match=True, cache_dir=cache_dir,
                                   literal=True)

    def ids(self, text: str) -> set[int]:
        # Runs of separators made one space by `re.sub` (C, few runs): 0.027 ms on 10 KB, where
        # bytes.split() + join, building a bytes object per word, took 0.048 ms. Same bytes either way.
        words = _SPACE_RUNS.sub(b" ", text.encode("utf-8", "surrogatepass").translate(_TOKEN_BYTES)).strip(b" ")
        return self.literals.ids(b" %s " % words) if words else set()


def native_available() -> bool:
    """Whether the C word pass was built with this installation."""
    return _WordSet is not None


def word_index(vocabulary: Sequence[str], cache_dir: Path | None = None, native: bool = True) -> WordIndex:
    """The fastest `WordIndex` this installation has for `vocabulary`; `native=False` asks for the reference."""
    if native and _WordSet is not None:
        index: WordIndex = _WordSet(vocabulary)
        return index
    return HyperscanWords(vocabulary, cache_dir)
