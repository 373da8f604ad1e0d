"""Sendmail's quarantine as regfd's MtaQueue (regfd/sendmail.py).

The e2e tests run a real, private Sendmail (tests/sendmail_fixture.py) with
`regfd milter` as its INPUT_MAIL_FILTER (deploy/sendmail.mc.snippet): a held
message is quarantined by the milter itself (`hf` file, `q` line, listed by
`mailq -qQ`); compliance's release goes through the milter's own quarantine
agent (start_background -> mta_queue(config) -> SendmailQueue) and reaches
the sink exactly once; reject --local removes the job. The unit tests need no
Sendmail: queue id validation, substring ambiguity, the lock, config keys.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from regfd.compliance.quarantine import mta_queue
from regfd.config import parse_config
from regfd.errors import ConfigError
from regfd.mta.postfix import PostfixQueue
from regfd.mta.sendmail import SendmailQueue
from tests.mta import MilterProcess, make_message, make_mta_dir, wait_until
from tests.sendmail_fixture import SendmailInstance, new_instance, stop_instance

MATERIAL = "Between us, we will miss the quarter and the guidance will be lowered next week."


# ----------------------------------------------------------------------------- unit: no Sendmail needed
@pytest.mark.parametrize("bad", ["", "abc", "../../etc/passwd", "6APElLxO*", "-qQ", "6APElLxO 003068", "x" * 40,
                                 "6APElLxO00306\n8"])
def test_bad_queue_ids_are_refused_before_anything_runs(tmp_path: Path, bad: str) -> None:
    q = SendmailQueue(binary=str(tmp_path / "must-not-run"), queue_directory=str(tmp_path))
    for result in (q.release(bad), q.delete(bad)):
        assert not result.ok and "invalid Sendmail queue id" in result.detail


def _fake_queue(tmp_path: Path, *names: str) -> Path:
    d = tmp_path / "mqueue"
    d.mkdir()
    for n in names:
        (d / n).write_text("V8\nqregfd hold: test\n" if n.startswith("hf") else "body\n")
    return d


def test_release_refuses_an_id_that_is_a_substring_of_another_quarantined_job(tmp_path: Path) -> None:
    d = _fake_queue(tmp_path, "hfABCDEFGH12345", "dfABCDEFGH12345", "hfABCDEFGH123456", "dfABCDEFGH123456")
    marker = tmp_path / "ran"
    binary = tmp_path / "sendmail"
    binary.write_text(f"#!/bin/sh\ntouch {marker}\n")
    binary.chmod(0o755)
    r = SendmailQueue(binary=str(binary), queue_directory=str(d)).release("ABCDEFGH12345")
    assert not r.ok and "ABCDEFGH123456" in r.detail
    assert not marker.exists(), "sendmail -qI matches substrings: it must not have run"


def test_release_is_verified_not_assumed(tmp_path: Path) -> None:
    """A sendmail that exits 0 but leaves the job quarantined is a failure."""
    d = _fake_queue(tmp_path, "hfABCDEFGH12345", "dfABCDEFGH12345")
    binary = tmp_path / "sendmail"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    r = SendmailQueue(binary=str(binary), queue_directory=str(d)).release("ABCDEFGH12345")
    assert not r.ok and "left ABCDEFGH12345 in quarantine" in r.detail


def test_delete_respects_sendmails_lock_and_only_deletes_quarantined_jobs(tmp_path: Path) -> None:
    d = _fake_queue(tmp_path, "hfABCDEFGH12345", "dfABCDEFGH12345", "qfQRSTUVWX99999", "dfQRSTUVWX99999")
    q = SendmailQueue(binary="/nonexistent", queue_directory=str(d))
    with open(d / "hfABCDEFGH12345") as f:  # a sendmail process working on the job holds this lock
        fcntl.flock(f, fcntl.LOCK_EX)
        r = q.delete("ABCDEFGH12345")
    assert not r.ok and "locked" in r.detail
    assert (d / "hfABCDEFGH12345").exists() and (d / "dfABCDEFGH12345").exists()
    r = q.delete("QRSTUVWX99999")
    assert not r.ok and "not quarantined" in r.detail
    assert (d / "qfQRSTUVWX99999").exists() and (d / "dfQRSTUVWX99999").exists()
    r = q.delete("ABCDEFGH12345")
    assert r.ok, r.detail
    assert sorted(os.listdir(d)) == ["dfQRSTUVWX99999", "qfQRSTUVWX99999"]
    r = q.delete("ABCDEFGH12345")
    assert not r.ok and "not in Sendmail's quarantine" in r.detail


def test_queue_directory_comes_from_the_config_file(tmp_path: Path) -> None:
    cf = tmp_path / "sendmail.cf"
    cf.write_text("V10/Berkeley\nO QueueDirectory=/srv/mq/q*\nO Timeout.ident=0\n")
    (tmp_path / "q1").mkdir()
    q = SendmailQueue(config_file=str(cf))
    assert q.queue_dirs() == []  # /srv/mq does not exist here
    cf.write_text(f"O QueueDirectory={tmp_path}/q*\n")
    assert q.queue_dirs() == [tmp_path / "q1"]
    assert SendmailQueue(config_file=str(tmp_path / "none.cf")).queue_dirs() == [Path("/var/spool/mqueue")]
    assert SendmailQueue(config_file=str(cf), queue_directory="/x").queue_dirs() == [Path("/x")]


def test_config_chooses_the_adapter() -> None:
    assert isinstance(mta_queue(parse_config({})), PostfixQueue)
    cfg = parse_config({"mta": "sendmail", "sendmail": {"binary": "/opt/sm/sendmail", "config_file": "/etc/x.cf",
                                                         "queue_directory": "/var/spool/mq"}})
    q = mta_queue(cfg)
    assert isinstance(q, SendmailQueue)
    assert (q.binary, q.config_file, q.queue_directory) == ("/opt/sm/sendmail", "/etc/x.cf", "/var/spool/mq")
    for data, msg in (({"mta": "exim"}, "config: mta: must be one of postfix, sendmail (got 'exim')"),
                      ({"mta": 1}, "config: mta: must be a string"),
                      ({"sendmail": {"binary": ""}}, "config: sendmail.binary: must not be empty"),
                      ({"sendmail": {"queue_dir": "/x"}}, "config: sendmail.queue_dir: unknown key")):
        with pytest.raises(ConfigError) as exc:
            parse_config(data)
        assert str(exc.value).startswith(msg) and "\n" not in str(exc.value)


# ----------------------------------------------------------------------------- e2e: a real Sendmail
@pytest.fixture(scope="module")
def sm(redis_server: Any, smtp_sink: Any) -> Iterator[tuple[SendmailInstance, Any, MilterProcess]]:
    """A private Sendmail whose milter is a `regfd milter` configured for `mta = "sendmail"`, shared by the module."""
    from tests.conftest import Regfd

    d = make_mta_dir("regfd-sm-milter-")
    inst = new_instance(smtp_sink.port, d / "regfd.sock")
    milter = None
    try:
        (d / "regfd").mkdir()
        rf = Regfd(d / "regfd", redis_server.url, f"sm{uuid.uuid4().hex[:8]}:", smtp_port=smtp_sink.port,
                   top='mta = "sendmail"\nmta_host = "mta.regfd.test"',
                   extra=f'[sendmail]\nbinary = "{inst.wrapper}"\nconfig_file = "{inst.cf}"\n')
        for args in (("registry", "add", "bank.com", "--category", "analyst"),):
            assert rf(*args).rc == 0
        milter = MilterProcess.start(rf.config, d / "regfd.sock", rf.env, d / "milter.log")
        inst.start()
        yield inst, rf, milter
    finally:
        stop_instance(inst)
        if milter is not None:
            milter.stop()
        if not os.environ.get("REGFD_KEEP_MTA"):
            shutil.rmtree(d, ignore_errors=True)


def _hold(inst: SendmailInstance, milter: MilterProcess) -> tuple[str, str, str]:
    """An employee's material message to an analyst: regfd holds it, Sendmail quarantines it."""
    tag = uuid.uuid4().hex[:8]
    sender, rcpt = f"dave.{tag}@allient.com", f"analyst.{tag}@bank.com"
    code, text = inst.send(sender, [rcpt], make_message(sender, rcpt, "Quarter", MATERIAL))
    assert code == 250, text
    qid = text.split()[1]  # "2.0.0 6APElLxO003068 Message accepted for delivery"
    d = milter.decision_for(sender)
    assert d["action"] == "hold" and d["queue_id"] == qid, d
    return qid, rcpt, sender


def _queue(inst: SendmailInstance) -> SendmailQueue:
    return SendmailQueue(str(inst.wrapper), str(inst.cf))


def _job_files(inst: SendmailInstance, qid: str) -> list[str]:
    return [n for n in inst.files() if n[2:] == qid]


@pytest.mark.e2e
def test_quarantined_job_is_listed_and_released_once(sm: Any, smtp_sink: Any) -> None:
    inst, rf, milter = sm
    qid, rcpt, sender = _hold(inst, milter)
    assert sorted(_job_files(inst, qid)) == [f"df{qid}", f"hf{qid}"]  # hf: Sendmail's quarantined control file
    control = (inst.queue_dir / f"hf{qid}").read_bytes().decode("latin-1")
    assert any(line.startswith("qregfd hold:") for line in control.splitlines())
    listed = _queue(inst).quarantined()  # mailq -qQ
    assert listed[qid].startswith("regfd hold:"), listed
    time.sleep(0.5)
    assert smtp_sink.to(rcpt) == []

    # compliance releases through Redis; the milter's own agent runs SendmailQueue.release
    r = rf("quarantine", "release", qid, "--by", "corpsec@allient.com", "--reason", "cleared by counsel")
    assert r.rc == 0, r.err + r.out
    assert f"released {qid} from Sendmail's quarantine" in r.out
    got, = smtp_sink.wait_for(rcpt, timeout=20)
    assert got.msg["Subject"] == "Quarter" and "miss the quarter" in got.msg.get_content()
    wait_until(lambda: _job_files(inst, qid) == [], 10, what="the delivered job to leave the queue")
    assert qid not in _queue(inst).quarantined()

    again = _queue(inst).release(qid)
    assert not again.ok and "not in Sendmail's quarantine" in again.detail and "nothing done" in again.detail
    inst.sendmail("-q")  # a full queue run: nothing left that could deliver it a second time
    time.sleep(1.0)
    assert len(smtp_sink.to(rcpt)) == 1
    assert [d["action"] for d in milter.decisions() if d.get("sender") == sender] == ["hold"]  # no second milter pass


@pytest.mark.e2e
def test_rejected_job_is_removed_and_never_delivered(sm: Any, smtp_sink: Any) -> None:
    inst, rf, milter = sm
    qid, rcpt, _ = _hold(inst, milter)
    assert f"hf{qid}" in inst.files()
    r = rf("quarantine", "reject", qid, "--local", "--by", "corpsec@allient.com", "--reason", "selective disclosure")
    assert r.rc == 0, r.err + r.out
    assert f"deleted {qid} from Sendmail's quarantine" in r.out
    assert _job_files(inst, qid) == []
    assert qid not in _queue(inst).quarantined()
    again = _queue(inst).delete(qid)
    assert not again.ok and "not in Sendmail's quarantine" in again.detail
    assert not _queue(inst).release(qid).ok
    inst.sendmail("-q")
    time.sleep(1.0)
    assert smtp_sink.to(rcpt) == []


@pytest.mark.e2e
def test_a_job_in_the_normal_queue_is_neither_released_nor_deleted(sm: Any, smtp_sink: Any) -> None:
    inst, _, _ = sm
    rcpt = f"friend.{uuid.uuid4().hex[:8]}@example.org"
    qid = inst.submit_queued("bob@allient.com", rcpt, make_message("bob@allient.com", rcpt, "Lunch", "Friday?"))
    q = _queue(inst)
    for result in (q.delete(qid), q.release(qid)):
        assert not result.ok and "not quarantined" in result.detail, result.detail
    assert sorted(_job_files(inst, qid)) == [f"df{qid}", f"qf{qid}"]


@pytest.mark.e2e
def test_unknown_binary_is_reported(sm: Any, tmp_path: Path) -> None:
    inst, _, milter = sm
    q = SendmailQueue(str(tmp_path / "no-sendmail"), str(inst.cf))
    qid, _, _ = _hold(inst, milter)
    r = q.release(qid)
    assert not r.ok and "not found" in r.detail
    assert f"hf{qid}" in inst.files()  # still quarantined: nothing was assumed
    assert _queue(inst).delete(qid).ok
