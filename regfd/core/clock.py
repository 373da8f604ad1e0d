"""Instants as users type them, and as the directory stores them.

Stored instants are ISO 8601 in UTC. A user may type a date or a date-time;
a date is read in the company's time zone (config `timezone`), because
"until 31 March" means the company's 31 March, not UTC's.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def now() -> datetime:
    """Aware and in UTC, as every stored instant is."""
    return datetime.now(UTC)


def to_ms(dt: datetime) -> int:
    """Epoch milliseconds: the score of the sorted sets that schedule work, and the time of a stream id."""
    return int(dt.timestamp() * 1000)


def parse_instant(text: str, tz: ZoneInfo, *, end_of_day: bool = False) -> datetime:
    """Parse `YYYY-MM-DD` or an ISO 8601 date-time into an aware UTC datetime.

    With `end_of_day`, a bare date means the end of that day (the next
    midnight), so "--until 2027-03-31" still applies all of 31 March.
    A date-time without an offset is read in `tz`. Raises ValueError.
    """
    s = text.strip()
    if not s:
        raise ValueError("empty date")
    try:
        if len(s) == 10:
            d = date.fromisoformat(s)
            local = datetime.combine(d, time(0, 0), tzinfo=tz)
            if end_of_day:
                local = datetime.combine(d + timedelta(days=1), time(0, 0), tzinfo=tz)
            return local.astimezone(UTC)
        dt = datetime.fromisoformat(s.replace("Z", "+00:00") if s.endswith("Z") else s)
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD) or ISO 8601 date-time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return dt.astimezone(UTC)


def to_iso(dt: datetime | None) -> str:
    """The stored form (ISO 8601 in UTC); None becomes "" so optional instants fit a JSON string field."""
    return "" if dt is None else dt.astimezone(UTC).isoformat()


def from_iso(text: str | None) -> datetime | None:
    """The inverse of to_iso ("" or None give None); a stored instant without an offset is read as UTC."""
    if not text:
        return None
    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
