"""The New York Stock Exchange trading calendar, computed by rule.

Pure functions, no data files: the disclosure clock (disclosure.py) must work
for any year without someone updating a list. The rules are NYSE Rule 7.2's
holidays with its weekend rule:

- a holiday on a Sunday is observed the Monday after;
- a holiday on a Saturday is observed the Friday before, EXCEPT when that
  Friday ends a monthly or yearly accounting period: in practice New Year's
  Day on a Saturday is not observed at all (31 December stays a trading day,
  as on 31 Dec 2021 and 31 Dec 2027).

Holidays: New Year's Day, Martin Luther King Jr. Day (third Monday of
January, since 1998), Washington's Birthday (third Monday of February),
Good Friday (Easter Sunday - 2, Gregorian computus), Memorial Day (last
Monday of May), Juneteenth (19 June, since 2022), Independence Day (4 July),
Labor Day (first Monday of September), Thanksgiving (fourth Thursday of
November), Christmas (25 December).

Unscheduled closures (a national day of mourning, a hurricane) cannot be
computed; the few known ones are listed in `UNSCHEDULED_CLOSURES`, and a
caller may pass more. Early closes (13:00) do not move the open, so they do
not matter here.
"""

from __future__ import annotations

import functools
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
MARKET_OPEN = time(9, 30)

# Closures announced ad hoc (not computable by rule). Past facts only.
UNSCHEDULED_CLOSURES: frozenset[date] = frozenset({
    date(2012, 10, 29), date(2012, 10, 30),  # Hurricane Sandy
    date(2018, 12, 5),  # President G. H. W. Bush, day of mourning
    date(2025, 1, 9),  # President Carter, day of mourning
})

MON, TUE, WED, THU, FRI, SAT, SUN = range(7)


def easter(year: int) -> date:
    """Easter Sunday (Gregorian), by the anonymous Gregorian algorithm (Meeus/Jones/Butcher)."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    ell = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * ell) // 451
    month, day = divmod(h + ell - 7 * m + 114, 31)
    return date(year, month, day + 1)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def _last_weekday(year: int, month: int, weekday: int) -> date:
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    last = nxt - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _observed(d: date) -> date | None:
    """Saturday -> Friday before, Sunday -> Monday after (NYSE Rule 7.2)."""
    if d.weekday() == SAT:
        return d - timedelta(days=1)
    if d.weekday() == SUN:
        return d + timedelta(days=1)
    return d


@functools.lru_cache(maxsize=256)
def nyse_holidays(year: int) -> dict[date, str]:
    """The full-day closures observed in `year` (dates in that calendar year), by rule."""
    out: dict[date, str] = {}

    def add(d: date | None, name: str) -> None:
        if d is not None and d.year == year:
            out[d] = name

    new_year = date(year, 1, 1)
    if new_year.weekday() != SAT:  # Saturday: not observed (31 Dec closes a yearly accounting period)
        add(_observed(new_year), "New Year's Day")
    if year >= 1998:
        add(_nth_weekday(year, 1, MON, 3), "Martin Luther King Jr. Day")
    add(_nth_weekday(year, 2, MON, 3), "Washington's Birthday")
    add(easter(year) - timedelta(days=2), "Good Friday")
    add(_last_weekday(year, 5, MON), "Memorial Day")
    if year >= 2022:
        add(_observed(date(year, 6, 19)), "Juneteenth National Independence Day")
    add(_observed(date(year, 7, 4)), "Independence Day")
    add(_nth_weekday(year, 9, MON, 1), "Labor Day")
    add(_nth_weekday(year, 11, THU, 4), "Thanksgiving Day")
    add(_observed(date(year, 12, 25)), "Christmas Day")
    return out


def holiday_name(d: date, extra_closures: frozenset[date] = frozenset()) -> str:
    """The reason `d` is a closed weekday ('' when open or a weekend)."""
    if d in extra_closures or d in UNSCHEDULED_CLOSURES:
        return "unscheduled closure"
    return nyse_holidays(d.year).get(d, "")


def is_trading_day(d: date, extra_closures: frozenset[date] = frozenset()) -> bool:
    """A weekday that is neither an NYSE holiday nor an unscheduled or configured closure."""
    return d.weekday() < SAT and not holiday_name(d, extra_closures)


def next_trading_day(d: date, extra_closures: frozenset[date] = frozenset()) -> date:
    """The first trading day strictly after `d`."""
    n = d + timedelta(days=1)
    while not is_trading_day(n, extra_closures):
        n += timedelta(days=1)
    return n


def market_open(d: date) -> datetime:
    """09:30 New York time on `d` (aware; EST or EDT as that date has it)."""
    return datetime.combine(d, MARKET_OPEN, tzinfo=NEW_YORK)


def new_york_date(instant: datetime) -> date:
    """The calendar date in New York at `instant` (which must be aware)."""
    if instant.tzinfo is None:
        raise ValueError("instant must be timezone-aware")
    return instant.astimezone(NEW_YORK).date()
