"""Sendmail's quarantine, as the quarantine workflow sees it: release or delete one job.

`SendmailQueue` implements `MtaQueue` (regfd.ports) for Sendmail 8.13+.
When the milter calls `quarantine(reason)`, Sendmail keeps the job in its
queue directory but renames its control file from `qf<ID>` to `hf<ID>` and
writes the reason on a `q` line; `mailq -qQ` (`sendmail -bp -qQ`) lists such
jobs, and queue runs skip them. There is no separate quarantine directory.

- release: `sendmail [-C CF] -qQ -qI<ID> -Q` removes the quarantine reason
  (sendmail(8): "-Q[reason] ... unquarantine quarantined queue items if no
  reason is given"; `hf<ID>` becomes `qf<ID>` again), then
  `sendmail [-C CF] -qI<ID>` starts a queue run for that job now (it forks; the
  delivery goes on in the background, like `postqueue -i`). Queue runs do not
  pass the message through milters again.
- delete: Sendmail has no `postsuper -d`. Like contrib/qtool.pl, regfd takes
  the lock Sendmail takes on a control file (flock(2) on Linux and the BSDs:
  an exclusive, non-blocking lock on `hf<ID>`), checks the locked file is still
  the quarantined job, then unlinks `hf<ID>`, `df<ID>` and any `xf<ID>`. Only
  a quarantined job (`hf`) is ever deleted: a job in the normal queue (`qf`,
  released or never held) is refused.

`-qI` matches a SUBSTRING of the queue id, so a release first checks that the
id names exactly one quarantined job (no other quarantined id contains it).
`sendmail -Q` exits 0 whether or not it matched anything, so success is read
from the queue directory (the `hf` file gone), never assumed.

The queue directory is `[sendmail] queue_directory`, else the config file's
`O QueueDirectory=` (a trailing `*` means several queue directories, each
possibly with `qf/` and `df/` subdirectories), else /var/spool/mqueue.
The user running this needs Sendmail's queue privileges (root on Debian).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
from pathlib import Path

from regfd.mta.postfix import one_line, run_mta_command
from regfd.ports import MtaResult

# Sendmail 8.x ids: 8 letters/digits (time, sequence) then the pid (6+ digits),
# "6APElLxO003068"; older and patched builds differ a little, hence the range.
_QUEUE_ID = re.compile(r"^[0-9A-Za-z]{8,24}$")
_QUEUE_DIR_LINE = re.compile(r"^O\s*QueueDirectory\s*=\s*(\S+)\s*$", re.MULTILINE)
DEFAULT_CONFIG_FILE = "/etc/mail/sendmail.cf"
DEFAULT_QUEUE_DIRECTORY = "/var/spool/mqueue"
# mailq: "6APElLxO003068*      6 Wed Nov 25 14:47 <a@b>" then "     QUARANTINE: reason"
_MAILQ_JOB = re.compile(r"^([0-9A-Za-z]{8,24})[*X-]?\s+\d+\s")
_MAILQ_QUARANTINE = re.compile(r"^\s+QUARANTINE:\s*(.*)$")


class SendmailQueue:
    """The MtaQueue adapter for Sendmail 8.13+ (see the module docstring for how each action works)."""

    def __init__(self, binary: str = "/usr/sbin/sendmail", config_file: str = "", queue_directory: str = "",
                 timeout: float = 60.0) -> None:
        self.binary = binary
        self.config_file = config_file
        self.queue_directory = queue_directory
        self.timeout = timeout

    # ------------------------------------------------------------ plumbing
    def _cmd(self, *args: str) -> list[str]:
        c = ["-C", self.config_file] if self.config_file else []
        return [self.binary, *c, *args]

    def _run(self, argv: list[str]) -> tuple[int, str]:
        return run_mta_command(argv, self.timeout, "Sendmail")

    @staticmethod
    def _check(queue_id: str) -> MtaResult | None:
        if not _QUEUE_ID.match(queue_id or ""):
            return MtaResult(False, f"invalid Sendmail queue id {queue_id!r}")
        return None

    def queue_dirs(self) -> list[Path]:
        """Every queue directory (QueueDirectory may end in `*`: /var/spool/mqueue/q*)."""
        spec = self.queue_directory
        if not spec:
            try:
                cf = Path(self.config_file or DEFAULT_CONFIG_FILE).read_text(errors="replace")
                m = _QUEUE_DIR_LINE.search(cf)
                spec = m.group(1) if m else ""
            except OSError:
                spec = ""
        spec = spec or DEFAULT_QUEUE_DIRECTORY
        if spec.endswith("*"):
            base = Path(spec).parent
            prefix = Path(spec).name[:-1]
            try:
                return sorted(p for p in base.iterdir() if p.name.startswith(prefix) and p.is_dir())
            except OSError:
                return []
        return [Path(spec)]

    def _files(self, letter: str, queue_id: str) -> list[Path]:
        """Existing `<letter>f<ID>` files: in a queue directory or its qf/ (df/, xf/) subdirectory."""
        name = f"{letter}f{queue_id}"
        sub = "qf" if letter in ("q", "h") else f"{letter}f"
        found = []
        for d in self.queue_dirs():
            for p in (d / sub / name, d / name):
                if p.is_file():
                    found.append(p)
        return found

    def _quarantined_ids(self) -> set[str]:
        ids: set[str] = set()
        for d in self.queue_dirs():
            for sub in (d / "qf", d):
                try:
                    ids.update(n[2:] for n in os.listdir(sub) if n.startswith("hf"))
                except OSError:
                    continue
        return ids

    def _not_quarantined(self, queue_id: str) -> MtaResult:
        if self._files("q", queue_id):
            return MtaResult(False, f"{queue_id} is not quarantined (it is in Sendmail's normal queue): nothing done")
        dirs = ", ".join(str(d) for d in self.queue_dirs()) or "no queue directory"
        return MtaResult(False, f"{queue_id} is not in Sendmail's quarantine ({dirs}): nothing done")

    # ------------------------------------------------------------ what the quarantine calls
    def quarantined(self) -> dict[str, str]:
        """`mailq -qQ`: quarantined queue id -> reason (raises RuntimeError when sendmail fails)."""
        rc, out = self._run(self._cmd("-bp", "-qQ"))
        if rc != 0:
            raise RuntimeError(f"sendmail -bp -qQ failed: {one_line(out) or f'exit {rc}'}")
        jobs: dict[str, str] = {}
        current = ""
        for line in out.splitlines():
            m = _MAILQ_JOB.match(line)
            if m:
                current = m.group(1)
                jobs[current] = ""
                continue
            q = _MAILQ_QUARANTINE.match(line)
            if q and current:
                jobs[current] = q.group(1).strip()
        return jobs

    def can_act(self) -> str:
        """Sendmail's queue files belong to root (or its queue owner): without write access nothing can be done."""
        dirs = self.queue_dirs()
        if not dirs:
            return "no Sendmail queue directory found"
        denied = [str(d) for d in dirs if not os.access(d, os.W_OK)]
        return f"cannot write Sendmail's queue directory {', '.join(denied)}" if denied else ""

    def release(self, queue_id: str) -> MtaResult:
        """Unquarantine and start delivery now; refused when the id is a substring of another held job's."""
        bad = self._check(queue_id)
        if bad:
            return bad
        if not self._files("h", queue_id):
            return self._not_quarantined(queue_id)
        others = sorted(i for i in self._quarantined_ids() if queue_id in i and i != queue_id)
        if others:  # -qI matches substrings: never unquarantine a job compliance did not decide on
            return MtaResult(False, f"{queue_id} also matches quarantined job(s) {', '.join(others)}; nothing done")
        rc, out = self._run(self._cmd("-qQ", f"-qI{queue_id}", "-Q"))
        if rc != 0:
            return MtaResult(False, f"sendmail -qQ -qI{queue_id} -Q failed: {one_line(out) or f'exit {rc}'}")
        if self._files("h", queue_id):
            why = one_line(out) or f"exit {rc}"
            return MtaResult(False, f"sendmail left {queue_id} in quarantine (locked by a queue run? try again): {why}")
        rc2, out2 = self._run(self._cmd(f"-qI{queue_id}"))
        run = ("delivery started now" if rc2 == 0
               else f"sendmail -qI{queue_id} failed ({one_line(out2) or f'exit {rc2}'}); "
                    "it will go at the next queue run")
        return MtaResult(True, f"released {queue_id} from Sendmail's quarantine; {run}")

    def delete(self, queue_id: str) -> MtaResult:
        """Only a quarantined job, under Sendmail's own lock; a released or running job is refused."""
        bad = self._check(queue_id)
        if bad:
            return bad
        hfs = self._files("h", queue_id)
        if not hfs:
            return self._not_quarantined(queue_id)
        hf = hfs[0]
        try:
            fd = os.open(hf, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return self._not_quarantined(queue_id)
        except OSError as exc:
            return MtaResult(False, f"cannot open {hf}: {exc.strerror}")
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return MtaResult(False, f"{queue_id} is locked by a running sendmail; nothing done, try again")
                return MtaResult(False, f"cannot lock {hf}: {exc.strerror}")
            try:
                same = os.stat(hf, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # renamed (released) or removed between our open and our lock
                return MtaResult(False, f"{queue_id} left the quarantine meanwhile; nothing done")
            os.unlink(hf)
            removed = [hf.name]
            for letter in ("d", "x"):
                for p in self._files(letter, queue_id):
                    try:
                        p.unlink()
                        removed.append(p.name)
                    except FileNotFoundError:
                        pass
        except OSError as exc:
            return MtaResult(False, f"deleting {queue_id} failed: {exc.strerror} ({getattr(exc, 'filename', '')})")
        finally:
            os.close(fd)
        left = [p.name for letter in ("h", "q", "d") for p in self._files(letter, queue_id)]
        if left:
            return MtaResult(False, f"{queue_id}: {', '.join(left)} still in the queue "
                                    f"after deleting {', '.join(removed)}")
        return MtaResult(True, f"deleted {queue_id} from Sendmail's quarantine ({', '.join(removed)})")
