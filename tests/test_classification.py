"""Recipient and sender classification over a real store snapshot ."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from regfd.core.address import envelope_address
from regfd.core.directory import (
    Authorization,
    Exemption,
    Officer,
    RegistryEntry,
    classify_recipient,
    sender_class_for,
)
from regfd.store.redis_store import RedisStore

NOW = datetime.now(UTC)
INTERNAL = ("allient.com",)
ROLES = ("CEO", "CFO")
SYSTEM = "regfd@allient.com"


def rclass(store: RedisStore, address: str, at: datetime = NOW) -> tuple[str, str]:
    """(class, category) of one recipient, with the address normalized as the milter would."""
    address = envelope_address(address)  # as the milter and check do with wire addresses
    snap = store.snapshot("someone@allient.com", [address])
    rc = classify_recipient(address, snap, INTERNAL, at)
    return rc.cls, rc.category


@pytest.fixture
def directory(store: RedisStore) -> RedisStore:
    """Entries chosen for the precedence rules: nested domains, an expiring exemption, equal specificity."""
    store.registry_add(RegistryEntry("bank.com", "analyst", "Big Bank"), "t")
    store.registry_add(RegistryEntry("vip@fund.example", "money-manager"), "t")
    store.registry_add(RegistryEntry("xn--bcher-kva.de", "shareholder"), "t")
    store.exempt_add(Exemption("legal.bank.com", "attorney"), "t")  # more specific exemption under a specified parent
    store.exempt_add(Exemption("fund.example", "nda"), "t")
    store.exempt_add(Exemption("deals.bank.com", "investment-banker", NOW + timedelta(days=10)), "t")
    store.exempt_add(Exemption("audit.example", "auditor"), "t")
    store.registry_add(RegistryEntry("audit.example", "shareholder"), "t")  # equal specificity: specified wins
    return store


@pytest.mark.parametrize("address,expected", [
    ("ana@bank.com", ("specified", "analyst")),
    ("eq@eq.research.bank.com", ("specified", "analyst")),  # any parent domain
    ("ana+q3@BANK.com", ("specified", "analyst")),
    ("counsel@legal.bank.com", ("exempt", "attorney")),  # the more specific entry wins
    ("x@team.legal.bank.com", ("exempt", "attorney")),
    ("vip@fund.example", ("specified", "money-manager")),  # an address beats a domain
    ("other@fund.example", ("exempt", "nda")),
    ("partner@audit.example", ("specified", "shareholder")),  # equal specificity
    ("hans@xn--bcher-kva.de", ("specified", "shareholder")),
    ("bob@allient.com", ("internal", "")),
    ("bob@eu.allient.com", ("internal", "")),
    ("friend@gmail.com", ("other", "")),
    ("x@notbank.com", ("other", "")),  # a suffix is not a parent domain
])
def test_recipient_classes(directory: RedisStore, address: str, expected: tuple[str, str]) -> None:
    assert rclass(directory, address) == expected


def test_unicode_recipient_matches_punycode_entry(directory: RedisStore) -> None:
    assert rclass(directory, "hans@bücher.de") == ("specified", "shareholder")


def test_expired_exemption_falls_back_to_the_registry(directory: RedisStore) -> None:
    assert rclass(directory, "md@deals.bank.com") == ("exempt", "investment-banker")
    assert rclass(directory, "md@deals.bank.com", at=NOW + timedelta(days=11)) == ("specified", "analyst")


def test_snapshot_is_one_round_trip_whatever_the_recipients(store: RedisStore) -> None:
    store.round_trips = 0
    rcpts = [f"u{i}@d{i}.sub.example{i}.com" for i in range(20)]
    snap = store.snapshot("a@allient.com", rcpts)
    assert store.round_trips == 1
    assert snap.registry == {} and snap.officer is None


def test_sender_classes(store: RedisStore) -> None:
    store.officer_add(Officer("ceo@allient.com", "CEO"), "t")
    store.officer_add(Officer("coo@allient.com", "COO"), "t")
    store.delegate_add(Authorization("ir@allient.com", "ceo@allient.com", ("bank.com",), NOW + timedelta(days=5)), "t")
    store.delegate_add(Authorization("pr@allient.com", "ceo@allient.com"), "t")
    store.delegate_add(Authorization("old@allient.com", "ceo@allient.com", (), None, "", NOW - timedelta(hours=1)), "t")

    def cls(sender: str, rcpt: str, at: datetime = NOW) -> str:
        return sender_class_for(sender, rcpt, store.snapshot(sender, [rcpt]), ROLES, SYSTEM, at)

    assert cls("ceo@allient.com", "ana@bank.com") == "officer"
    assert cls("coo@allient.com", "ana@bank.com") == "employee"  # an officer, but not an authorized role
    assert cls("ir@allient.com", "ana@eq.bank.com") == "delegate"
    assert cls("ir@allient.com", "pm@fund.example") == "employee"  # outside the approved scope
    assert cls("ir@allient.com", "ana@bank.com", NOW + timedelta(days=6)) == "employee"  # expired
    assert cls("pr@allient.com", "pm@fund.example") == "delegate"  # no --to: every Specified Person
    assert cls("old@allient.com", "ana@bank.com") == "employee"  # revoked
    assert cls("bob@allient.com", "ana@bank.com") == "employee"
    assert cls(SYSTEM, "ana@bank.com") == "system"
