"""The policy table: which action each (sender class, finding, quiet period) gets.

The table is data (config/policy.toml) so a company can change any row
without touching code; it is validated once at start, and an incomplete
table (a combination no row decides) refuses to load. Pure: no I/O beyond
reading the file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regfd.core.vocabulary import Action, FindingKind, SenderClass
from regfd.errors import ConfigError

# The short names other modules (and `regfd evaluate`) already import.
ACCEPT, TAG, HOLD, REJECT = Action.ACCEPT, Action.TAG, Action.HOLD, Action.REJECT
ACTIONS: tuple[Action, ...] = tuple(Action)  # in order of strictness
_RANK = {a: i for i, a in enumerate(ACTIONS)}
POLICY_SENDERS: tuple[SenderClass, ...] = (SenderClass.OFFICER, SenderClass.DELEGATE, SenderClass.EMPLOYEE)
FINDING_KINDS: tuple[str, ...] = tuple(FindingKind)
NONE, ANY = "none", "any"


def rank(action: str) -> int:
    """An action's strictness: accept 0 < tag 1 < hold 2 < reject 3."""
    return _RANK[Action(action)]


def strictest(actions: Iterable[Action]) -> Action:
    """The strictest of several actions (accept < tag < hold < reject); accept when there are none."""
    return max(actions, key=_RANK.__getitem__, default=ACCEPT)


@dataclass(frozen=True)
class Rule:
    """One row of the table; `number` and `why` travel into reasons, records and notifications."""

    senders: tuple[str, ...]
    findings: tuple[str, ...]  # finding kinds, or ("none",) or ("any",)
    quiet: str  # "yes" | "no" | "any"
    action: Action
    number: int = 0  # 1-based position in the file
    why: str = ""

    def describe(self) -> str:
        """'policy rule 7: why' — what a reviewer reads."""
        return f"policy rule {self.number}: {self.why}" if self.why else f"policy rule {self.number}"

    def matches(self, sender: str, finding: str | None, quiet: bool) -> bool:
        """`finding` is one kind present in the message, or None for a message with none."""
        if sender not in self.senders:
            return False
        if self.quiet != ANY and (self.quiet == "yes") != quiet:
            return False
        if finding is None:
            return NONE in self.findings
        return ANY in self.findings or finding in self.findings


@dataclass(frozen=True)
class PolicyTable:
    """The rows in file order."""

    rules: tuple[Rule, ...]

    def action_for(self, sender: str, kinds: frozenset[str], quiet: bool) -> tuple[Action, Rule | None]:
        """Strictest action over the rules matching each finding kind present (or "none"),
        and the first rule in file order that gives it (the one a reviewer is shown)."""
        keys: list[str | None] = [*sorted(kinds)] if kinds else [None]
        matched = [r for r in self.rules if any(r.matches(sender, k, quiet) for k in keys)]
        action = strictest(r.action for r in matched)
        return action, next((r for r in matched if r.action == action), None)


def _as_tuple(raw: dict[str, Any], where: str, key: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """A rule's key as a tuple of allowed words (TOML lets a single word stand for a list of one)."""
    v = raw.get(key)
    vals = (v,) if isinstance(v, str) else tuple(v) if isinstance(v, list) else ()
    if not vals:
        raise ConfigError(f"{where}: {key} is missing")
    for x in vals:
        if x not in allowed:
            raise ConfigError(f"{where}: unknown {key} {x!r} (expected one of {', '.join(allowed)})")
    return vals


def load_policy_table(path: Path) -> PolicyTable:
    """Read and validate; every (sender, finding, quiet) combination must be decided."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"policy {path}: cannot read: {exc}") from None
    raw_rules = data.get("rule")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise ConfigError(f"policy {path}: no [[rule]] entries")
    rules = []
    for n, raw in enumerate(raw_rules, 1):
        where = f"policy {path}: rule {n}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a table")
        unknown = set(raw) - {"sender", "finding", "quiet", "action", "why"}
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        senders = _as_tuple(raw, where, "sender", POLICY_SENDERS)
        findings = _as_tuple(raw, where, "finding", (NONE, ANY) + FINDING_KINDS)
        quiet = raw.get("quiet", ANY)
        if quiet not in ("yes", "no", ANY):
            raise ConfigError(f"{where}: unknown quiet {quiet!r} (expected yes, no or any)")
        action = raw.get("action")
        if action not in ACTIONS:
            raise ConfigError(f"{where}: unknown action {action!r} (expected one of {', '.join(ACTIONS)})")
        why = raw.get("why", "")
        if not isinstance(why, str):
            raise ConfigError(f"{where}: why must be a string")
        rules.append(Rule(senders, findings, quiet, Action(action), n, " ".join(why.split())))
    table = PolicyTable(tuple(rules))
    for sender in POLICY_SENDERS:
        for quiet_flag in (False, True):
            for kind in (None,) + FINDING_KINDS:
                if not any(r.matches(sender, kind, quiet_flag) for r in table.rules):
                    raise ConfigError(
                        f"policy {path}: no rule decides sender={sender} finding={kind or NONE} "
                        f"quiet={'yes' if quiet_flag else 'no'}"
                    )
    return table


@dataclass(frozen=True)
class Policy:
    """The policy table plus the facts about the company the decision needs."""

    table: PolicyTable
    internal_domains: tuple[str, ...]
    authorized_roles: tuple[str, ...]
    system_sender: str
    mode: str = "enforce"

    @classmethod
    def from_config(cls, config: Any) -> Policy:
        """Load the table named by the configuration (fails with one line on a bad table)."""
        return cls(load_policy_table(config.policy_file), config.internal_domains, config.authorized_roles,
                   config.smtp.sender, config.mode)


