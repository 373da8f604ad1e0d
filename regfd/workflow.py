"""What follows a decision: record, notify, quarantine bookkeeping, disclosure clock.

The milter and `regfd check` decide (policy.decide); the milter then calls
`Workflow.on_decision` before it acts at the MTA. It raises StoreUnavailable
when the record cannot be written, and the milter then answers with the
configured failure action: a communication with a Specified Person is never
delivered unrecorded.
"""

from __future__ import annotations

from typing import Protocol

from .message import MessageFacts
from .policy import Verdict


class DecisionSink(Protocol):
    def on_decision(self, verdict: Verdict, facts: MessageFacts) -> None: ...
