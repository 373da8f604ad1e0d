"""Compiled Hyperscan databases are cached on disk, keyed by the expressions."""

from __future__ import annotations

import shutil
from pathlib import Path

from regfd.scan.lexicon import Lexicons, load_lexicons
from regfd.scan.wordindex import HyperscanWords, native_available
from tests.scanner_fixtures import LEXICON_DIR

TEXT = "Between us, we're going to miss the quarter. Adjusted EBITDA came in at $45 million."


def _hits(lex: Lexicons) -> list[tuple[str, int, int]]:
    return [(h.entry.origin, h.start, h.end) for h in lex.find(TEXT.lower())]


def test_second_load_comes_from_the_cache_and_matches_the_same(tmp_path: Path) -> None:
    first = load_lexicons(LEXICON_DIR, cache_dir=tmp_path)
    assert not first.matcher.from_cache
    # phrases (all / one per pattern / the compact prefilter), topics, signals counted near a topic, signals
    # counted in the whole part, and the message model's vocabulary where its C word pass is not built
    assert len(list(tmp_path.glob("hs-*.db"))) == (6 if native_available() else 7)
    second = load_lexicons(LEXICON_DIR, cache_dir=tmp_path)
    assert second.matcher.from_cache and second.presence.from_cache
    assert second.prefilter is not None and second.prefilter.from_cache
    assert second.signals is not None and second.signals.topics.from_cache and second.signals.modifiers.from_cache
    assert second.signals.wide is not None and second.signals.wide.from_cache
    assert second.message_model is not None
    index = second.message_model.index
    if native_available():
        assert not isinstance(index, HyperscanWords)  # the C pass: no database to cache
    else:
        assert isinstance(index, HyperscanWords) and index.literals.from_cache
    assert _hits(second) == _hits(first) != []
    assert _hits(load_lexicons(LEXICON_DIR, cache_dir=None)) == _hits(first)


def test_corrupt_cache_file_is_recompiled_and_replaced(tmp_path: Path) -> None:
    load_lexicons(LEXICON_DIR, cache_dir=tmp_path)
    for f in tmp_path.glob("hs-*.db"):
        f.write_bytes(f.read_bytes()[:100])
    lex = load_lexicons(LEXICON_DIR, cache_dir=tmp_path)
    assert not lex.matcher.from_cache
    assert _hits(lex) != []
    assert load_lexicons(LEXICON_DIR, cache_dir=tmp_path).matcher.from_cache


def test_edited_lexicon_does_not_load_the_old_database(tmp_path: Path) -> None:
    lexdir = tmp_path / "lexicons"
    shutil.copytree(LEXICON_DIR, lexdir)
    cache = tmp_path / "cache"
    load_lexicons(lexdir, cache_dir=cache)
    embargo = lexdir / "embargo.toml"
    embargo.write_text(embargo.read_text() + '\n[[entry]]\npattern = "purple elephant memo"\n')
    lex = load_lexicons(lexdir, cache_dir=cache)
    assert not lex.matcher.from_cache
    assert [h.entry.pattern for h in lex.find("see the purple elephant memo")] == ["purple elephant memo"]


def test_unwritable_cache_dir_is_ignored(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    lex = load_lexicons(LEXICON_DIR, cache_dir=blocker / "cache")
    assert _hits(lex) != []
