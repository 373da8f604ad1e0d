"""The MTA's hold queue, as the quarantine sees it: release or delete one message.

`MtaQueue` (regfd.ports) is the port (tests substitute a fake); `PostfixQueue` is the
adapter over postsuper/postqueue (both accept `-c DIR`, so one host can run several instances):

- release: `postsuper [-c DIR] -H QID hold` moves the message from hold to
  deferred, then `postqueue [-c DIR] -i QID` schedules it now (otherwise it
  waits for the next queue run). Released mail is not passed through the
  milter again.
- delete: `postsuper [-c DIR] -d QID hold` (restricted to the hold queue, so a
  message already released can never be deleted by mistake).

postsuper exits 0 even when the id matched nothing; whether it acted is read
from its summary line ("Released from hold: 1 message", "Deleted: 1 message").
"""

from __future__ import annotations

import os
import re
import subprocess

from regfd.ports import MtaResult

_QUEUE_ID = re.compile(r"^[0-9A-Za-z]{5,32}$")
_RELEASED = re.compile(r"Released from hold: (\d+) message", re.IGNORECASE)
_DELETED = re.compile(r"Deleted: (\d+) message", re.IGNORECASE)


def count_from(output: str, pattern: re.Pattern[str]) -> int:
    """Sum the counts in postsuper's summary lines (0 when it printed none: nothing matched)."""
    return sum(int(m.group(1)) for m in pattern.finditer(output))


def run_mta_command(argv: list[str], timeout: float, mta: str) -> tuple[int, str]:
    """(exit code, stdout + stderr) of an MTA queue command; never raises.

    A missing binary is 127 and no answer within `timeout` is 124, each with
    a line saying so, so the caller reports it like any other failure.
    """
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return 127, f"{argv[0]}: not found (is {mta} installed on this host?)"
    except subprocess.TimeoutExpired:
        return 124, f"{argv[0]}: no answer within {timeout:.0f}s"
    return p.returncode, (p.stdout or "") + (p.stderr or "")


def one_line(text: str) -> str:
    """Command output folded to one line of at most 500 characters, for a result message or the audit trail."""
    return " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())[:500]


class PostfixQueue:
    """The MtaQueue adapter for Postfix; `config_directory` selects an instance (`-c DIR`)."""

    def __init__(self, config_directory: str = "", postsuper: str = "postsuper", postqueue: str = "postqueue",
                 timeout: float = 60.0) -> None:
        self.config_directory = config_directory
        self.postsuper = postsuper
        self.postqueue = postqueue
        self.timeout = timeout

    def _cmd(self, binary: str, *args: str) -> list[str]:
        c = ["-c", self.config_directory] if self.config_directory else []
        return [binary, *c, *args]

    def _run(self, argv: list[str]) -> tuple[int, str]:
        return run_mta_command(argv, self.timeout, "Postfix")

    @staticmethod
    def _check(queue_id: str) -> MtaResult | None:
        if not _QUEUE_ID.match(queue_id):
            return MtaResult(False, f"invalid Postfix queue id {queue_id!r}")
        return None

    def can_act(self) -> str:
        """postsuper is reserved for the superuser: an agent without root could only fail."""
        if os.geteuid() != 0:
            return f"postsuper is reserved for the superuser and this process runs as uid {os.geteuid()}"
        return ""

    def myhostname(self) -> str:
        """Postfix's `myhostname`: the `j` macro the milter records as MessageFacts.mta_host ('' if unknown)."""
        rc, out = self._run(self._cmd("postconf", "-h", "myhostname"))
        return out.strip().splitlines()[0].strip() if rc == 0 and out.strip() else ""

    def release(self, queue_id: str) -> MtaResult:
        """From hold to delivery now; a failed `postqueue -i` still succeeds (the next queue run sends it)."""
        bad = self._check(queue_id)
        if bad:
            return bad
        rc, out = self._run(self._cmd(self.postsuper, "-H", queue_id, "hold"))
        n = count_from(out, _RELEASED)
        if rc != 0:
            return MtaResult(False, f"postsuper -H {queue_id} failed: {one_line(out) or f'exit {rc}'}")
        if n == 0:
            return MtaResult(False, f"postsuper released nothing: {queue_id} is not in the hold queue")
        rc2, out2 = self._run(self._cmd(self.postqueue, "-i", queue_id))
        flush = ("delivery scheduled now" if rc2 == 0
                 else f"postqueue -i failed ({one_line(out2)}); it will go at the next queue run")
        return MtaResult(True, f"released {queue_id} from hold; {flush}")

    def delete(self, queue_id: str) -> MtaResult:
        """Only from the hold queue, so a message already released is never deleted."""
        bad = self._check(queue_id)
        if bad:
            return bad
        rc, out = self._run(self._cmd(self.postsuper, "-d", queue_id, "hold"))
        n = count_from(out, _DELETED)
        if rc != 0:
            return MtaResult(False, f"postsuper -d {queue_id} failed: {one_line(out) or f'exit {rc}'}")
        if n == 0:
            return MtaResult(False, f"postsuper deleted nothing: {queue_id} is not in the hold queue")
        return MtaResult(True, f"deleted {queue_id} from the hold queue")
