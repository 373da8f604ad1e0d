"""The disclosure deadline rule (see regfd/disclosure.py for the rule and why).

deadline = later of (delivery + 24 h) and (09:30 New York on the first NYSE
trading day after the delivery's New York date). Instants are explicit;
the calendar is computed by rule, so any year works.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regfd.compliance.disclosures import disclosure_deadline
from regfd.core.tradingcalendar import is_trading_day

NY = ZoneInfo("America/New_York")


def ny(s: str) -> datetime:
    """An ISO date-time read as New York wall-clock time."""
    return datetime.fromisoformat(s).replace(tzinfo=NY)


@pytest.mark.parametrize("delivered,due,why", [
    ("2026-11-17T10:00", "2026-11-18T10:00", "ordinary Tuesday: 24 hours"),
    ("2026-11-17T08:00", "2026-11-18T09:30", "before the open: the next day's open is later than 24 h"),
    ("2026-11-17T23:59", "2026-11-18T23:59", "late evening: 24 hours"),
    ("2026-11-20T15:00", "2026-11-23T09:30", "Friday afternoon: Monday's open"),
    ("2026-11-20T08:00", "2026-11-23T09:30", "Friday before the open: the weekend still intervenes"),
    ("2026-11-21T12:00", "2026-11-23T09:30", "Saturday: Monday's open"),
    ("2026-11-22T12:00", "2026-11-23T12:00", "Sunday noon: 24 h lands on Monday, after the open"),
    ("2026-11-25T14:00", "2026-11-27T09:30", "eve of Thanksgiving: Friday's open"),
    ("2026-11-24T16:00", "2026-11-25T16:00", "Tuesday before Thanksgiving: Wednesday still trades"),
    ("2026-04-02T12:00", "2026-04-06T09:30", "eve of Good Friday: Monday's open"),
    ("2026-12-24T10:00", "2026-12-28T09:30", "Christmas Eve 2026 (Christmas on Friday): Monday"),
    ("2025-12-24T11:00", "2025-12-26T09:30", "Christmas Eve 2025 (Wednesday): Friday 26th"),
    ("2021-12-30T15:00", "2021-12-31T15:00", "New Year on a Saturday: 31 Dec trades, 24 hours"),
    ("2021-12-31T15:00", "2022-01-03T09:30", "31 Dec 2021, Friday: Monday 3 Jan"),
    ("2026-01-16T17:00", "2026-01-20T09:30", "Friday before MLK day: Tuesday"),
])
def test_deadline(delivered: str, due: str, why: str) -> None:
    assert disclosure_deadline(ny(delivered)) == ny(due).astimezone(UTC), why


def test_dst_spring_forward_weekend() -> None:
    # 2026-03-08: clocks go 02:00 EST -> 03:00 EDT. Friday 15:00 EST -> Monday 09:30 EDT (13:30 UTC).
    d = disclosure_deadline(ny("2026-03-06T15:00"))
    assert d == datetime(2026, 3, 9, 13, 30, tzinfo=UTC)
    assert d.astimezone(NY).hour == 9 and d.astimezone(NY).tzname() == "EDT"
    # Sunday 10:00 EDT + 24 elapsed hours = Monday 10:00 EDT, after the open.
    assert disclosure_deadline(ny("2026-03-08T10:00")) == ny("2026-03-09T10:00")
    # Saturday 23:30 EST: 24 h later is Monday 00:30 EDT (a 23-hour Sunday), before the open.
    assert disclosure_deadline(ny("2026-03-07T23:30")) == ny("2026-03-09T09:30")


def test_dst_fall_back_weekend() -> None:
    # 2026-11-01: clocks go 02:00 EDT -> 01:00 EST. Friday 15:00 EDT -> Monday 09:30 EST (14:30 UTC).
    assert disclosure_deadline(ny("2026-10-30T15:00")) == datetime(2026, 11, 2, 14, 30, tzinfo=UTC)
    # Sunday 00:30 EDT + 24 h = Sunday 23:30 EST (a 25-hour day): Monday's open is later.
    assert disclosure_deadline(ny("2026-11-01T00:30")) == ny("2026-11-02T09:30")


def test_elapsed_24_hours_across_a_weekday_dst_free_interval_is_exact() -> None:
    d = ny("2026-03-10T11:15")
    assert disclosure_deadline(d) - d == timedelta(hours=24)


def test_naive_instant_refused() -> None:
    with pytest.raises(ValueError):
        disclosure_deadline(datetime(2026, 11, 17, 10, 0))


@settings(max_examples=400, deadline=None)
@given(st.datetimes(min_value=datetime(1999, 1, 1), max_value=datetime(2060, 12, 31), timezones=st.just(UTC)))
def test_deadline_properties(delivered: datetime) -> None:
    d = disclosure_deadline(delivered)
    assert d >= delivered + timedelta(hours=24)
    local = d.astimezone(NY)
    assert is_trading_day(local.date()), f"deadline {local} is not on a trading day"
    # either exactly 24 hours, or a market open
    assert d == delivered + timedelta(hours=24) or (local.hour, local.minute) == (9, 30)
    if (local.hour, local.minute) == (9, 30) and d != delivered + timedelta(hours=24):
        # never later than it must be: every day between the delivery date and the deadline's is closed
        start = delivered.astimezone(NY).date()
        days = (local.date() - start).days
        assert all(not is_trading_day(start + timedelta(days=i)) for i in range(1, days))


# ---------------------------------------------------------------- follow-ups through the CLI
def _open_one(store: Any, regfd: Any) -> Any:
    from regfd.compliance.executor import Workflow
    from regfd.config import load_config
    from tests.builders import MATERIAL, T0, FixedClock, facts_for, make_verdict

    config = load_config(regfd.config)
    v = make_verdict(config, officer=True, findings=(MATERIAL,))
    wf = Workflow(store, config, FixedClock(T0))
    wf.on_decision(v, facts_for(v))
    wf.follow_up()
    return wf.disclosures.list()[0]


def test_disclosures_cli_list_and_close_once(store, regfd) -> None:  # type: ignore[no-untyped-def]
    import json

    d = _open_one(store, regfd)
    rows = json.loads(regfd("disclosures", "--open", "--json").out)
    assert [r["id"] for r in rows] == [d.id] and rows[0]["state"] == "open"
    assert rows[0]["deadline"] == "2026-11-18T15:00:00+00:00"  # Tuesday 10:00 New York + 24 h
    table = regfd("disclosures").out
    assert d.id in table and "Wed 2026-11-18 10:00 EST" in table
    for args, msg in ((("--by", "nobody", "--reference", "8-K"), "--by must be an email address"),
                      (("--by", "corpsec@allient.com", "--reference", " "), "--reference must not be empty")):
        r = regfd("disclosures", "close", d.id, *args)
        assert r.rc == 1 and msg in r.err and r.err.count("\n") == 1
    r = regfd("disclosures", "close", d.id, "--by", "corpsec@allient.com", "--reference", "8-K item 7.01")
    assert r.rc == 0 and f"disclosure {d.id} closed by corpsec@allient.com" in r.out
    r = regfd("disclosures", "close", d.id, "--by", "corpsec@allient.com", "--reference", "again")
    assert r.rc == 1 and "already closed by corpsec@allient.com" in r.err
    assert json.loads(regfd("disclosures", "--open", "--json").out) == []
    [row] = json.loads(regfd("disclosures", "--json").out)
    assert row["state"] == "closed" and row["reference"] == "8-K item 7.01"
    audit = json.loads(regfd("audit", "--json").out)
    assert [(e["action"], e["who"], e["detail"]["reference"]) for e in audit] == [
        ("disclosure.close", "corpsec@allient.com", "8-K item 7.01")]
    assert regfd("disclosures", "close", "dnothing", "--by", "a@allient.com", "--reference", "x").rc == 1


def test_close_after_the_deadline_is_marked_late(store, regfd) -> None:  # type: ignore[no-untyped-def]
    import json
    from datetime import timedelta

    from regfd.compliance.disclosures import Disclosures
    from regfd.config import load_config
    from tests.builders import FixedClock

    d = _open_one(store, regfd)
    late = Disclosures(store, load_config(regfd.config), FixedClock(d.deadline + timedelta(minutes=1)))
    closed = late.close(d.id, "corpsec@allient.com", "8-K")
    assert closed.closed_at == d.deadline + timedelta(minutes=1)
    [ev] = json.loads(regfd("audit", "--json").out)
    assert ev["detail"]["late"] is True
