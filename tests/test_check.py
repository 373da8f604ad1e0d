"""`regfd check` on real .eml files against a real private redis-server (issue 4)."""

from __future__ import annotations

import json
import mailbox
from datetime import UTC, datetime, time, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import Regfd

NY = ZoneInfo("America/New_York")
BENIGN = "Hi Ana,\n\nThanks for lunch yesterday. The weather was lovely and the pasta was great.\n\nBob\n"
MATERIAL = "Hi Ana,\n\nBetween us, we will miss the quarter and the numbers look soft.\n\nBob\n"
EMBARGO = "DRAFT PRESS RELEASE - EMBARGOED UNTIL 4:05 PM ET\n\nAllient announces results.\n"


def eml(tmp: Path, body: str, name: str = "m.eml", sender: str = "bob@allient.com", to: str = "ana@bank.com",
        subject: str = "Catching up") -> Path:
    """Write a one-part message to `tmp/name`; its Message-ID comes from `name`, so each file's is distinct."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{name}@allient.com>"
    msg.set_content(body)
    path = tmp / name
    path.write_bytes(bytes(msg))
    return path


def check(regfd: Regfd, path: Path, *args: str) -> dict[str, Any]:
    """`regfd check --json` on one message; fails the test unless it exits 0."""
    r = regfd("check", path, "--json", *args)
    assert r.rc == 0, r.err
    verdict: dict[str, Any] = json.loads(r.out)
    return verdict


@pytest.fixture
def company(regfd: Regfd) -> Regfd:
    """A directory with each kind of entry: registry, officer, delegate and exemption."""
    for args in (("registry", "add", "bank.com", "--category", "analyst", "--firm", "Big Bank"),
                 ("registry", "add", "fund.example", "--category", "money-manager"),
                 ("officer", "add", "cfo@allient.com", "--role", "CFO"),
                 ("delegate", "add", "ir@allient.com", "--by", "cfo@allient.com", "--to", "bank.com"),
                 ("exempt", "add", "legal.bank.com", "--kind", "attorney")):
        r = regfd(*args)
        assert r.rc == 0, r.err
    return regfd


@pytest.mark.parametrize("sender,body,expected", [
    ("cfo@allient.com", BENIGN, "accept"),
    ("cfo@allient.com", MATERIAL, "tag"),
    ("ir@allient.com", BENIGN, "accept"),
    ("ir@allient.com", MATERIAL, "hold"),
    ("ir@allient.com", EMBARGO, "reject"),
    ("bob@allient.com", BENIGN, "tag"),
    ("bob@allient.com", MATERIAL, "hold"),
    ("bob@allient.com", EMBARGO, "reject"),
])
def test_check_outside_quiet_period(company: Regfd, tmp_path: Path, sender: str, body: str, expected: str) -> None:
    j = check(company, eml(tmp_path, body, sender=sender), "--from", sender, "--to", "ana@bank.com")
    assert j["action"] == expected
    assert j["sender"]["address"] == sender
    assert j["recipients"] == [{"address": "ana@bank.com", "class": "specified", "category": "analyst",
                                "firm": "Big Bank", "sender_class": j["recipients"][0]["sender_class"],
                                "action": expected}]
    assert isinstance(j["reasons"], list) and j["reasons"]
    for f in j["findings"]:
        assert set(f) >= {"kind", "category", "text", "location", "excerpt"}
    if body is MATERIAL:
        assert any(f["kind"] == "material" for f in j["findings"])


def test_check_human_output_and_exit_code_zero_whatever_the_action(company: Regfd, tmp_path: Path) -> None:
    r = company("check", eml(tmp_path, EMBARGO), "--from", "bob@allient.com", "--to", "ana@bank.com")
    assert r.rc == 0
    assert r.out.startswith("action: reject") and "ana@bank.com: specified analyst (Big Bank)" in r.out


def _quiet(company: Regfd, start: str, end: str) -> None:
    r = company("quiet", "add", start, end, "--label", "earnings quiet period")
    assert r.rc == 0, r.err


def test_quiet_period_boundaries_and_time_zone(company: Regfd, tmp_path: Path) -> None:
    start_day = (datetime.now(NY) + timedelta(days=10)).date()
    end_day = start_day + timedelta(days=5)
    _quiet(company, start_day.isoformat(), end_day.isoformat())
    start = datetime.combine(start_day, time(0, 0), tzinfo=NY)  # a bare date is midnight in New York
    end = datetime.combine(end_day, time(0, 0), tzinfo=NY)
    path = eml(tmp_path, BENIGN, sender="ir@allient.com")

    def action(at: datetime) -> str:
        out = check(company, path, "--from", "ir@allient.com", "--to", "ana@bank.com", "--at", at.isoformat())
        return str(out["action"])

    assert action(start - timedelta(seconds=1)) == "accept"
    assert action(start) == "hold"  # start inclusive
    assert action(end - timedelta(seconds=1)) == "hold"
    assert action(end) == "accept"  # end exclusive
    # The same instant written in UTC: midnight New York is 04:00 or 05:00 UTC, not 00:00.
    utc_midnight = datetime.combine(start_day, time(0, 0), tzinfo=UTC)
    assert action(utc_midnight) == "accept"
    assert action(start.astimezone(UTC)) == "hold"
    # --at without an offset is read in the company's zone
    naive = check(company, path, "--from", "ir@allient.com", "--to", "ana@bank.com", "--at",
                  f"{start_day.isoformat()}T00:00:00")
    assert naive["action"] == "hold" and naive["quiet_period"]["label"] == "earnings quiet period"


def test_quiet_period_rows(company: Regfd, tmp_path: Path) -> None:
    day = (datetime.now(NY) + timedelta(days=3)).date()
    _quiet(company, day.isoformat(), (day + timedelta(days=2)).isoformat())
    at = datetime.combine(day, time(12, 0), tzinfo=NY).isoformat()
    cases = [("cfo@allient.com", BENIGN, "accept"), ("cfo@allient.com", MATERIAL, "hold"),
             ("ir@allient.com", BENIGN, "hold"), ("bob@allient.com", BENIGN, "hold"),
             ("bob@allient.com", EMBARGO, "reject")]
    for sender, body, expected in cases:
        j = check(company, eml(tmp_path, body, sender=sender), "--from", sender, "--to", "ana@bank.com", "--at", at)
        assert j["action"] == expected, (sender, j["reasons"])


def test_delegate_scope_and_expiry(company: Regfd, tmp_path: Path) -> None:
    until = (datetime.now(NY) + timedelta(days=7)).date()
    assert company("delegate", "add", "pr@allient.com", "--by", "cfo@allient.com", "--to", "fund.example",
                   "--until", until.isoformat()).rc == 0
    path = eml(tmp_path, BENIGN, sender="pr@allient.com", to="pm@fund.example")
    in_scope = check(company, path, "--from", "pr@allient.com", "--to", "pm@fund.example")
    assert in_scope["action"] == "accept" and in_scope["sender"]["class"] == "delegate"
    out_of_scope = check(company, path, "--from", "pr@allient.com", "--to", "ana@bank.com")
    assert out_of_scope["action"] == "tag" and out_of_scope["sender"]["class"] == "employee"
    after = datetime.combine(until + timedelta(days=1), time(12, 0), tzinfo=NY).isoformat()
    expired = check(company, path, "--from", "pr@allient.com", "--to", "pm@fund.example", "--at", after)
    assert expired["action"] == "tag" and expired["sender"]["class"] == "employee"
    assert company("delegate", "revoke", "pr@allient.com").rc == 0
    assert check(company, path, "--from", "pr@allient.com", "--to", "pm@fund.example")["action"] == "tag"


def test_exemptions_under_specified_domains(company: Regfd, tmp_path: Path) -> None:
    path = eml(tmp_path, MATERIAL)
    # a more specific exemption under a specified parent domain
    j = check(company, path, "--from", "bob@allient.com", "--to", "counsel@legal.bank.com")
    assert j["action"] == "accept" and j["recipients"][0]["class"] == "exempt"
    # an NDA with someone at a specified domain applies until it expires
    until = (datetime.now(NY) + timedelta(days=5)).date()
    assert company("exempt", "add", "pm@fund.example", "--kind", "nda", "--until", until.isoformat()).rc == 0
    j = check(company, path, "--from", "bob@allient.com", "--to", "pm@fund.example")
    assert j["action"] == "accept" and j["recipients"][0]["category"] == "nda"
    later = datetime.combine(until + timedelta(days=2), time(9, 0), tzinfo=NY).isoformat()
    j = check(company, path, "--from", "bob@allient.com", "--to", "pm@fund.example", "--at", later)
    assert j["action"] == "hold" and j["recipients"][0]["class"] == "specified"
    # at equal specificity the registry wins: an NDA on the registered domain itself does not exempt it
    assert company("exempt", "add", "fund.example", "--kind", "nda").rc == 0
    j = check(company, path, "--from", "bob@allient.com", "--to", "other@fund.example")
    assert j["action"] == "hold" and j["recipients"][0]["class"] == "specified"


def test_bcc_only_specified_recipient_counts(company: Regfd, tmp_path: Path) -> None:
    # The headers name only a colleague; the envelope (RCPT TO) carries the analyst.
    path = eml(tmp_path, MATERIAL, to="alice@allient.com")
    j = check(company, path, "--from", "bob@allient.com", "--to", "alice@allient.com", "--to", "ana@bank.com")
    assert j["action"] == "hold"
    assert [(r["address"], r["class"]) for r in j["recipients"]] == [("alice@allient.com", "internal"),
                                                                     ("ana@bank.com", "specified")]


def test_strictest_over_recipients(company: Regfd, tmp_path: Path) -> None:
    path = eml(tmp_path, BENIGN, sender="ir@allient.com")
    j = check(company, path, "--from", "ir@allient.com", "--to", "ana@bank.com", "--to", "pm@fund.example")
    assert j["action"] == "tag"
    assert {r["address"]: r["action"] for r in j["recipients"]} == {"ana@bank.com": "accept", "pm@fund.example": "tag"}


def test_inbound_and_system_sender(company: Regfd, tmp_path: Path) -> None:
    inbound = check(company, eml(tmp_path, EMBARGO, sender="ana@bank.com", to="bob@allient.com"),
                    "--from", "ana@bank.com", "--to", "bob@allient.com")
    assert inbound["action"] == "accept" and inbound["outbound"] is False and inbound["findings"] == []
    authed = check(company, eml(tmp_path, MATERIAL, sender="bob@home.example"), "--from", "bob@home.example",
                   "--to", "ana@bank.com", "--auth", "bob")
    assert authed["action"] == "hold" and authed["outbound"] is True
    system = check(company, eml(tmp_path, EMBARGO, sender="regfd@allient.com"), "--from", "regfd@allient.com",
                   "--to", "ana@bank.com")
    assert system["action"] == "accept" and system["sender"]["class"] == "system"


def test_monitor_mode(company: Regfd, tmp_path: Path) -> None:
    company.write_config(mode="monitor")
    j = check(company, eml(tmp_path, EMBARGO), "--from", "bob@allient.com", "--to", "ana@bank.com")
    assert (j["action"], j["policy_action"], j["mode"]) == ("tag", "reject", "monitor")


def test_directory_and_mbox_batches(company: Regfd, tmp_path: Path) -> None:
    d = tmp_path / "archive"
    d.mkdir()
    eml(d, BENIGN, "1.eml")
    eml(d, MATERIAL, "2.eml")
    eml(d, EMBARGO, "3.eml")
    eml(d, BENIGN, "4.eml", to="alice@allient.com")
    r = company("check", d, "--json")
    assert r.rc == 0, r.err
    lines = [json.loads(line) for line in r.out.splitlines()]
    assert [x["action"] for x in lines[:-1]] == ["tag", "hold", "reject", "accept"]
    assert lines[0]["message"].endswith("1.eml")
    assert lines[-1] == {"summary": {"accept": 1, "tag": 1, "hold": 1, "reject": 1}, "messages": 4, "errors": 0}
    box = mailbox.mbox(str(tmp_path / "sent.mbox"))
    for f in sorted(d.iterdir()):
        box.add(f.read_bytes())
    box.flush()
    box.close()
    r = company("check", tmp_path / "sent.mbox", "--json", "--from", "bob@allient.com")
    lines = [json.loads(line) for line in r.out.splitlines()]
    assert lines[-1]["summary"] == {"accept": 1, "tag": 1, "hold": 1, "reject": 1}
    human = company("check", d)
    assert "summary: accept 1, tag 1, hold 1, reject 1; 4 messages, 0 errors" in human.out


@pytest.mark.parametrize("args,message", [
    (("--from", "not an address", "--to", "ana@bank.com"), "bad --from address"),
    (("--from", "bob@allient.com", "--to", "ana@"), "bad --to address"),
    (("--from", "bob@allient.com", "--to", "ana@bank.com", "--at", "tomorrow"), "--at"),
])
def test_check_refuses_bad_input(company: Regfd, tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    r = company("check", eml(tmp_path, BENIGN), *args)
    assert r.rc == 1 and message in r.err and r.err.count("\n") == 1


def test_check_missing_file(company: Regfd, tmp_path: Path) -> None:
    r = company("check", tmp_path / "nope.eml", "--from", "bob@allient.com", "--to", "ana@bank.com")
    assert r.rc == 1 and "no such file" in r.err


def test_check_never_accepts_when_redis_is_unreachable(company: Regfd, tmp_path: Path) -> None:
    company.redis_url = f"unix://{tmp_path}/gone.sock"
    r = company.subprocess("check", eml(tmp_path, MATERIAL), "--from", "bob@allient.com", "--to", "ana@bank.com",
                           "--json")
    assert r.rc == 3 and r.out == "" and "Redis" in r.err and "Traceback" not in r.err
