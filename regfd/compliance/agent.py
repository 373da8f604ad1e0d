"""The quarantine agent: release and reject carried out on the MTA host that holds the message.

    agent:req:HOST      list  requests for the agent on MTA host HOST
    agent:ans:REQ       list  the agent's answer to one request (expires)
    agent:alive:HOST    string, expires: an agent for HOST is running

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

import contextlib
import json
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
from regfd.store.client import REDIS_ERRORS, dumps

if TYPE_CHECKING:
    from regfd.config import Config
    from regfd.store.redis_store import RedisStore

HEARTBEAT_TTL = 15  # seconds an agent's heartbeat lives

_CANCEL = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  return 1
end
return 0
"""


def agent_alive(store: RedisStore, host: str) -> bool:
    """Whether an agent for `host` sent a heartbeat within HEARTBEAT_TTL seconds."""
    return bool(store.r.exists(store.k(f"agent:alive:{host_key(host)}")))


def act_via_agent(quarantine: Quarantine, ref: str, action: str, by: str, reason: str,
                  timeout: float = 30.0) -> Outcome:
    """Queue the request for the MTA host's agent and wait for its answer."""
    entry = quarantine.get(ref)
    host = host_key(entry.mta_host)
    if entry.state in UNDECIDED and not agent_alive(quarantine.store, host):
        raise InvalidInput(f"no agent answered: none is running for MTA host {host!r}; is regfd milter/agent "
                           f"running on the MTA host? (on that host, --local acts directly)")
    req = quarantine.begin(entry.id, action, by, reason, via="agent")
    ans_key = quarantine.store.k(f"agent:ans:{req['req_id']}")
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            got = quarantine.store.r.blpop([ans_key], timeout=max(1, min(2, int(deadline - time.monotonic()) or 1)))
            if got:
                quarantine.store.r.delete(ans_key)
                d = json.loads(got[1])
                return Outcome(**d)
        # nobody answered: withdraw the request if no agent took it, atomically
        current = quarantine.get(entry.id)
        restored = replace(current, state=QuarantineState.HELD, request=None,
                           last_error=f"no agent answered a {action} request within {timeout:.0f}s")
        withdrawn = quarantine.store.r.register_script(_CANCEL)(
            keys=[quarantine.store.k(f"agent:req:{host}"), quarantine.store.k("quarantine")],
            args=[dumps(req), entry.id, dumps(restored.to_json())])
        if withdrawn:
            raise InvalidInput(f"no agent answered within {timeout:.0f}s; is regfd milter/agent running on the "
                               f"MTA host {host!r}? (request withdrawn, {entry.id} is still held; on that host, "
                               f"--local acts directly)")
        got = quarantine.store.r.blpop([ans_key], timeout=2)
        if got:
            return Outcome(**json.loads(got[1]))
        raise InvalidInput(f"the agent on {host!r} took the request but did not answer within {timeout:.0f}s; "
                           f"see regfd quarantine show {entry.id}")
    except REDIS_ERRORS as exc:
        raise StoreUnavailable(f"Redis is unreachable: {exc}") from exc


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
        """Tell the CLI this host has a live agent; the key lapses after HEARTBEAT_TTL seconds."""
        self.store.r.set(self.store.k(f"agent:alive:{self.host}"),
                         dumps({"worker": self.worker, "at": to_iso(utcnow())}), ex=HEARTBEAT_TTL)

    def run_once(self, wait: float = 1.0) -> Outcome | None:
        """Take at most one request (waiting up to `wait` seconds) and carry it out.

        BLPOP waits in slices of at most 2 s: the client's socket timeout must not fire first.
        """
        key = self.store.k(f"agent:req:{self.host}")
        end = time.monotonic() + wait
        while True:
            got = self.store.r.blpop([key], timeout=max(1, min(2, round(end - time.monotonic()))))
            if got:
                return self.quarantine.perform(json.loads(got[1]), self.mta, self.worker)
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
                log.warning("quarantine.agent.error", error=f"{type(exc).__name__}: {exc}")
                stop.wait(1.0)
        with contextlib.suppress(*REDIS_ERRORS):
            self.store.r.delete(self.store.k(f"agent:alive:{self.host}"))
