"""The pure decision core: every row of the default policy table (config/policy.toml)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from regfd.config import DEFAULT_POLICY_FILE
from regfd.core.decision import decide
from regfd.core.directory import Authorization, DirectorySnapshot, Exemption, Officer, QuietPeriod, RegistryEntry
from regfd.core.envelope import Envelope
from regfd.core.finding import Finding
from regfd.core.policy import Policy, load_policy_table
from regfd.errors import ConfigError

AT = datetime(2030, 6, 12, 15, 0, tzinfo=UTC)  # an explicit instant: no dependence on today
QUIET = QuietPeriod("1", AT - timedelta(days=1), AT + timedelta(days=1), "Q2 quiet period")


def policy(mode: str = "enforce", path: Path = DEFAULT_POLICY_FILE) -> Policy:
    """The table at `path` for the fixed company (allient.com; CEO and CFO authorized)."""
    return Policy(load_policy_table(path), ("allient.com",), ("CEO", "CFO"), "regfd@allient.com", mode)


def finding(kind: str) -> Finding:
    """A finding of `kind` with a typical category for it."""
    return Finding(kind, {"material": "earnings", "embargo": "embargo", "non-gaap-unreconciled": "ebitda",
                          "unscannable": "encrypted-pdf"}[kind], "x", "x", "body")


SENDERS = {
    "officer": "cfo@allient.com",
    "delegate": "ir@allient.com",
    "employee": "bob@allient.com",
}


def snap(quiet: bool) -> DirectorySnapshot:
    """One snapshot with every directory relation the policy rows depend on; `quiet` adds QUIET."""
    return DirectorySnapshot(
        officer=Officer("cfo@allient.com", "CFO"),
        authorization=Authorization("ir@allient.com", "cfo@allient.com", ("bank.com",)),
        registry={"bank.com": RegistryEntry("bank.com", "analyst", "Big Bank"),
                  "fund.example": RegistryEntry("fund.example", "money-manager")},
        exemptions={"legal.bank.com": Exemption("legal.bank.com", "attorney")},
        quiet_periods=(QUIET,) if quiet else (),
    )


def sender_snap(sender: str, quiet: bool) -> DirectorySnapshot:
    """What the store returns: officer/authorization only for that sender."""
    s = snap(quiet)
    return DirectorySnapshot(
        officer=s.officer if sender == s.officer.address else None,  # type: ignore[union-attr]
        authorization=s.authorization if sender == s.authorization.address else None,  # type: ignore[union-attr]
        registry=s.registry, exemptions=s.exemptions, quiet_periods=s.quiet_periods)


# (sender class, finding kinds, quiet, expected action): the shipped policy table, row by row
TABLE = [
    ("officer", (), False, "accept"),
    ("officer", (), True, "accept"),
    ("officer", ("material",), False, "tag"),
    ("officer", ("non-gaap-unreconciled",), False, "tag"),
    ("officer", ("material",), True, "hold"),
    ("officer", ("non-gaap-unreconciled",), True, "hold"),
    ("officer", ("unscannable",), False, "tag"),  # unscannable is treated like material
    ("officer", ("unscannable",), True, "hold"),
    ("delegate", (), False, "accept"),
    ("delegate", (), True, "hold"),  # any content during a quiet period
    ("delegate", ("material",), False, "hold"),
    ("delegate", ("non-gaap-unreconciled",), False, "hold"),
    ("delegate", ("unscannable",), False, "hold"),
    ("delegate", ("material",), True, "hold"),
    ("delegate", ("embargo",), False, "reject"),
    ("delegate", ("embargo",), True, "reject"),
    ("employee", (), False, "tag"),  # an unauthorized contact
    ("employee", ("material",), False, "hold"),
    ("employee", ("non-gaap-unreconciled",), False, "hold"),
    ("employee", ("unscannable",), False, "hold"),
    ("employee", (), True, "hold"),
    ("employee", ("material",), True, "hold"),
    ("employee", ("embargo",), False, "reject"),
    ("employee", ("embargo",), True, "reject"),
    ("employee", ("material", "embargo"), False, "reject"),  # strictest over findings
]


@pytest.mark.parametrize("sender,kinds,quiet,expected", TABLE)
def test_every_row_of_the_policy_table(sender: str, kinds: tuple[str, ...], quiet: bool, expected: str) -> None:
    address = SENDERS[sender]
    env = Envelope(address, ("ana@bank.com",))
    v = decide(env, sender_snap(address, quiet), [finding(k) for k in kinds], AT, policy())
    assert v.action == expected
    assert v.classification.sender_class == sender
    assert v.recorded
    assert any(expected in r for r in v.reasons)


def test_strictest_over_specified_recipients_delegate_scope() -> None:
    # The delegate is authorized for bank.com only: towards fund.example it is an employee.
    env = Envelope("ir@allient.com", ("ana@bank.com", "pm@fund.example"))
    v = decide(env, sender_snap("ir@allient.com", False), [], AT, policy())
    by = {r.address: (r.sender_class, r.action) for r in v.specified}
    assert by == {"ana@bank.com": ("delegate", "accept"), "pm@fund.example": ("employee", "tag")}
    assert v.action == "tag"


def test_exempt_internal_and_other_recipients_never_trigger() -> None:
    env = Envelope("bob@allient.com", ("counsel@legal.bank.com", "alice@allient.com", "friend@gmail.com"))
    v = decide(env, sender_snap("bob@allient.com", True), [finding("embargo")], AT, policy())
    assert v.action == "accept" and not v.recorded
    assert [r.cls for r in v.classification.recipients] == ["exempt", "internal", "other"]


def test_inbound_mail_is_accepted_and_not_recorded() -> None:
    env = Envelope("ana@bank.com", ("bob@allient.com",))
    v = decide(env, sender_snap("ana@bank.com", True), [finding("material")], AT, policy())
    assert v.action == "accept" and not v.classification.outbound and not v.recorded


def test_authenticated_sender_from_outside_domain_is_outbound() -> None:
    env = Envelope("bob@personal.example", ("ana@bank.com",), auth="bob")
    v = decide(env, sender_snap("bob@personal.example", False), [finding("material")], AT, policy())
    assert v.classification.outbound and v.action == "hold"


def test_system_sender_is_always_accepted() -> None:
    env = Envelope("regfd@allient.com", ("ana@bank.com",))
    v = decide(env, sender_snap("regfd@allient.com", True), [finding("embargo")], AT, policy())
    assert v.action == "accept" and v.classification.sender_class == "system" and not v.recorded


def test_monitor_mode_only_tags_but_keeps_the_policy_action() -> None:
    env = Envelope("bob@allient.com", ("ana@bank.com",))
    v = decide(env, sender_snap("bob@allient.com", False), [finding("embargo")], AT, policy("monitor"))
    assert (v.action, v.policy_action) == ("tag", "reject")
    assert v.recorded and any("monitor mode" in r for r in v.reasons)
    v = decide(env, sender_snap("bob@allient.com", False), [], AT, policy("monitor"))
    assert (v.action, v.policy_action) == ("tag", "tag")


def test_header_reasons_carry_no_matched_text() -> None:
    secret = Finding("material", "earnings", "we will miss the quarter", "…we will miss the quarter…", "body")
    v = decide(Envelope("bob@allient.com", ("ana@bank.com",)), sender_snap("bob@allient.com", False), [secret], AT,
               policy())
    header = v.header_reasons()
    assert "miss" not in header and "quarter" not in header and "ana@bank.com" not in header
    assert "material:earnings" in header and "sender=employee" in header


def test_a_company_can_change_a_row(tmp_path: Path) -> None:
    text = DEFAULT_POLICY_FILE.read_text().replace(
        'sender = "employee"\nfinding = "none"\nquiet = "no"\naction = "tag"',
        'sender = "employee"\nfinding = "none"\nquiet = "no"\naction = "hold"')
    assert text != DEFAULT_POLICY_FILE.read_text()
    custom = tmp_path / "policy.toml"
    custom.write_text(text)
    v = decide(Envelope("bob@allient.com", ("ana@bank.com",)), sender_snap("bob@allient.com", False), [], AT,
               policy(path=custom))
    assert v.action == "hold"


@pytest.mark.parametrize("rule,message", [
    ('sender = "intern"\nfinding = "none"\naction = "tag"', "unknown sender 'intern'"),
    ('sender = "employee"\nfinding = "gossip"\naction = "tag"', "unknown finding 'gossip'"),
    ('sender = "employee"\nfinding = "none"\naction = "shred"', "unknown action 'shred'"),
    ('sender = "employee"\nfinding = "none"\nquiet = "maybe"\naction = "tag"', "unknown quiet 'maybe'"),
    ('sender = "employee"\nfinding = "none"\naction = "tag"\ncolour = "red"', "unknown key 'colour'"),
])
def test_bad_policy_rows_fail_at_load_with_the_rule(tmp_path: Path, rule: str, message: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(DEFAULT_POLICY_FILE.read_text() + "\n[[rule]]\n" + rule + "\n")
    with pytest.raises(ConfigError, match=message) as info:
        load_policy_table(path)
    assert "rule 11" in str(info.value)


def test_an_incomplete_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[[rule]]\nsender = "officer"\nfinding = "none"\naction = "accept"\n')
    with pytest.raises(ConfigError, match="no rule decides sender=officer finding=material"):
        load_policy_table(path)
