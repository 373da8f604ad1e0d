"""A real, private Sendmail on loopback, without installing Sendmail.

Debian's sendmail-bin conflicts with postfix (both are the system MTA), so the
packages are never installed: `apt-get download` fetches sendmail-bin,
sendmail-base, sendmail-cf, m4 when missing, and the shared libraries
sendmail-bin needs that are not installed, into a cache directory
($REGFD_SENDMAIL_CACHE, default /var/cache/regfd-tests/sendmail), and
`dpkg-deb -x` unpacks them into a private prefix there. Nothing under /usr or
/etc is touched.

`SendmailInstance` builds a .cf with m4 from sendmail-cf's own templates
(OSTYPE linux, QUEUE_DIR private, DAEMON_OPTIONS on 127.0.0.1:<free port>,
SMART_HOST relay:[127.0.0.1] on the sink's port, and INPUT_MAIL_FILTER from
deploy/sendmail.mc.snippet with the test's milter socket), starts `sendmail
-bd` (no periodic queue runs: a released message goes out only because the
adapter ran the queue for it), and kills the daemon by its pid file at teardown.

Two things a private Sendmail needs on a test machine:
- the extracted binary is setgid `mail`, which makes the loader ignore
  LD_LIBRARY_PATH: the private copy has its setgid bit removed;
- Sendmail sleeps 60 s at every start when the host name has no dot and
  nothing qualifies it ("My unqualified host name (vm) unknown; sleeping for
  retry"), which is common in containers. The wrapper `bin/sendmail` runs it
  in its own UTS and mount namespaces (`unshare -m -u`) with the host name
  mta.regfd.test and a bind-mounted private /etc/hosts. Sockets and the queue
  are shared with the host (no network namespace).

Root is required (the packages, the daemon, the namespaces); otherwise the
fixture skips with the command to run.
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import signal
import smtplib
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.mta import REPO, make_mta_dir, wait_until

CACHE = Path(os.environ.get("REGFD_SENDMAIL_CACHE", "/var/cache/regfd-tests/sendmail"))
HOSTNAME = "mta.regfd.test"
PACKAGES = ("sendmail-bin", "sendmail-base", "sendmail-cf")
ROOT_CMD = "sudo .venv/bin/python -m pytest -m e2e tests/test_sendmail_queue.py   (or: sudo make test)"


def _installed(pkg: str) -> bool:
    p = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return p.returncode == 0 and "install ok installed" in p.stdout


def _apt_download(pkgs: list[str], into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    for attempt in (1, 2):
        p = subprocess.run(["apt-get", "download", *pkgs], cwd=into, capture_output=True, text=True, timeout=300)
        if p.returncode == 0:
            return
        if attempt == 1:  # a fresh machine may have no package lists yet
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, timeout=300)
    raise RuntimeError(f"apt-get download {' '.join(pkgs)} failed: {p.stderr.strip()[-1000:]}")


@dataclass
class SendmailPrefix:
    """Sendmail unpacked from Debian packages under `root`, run without installing it system-wide."""

    root: Path  # the unpacked packages

    @property
    def binary(self) -> Path:
        """The sendmail binary inside the unpacked tree."""
        return self.root / "usr" / "libexec" / "sendmail" / "sendmail"

    @property
    def cf_dir(self) -> Path:
        """The m4 configuration kit the instance's sendmail.cf is built with."""
        return self.root / "usr" / "share" / "sendmail" / "cf"

    @property
    def m4(self) -> str:
        """An unpacked m4 if one came with the packages, else the system's."""
        own = self.root / "usr" / "bin" / "m4"
        return str(own) if own.exists() else (shutil.which("m4") or "m4")

    @property
    def lib_dirs(self) -> list[str]:
        """Every directory holding an unpacked shared library, for LD_LIBRARY_PATH."""
        return sorted({str(Path(p).parent) for p in glob.glob(str(self.root / "**" / "lib*.so*"), recursive=True)})


def ensure_sendmail() -> SendmailPrefix:
    """Download and unpack Sendmail into CACHE (once); skip when that is not possible here."""
    if os.geteuid() != 0:
        pytest.skip(f"a private Sendmail needs root; run: {ROOT_CMD}")
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        pytest.skip("a private Sendmail is unpacked from Debian packages: needs apt-get and dpkg-deb")
    root = CACHE / "root"
    prefix = SendmailPrefix(root)
    stamp = CACHE / ".unpacked"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:  # xdist workers share the cache: one unpacks, the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists() or not prefix.binary.exists():
            _unpack(prefix, stamp)
    return prefix


def _unpack(prefix: SendmailPrefix, stamp: Path) -> None:
    debs = CACHE / "debs"
    shutil.rmtree(prefix.root, ignore_errors=True)
    shutil.rmtree(debs, ignore_errors=True)
    wanted = list(PACKAGES)
    if not shutil.which("m4"):
        wanted.append("m4")
    deps = subprocess.run(["apt-cache", "depends", "--no-recommends", "--no-suggests", "sendmail-bin"],
                          capture_output=True, text=True).stdout
    for line in deps.splitlines():
        line = line.strip()
        if line.startswith("Depends: lib"):
            lib = line.split(":", 1)[1].strip()
            if not _installed(lib):
                wanted.append(lib)
    _apt_download(wanted, debs)
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(prefix.root)], check=True, capture_output=True)
    # setgid makes the loader ignore LD_LIBRARY_PATH (our private libraries)
    prefix.binary.chmod(0o755)
    stamp.write_text(" ".join(wanted) + "\n")


def _can_unshare() -> bool:
    p = subprocess.run(["unshare", "-m", "-u", "/bin/sh", "-c", f"hostname {HOSTNAME}"], capture_output=True)
    return p.returncode == 0


MC = """\
divert(-1)
divert(0)dnl
VERSIONID(`regfd test instance')dnl
OSTYPE(`linux')dnl
define(`QUEUE_DIR', `{base}/mqueue')dnl
define(`STATUS_FILE', `{base}/statistics')dnl
define(`confPID_FILE', `{base}/sendmail.pid')dnl
define(`confHOST_STATUS_DIRECTORY', `')dnl
define(`ALIAS_FILE', `')dnl
define(`confSERVICE_SWITCH_FILE', `{base}/service.switch')dnl
define(`confHOSTS_FILE', `{base}/hosts')dnl
define(`confDONT_PROBE_INTERFACES', `True')dnl
define(`confDONT_BLAME_SENDMAIL', `TrustStickyBit')dnl
define(`confBIND_OPTS', `-DNSRCH -DEFNAMES')dnl
define(`confTO_IDENT', `0s')dnl
define(`confDOMAIN_NAME', `{hostname}')dnl
define(`SMART_HOST', `relay:[127.0.0.1]')dnl
define(`RELAY_MAILER_ARGS', `TCP $h {relay_port}')dnl
FEATURE(`no_default_msa')dnl
FEATURE(`nocanonify')dnl
FEATURE(`promiscuous_relay')dnl
FEATURE(`accept_unresolvable_domains')dnl
DAEMON_OPTIONS(`Port={port},Addr=127.0.0.1,Name=MTA')dnl
{milter}
MAILER(`smtp')dnl
"""


@dataclass
class SendmailInstance:
    """A private Sendmail on loopback relaying to `relay_port`, its milter (if any) at `milter_socket`."""

    prefix: SendmailPrefix
    base: Path
    relay_port: int
    milter_socket: Path | None = None
    port: int = 0
    log: list[str] = field(default_factory=list)

    @property
    def cf(self) -> Path:
        """The generated sendmail.cf (`-C` for every command)."""
        return self.base / "sendmail.cf"

    @property
    def queue_dir(self) -> Path:
        """The queue directory, where quarantined jobs stay as hf files."""
        return self.base / "mqueue"

    @property
    def wrapper(self) -> Path:
        """What regfd is configured with as `[sendmail] binary`: the real sendmail, behind env setup only."""
        return self.base / "bin" / "sendmail"

    def write(self) -> None:
        """Build sendmail.cf with m4 and the wrapper; skips where Sendmail would stall on an unqualified host name."""
        self.port = self.port or free_port()
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        self.queue_dir.chmod(0o700)
        (self.base / "bin").mkdir(exist_ok=True)
        (self.base / "service.switch").write_text("hosts files\naliases files\n")
        (self.base / "hosts").write_text(f"127.0.0.1 {HOSTNAME} mta localhost\n")
        milter = ""
        if self.milter_socket is not None:
            snippet = (REPO / "deploy" / "sendmail.mc.snippet").read_text()
            milter = snippet.replace("unix:/var/run/regfd/regfd.sock", f"unix:{self.milter_socket}")
            assert f"unix:{self.milter_socket}" in milter, "deploy/sendmail.mc.snippet: socket not found"
        mc = MC.format(base=self.base, hostname=HOSTNAME, relay_port=self.relay_port, port=self.port, milter=milter)
        (self.base / "sendmail.mc").write_text(mc)
        p = subprocess.run([self.prefix.m4, f"-D_CF_DIR_={self.prefix.cf_dir}/",
                            str(self.prefix.cf_dir / "m4" / "cf.m4"), str(self.base / "sendmail.mc")],
                           capture_output=True, text=True)
        if p.returncode != 0 or "QueueDirectory" not in p.stdout:
            raise RuntimeError(f"m4 sendmail.mc failed: {p.stderr[-2000:]}")
        self.cf.write_text(p.stdout)
        libs = ":".join(self.prefix.lib_dirs)
        if _can_unshare():
            run = (f"exec unshare -m -u /bin/sh -c 'mount --bind \"$0\" /etc/hosts && hostname {HOSTNAME} && "
                   f"exec \"$@\"' {self.base / 'hosts'} {self.prefix.binary} \"$@\"")
        elif "." in os.uname().nodename:
            run = f'exec {self.prefix.binary} "$@"'
        else:
            pytest.skip(f"host name {os.uname().nodename!r} is unqualified and `unshare -m -u` is not permitted: "
                        "Sendmail would sleep 60 s at every start")
        self.wrapper.write_text(f"#!/bin/sh\n# the private Sendmail (tests/sendmail_fixture.py)\n"
                                f"export LD_LIBRARY_PATH={libs}\n{run}\n")
        self.wrapper.chmod(0o755)

    def sendmail(self, *args: str, input: bytes | None = None,
                 timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
        """Run the wrapper with this instance's cf; a failure is in the returncode, not raised."""
        return subprocess.run([str(self.wrapper), "-C", str(self.cf), *args], input=input, capture_output=True,
                              timeout=timeout)

    def start(self) -> None:
        """Start the daemon (`-bd`) and wait until it answers NOOP."""
        self.write()
        r = self.sendmail("-bd")
        if r.returncode != 0:
            output = (r.stdout + r.stderr).decode(errors="replace")
            raise RuntimeError(f"sendmail -bd failed ({r.returncode}): {output}")

        def up() -> bool:
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=2) as s:
                    return s.noop()[0] == 250
            except OSError:
                return False

        wait_until(up, 15, 0.05, what=f"sendmail on 127.0.0.1:{self.port}")

    def daemon_pid(self) -> int | None:
        """The running daemon's pid, or None when it is not running."""
        try:
            pid = int((self.base / "sendmail.pid").read_text().split()[0])
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """SIGTERM the daemon, SIGKILL if it is still there after 10 s."""
        pid = self.daemon_pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except OSError:
                    return
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)

    # ----- what a test looks at
    def files(self) -> list[str]:
        """The queue directory's file names (qf, hf, df, xf ...), sorted."""
        return sorted(os.listdir(self.queue_dir))

    def send(self, sender: str, rcpts: list[str], message: bytes) -> tuple[int, str]:
        """One SMTP transaction; unlike PostfixInstance.send, a refusal at DATA raises."""
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as s:
            s.ehlo("client.regfd.test")
            s.mail(sender)
            for r in rcpts:
                s.rcpt(r)
            code, text = s.data(message)
            return code, text.decode(errors="replace")

    def submit_queued(self, sender: str, rcpt: str, message: bytes) -> str:
        """Local submission straight into the normal queue (-odq, no milter); returns the new queue id."""
        before = set(self.files())
        r = self.sendmail("-odq", "-f", sender, rcpt, input=message)
        assert r.returncode == 0, r.stdout + r.stderr
        new = [n[2:] for n in set(self.files()) - before if n.startswith("qf")]
        assert len(new) == 1, (before, self.files())
        return new[0]


def new_instance(relay_port: int, milter_socket: Path | None) -> SendmailInstance:
    """Unpacked, configured (cf, wrapper, queue directory), not started: `.start()`, then `stop_instance`."""
    prefix = ensure_sendmail()
    base = make_mta_dir("regfd-sendmail-")
    inst = SendmailInstance(prefix, base, relay_port, milter_socket)
    inst.write()
    return inst


def stop_instance(inst: SendmailInstance) -> None:
    """Stop it and remove its directory unless REGFD_KEEP_MTA is set."""
    inst.stop()
    if not os.environ.get("REGFD_KEEP_MTA"):  # set it to look at the queue and the .cf afterwards
        shutil.rmtree(inst.base, ignore_errors=True)
