"""The quarantine agent: release and reject carried out on the MTA host that holds the message.

Requests, answers and heartbeats travel through the store
(store/quarantine_store.py: one request list per MTA host, one answer list
per request, one expiring heartbeat per host).

WHERE postsuper RUNS. The hold queue lives on the MTA host that received the
message (`mta_host`), but `regfd quarantine release` may run anywhere that
reaches Redis. So by default the CLI writes a request for that host and
waits for its answer (`act_via_agent`); `QuarantineAgent` (a thread of
`regfd milter`, or `regfd agent`) on the MTA host runs postsuper and answers.
If no agent for that host is alive (no heartbeat), the CLI says so at once;
if one is alive but does not take the request within the timeout, the
request is withdrawn atomically and the entry goes back to `held`. On the
MTA host itself, `--local` acts directly with the same state machine
(explicit rather than automatic: guessing "this is the MTA host" wrong would
run postsuper against the wrong queue). The transitions themselves are the
state machine's (quarantine.py).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from regfd.compliance.quarantine import UNDECIDED, Outcome, Quarantine, host_key
from regfd.core.clock import now as utcnow
from regfd.core.clock import to_iso
from regfd.core.vocabulary import QuarantineState
from regfd.errors import InvalidInput, StoreUnavailable
from regfd.ports import MtaQueue

if TYPE_CHECKING:
    from regfd.config import Config
    from regfd.store.redis_store import RedisStore

HEARTBEAT_TTL = 15  # seconds an agent's heartbeat lives


def agent_alive(store: RedisStore, host: str) -> bool:
    """Whether an agent for `host` sent a heartbeat within HEARTBEAT_TTL seconds."""
    return store.quarantine.agent_alive(host_key(host))


def act_via_agent(quarantine: Quarantine, ref: str, action: str, by: str, reason: str,
                  timeout: float = 30.0, note: str = "") -> Outcome:
    """Queue the request for the MTA host's agent and wait for its answer (`note`: see Quarantine.begin)."""
    kept = quarantine.kept
    entry = quarantine.get(ref)
    host = host_key(entry.mta_host)
    if entry.state in UNDECIDED and not kept.agent_alive(host):
        raise InvalidInput(f"no agent answered: none is running for MTA host {host!r}; is regfd milter/agent "
                           f"running on the MTA host? (on that host, --local acts directly)")
    req = quarantine.begin(entry.id, action, by, reason, via="agent", note=note)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = kept.wait_answer(req["req_id"], int(deadline - time.monotonic()) or 1)
        if got:
            return Outcome(**got)
    # nobody answered: withdraw the request if no agent took it, atomically
    current = quarantine.get(entry.id)
    restored = replace(current, state=QuarantineState.HELD, request=None,
                       last_error=f"no agent answered a {action} request within {timeout:.0f}s")
    if kept.withdraw(host, req, entry.id, restored.to_json()):
        raise InvalidInput(f"no agent answered within {timeout:.0f}s; is regfd milter/agent running on the "
                           f"MTA host {host!r}? (request withdrawn, {entry.id} is still held; on that host, "
                           f"--local acts directly)")
    got = kept.wait_answer(req["req_id"], 2)
    if got:
        return Outcome(**got)
    raise InvalidInput(f"the agent on {host!r} took the request but did not answer within {timeout:.0f}s; "
                       f"see regfd quarantine show {entry.id}")


class QuarantineAgent:
    """Runs postsuper on the MTA host for requests written by `regfd quarantine release|reject` anywhere.

    `host` must be the name the milter puts in MessageFacts.mta_host for
    this MTA (compared case-insensitively). Several agents for one host may
    run: BLPOP hands each request to one of them, and the state machine makes
    a repeated request harmless.
    """

    def __init__(self, store: RedisStore, config: Config, mta: MtaQueue, host: str,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.quarantine = Quarantine(store, config, clock)
        self.store = store
        self.mta = mta
        self.host = host_key(host)
        self.worker = f"agent:{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"

    def heartbeat(self) -> None:
        """Tell the CLI this host has a live agent; the heartbeat lapses after HEARTBEAT_TTL seconds."""
        self.store.quarantine.heartbeat(self.host, {"worker": self.worker, "at": to_iso(utcnow())}, HEARTBEAT_TTL)

    def run_once(self, wait: float = 1.0) -> Outcome | None:
        """Take at most one request (waiting up to `wait` seconds) and carry it out.

        BLPOP waits in slices of at most 2 s: the client's socket timeout must not fire first.
        """
        end = time.monotonic() + wait
        while True:
            req = self.store.quarantine.next_request(self.host, round(end - time.monotonic()))
            if req is not None:
                return self.quarantine.perform(req, self.mta, self.worker)
            if time.monotonic() >= end:
                return None

    def run_forever(self, stop: threading.Event, log: Any = None) -> None:
        """Serve requests until `stop` is set; `log` is a structlog-style logger (default: regfd.agent)."""
        if log is None:
            import structlog

            log = structlog.get_logger("regfd.agent")
        last_beat = 0.0
        while not stop.is_set():
            try:
                if time.monotonic() - last_beat > HEARTBEAT_TTL / 3:
                    self.heartbeat()
                    last_beat = time.monotonic()
                out = self.run_once(1.0)
                if out is not None:  # a failure is the MTA's words, at error: someone must act on it
                    (log.info if out.ok else log.error)("quarantine.agent", id=out.id, action=out.action, ok=out.ok,
                                                        state=out.state, message=out.message)
            except Exception as exc:  # Redis down: keep trying, never die
                said = exc.__cause__ if isinstance(exc, StoreUnavailable) and exc.__cause__ else exc  # Redis's words
                log.warning("quarantine.agent.error", error=f"{type(said).__name__}: {said}")
                stop.wait(1.0)
        self.store.quarantine.agent_gone(self.host)
