"""The closed vocabularies regfd decides and records with.

Each is a `StrEnum` whose values are the exact words users already see in
the policy file, the JSON, the CSV, the headers and the logs: a member
compares equal to its word and serializes as it, so typing them changed no
output. Spelling a word wrong is now a type error instead of a silent
mismatch.
"""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    """What the MTA does with a message; declared from least to most strict (policy.rank relies on it)."""

    ACCEPT = "accept"
    TAG = "tag"
    HOLD = "hold"
    REJECT = "reject"


class SenderClass(StrEnum):
    """Who is speaking, which decides the policy row; only officer, delegate and employee reach the table."""

    SYSTEM = "system"
    OFFICER = "officer"
    DELEGATE = "delegate"
    EMPLOYEE = "employee"
    EXTERNAL = "external"


class RecipientKind(StrEnum):
    """Who is listening: only a Specified Person makes a message matter to Regulation FD."""

    SPECIFIED = "specified"
    EXEMPT = "exempt"
    INTERNAL = "internal"
    OTHER = "other"


class FindingKind(StrEnum):
    """Why the content matters; the policy table has a row for each, so a new kind needs new rows."""

    MATERIAL = "material"
    EMBARGO = "embargo"
    NON_GAAP_UNRECONCILED = "non-gaap-unreconciled"
    UNSCANNABLE = "unscannable"


class QuarantineState(StrEnum):
    """Where a held message is in its one-time review; the -ing states mean an MTA action is under way."""

    HELD = "held"
    RELEASING = "releasing"
    REJECTING = "rejecting"
    RELEASED = "released"
    REJECTED = "rejected"


class Review(StrEnum):
    """What a reviewer may do to a held message (exactly once)."""

    RELEASE = "release"
    REJECT = "reject"
