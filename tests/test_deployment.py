"""The documented deployment, with its privileges: the milter unprivileged, the agent root, compliance not root.

What an administrator does (deploy/README.md), as far as this machine
allows without systemd as PID 1: a `regfd` service user and a
`regfd-compliance` group, /etc/regfd root-owned and group-readable, a
shared Redis, `regfd milter` as `regfd`, `regfd agent` as root, a Postfix
whose smtpd uses the milter; a compliance officer (a member of the group,
not root) releases and rejects held mail through the agent. The suite runs
as root, which hides permission bugs: here every user-facing process runs
as the user it runs as in production (runuser).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, free_port
from tests.mta import (
    PYTHON,
    MilterProcess,
    PostfixInstance,
    SmtpSink,
    make_message,
    make_mta_dir,
    queue_id_of,
    wait_until,
)

pytestmark = pytest.mark.e2e

# Names of this run only: two runs on one machine (or a run interrupted earlier) never share accounts.
_RUN = uuid.uuid4().hex[:6]
SERVICE_USER = f"regfd-dt{_RUN}"
OFFICER = f"officer-dt{_RUN}"
GROUP = f"regfd-compl-dt{_RUN}"


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=60)


@pytest.fixture(scope="module")
def accounts() -> Iterator[None]:
    """The service user and a compliance officer, members of the compliance group; removed afterwards."""
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("runuser"):
        pytest.skip("needs root, useradd and runuser to create the deployment's users")
    created: list[tuple[str, str]] = []
    try:
        try:
            grp.getgrnam(GROUP)
        except KeyError:
            _run("groupadd", "--system", GROUP)
            created.append(("groupdel", GROUP))
        for user in (SERVICE_USER, OFFICER):
            try:
                pwd.getpwnam(user)
            except KeyError:
                _run("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "-G", GROUP, user)
                created.insert(0, ("userdel", user))
            else:  # left by an interrupted run: make sure it is in the (possibly new) group, remove it afterwards
                _run("usermod", "-a", "-G", GROUP, user)
                created.insert(0, ("userdel", user))
        yield
    finally:
        for cmd, name in created:
            _run(cmd, name, check=False)


def _install(base: Path) -> Path:
    """Build the wheel from this checkout and install it, with the milter extra, in a venv of Debian's python3.

    This is the artifact the administrator installs (deploy/README.md); it
    carries the lexicons and the default policy under PREFIX/share/regfd. The
    source is copied first so the build leaves nothing in the checkout.
    """
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("regfd", "lexicons", "config", "deploy"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    dist = base / "dist"
    _run(PYTHON, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(src))
    [wheel] = dist.glob("regfd-*.whl")
    prefix = base / "opt" / "regfd"
    _run("/usr/bin/python3", "-m", "venv", str(prefix))
    _run(str(prefix / "bin" / "pip"), "install", "--quiet", f"{wheel}[milter]")
    return prefix


@dataclass
class Deployment:
    """One deployment's paths and processes."""

    base: Path
    prefix: Path  # the installed artifact
    config: Path
    redis_port: int
    postfix: PostfixInstance
    milter: MilterProcess
    agent: subprocess.Popen[bytes]
    agent_log: Path
    redis: subprocess.Popen[bytes]

    def as_user(self, user: str, *args: str) -> subprocess.CompletedProcess[str]:
        """`regfd ARGS` as `user`, from a directory of its own, with only the config's path in the environment."""
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "REGFD_CONFIG": str(self.config), "LANG": "C.UTF-8"}
        return subprocess.run(["runuser", "-u", user, "--", str(self.prefix / "bin" / "regfd"), *args],
                              capture_output=True, text=True, env=env, cwd="/", timeout=90)


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def _milter_pid(runuser_pid: int) -> int:
    """runuser stays as the parent (it forwards signals); the milter is its child."""
    children = Path(f"/proc/{runuser_pid}/task/{runuser_pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


@pytest.fixture(scope="module")
def deployment(accounts: None, postfix_bin: str, smtp_sink: SmtpSink) -> Iterator[Deployment]:
    if not Path("/usr/bin/python3").exists():
        pytest.skip("needs Debian's python3 (python3-venv) to install the artifact")
    base = make_mta_dir("regfd-deploy-")
    prefix = _install(base)
    gid = grp.getgrnam(GROUP).gr_gid
    uid = pwd.getpwnam(SERVICE_USER).pw_uid
    # /etc/regfd: root-owned, group-readable, not writable by the service user.
    etc = base / "etc" / "regfd"
    etc.mkdir(parents=True)
    os.chown(etc, 0, gid)
    etc.chmod(0o750)
    state = base / "var" / "lib" / "regfd"
    state.mkdir(parents=True)
    os.chown(state, uid, gid)
    state.chmod(0o2770)
    # A shared Redis on loopback, as in production (Sentinel or a local redis-server).
    redis_port = free_port()
    redis_dir = base / "redis"
    redis_dir.mkdir()
    redis = subprocess.Popen([shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(redis_port),
                              "--bind", "127.0.0.1", "--dir", str(redis_dir), "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    milter_port = free_port()
    pf = PostfixInstance(base / "postfix", smtp_sink.port, {"main": f"inet:127.0.0.1:{milter_port}"})
    config = etc / "regfd.toml"
    config.write_text(f"""\
internal_domains = ["allient.com"]
corporate_secretary = ["corpsec@allient.com"]
redis_url = "redis://127.0.0.1:{redis_port}/0"
redis_prefix = "deploy{uuid.uuid4().hex[:6]}:"
state_dir = "{state}"
mta_host = "mta.regfd.test"
[milter]
socket = "inet:{milter_port}@127.0.0.1"
[smtp]
relay = "127.0.0.1:{smtp_sink.port}"
sender = "regfd@allient.com"
[postfix]
config_directory = "{pf.config_dir}"
""")
    os.chown(config, 0, gid)
    config.chmod(0o640)
    wait_until(lambda: subprocess.run(["redis-cli", "-p", str(redis_port), "ping"], capture_output=True,
                                      text=True).stdout.strip() == "PONG", 10, what="redis")
    # The milter as the service user (runuser: no setuid bit, no root left in the process).
    log = base / "milter.log"
    log.touch()
    os.chown(log, uid, gid)
    milter = MilterProcess.start(config, f"inet:{milter_port}@127.0.0.1", {}, log,
                                 wrapper=["runuser", "-u", SERVICE_USER, "--"], python=str(prefix / "bin" / "python"),
                                 cwd="/")  # not the checkout: `python -m` would import its regfd, not the artifact
    pf.write()
    pf.start()
    agent_log = base / "agent.log"
    with open(agent_log, "wb") as fh:
        agent = subprocess.Popen([str(prefix / "bin" / "regfd"), "--config", str(config), "agent"], stdout=fh,
                                 stderr=fh, cwd="/")
    d = Deployment(base, prefix, config, redis_port, pf, milter, agent, agent_log, redis)
    try:
        admin = d.as_user("root", "registry", "add", "bank.example", "--category", "analyst")
        assert admin.returncode == 0, admin.stderr
        wait_until(lambda: "serving quarantine requests" in agent_log.read_text(), 15, what="the agent")
        yield d
    finally:
        agent.terminate()
        agent.wait(10)
        milter.stop()
        pf.stop()
        redis.terminate()
        redis.wait(10)
        if not os.environ.get("REGFD_KEEP_MTA"):
            shutil.rmtree(base, ignore_errors=True)


def _hold(d: Deployment) -> tuple[str, str, str, str]:
    sender = f"bob.{uuid.uuid4().hex[:8]}@allient.com"
    rcpt = f"ana.{uuid.uuid4().hex[:8]}@bank.example"
    body = "Between us, we will miss the quarter and the guidance comes down next week."
    code, text = d.postfix.send(sender, [rcpt], make_message(sender, rcpt, "numbers", body))
    assert code == 250, text
    qid = queue_id_of(text)
    wait_until(lambda: any(q["queue_id"] == qid for q in d.postfix.held()), 15, what="the hold queue")

    def entry() -> str | None:
        r = d.as_user(OFFICER, "quarantine", "list", "--json")
        assert r.returncode == 0, r.stderr
        return next((x["id"] for x in json.loads(r.stdout) if x["queue_id"] == qid), None)

    return sender, rcpt, qid, wait_until(entry, 15, what="the quarantine entry")


def _check_artifact(deployment: Deployment) -> None:
    """The wheel carries the lexicons, the policy, a config template, the docs and the units (systemd-verified)."""
    share = deployment.prefix / "share"
    assert (share / "regfd" / "lexicons" / "material.toml").is_file()
    assert (share / "regfd" / "policy.toml").is_file() and (share / "regfd" / "regfd.toml").is_file()
    units = share / "doc" / "regfd" / "deploy"
    assert (share / "doc" / "regfd" / "README.md").is_file() and (units / "README.md").is_file()
    if shutil.which("systemd-analyze") is None:
        return  # not installed here: the units are shipped but not verified
    checked = []
    for unit in ("regfd.service", "regfd-agent.service"):
        text = (units / unit).read_text().replace("/usr/local/bin/regfd", str(deployment.prefix / "bin" / "regfd"))
        path = deployment.base / unit
        path.write_text(text)
        checked.append(str(path))
    r = subprocess.run(["systemd-analyze", "verify", *checked], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_documented_deployment_releases_and_rejects_with_least_privilege(deployment: Deployment,
                                                                        smtp_sink: SmtpSink) -> None:
    """One scenario (one set of users and services): xdist must not run its steps on two workers."""
    _check_artifact(deployment)
    # The milter runs as the service user and leaves the hold queue to the root agent.
    assert _uid_of(_milter_pid(deployment.milter.proc.pid)) == pwd.getpwnam(SERVICE_USER).pw_uid
    log = deployment.milter.log.read_text()
    assert "quarantine.agent.not_started" in log and "postsuper is reserved for the superuser" in log

    # Permission problems are one line saying what was refused, exit 1 (not an "internal error").
    r = deployment.as_user(OFFICER, "milter", "--socket", f"unix:{deployment.config.parent / 'regfd.sock'}")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "permission denied" in r.stderr, r.stderr
    secret = deployment.base / "secret.eml"
    secret.write_text("Subject: x\n\nhello\n")
    secret.chmod(0o600)
    r = deployment.as_user(OFFICER, "check", str(secret), "--from", "bob@allient.com", "--to", "ana@bank.example")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "permission denied" in r.stderr.lower(), r.stderr
    assert str(secret) in r.stderr

    # An agent without the privilege refuses to start (it could only fail requests).
    r = deployment.as_user(OFFICER, "agent", "--once", "--wait", "1")
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "postsuper is reserved for the superuser" in r.stderr and "run `regfd agent` as root" in r.stderr

    # Hold -> release by a compliance officer (not root): delivered exactly once, audited.
    sender, rcpt, qid, entry = _hold(deployment)
    r = deployment.as_user(OFFICER, "quarantine", "release", entry, "--by", "corpsec@allient.com",
                           "--reason", "public since the 8-K")
    assert r.returncode == 0, r.stderr
    got = smtp_sink.wait_for(rcpt, timeout=30)
    assert len(got) == 1 and "miss the quarter" in got[0].data.decode(errors="replace")
    assert not any(q["queue_id"] == qid for q in deployment.postfix.queue())
    audit = deployment.as_user(OFFICER, "audit", "--json")
    assert audit.returncode == 0 and "public since the 8-K" in audit.stdout

    # Hold -> reject: removed from the queue, never delivered, the sender told why.
    sender, rcpt, qid, entry = _hold(deployment)
    r = deployment.as_user(OFFICER, "quarantine", "reject", entry, "--by", "corpsec@allient.com",
                           "--reason", "guidance is not public")
    assert r.returncode == 0, r.stderr
    wait_until(lambda: not any(q["queue_id"] == qid for q in deployment.postfix.queue()), 15, what="the deletion")
    assert smtp_sink.to(rcpt) == []

    def told() -> list[Any]:
        deployment.as_user(OFFICER, "outbox", "flush")
        return [m for m in smtp_sink.to(sender) if "not delivered" in (m.msg["Subject"] or "")]

    [notice] = wait_until(told, 30, interval=0.5, what="the sender's notice")
    assert "guidance is not public" in notice.msg.get_content()
