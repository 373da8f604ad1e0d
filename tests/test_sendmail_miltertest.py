"""Sendmail's view: the milter protocol driven by `miltertest` (Debian package
`miltertest`) with Sendmail's macro names ({auth_authen}, {i} at MAIL,
{mail_addr}, {rcpt_addr}, j, _), against `regfd milter` run as a subprocess.
The Lua script (tests/miltertest/verdicts.lua) checks accept, inbound accept,
the tag headers, quarantine and the 550 reply for the same verdicts Postfix gets.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.mta import MilterProcess, make_mta_dir

SCRIPT = Path(__file__).parent / "miltertest" / "verdicts.lua"


@pytest.fixture(params=[("unix", "libmilter"), ("inet", "libmilter"), ("unix", "asyncio"), ("inet", "asyncio")],
                ids=lambda p: "-".join(p))
def milter(regfd, request):  # type: ignore[no-untyped-def]
    """unix: the quiet protocol (no connect/helo, no header replies); inet: every stage answered; each engine."""
    kind, engine = request.param
    for args in (("registry", "add", "bank.com", "--category", "analyst"),
                 ("officer", "add", "ceo@allient.com", "--role", "CEO")):
        assert regfd(*args).rc == 0
    d = make_mta_dir("regfd-miltertest-")
    sock = d / "regfd.sock" if kind == "unix" else f"inet:{free_port()}@127.0.0.1"
    m = MilterProcess.start(regfd.config, sock, regfd.env, d / "milter.log", engine=engine)
    m.spec = f"unix:{sock}" if kind == "unix" else sock  # type: ignore[attr-defined]
    yield m
    assert m.stop() == 0, "SIGTERM: clean exit"
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(shutil.which("miltertest") is None, reason="apt-get install miltertest")
def test_sendmail_macros_get_the_same_verdicts(milter):  # type: ignore[no-untyped-def]
    tag = uuid.uuid4().hex[:8]
    env = {**os.environ, "REGFD_SOCKET": milter.spec, "REGFD_TAG": tag}
    p = subprocess.run(["miltertest", "-s", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr + milter.log.read_text()[-3000:]
    for line in ("accept ok", "inbound ok", "tag ok", "hold ok", "reject ok"):
        assert line in p.stdout
    by_sender = {d["sender"]: d for d in milter.decisions()}
    assert by_sender["ceo@allient.com"]["action"] == "tag"
    hold = by_sender[f"dave.{tag}@allient.com"]
    assert hold["action"] == "hold" and hold["queue_id"] == f"s{tag}4"  # Sendmail's {i}, sent at MAIL
    assert by_sender[f"erin.{tag}@allient.com"]["action"] == "reject"
    assert by_sender["analyst@bank.com"]["stage"] == "mail"
