"""`[notify] digest = ["tag"]`: tags reach the Corporate Secretary in one digest email, holds at once.

Against the session's real redis-server and a real aiosmtpd sink on
127.0.0.1 (test_notify.Sink); the clock is fixed and moved by hand.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from regfd.compliance.executor import Workflow
from regfd.compliance.outbox import Outbox
from regfd.config import Config, load_config
from regfd.store.redis_store import RedisStore
from tests.builders import EMBARGO, MATERIAL, T0, FixedClock, facts_for, make_verdict
from tests.conftest import REPO, Regfd, free_port
from tests.mta import wait_until
from tests.test_notify import Sink, body_of

MATERIAL_TEXT = "Between us, we will miss the quarter and the guidance will be lowered next week."


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def sink(port: int) -> Iterator[Sink]:
    s = Sink(port)
    yield s
    s.stop()


@pytest.fixture
def config(regfd: Regfd, port: int) -> Config:
    regfd.write_config(smtp_port=port, extra='[notify]\ndigest = ["tag"]\ndigest_interval = 900.0\n')
    return load_config(regfd.config)


def tag(wf: Workflow, config: Config, n: int) -> None:
    v = make_verdict(config, officer=True, findings=(MATERIAL,), queue_id=f"4TAG{n:06d}")
    assert v.action == "tag"
    wf.on_decision(v, facts_for(v, subject=f"tagged {n}"))


def test_three_tags_make_one_digest_and_a_hold_goes_at_once(store: RedisStore, config: Config, sink: Sink) -> None:
    clock = FixedClock(T0)
    wf = Workflow(store, config, clock)
    outbox = Outbox(store, config, clock=clock)
    for n in range(3):
        tag(wf, config, n)
        clock.advance(minutes=1)
    hold = make_verdict(config, findings=(MATERIAL,), queue_id="4HOLD00001")
    assert hold.action == "hold"
    wf.on_decision(hold, facts_for(hold, subject="held one"))
    assert wf.follow_up() == 4
    outbox.deliver_due()
    # The hold: the Corporate Secretary and the sender are told at once; no tag has been mailed yet.
    assert sorted(m["X-RegFD-Notification"] for m in sink.parsed()) == ["decision", "held-sender"]
    assert "HOLD" in next(m["Subject"] for m in sink.parsed() if m["X-RegFD-Notification"] == "decision")
    assert store.followups.backlog()[2] == 3
    # Not yet: the oldest tag has waited 14 minutes.
    assert wf.send_digest(T0 + timedelta(minutes=14)) == 0
    # Then one email lists all three, oldest first, with each disclosure deadline and its close command.
    assert wf.send_digest(T0 + timedelta(minutes=15)) == 3
    assert wf.send_digest(T0 + timedelta(minutes=30)) == 0  # sent once
    outbox.deliver_due(T0 + timedelta(minutes=15))
    digests = [m for m in sink.parsed() if m["X-RegFD-Notification"] == "digest"]
    assert len(digests) == 1 and len(sink.messages) == 3
    d = digests[0]
    assert d["Subject"].startswith("[RegFD] DIGEST: 3 message(s) (3 tag)")
    assert d["To"] == "corpsec@allient.com"
    text = body_of(d, "plain")
    assert text.index("tagged 0") < text.index("tagged 1") < text.index("tagged 2")
    disclosures = wf.disclosures.list()
    assert len(disclosures) == 3
    for disc in disclosures:
        assert f"regfd disclosures close {disc.id}" in text
    assert text.count("PUBLIC DISCLOSURE DUE BY") == 3 and "we now expect »record revenue«" in text
    assert "<mark>record revenue</mark>" in body_of(d, "html")


def test_rejects_stay_immediate_and_a_failed_digest_keeps_its_entries(store: RedisStore, config: Config,
                                                                      sink: Sink) -> None:
    clock = FixedClock(T0)
    wf = Workflow(store, config, clock)
    tag(wf, config, 1)
    rej = make_verdict(config, findings=(EMBARGO,), queue_id="4REJ000001")
    assert rej.action == "reject"
    wf.on_decision(rej, facts_for(rej))
    wf.follow_up()
    Outbox(store, config, clock=clock).deliver_due()
    assert [m["Subject"].strip().split(":")[0] for m in sink.parsed()] == ["[RegFD] REJECT"]

    def broken(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("rendering failed")

    original = wf.outbox.enqueue_ops
    wf.outbox.enqueue_ops = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        wf.send_digest(force=True)
    wf.outbox.enqueue_ops = original  # type: ignore[method-assign]
    assert store.followups.backlog()[2] == 1  # nothing taken without its email
    assert wf.send_digest(force=True) == 1


CHILD = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from regfd.compliance.executor import Workflow
from regfd.config import load_config
from regfd.store.client import client_from_url
from regfd.store.redis_store import RedisStore
from tests.builders import MATERIAL, T0, FixedClock, facts_for, make_verdict
config = load_config({config!r})
store = RedisStore(client_from_url({url!r}), {prefix!r})
wf = Workflow(store, config, FixedClock(T0))
for n in range(4):
    v = make_verdict(config, officer=True, findings=(MATERIAL,), queue_id=f"4KIL{{n:06d}}")
    wf.on_decision(v, facts_for(v, subject=f"before the crash {{n}}"))
    if n < 2:
        wf.follow_up()  # two in the digest; two recorded and not yet followed up
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_nothing_is_lost_when_the_process_dies(regfd: Regfd, store: RedisStore, config: Config, sink: Sink) -> None:
    """A process records four tags, follows up two and is SIGKILLed: another process mails all four."""
    child = subprocess.run([sys.executable, "-c", CHILD.format(repo=str(REPO), config=str(regfd.config),
                                                               url=regfd.redis_url, prefix=regfd.prefix)],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == -9, child.stderr
    assert store.followups.backlog()[0] == 2 and store.followups.backlog()[2] == 2
    r = regfd("outbox", "flush")  # follows up, sends the digest now, delivers
    assert r.rc == 0, r.err
    [d] = sink.parsed()
    assert d["Subject"].startswith("[RegFD] DIGEST: 4 message(s) (4 tag)")
    text = body_of(d, "plain")
    assert all(f"before the crash {n}" in text for n in range(4))
    assert store.followups.backlog() == (0, None, 0)


def test_a_follow_up_that_cannot_be_built_does_not_block_the_others(store: RedisStore, config: Config,
                                                                    sink: Sink) -> None:
    """A follow-up row that no longer parses (bad data written by hand) is retried later; the next is done."""
    clock = FixedClock(T0)
    wf = Workflow(store, config, clock)
    with store.batch("test") as tx:
        store.followups.add(tx, "fbroken", {"id": "fbroken", "record": {}}, T0 - timedelta(seconds=1))
    rej = make_verdict(config, findings=(EMBARGO,), queue_id="4REJ000002")
    wf.on_decision(rej, facts_for(rej))
    assert wf.follow_up() == 1  # the reject's notice; the broken one waits a minute
    assert store.followups.backlog()[0] == 1
    assert wf.follow_up() == 0
    Outbox(store, config, clock=clock).deliver_due()
    assert len(sink.messages) == 1
    # Its age keeps counting from when it was written, so status and the metrics see it stuck.
    from regfd.monitoring.health import read_backlog

    assert read_backlog(store, (T0 + timedelta(minutes=10)).timestamp()).followup_oldest_age == 601.0


@pytest.mark.e2e
def test_through_postfix_the_milter_mails_one_digest_for_three_tags(postfix: Any, smtp_sink: Any,
                                                                      redis_server: Any, tmp_path: Path) -> None:
    """`regfd milter` (on the session Postfix's `dedicated` listener) with digest = ["tag"] and a 3 s interval:
    the hold's notice comes at once, the three tags' in one digest from the milter's own worker."""
    from tests.mta import MilterProcess, make_message

    runner = Regfd(tmp_path, redis_server.url, f"dg{uuid.uuid4().hex[:8]}:", smtp_port=smtp_sink.port,
                   extra='[notify]\ndigest = ["tag"]\ndigest_interval = 3.0\n')
    for args in (("registry", "add", "bank.com", "--category", "analyst"),
                 ("officer", "add", "ceo@allient.com", "--role", "CEO")):
        assert runner(*args).rc == 0
    milter = MilterProcess.start(runner.config, postfix.sockets["dedicated"], runner.env, tmp_path / "milter.log")
    try:
        tagged = [f"analyst.{uuid.uuid4().hex[:8]}@bank.com" for _ in range(3)]
        for rcpt in tagged:
            code, text = postfix.send("ceo@allient.com", [rcpt], make_message("ceo@allient.com", rcpt, "Update",
                                                                              MATERIAL_TEXT),
                                      port=postfix.ports["dedicated"])
            assert code == 250, text
        holder, held_to = f"bob.{uuid.uuid4().hex[:8]}@allient.com", f"analyst.{uuid.uuid4().hex[:8]}@bank.com"
        code, text = postfix.send(holder, [held_to], make_message(holder, held_to, "Numbers", MATERIAL_TEXT),
                                  port=postfix.ports["dedicated"])
        assert code == 250, text

        def to_corpsec(kind: str, who: str) -> list[Any]:
            return [m for m in smtp_sink.to("corpsec@allient.com")
                    if m.msg["X-RegFD-Notification"] == kind and who in m.msg.get_body(("plain",)).get_content()]

        hold_notice = wait_until(lambda: to_corpsec("decision", holder), 20, what="the hold's notice")
        assert "HOLD" in hold_notice[0].msg["Subject"]
        digest = wait_until(lambda: to_corpsec("digest", tagged[0]), 30, what="the digest")
        assert len(digest) == 1 and digest[0].msg["Subject"].strip().startswith("[RegFD] DIGEST: 3 message(s) (3 tag)")
        text = digest[0].msg.get_body(("plain",)).get_content()
        assert all(rcpt in text for rcpt in tagged)
        assert not [m for rcpt in tagged for m in to_corpsec("decision", rcpt)]  # no tag was mailed on its own
    finally:
        assert milter.stop() == 0


def test_follow_ups_claimed_by_a_worker_that_died_are_done_after_its_lease(store: RedisStore, config: Config,
                                                                            sink: Sink) -> None:
    clock = FixedClock(T0)
    wf = Workflow(store, config, clock)
    for n in range(3):
        tag(wf, config, n)
    assert len(store.followups.claim(T0, T0 + timedelta(seconds=30), 100)) == 3  # ... and the worker dies
    assert wf.follow_up(T0 + timedelta(seconds=29)) == 0  # still leased
    assert wf.follow_up(T0 + timedelta(seconds=30)) == 3
    assert wf.follow_up(T0 + timedelta(minutes=5)) == 0  # once
    assert store.followups.backlog() == (0, None, 3)
