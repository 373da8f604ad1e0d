"""The NYSE calendar, computed by rule: checked against the published schedules of several years."""

from __future__ import annotations

from datetime import date

import pytest

from regfd.core.tradingcalendar import easter, is_trading_day, next_trading_day, nyse_holidays


@pytest.mark.parametrize("year,expected", [
    (2000, date(2000, 4, 23)), (2019, date(2019, 4, 21)), (2024, date(2024, 3, 31)),
    (2025, date(2025, 4, 20)), (2026, date(2026, 4, 5)), (2038, date(2038, 4, 25)), (2285, date(2285, 3, 22)),
])
def test_easter(year: int, expected: date) -> None:
    assert easter(year) == expected


# NYSE's published full-day closures (unscheduled ones excluded).
PUBLISHED = {
    2024: ["01-01", "01-15", "02-19", "03-29", "05-27", "06-19", "07-04", "09-02", "11-28", "12-25"],
    2025: ["01-01", "01-20", "02-17", "04-18", "05-26", "06-19", "07-04", "09-01", "11-27", "12-25"],
    2026: ["01-01", "01-19", "02-16", "04-03", "05-25", "06-19", "07-03", "09-07", "11-26", "12-25"],
    2027: ["01-01", "01-18", "02-15", "03-26", "05-31", "06-18", "07-05", "09-06", "11-25", "12-24"],
    2022: ["01-17", "02-21", "04-15", "05-30", "06-20", "07-04", "09-05", "11-24", "12-26"],
    2021: ["01-01", "01-18", "02-15", "04-02", "05-31", "07-05", "09-06", "11-25", "12-24"],
}


@pytest.mark.parametrize("year", sorted(PUBLISHED))
def test_holidays_match_published_schedule(year: int) -> None:
    assert sorted(nyse_holidays(year)) == [date.fromisoformat(f"{year}-{md}") for md in PUBLISHED[year]]


def test_new_year_on_saturday_is_not_observed_on_friday() -> None:
    # 1 Jan 2022 and 1 Jan 2028 are Saturdays: 31 Dec closes the year and stays open.
    assert is_trading_day(date(2021, 12, 31))
    assert is_trading_day(date(2027, 12, 31))
    assert date(2028, 1, 1) not in nyse_holidays(2028)


def test_other_saturday_holidays_close_the_friday_before() -> None:
    assert not is_trading_day(date(2026, 7, 3))  # 4 July 2026 is a Saturday
    assert not is_trading_day(date(2027, 6, 18))  # Juneteenth 2027 is a Saturday
    assert not is_trading_day(date(2021, 12, 24))  # Christmas 2021 is a Saturday


def test_juneteenth_only_from_2022() -> None:
    assert is_trading_day(date(2021, 6, 18))  # the Friday before a Saturday Juneteenth, before the holiday existed
    assert not is_trading_day(date(2023, 6, 19))


def test_weekends_and_next_trading_day() -> None:
    assert not is_trading_day(date(2026, 11, 21))  # Saturday
    assert next_trading_day(date(2026, 11, 25)) == date(2026, 11, 27)  # over Thanksgiving
    assert next_trading_day(date(2026, 4, 2)) == date(2026, 4, 6)  # over Good Friday and the weekend
    assert next_trading_day(date(2026, 12, 24)) == date(2026, 12, 28)  # Christmas Friday + weekend
    assert next_trading_day(date(2025, 1, 8)) == date(2025, 1, 10)  # unscheduled closure (day of mourning)
    assert next_trading_day(date(2026, 11, 17), frozenset({date(2026, 11, 18)})) == date(2026, 11, 19)
