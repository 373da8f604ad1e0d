"""Address normalization rules, on the pure functions."""

from __future__ import annotations

import pytest

from regfd.core.address import candidates, envelope_address, normalize_address, normalize_domain, normalize_pattern


@pytest.mark.parametrize("raw,expected", [
    ("Bank.COM", "bank.com"),
    ("bank.com.", "bank.com"),
    ("  @bank.com ", "bank.com"),
    ("*.bank.com", "bank.com"),
    ("bücher.de", "xn--bcher-kva.de"),
    ("xn--bcher-kva.de", "xn--bcher-kva.de"),
    ("BÜCHER.DE.", "xn--bcher-kva.de"),
    ("ｂａｎｋ.com", "bank.com"),  # fullwidth folds under UTS 46
])
def test_domains_normalize_to_one_form(raw: str, expected: str) -> None:
    assert normalize_domain(raw) == expected


@pytest.mark.parametrize("bad", ["", "com", "bank..com", "-bank.com", "ba nk.com", "a@b.com", "bank_x.com"])
def test_bad_domains_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_domain(bad)


@pytest.mark.parametrize("raw,expected", [
    ("Ana.Lyst@Bank.COM", "ana.lyst@bank.com"),
    ("<ana@bank.com>", "ana@bank.com"),
    ("ana+q3-notes@bank.com", "ana@bank.com"),
    ("ana@bank.com.", "ana@bank.com"),
    ("ana@bücher.de", "ana@xn--bcher-kva.de"),
    ("ana@xn--bcher-kva.de", "ana@xn--bcher-kva.de"),
])
def test_addresses_normalize(raw: str, expected: str) -> None:
    assert normalize_address(raw) == expected


@pytest.mark.parametrize("bad", ["ana", "ana@", "@bank.com", "ana@@bank.com", "ana bank@bank.com", "ana@com"])
def test_bad_addresses_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_address(bad)


def test_pattern_is_address_or_domain() -> None:
    assert normalize_pattern("Ana@Bank.com") == "ana@bank.com"
    assert normalize_pattern("Research.Bank.com") == "research.bank.com"


def test_candidates_run_from_address_to_registrable_parent() -> None:
    assert candidates("eq@eq.research.bank.com") == (
        "eq@eq.research.bank.com", "eq.research.bank.com", "research.bank.com", "bank.com")


def test_envelope_address_never_raises_on_wire_garbage() -> None:
    assert envelope_address("<Weird..Local@Bank.com>") == "weird..local@bank.com"
    assert envelope_address("no-at-sign") == "no-at-sign"
    assert envelope_address("x+tag@EXAMPLE.org") == "x@example.org"
