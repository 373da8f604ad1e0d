"""The company's own names live in lexicons/company.toml; lexicon entries name them by placeholder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from regfd.errors import ConfigError
from regfd.scan.company import load_company
from regfd.scan.evidence import Compact
from regfd.scan.lexicon import Lexicons, load_lexicons
from regfd.scan.normalize import normalize
from tests.scanner_fixtures import LEXICON_DIR, copy_lexicons

OTHER = """kind = "company"
names = ["zorbex", "zorbex industries"]
tickers = ["zrbx"]
people = ["priyanka"]
sites = ["ir.zorbex.example"]
"""


def _topics(lex: Lexicons, text: str) -> list[str]:
    """The topic categories whose signal patterns find something in `text` (what scores a sentence)."""
    assert lex.signals is not None
    found, _ = lex.signals.topics.matches(Compact(normalize(text).text).data)
    return sorted({lex.signals.topic_categories[pid] for pid, _ in found})


def _groups(lex: Lexicons, text: str) -> list[str]:
    """The whole-part signal groups found in `text` (published, public, ...)."""
    assert lex.signals is not None and lex.signals.wide is not None
    found, _ = lex.signals.wide.matches(Compact(normalize(text).text).data)
    return sorted({lex.signals.modifier_groups[pid + lex.signals.modifiers.size] for pid, _ in found})


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One compiled-database cache for both lexicon sets: only the signals' databases differ."""
    return tmp_path_factory.mktemp("hs-cache")


@pytest.fixture(scope="module")
def shipped(cache: Path) -> Lexicons:
    return load_lexicons(LEXICON_DIR, cache_dir=cache)


@pytest.fixture(scope="module")
def other_company(tmp_path_factory: pytest.TempPathFactory, shipped: Lexicons, cache: Path) -> Lexicons:
    d = copy_lexicons(tmp_path_factory.mktemp("lexicons"))
    (d / "company.toml").write_text(OTHER, encoding="utf-8")
    return load_lexicons(d, cache_dir=cache)


def test_one_file_names_the_company_for_every_entry(shipped: Lexicons, other_company: Lexicons) -> None:
    """Another company's file: its officer, ticker and site count where Allient's did, and Allient's no longer."""
    assert _topics(shipped, "They told me when Marcus goes") == ["management-changes"]
    assert _topics(other_company, "They told me when Marcus goes") == []
    assert _topics(other_company, "They told me when Priyanka goes") == ["management-changes"]
    assert "published" in _groups(shipped, "CLEVELAND (Nasdaq: ALNT) today said")
    assert "published" not in _groups(other_company, "CLEVELAND (Nasdaq: ALNT) today said")
    assert "published" in _groups(other_company, "TULSA (Nasdaq: ZRBX) today said")
    assert "public" in _groups(other_company, "numbers at ir.zorbex.example")
    assert "public" not in _groups(shipped, "numbers at ir.zorbex.example")
    assert "public" in _groups(shipped, "numbers at investors.allient.com")
    assert "public" not in _groups(other_company, "numbers at investors.allient.com")


def test_the_shipped_signals_name_the_company_only_through_company_toml() -> None:
    """Nothing in the other lexicon files hard-codes the example company (the message model's weights aside)."""
    company = load_company(LEXICON_DIR / "company.toml")
    words = company.words() | {"investors.allient.com"}
    for path in LEXICON_DIR.glob("*.toml"):
        if path.name in ("company.toml", "message_model.toml", "model.toml"):
            continue
        text = "\n".join(line.split("#")[0] for line in path.read_text(encoding="utf-8").splitlines()
                         if not line.lstrip().startswith("#"))
        for w in words:
            assert not re.search(rf"(?<![\w.]){re.escape(w)}(?![\w])", text, re.IGNORECASE), (path.name, w)


@pytest.mark.parametrize("company, pattern, error", [
    (OTHER, "(we|{ceo})", r"signals\.toml entry 1: pattern '\(we\|\{ceo\}\)': unknown placeholder \{ceo\} "
                          r"\(known: \{company\}, \{ticker\}, \{people\}, \{sites\}\)"),
    (None, "(we|{company})", r"signals\.toml entry 1: pattern .*: a placeholder needs company\.toml"),
    (OTHER.replace('tickers = ["zrbx"]', "tickers = []"), "{ticker} (is|was) up",
     r"\{ticker\} is used but tickers in company\.toml is empty"),
])
def test_a_placeholder_that_cannot_be_filled_stops_loading_with_one_line(
        tmp_path: Path, company: str | None, pattern: str, error: str) -> None:
    d = copy_lexicons(tmp_path, without=("company.toml",))
    if company is not None:
        (d / "company.toml").write_text(company, encoding="utf-8")
    signals = (d / "signals.toml").read_text(encoding="utf-8")
    first = signals.index("patterns = [") + len("patterns = [")
    (d / "signals.toml").write_text(signals[:first] + f'\n  "{pattern}",' + signals[first:], encoding="utf-8")
    with pytest.raises(ConfigError, match=error) as info:
        load_lexicons(d)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("body, error", [
    ('kind = "company"\nnames = ["Allient (Inc)"]\n', r"company\.toml: names: 'Allient \(Inc\)' is not a name"),
    ('kind = "company"\nname = ["allient"]\n', r"company\.toml: unknown key 'name'"),
    ('kind = "company"\npeople = "dana"\n', r"company\.toml: people must be a list of strings"),
    ('kind = "company"\nnames = [\n', r"company\.toml: invalid TOML"),
])
def test_a_bad_company_file_stops_loading_with_one_line(tmp_path: Path, body: str, error: str) -> None:
    d = copy_lexicons(tmp_path)
    (d / "company.toml").write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError, match=error):
        load_lexicons(d)


def test_two_company_files_are_refused(tmp_path: Path) -> None:
    d = copy_lexicons(tmp_path)
    (d / "company2.toml").write_text(OTHER, encoding="utf-8")
    with pytest.raises(ConfigError, match='more than one file of kind "company"'):
        load_lexicons(d)


def test_names_are_folded_and_the_model_leaves_them_out(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(
        'kind = "company"\nnames = ["Zorbex  Industries"]\ntickers = ["ZRBX"]\nsites = ["ir.zorbex.example"]\n',
        encoding="utf-8")
    company = load_company(tmp_path / "c.toml")
    assert company.expand("({company}|we) ~2 {ticker}") == "((zorbex industries)|we) ~2 (zrbx)"
    assert company.words() == {"zorbex", "industries", "zrbx"}  # a site's words are its name, "ir", "example"
