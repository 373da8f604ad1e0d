"""What the directory accepts: valid patterns, addresses, roles, approvers, instants and periods.

Pure rules over plain values; each refusal is one line (InvalidInput), so
the command line only parses arguments and prints. The instant `at` is
passed in, never read from a clock here.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from regfd.core.address import normalize_address, normalize_pattern
from regfd.core.clock import parse_instant
from regfd.core.directory import OFFICER_ROLES, Officer, QuietPeriod, is_internal
from regfd.errors import InvalidInput


def parse_pattern(text: str) -> str:
    """An address or domain pattern, normalized, so any spelling of it matches."""
    try:
        return normalize_pattern(text)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def parse_address(text: str, what: str = "address") -> str:
    """One normalized address; `what` names it in the refusal."""
    try:
        return normalize_address(text)
    except ValueError as exc:
        raise InvalidInput(f"bad {what}: {exc}") from None


def parse_choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    """A value from a closed vocabulary (categories, kinds), case-insensitively."""
    v = value.strip().lower()
    if v not in allowed:
        raise InvalidInput(f"unknown {what} {value!r} (expected one of: {', '.join(allowed)})")
    return v


def officer_role(text: str, authorized_roles: tuple[str, ...]) -> str:
    """Any known role is accepted, and any role the configuration authorizes, even one not in OFFICER_ROLES."""
    roles = tuple(dict.fromkeys(OFFICER_ROLES + authorized_roles))
    role = text.strip().upper()
    if role not in roles:
        raise InvalidInput(f"unknown role {text!r} (expected one of: {', '.join(roles)})")
    return role


def check_delegate(address: str, internal_domains: tuple[str, ...]) -> None:
    """A delegate speaks for the company, so must be internal (when internal domains are configured)."""
    if internal_domains and not is_internal(address, internal_domains):
        raise InvalidInput(f"delegate {address} is not in an internal domain ({', '.join(internal_domains)})")


def check_approver(by: str, officer: Officer | None, authorized_roles: tuple[str, ...]) -> None:
    """Only an officer in an authorized role may authorize a delegate."""
    if officer is None or officer.role not in authorized_roles:
        raise InvalidInput(f"--by {by} is not an authorized officer ({', '.join(authorized_roles)})")


def future_instant(text: str | None, tz: ZoneInfo, what: str, at: datetime) -> datetime | None:
    """An expiry: a bare date runs through the end of that day and must be after `at`; None for no expiry."""
    if text is None:
        return None
    try:
        instant = parse_instant(text, tz, end_of_day=True)
    except ValueError as exc:
        raise InvalidInput(f"{what}: {exc}") from None
    if instant <= at:
        raise InvalidInput(f"{what} {text!r} is in the past")
    return instant


def instant(text: str, tz: ZoneInfo, what: str) -> datetime:
    """A date (midnight in `tz`) or ISO date-time; `what` names it in the refusal."""
    try:
        return parse_instant(text, tz)
    except ValueError as exc:
        raise InvalidInput(f"{what}: {exc}") from None


def check_quiet_period(start: datetime, end: datetime, start_text: str, end_text: str, at: datetime) -> None:
    """A quiet period [start, end) must not be empty, and must not be over already."""
    if end <= start:
        raise InvalidInput(f"END {end_text!r} must be after START {start_text!r}")
    if end <= at:
        raise InvalidInput(f"END {end_text!r} is in the past")


def status(until: datetime | None, revoked: datetime | None, at: datetime) -> str:
    """An authorization or exemption at `at`: revoked, expired or active."""
    if revoked is not None and revoked <= at:
        return "revoked"
    if until is not None and until <= at:
        return "expired"
    return "active"


def quiet_status(period: QuietPeriod, at: datetime) -> str:
    """A quiet period at `at`: in force, past or upcoming."""
    return "in force" if period.contains(at) else ("past" if period.end <= at else "upcoming")
