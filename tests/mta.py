"""A real Postfix on loopback, an SMTP sink, and `regfd milter` as a subprocess.

tests/conftest.py registers this module as a plugin, so every test can ask
for its fixtures by name (postfix, smtp_sink, regfd_milter, ...); bench/bench_mta.py
uses it as a library. Fixtures (all session-scoped but `postfix_bin`'s install is too):

- `postfix_bin`     Postfix is installed (installs it from apt when root and
                    missing, with no daemon started; else skips with the command).
- `smtp_sink`       session: an aiosmtpd server on 127.0.0.1 recording every
                    message with its envelope (`SmtpSink.messages`, `.wait_for`).
- `mta_regfd`       session: a `Regfd` CLI runner (tests/conftest.py) whose key
                    prefix and config the milter subprocess shares: create the
                    directory with `mta_regfd("registry", "add", ...)`.
- `regfd_milter`    session: `regfd milter` subprocess on a unix socket
                    (`.socket`, `.log` path, `.decisions()` parsed JSON log).
- `postfix`         session: one private Postfix instance (`PostfixInstance`):
                    `.config_dir`, `.queue_dir`, `.port` (smtpd with regfd),
                    `.ports["dedicated"]` (smtpd whose milter is
                    `.sockets["dedicated"]`, for tests that run their own
                    milter; `asyncio`, `asyncio-inet` and `libmilter` likewise,
                    for tests/test_e2e_engines.py), `.send(...)`, `.sendmail(...)` (local submission),
                    `.postqueue(...)`, `.postsuper(...)`, `.queue()`, `.held()`,
                    `.maillog`.

Everything listens on 127.0.0.1 or unix sockets; nothing is chrooted; the
instance's config directory lives outside its queue directory (Postfix
refuses a main.cf inside the queue directory it manages). One instance serves the whole session: tests use distinct
addresses and never flush anything.
"""

from __future__ import annotations

import email
import email.policy
import functools
import json
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parent.parent
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
INSTALL_CMD = ("echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections && "
               "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && "
               "DEBIAN_FRONTEND=noninteractive apt-get install -y postfix; rm -f /usr/sbin/policy-rc.d")


def wait_until(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> Any:
    """Poll `pred` until it returns something truthy and return that; TimeoutError names `what`."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what or pred}")
        time.sleep(interval)


def ensure_postfix() -> str | None:
    """Path of the postfix binary; installs it (no daemon started) when root. None: cannot."""
    found = shutil.which("postfix") or ("/usr/sbin/postfix" if os.path.exists("/usr/sbin/postfix") else None)
    if found:
        return found
    if os.geteuid() != 0:
        return None
    created = not os.path.exists("/usr/sbin/policy-rc.d")
    try:
        subprocess.run("echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections",
                       shell=True, check=True)
        if created:
            Path("/usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
            os.chmod("/usr/sbin/policy-rc.d", 0o755)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-q", "postfix"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    except (subprocess.CalledProcessError, OSError):
        return None
    finally:
        if created and os.path.exists("/usr/sbin/policy-rc.d"):
            os.unlink("/usr/sbin/policy-rc.d")
    return shutil.which("postfix") or "/usr/sbin/postfix"


# ----------------------------------------------------------------------------- the sink
@dataclass
class SinkMessage:
    """One message the sink received, with its envelope."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def msg(self) -> email.message.EmailMessage:
        """The message parsed with the modern email policy."""
        return email.message_from_bytes(self.data, policy=email.policy.default)


class SmtpSink:
    """aiosmtpd on loopback; records every message Postfix relays to it."""

    def __init__(self, port: int = 0) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[SinkMessage] = []
        self.lock = threading.Lock()
        sink = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                with sink.lock:
                    sink.messages.append(SinkMessage(envelope.mail_from, list(envelope.rcpt_tos),
                                                     envelope.original_content or envelope.content))
                return "250 OK"

        self.port = port or free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def to(self, address: str) -> list[SinkMessage]:
        """The messages received so far for `address` (an envelope recipient)."""
        with self.lock:
            return [m for m in self.messages if address in m.rcpt_tos]

    def wait_for(self, address: str, timeout: float = 15.0, count: int = 1) -> list[SinkMessage]:
        """Wait until `count` messages for `address` have arrived, and return them all."""
        got = wait_until(lambda: len(self.to(address)) >= count and self.to(address), timeout,
                         what=f"a message to {address} at the sink")
        return cast("list[SinkMessage]", got)

    def stop(self) -> None:
        """Stop the aiosmtpd controller thread."""
        self.controller.stop()


# ----------------------------------------------------------------------------- the milter
@dataclass
class MilterProcess:
    """`regfd milter` as the operator runs it: a subprocess with its own config."""

    socket: Path
    log: Path
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(cls, config: Path, socket_path: Path | str, env: dict[str, str], log: Path,
              timeout: float = 60.0, wrapper: Sequence[str] = (), python: str = PYTHON,
              cwd: Path | str = REPO, engine: str = "", workers: int = 0) -> MilterProcess:
        """`socket_path`: a unix socket path, or an `inet:PORT@HOST` spec; `wrapper` runs it as another
        user (["runuser", "-u", USER, "--"]); `engine` overrides milter.engine (libmilter | asyncio);
        `workers` milter.workers (`--workers N`)."""
        spec = socket_path if isinstance(socket_path, str) else f"unix:{socket_path}"
        socket_path = Path(socket_path) if not isinstance(socket_path, str) else Path("/nonexistent")
        logf = open(log, "ab")  # noqa: SIM115 - the milter process owns it until stop()
        proc = subprocess.Popen([*wrapper, python, "-m", "regfd.cli", "milter", "--config", str(config),
                                 "--socket", spec, *(["--engine", engine] if engine else []),
                                 *(["--workers", str(workers)] if workers else [])],
                                env={**os.environ, "PYTHONFAULTHANDLER": "1", **env}, stdout=logf, stderr=logf,
                                cwd=cwd)
        logf.close()
        m = cls(socket_path, log, proc)

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"regfd milter exited with {proc.returncode}: {log.read_text()[-2000:]}")
            return (spec.startswith("inet") or socket_path.exists()) and "milter.start" in log.read_text()

        wait_until(ready, timeout, what="regfd milter to listen")
        return m

    def decisions(self) -> list[dict[str, Any]]:
        """The `milter.decision` events of the JSON log so far (other lines skipped)."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    d = json.loads(line)
                except ValueError:
                    continue
                if d.get("event") == "milter.decision":
                    out.append(d)
        return out

    def decision_for(self, sender: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for the latest decision on a message from `sender`."""
        got = wait_until(lambda: next((d for d in reversed(self.decisions()) if d.get("sender") == sender), None),
                         timeout, what=f"regfd's decision for {sender}")
        return cast("dict[str, Any]", got)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (the graceful stop), SIGKILL after `timeout`; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# ----------------------------------------------------------------------------- Postfix
MASTER_CF = """\
{listeners}
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

POSTFIX_HOSTNAME = "mta.regfd.test"  # the `j` macro: the MTA host name regfd records
# The session Postfix's `asyncio-inet` listener uses a milter on this port (tests/test_e2e_engines.py starts it).
ASYNCIO_INET_PORT = free_port()

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
daemon_directory = /usr/lib/postfix/sbin
command_directory = /usr/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = {hostname}
mydomain = regfd.test
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relayhost = [127.0.0.1]:{relay_port}
smtp_dns_support_level = disabled
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
queue_minfree = 0
message_size_limit = 0
smtputf8_enable = no
biff = no
delay_warning_time = 0
smtpd_milters = {milter}
non_smtpd_milters = {milter}
milter_default_action = tempfail
milter_protocol = 6
milter_mail_macros = i {{auth_type}} {{auth_authen}} {{auth_author}} {{mail_addr}} {{mail_host}} {{mail_mailer}}
milter_end_of_data_macros = i
default_process_limit = 100
smtp_connection_cache_on_demand = yes
"""


@dataclass
class PostfixInstance:
    """A private Postfix: `postfix -c config_dir`, loopback only, relaying everything to `relay_port`."""

    base: Path
    relay_port: int
    sockets: dict[str, Any]  # listener name -> milter socket path, "inet:HOST:PORT" (Postfix syntax), or "" = none
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def config_dir(self) -> Path:
        """Where main.cf and master.cf live, outside the queue directory Postfix manages."""
        return self.base / "etc"

    @property
    def queue_dir(self) -> Path:
        """The instance's queue_directory."""
        return self.base / "spool"

    @property
    def maillog(self) -> Path:
        """Postfix's log (maillog_file), since there is no syslog in the test."""
        return self.base / "log" / "maillog"

    @property
    def port(self) -> int:
        """The main smtpd's port, whose milter is the shared `regfd_milter`."""
        return self.ports["main"]

    def write(self) -> None:
        """Write main.cf and master.cf, with one smtpd per entry of `sockets` on a free port."""
        for d in (self.config_dir, self.queue_dir, self.base / "data", self.base / "log"):
            d.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.base / "data", "postfix")
        listeners = []
        for name, sock in self.sockets.items():
            self.ports.setdefault(name, free_port())
            milter = (sock if isinstance(sock, str) else f"unix:{sock}") if sock else ""
            listeners.append(f"127.0.0.1:{self.ports[name]} inet n - n - - smtpd -o smtpd_milters={milter}")
        main_sock = self.sockets["main"]
        (self.config_dir / "master.cf").write_text(MASTER_CF.format(listeners="\n".join(listeners)))
        (self.config_dir / "main.cf").write_text(MAIN_CF.format(
            queue=self.queue_dir, data=self.base / "data", relay_port=self.relay_port, hostname=POSTFIX_HOSTNAME,
            dir=self.base / "log",
            milter=(main_sock if isinstance(main_sock, str) else f"unix:{main_sock}") if main_sock else ""))

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["postfix", "-c", str(self.config_dir), *args], capture_output=True, text=True,
                              check=check)

    def master_pid(self) -> int | None:
        """The running master's pid, or None when it is not running."""
        pidfile = self.queue_dir / "pid" / "master.pid"
        try:
            pid = int(pidfile.read_text().split()[0])
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError, IndexError):
            return None

    def start(self) -> None:
        """Write the config, start Postfix, and wait until every smtpd accepts connections."""
        self.write()
        r = self._postfix("start", check=False)
        if r.returncode != 0:
            raise RuntimeError(f"postfix start failed: {r.stderr}{r.stdout}")
        for port in self.ports.values():
            wait_until(functools.partial(_connectable, port), 15, what=f"postfix smtpd on {port}")

    def stop(self) -> None:
        """Stop Postfix and wait for the master to exit, which `postfix stop` does not."""
        pid = self.master_pid()
        self._postfix("stop", check=False)
        if pid:  # `postfix stop` returns before the master is gone
            wait_until(lambda: not _alive(pid), 20, what="postfix master to exit")

    # ----- queue tools (the same commands an operator uses, with -c)
    def postqueue(self, *args: str) -> subprocess.CompletedProcess[str]:
        """postqueue against this instance; a failure is in the returncode, not raised."""
        return subprocess.run(["postqueue", "-c", str(self.config_dir), *args], capture_output=True, text=True)

    def postsuper(self, *args: str) -> subprocess.CompletedProcess[str]:
        """postsuper against this instance; a failure is in the returncode, not raised."""
        return subprocess.run(["postsuper", "-c", str(self.config_dir), *args], capture_output=True, text=True)

    def queue(self) -> list[dict[str, Any]]:
        """Every queued message, as `postqueue -j` describes it."""
        out = self.postqueue("-j").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def held(self) -> list[dict[str, Any]]:
        """The messages in the hold queue (where regfd's `hold` puts them)."""
        return [q for q in self.queue() if q.get("queue_name") == "hold"]

    # ----- submission
    def send(self, sender: str, rcpts: list[str], message: bytes | str, port: int | None = None,
             timeout: float = 30.0) -> tuple[int, str]:
        """One SMTP transaction; returns the final (code, text) whatever it is (never raises on 4xx/5xx)."""
        if isinstance(message, str):
            message = message.encode()
        with smtplib.SMTP("127.0.0.1", port or self.port, timeout=timeout) as s:
            s.ehlo("client.regfd.test")
            code, text = s.mail(sender)
            if code >= 400:
                return code, text.decode()
            for r in rcpts:
                code, text = s.rcpt(r)
                if code >= 400:
                    return code, text.decode()
            try:
                code, text = s.data(message)
            except smtplib.SMTPResponseException as exc:  # refused at DATA (the milter's data stage)
                err = exc.smtp_error
                return exc.smtp_code, err.decode() if isinstance(err, bytes) else err
            return code, text.decode()

    def sendmail(self, sender: str, rcpts: list[str], message: bytes | str) -> subprocess.CompletedProcess[bytes]:
        """Local submission (`sendmail -C DIR`): goes through pickup/cleanup and non_smtpd_milters."""
        if isinstance(message, str):
            message = message.encode()
        return subprocess.run(["/usr/sbin/sendmail", "-C", str(self.config_dir), "-f", sender, "-i", *rcpts],
                              input=message, capture_output=True, timeout=30)


def _connectable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def queue_id_of(reply: str) -> str:
    """'2.0.0 Ok: queued as 4Xyz' -> '4Xyz'."""
    return reply.rsplit("queued as", 1)[1].strip() if "queued as" in reply else ""


def make_message(sender: str, to: str, subject: str, body: str, extra_headers: str = "") -> bytes:
    """A plain-text message with a unique Message-ID, as bytes with CRLF line ends."""
    mid = f"<{uuid.uuid4().hex}@allient.com>"
    text = (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {mid}\r\n"
            f"Date: Wed, 25 Nov 2026 10:00:00 -0500\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n{extra_headers}\r\n{body}\r\n")
    return text.encode()


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def postfix_bin() -> str:
    """Postfix's binary; skips the test with the install command when it is missing and cannot be installed."""
    path = ensure_postfix()
    if path is None:
        pytest.skip(f"Postfix is not installed; as root run: {INSTALL_CMD}")
    return path


@pytest.fixture(scope="session")
def smtp_sink() -> Iterator[SmtpSink]:
    """One sink for the session, where the instance relays everything."""
    sink = SmtpSink()
    yield sink
    sink.stop()


def make_mta_dir(prefix: str = "regfd-mta-") -> Path:
    """A directory Postfix's unprivileged processes can traverse (pytest's tmp dirs are 0700)."""
    import tempfile

    d = Path(tempfile.mkdtemp(prefix=prefix))
    d.chmod(0o755)
    return d


@pytest.fixture(scope="session")
def mta_dir() -> Iterator[Path]:
    """A session directory Postfix can traverse; REGFD_KEEP_MTA=1 keeps it for reading the logs."""
    d = make_mta_dir()
    yield d
    if not os.environ.get("REGFD_KEEP_MTA"):  # set it to read the maillog and milter log afterwards
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def mta_regfd(redis_server: Any, mta_dir: Path, smtp_sink: SmtpSink) -> Any:
    """The `Regfd` runner whose config and key prefix the milter subprocess shares."""
    from tests.conftest import Regfd

    (mta_dir / "regfd").mkdir(exist_ok=True)
    # The milter's quarantine agent acts on the private Postfix below (its
    # config_directory and myhostname), as it would on a real MTA host.
    return Regfd(mta_dir / "regfd", redis_server.url, f"e2e{uuid.uuid4().hex[:8]}:", smtp_port=smtp_sink.port,
                 top=f'mta_host = "{POSTFIX_HOSTNAME}"',
                 extra=f'[postfix]\nconfig_directory = "{mta_dir / "postfix" / "etc"}"\n')


@pytest.fixture(scope="session")
def regfd_milter(mta_regfd: Any, mta_dir: Path) -> Iterator[MilterProcess]:
    """`regfd milter` for the session, on a unix socket under mta_dir, with the default engine (asyncio)."""
    m = MilterProcess.start(mta_regfd.config, mta_dir / "regfd.sock", mta_regfd.env, mta_dir / "regfd-milter.log")
    yield m
    m.stop()


@pytest.fixture(scope="session")
def postfix(postfix_bin: str, mta_dir: Path, smtp_sink: SmtpSink, regfd_milter: MilterProcess
            ) -> Iterator[PostfixInstance]:
    """The session's Postfix: the main smtpd goes through `regfd_milter`, `dedicated` through a test's own milter."""
    pf = PostfixInstance(mta_dir / "postfix", smtp_sink.port,
                         {"main": regfd_milter.socket, "dedicated": mta_dir / "dedicated.sock",
                          "asyncio": mta_dir / "asyncio.sock", "asyncio-inet": f"inet:127.0.0.1:{ASYNCIO_INET_PORT}",
                          "libmilter": mta_dir / "libmilter.sock"})
    pf.start()
    yield pf
    pf.stop()
