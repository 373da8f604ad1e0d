"""The directory CLI against a real private redis-server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Regfd


def future(days: int = 30) -> str:
    """A date `days` ahead, as a user would type it for --until."""
    return (datetime.now(UTC) + timedelta(days=days)).date().isoformat()


def past(days: int = 3) -> str:
    """A date `days` back, which --until must refuse."""
    return (datetime.now(UTC) - timedelta(days=days)).date().isoformat()


def listed(regfd: Regfd, *group: str) -> list[dict[str, Any]]:
    """The rows of `regfd GROUP list --json`; fails the test unless it exits 0."""
    r = regfd(*group, "list", "--json")
    assert r.rc == 0, r.err
    rows: list[dict[str, Any]] = json.loads(r.out)
    return rows


# ----- registry
def test_registry_add_list_remove(regfd: Regfd) -> None:
    r = regfd("registry", "add", "Research.BANK.com.", "--category", "analyst", "--firm", "Big Bank",
              "--note", "sell side")
    assert r.rc == 0 and "research.bank.com" in r.out
    assert regfd("registry", "add", "pm@Fund.example", "--category", "money-manager").rc == 0
    rows = listed(regfd, "registry")
    assert [(e["pattern"], e["category"], e["firm"]) for e in rows] == [
        ("pm@fund.example", "money-manager", ""), ("research.bank.com", "analyst", "Big Bank")]
    assert rows[1]["added_by"] == "tester"
    human = regfd("registry", "list")
    assert "research.bank.com" in human.out and "Big Bank" in human.out
    assert regfd("registry", "remove", "RESEARCH.bank.com").rc == 0
    assert [e["pattern"] for e in listed(regfd, "registry")] == ["pm@fund.example"]


def test_registry_unicode_and_punycode_are_one_entry(regfd: Regfd) -> None:
    assert regfd("registry", "add", "bücher-invest.de", "--category", "institutional-investor").rc == 0
    assert regfd("registry", "add", "bücher-invest.de".encode("idna").decode(), "--category", "shareholder").rc == 0
    rows = listed(regfd, "registry")
    assert len(rows) == 1 and rows[0]["category"] == "shareholder"


@pytest.mark.parametrize("args,message", [
    (("registry", "add", "bank", "--category", "analyst"), "two labels"),
    (("registry", "add", "ana@@bank.com", "--category", "analyst"), "not a valid"),
    (("registry", "add", "bank.com", "--category", "journalist"), "unknown category"),
    (("registry", "remove", "nobody.example"), "no registry entry"),
])
def test_registry_refuses_bad_input_and_writes_nothing(regfd: Regfd, args: tuple[str, ...], message: str) -> None:
    r = regfd(*args)
    assert r.rc == 1
    assert message in r.err and r.err.count("\n") == 1 and "Traceback" not in r.err
    assert listed(regfd, "registry") == []
    assert json.loads(regfd("audit", "--json").out) == []


def test_registry_import_export_round_trip(regfd: Regfd, tmp_path: Path) -> None:
    src = tmp_path / "reg.csv"
    src.write_text("pattern,category,firm,note\n"
                   "bank.com,analyst,Big Bank,\n"
                   "PM@Fund.Example,money-manager,\"Fund, LLC\",\"quoted, note\"\n"
                   "\n"
                   "holders.example,shareholder,,top 10 holder\n")
    r = regfd("registry", "import", src)
    assert r.rc == 0 and "imported 3" in r.out
    exported = regfd("registry", "export").out
    again = tmp_path / "again.csv"
    again.write_text(exported)
    assert regfd("registry", "import", again, "--replace").rc == 0
    assert regfd("registry", "export").out == exported
    assert exported.splitlines()[0] == "pattern,category,firm,note"
    assert 'pm@fund.example,money-manager,"Fund, LLC","quoted, note"' in exported


def test_registry_import_is_all_or_nothing(regfd: Regfd, tmp_path: Path) -> None:
    assert regfd("registry", "add", "keep.example", "--category", "analyst").rc == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("pattern,category\nok.example,analyst\nalso-ok.example,broker-dealer\nbroken,analyst\n")
    r = regfd("registry", "import", bad, "--replace")
    assert r.rc == 1 and f"{bad}:4:" in r.err
    assert [e["pattern"] for e in listed(regfd, "registry")] == ["keep.example"]
    bad.write_text("pattern,category\nok.example,astrologer\n")
    r = regfd("registry", "import", bad)
    assert r.rc == 1 and ":2: unknown category 'astrologer'" in r.err
    bad.write_text("domain,kind\nok.example,analyst\n")
    assert regfd("registry", "import", bad).rc == 1
    assert regfd("registry", "import", tmp_path / "missing.csv").rc == 1
    assert [e["pattern"] for e in listed(regfd, "registry")] == ["keep.example"]


def test_registry_replace_drops_entries_not_in_file(regfd: Regfd, tmp_path: Path) -> None:
    assert regfd("registry", "add", "old.example", "--category", "analyst").rc == 0
    f = tmp_path / "new.csv"
    f.write_text("pattern,category\nnew.example,analyst\n")
    assert regfd("registry", "import", f).rc == 0
    assert {e["pattern"] for e in listed(regfd, "registry")} == {"old.example", "new.example"}
    assert regfd("registry", "import", f, "--replace").rc == 0
    assert [e["pattern"] for e in listed(regfd, "registry")] == ["new.example"]


def test_check_dns_warns_but_adds(regfd: Regfd) -> None:
    # No network here: the resolver either says NXDOMAIN or cannot verify; both warn.
    r = regfd("registry", "add", "no-such-domain.invalid", "--category", "analyst", "--check-dns")
    assert r.rc == 0
    assert "warning:" in r.err and "no-such-domain.invalid" in r.err
    assert [e["pattern"] for e in listed(regfd, "registry")] == ["no-such-domain.invalid"]


# ----- officers and delegates
def test_officer_add_list_remove(regfd: Regfd) -> None:
    assert regfd("officer", "add", "CEO@Allient.com", "--role", "ceo").rc == 0
    assert regfd("officer", "add", "coo@allient.com", "--role", "COO").rc == 0
    rows = listed(regfd, "officer")
    assert [(o["address"], o["role"], o["authorized"]) for o in rows] == [
        ("ceo@allient.com", "CEO", True), ("coo@allient.com", "COO", False)]
    assert regfd("officer", "remove", "coo@allient.com").rc == 0
    assert [o["address"] for o in listed(regfd, "officer")] == ["ceo@allient.com"]


@pytest.mark.parametrize("args,message", [
    (("officer", "add", "not-an-address", "--role", "CEO"), "bad address"),
    (("officer", "add", "x@allient.com", "--role", "Wizard"), "unknown role"),
    (("officer", "remove", "nobody@allient.com"), "no officer"),
])
def test_officer_refusals(regfd: Regfd, args: tuple[str, ...], message: str) -> None:
    r = regfd(*args)
    assert r.rc == 1 and message in r.err
    assert listed(regfd, "officer") == []


def test_delegate_add_list_revoke(regfd: Regfd) -> None:
    assert regfd("officer", "add", "cfo@allient.com", "--role", "CFO").rc == 0
    until = future()
    r = regfd("delegate", "add", "IR@allient.com", "--by", "cfo@allient.com", "--to", "Bank.com",
              "--to", "pm@fund.example", "--until", until, "--scope", "Q3 follow-up on public guidance")
    assert r.rc == 0, r.err
    [d] = listed(regfd, "delegate")
    assert d["address"] == "ir@allient.com" and d["by"] == "cfo@allient.com"
    assert d["to"] == ["bank.com", "pm@fund.example"] and d["status"] == "active"
    assert d["until"].startswith(until) or d["until"] > until  # end of that day in the company zone
    assert regfd("delegate", "revoke", "ir@allient.com").rc == 0
    [d] = listed(regfd, "delegate")
    assert d["status"] == "revoked" and d["revoked_by"] == "tester"
    r = regfd("delegate", "revoke", "ir@allient.com")
    assert r.rc == 1 and "already revoked" in r.err


@pytest.mark.parametrize("args,message", [
    (("delegate", "add", "ir@allient.com", "--by", "nobody@allient.com"), "not an authorized officer"),
    (("delegate", "add", "ir@allient.com", "--by", "coo@allient.com"), "not an authorized officer"),
    (("delegate", "add", "ir@allient.com", "--by", "cfo@allient.com", "--until", past()), "in the past"),
    (("delegate", "add", "ir@allient.com", "--by", "cfo@allient.com", "--until", "next tuesday"), "--until"),
    (("delegate", "add", "ir@allient.com", "--by", "cfo@allient.com", "--to", "com"), "two labels"),
    (("delegate", "add", "someone@gmail.com", "--by", "cfo@allient.com"), "not in an internal domain"),
    (("delegate", "revoke", "ghost@allient.com"), "no delegate"),
])
def test_delegate_refusals(regfd: Regfd, args: tuple[str, ...], message: str) -> None:
    assert regfd("officer", "add", "cfo@allient.com", "--role", "CFO").rc == 0
    assert regfd("officer", "add", "coo@allient.com", "--role", "COO").rc == 0
    r = regfd(*args)
    assert r.rc == 1 and message in r.err, r.err
    assert listed(regfd, "delegate") == []


# ----- exemptions
def test_exempt_add_list_remove(regfd: Regfd) -> None:
    assert regfd("exempt", "add", "lawfirm.example", "--kind", "attorney", "--note", "outside counsel").rc == 0
    assert regfd("exempt", "add", "deal@bank.com", "--kind", "nda", "--until", future(10)).rc == 0
    rows = listed(regfd, "exempt")
    assert [(e["pattern"], e["kind"], e["status"]) for e in rows] == [
        ("deal@bank.com", "nda", "active"), ("lawfirm.example", "attorney", "active")]
    assert regfd("exempt", "remove", "lawfirm.example").rc == 0
    assert [e["pattern"] for e in listed(regfd, "exempt")] == ["deal@bank.com"]


@pytest.mark.parametrize("args,message", [
    (("exempt", "add", "x.example", "--kind", "friend"), "unknown kind"),
    (("exempt", "add", "x.example", "--kind", "nda", "--until", past()), "in the past"),
    (("exempt", "remove", "x.example"), "no exemption"),
])
def test_exempt_refusals(regfd: Regfd, args: tuple[str, ...], message: str) -> None:
    r = regfd(*args)
    assert r.rc == 1 and message in r.err
    assert listed(regfd, "exempt") == []


# ----- quiet periods
def test_quiet_add_list_remove(regfd: Regfd) -> None:
    start, end = past(1), future(20)
    r = regfd("quiet", "add", start, end, "--label", "Q4 quiet period")
    assert r.rc == 0, r.err
    assert regfd("quiet", "add", future(40), future(50)).rc == 0
    rows = listed(regfd, "quiet")
    assert [(q["label"], q["status"]) for q in rows] == [("Q4 quiet period", "in force"), ("", "upcoming")]
    assert regfd("quiet", "remove", rows[0]["id"]).rc == 0
    assert len(listed(regfd, "quiet")) == 1


@pytest.mark.parametrize("args,message", [
    (("quiet", "add", future(5), future(2)), "must be after"),
    (("quiet", "add", past(10), past(5)), "in the past"),
    (("quiet", "add", "soon", future(2)), "START"),
    (("quiet", "remove", "999"), "no quiet period"),
])
def test_quiet_refusals(regfd: Regfd, args: tuple[str, ...], message: str) -> None:
    r = regfd(*args)
    assert r.rc == 1 and message in r.err
    assert listed(regfd, "quiet") == []


# ----- audit
def test_every_change_is_audited(regfd: Regfd, tmp_path: Path) -> None:
    before = datetime.now(UTC)
    assert regfd("registry", "add", "bank.com", "--category", "analyst", "--by", "alice@allient.com").rc == 0
    assert regfd("officer", "add", "ceo@allient.com", "--role", "CEO").rc == 0
    assert regfd("delegate", "add", "ir@allient.com", "--by", "ceo@allient.com").rc == 0
    assert regfd("exempt", "add", "law.example", "--kind", "attorney").rc == 0
    assert regfd("quiet", "add", past(1), future(1)).rc == 0
    f = tmp_path / "r.csv"
    f.write_text("pattern,category\nfund.example,money-manager\n")
    assert regfd("registry", "import", f).rc == 0
    assert regfd("delegate", "revoke", "ir@allient.com").rc == 0
    assert regfd("registry", "remove", "bank.com").rc == 0
    events = json.loads(regfd("audit", "--json").out)
    assert [e["action"] for e in events] == [
        "registry.add", "officer.add", "delegate.add", "exempt.add", "quiet.add", "registry.import",
        "delegate.revoke", "registry.remove"]
    assert events[0]["who"] == "alice@allient.com" and events[1]["who"] == "tester"
    assert events[0]["target"] == "bank.com" and events[0]["detail"]["category"] == "analyst"
    assert events[5]["detail"] == {"rows": 1, "replace": False}
    assert all(datetime.fromisoformat(e["at"]) >= before for e in events)
    assert json.loads(regfd("audit", "--json", "--since", future(1)).out) == []
    assert "registry.remove" in regfd("audit").out


# ----- errors at the process level: one line, no traceback
def test_usage_errors_are_one_line(regfd: Regfd) -> None:
    r = regfd.subprocess("registry", "add", "bank.com")
    assert r.rc == 2 and r.err.count("\n") == 1 and "--category" in r.err


def test_unreachable_redis_is_one_clear_line(regfd: Regfd, tmp_path: Path) -> None:
    regfd.redis_url = f"unix://{tmp_path}/nothing-here.sock"
    r = regfd.subprocess("registry", "list")
    assert r.rc == 3 and r.err.startswith("regfd: error:") and "Traceback" not in r.err
    assert r.err.count("\n") == 1


def test_bad_config_fails_with_the_key(regfd: Regfd) -> None:
    regfd.write_config(extra="[milter]\nfailure_action = \"shrug\"\n")
    r = regfd.subprocess("registry", "list")
    assert r.rc == 1 and "milter.failure_action" in r.err and r.err.count("\n") == 1
    regfd.write_config(extra="colour = \"blue\"\n")
    r = regfd.subprocess("registry", "list")
    assert r.rc == 1 and "colour: unknown key" in r.err
