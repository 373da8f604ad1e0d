"""Builders shared by the compliance tests: a fixed instant and clock, verdicts, message facts.

Verdicts come from the real `decide` over a hand-made directory snapshot, so
a test of the records, notifications or quarantine starts from what the
milter would really have decided.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from regfd.config import Config
from regfd.core.decision import decide
from regfd.core.directory import DirectorySnapshot, Officer, QuietPeriod, RegistryEntry
from regfd.core.envelope import Envelope
from regfd.core.finding import Finding
from regfd.core.message import MessageFacts
from regfd.core.policy import Policy, load_policy_table
from regfd.core.verdict import Verdict
from regfd.store.redis_store import RedisStore

REPO = Path(__file__).resolve().parent.parent
# A Tuesday, 10:00 in New York: an ordinary trading day (the calendar is computed by rule).
T0 = datetime(2026, 11, 17, 15, 0, tzinfo=UTC)

MATERIAL = Finding("material", "earnings", "record revenue",
                   "we now expect record revenue for the quarter, well above", "body")
EMBARGO = Finding("embargo", "embargo", "draft press release", "attached is the draft press release for",
                  "attachment:pr.docx")


class FixedClock:
    """A clock the test moves by hand: no test depends on today."""

    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kw: float) -> datetime:
        """Move the clock on by timedelta(**kw) and return the new time."""
        self.t += timedelta(**kw)
        return self.t


def policy_for(config: Config) -> Policy:
    """The shipped policy table with a fixed company (allient.com; CEO and CFO authorized)."""
    return Policy(load_policy_table(REPO / "config" / "policy.toml"), ("allient.com",), ("CEO", "CFO"),
                  config.smtp.sender)


def make_verdict(config: Config, *, sender: str = "alice@allient.com", to: tuple[str, ...] = ("bob@bank.com",),
                 findings: tuple[Finding, ...] = (), officer: bool = False, quiet: bool = False,
                 at: datetime = T0, queue_id: str = "4ABCDEF123") -> Verdict:
    """A real decision (through `decide`) for alice@allient.com writing to an analyst at Big Bank."""
    snap = DirectorySnapshot(
        officer=Officer(sender, "CFO") if officer else None,
        registry={"bank.com": RegistryEntry("bank.com", "analyst", "Big Bank")},
        quiet_periods=(QuietPeriod("1", at - timedelta(days=1), at + timedelta(days=1), "Q4 quiet"),) if quiet else ())
    env = Envelope.from_raw(sender, to, queue_id=queue_id)
    return decide(env, snap, findings, at, policy_for(config))


def raw_message(sender: str = "alice@allient.com", to: str = "bob@bank.com", subject: str = "Q4 update",
                body: str = "Hi Bob,\nwe now expect record revenue for the quarter, well above consensus.\n") -> bytes:
    """The message bytes `facts_for` hands to the workflow (what `quarantine show` displays)."""
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <m1@allient.com>\r\n"
            f"Date: Tue, 17 Nov 2026 10:00:00 -0500\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}").encode()


def facts_for(verdict: Verdict, at: datetime = T0, subject: str = "Q4 update",
              host: str = "mta1.test") -> MessageFacts:
    """What the milter would have collected about the verdict's message."""
    raw = raw_message(verdict.envelope.sender, verdict.envelope.recipients[0], subject)
    return MessageFacts(at, verdict.envelope.queue_id, "<m1@allient.com>", subject, host, len(raw), raw)


def outbox_items(store: RedisStore) -> list[dict[str, Any]]:
    """Every pending notification, as stored."""
    return [json.loads(v) for v in store.r.hvals(store.k("outbox:msg"))]
