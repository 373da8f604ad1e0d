"""A bad lexicon file stops start-up with one line naming the file and entry."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import regex

from regfd.errors import ConfigError
from regfd.scan.lexicon import load_lexicons, pattern_to_regex
from regfd.scan.scanner import scan_text
from tests.scanner_fixtures import lexicons


def _write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "material.toml").write_text(body, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('kind = "material"\n[[entry]]\ncategory = "x"\npattern = "a <b>"\n', "material.toml entry 1: pattern 'a <b>'"),
        ('kind = "material"\n[[entry]]\npattern = "merger"\n', "material.toml entry 1: category is required"),
        ('kind = "material"\n[[entry]]\ncategory = "x"\npattern = "merger"\nseverity = "huge"\n', "entry 1: severity"),
        ('kind = "material"\n[[entry]]\ncategory = "x"\npattern = "merger"\npatern = "typo"\n', "unknown key 'patern'"),
        ('kind = "materiel"\n[[entry]]\ncategory = "x"\npattern = "merger"\n', "kind must be one of"),
        ('kind = "material"\n[[entry]]\ncategory = "x"\npattern = "(a|b"\n', "unbalanced"),
        ('kind = "material"\n[[entry]]\ncategory = "x"\npattern = "guidance"\nnear = "raise"\nwithin = 500\n', "within"),
        ('kind = "material"\n[[entry]\n', "invalid TOML"),
    ],
)
def test_bad_file_is_one_clear_line(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_lexicons(_write(tmp_path, body))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_directory_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        load_lexicons(tmp_path / "nope")
    with pytest.raises(ConfigError, match="no \\*.toml"):
        load_lexicons(tmp_path)


def test_pattern_syntax() -> None:
    import regex

    def matches(pattern: str, text: str) -> bool:
        return regex.search(pattern_to_regex(pattern), text, regex.ASCII) is not None

    assert matches("non-gaap", "nongaap measures") and matches("non-gaap", "non gaap")
    assert matches("downgrad*", "downgrading us") and not matches("downgrad*", "redowngrade")
    assert matches("we're going", "were going") and matches("we're going", "we're going")
    assert matches("we (are )?going", "we going") and matches("we (are )?going", "we are going")
    assert matches("lose the ~ contract", "lose the walmart contract")
    assert matches("miss ~2 estimates", "miss street estimates") and not matches("miss ~2 estimates", "miss a b c estimates")
    assert matches("revenue was $#", "revenue was $412.5 million")
    assert not matches("merger", "submerger")


def test_the_shipped_lexicons_load_and_cover_every_kind() -> None:
    lex = lexicons()
    assert {e.kind for e in lex.entries} == {"material", "embargo", "non-gaap", "gaap-reconciliation", "exclusion"}


def test_compiled_lexicons_are_shared_between_threads() -> None:
    lex = lexicons()
    texts = ["we got hacked", "the deal should close before we report", "nothing to see here"] * 20
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda t: [f.category for f in scan_text(t, lex)], texts))
    assert results[:3] == [["cybersecurity"], ["mergers-acquisitions"], []]
    assert results == results[:3] * 20


@pytest.mark.parametrize("text", ["Guidance  will be cut", "Guidance - will be cut", "guidance will be cut", "guidance (we) will be cut"])
def test_two_separators_in_a_row_are_still_found(tmp_path: Path, text: str) -> None:
    """A pattern whose optional group leaves two separators side by side ("guidance (we )? will")
    matches a run of two separator characters, which the compact text shows as one space: the
    quick compact prefilter (prefilter_expression) must not rule such text out."""
    body = 'kind = "material"\n[[entry]]\ncategory = "guidance"\npattern = "guidance (we )? will be cut"\n'
    lex = load_lexicons(_write(tmp_path, body))
    reference = regex.search(lex.entries[0].expression, text.lower(), regex.ASCII)
    found = [f.text for f in scan_text(text, lex)]
    assert found == ([text[reference.start():reference.end()]] if reference else [])
    assert found or text == "guidance will be cut"
