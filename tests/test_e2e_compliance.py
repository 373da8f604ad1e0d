"""End to end, compliance side: a real Postfix with `regfd milter`, real postsuper/postqueue, an SMTP sink.

Fixtures from tests/mta.py (one Postfix, one milter, one sink per session).
This file adds a CLI runner sharing the milter's Redis prefix whose config
names the private Postfix (`[postfix] config_directory`), and a
QuarantineAgent thread for the instance's host name (`myhostname`, which the
milter records as MessageFacts.mta_host). Notifications go straight from the
outbox to the sink (smtp.relay = the sink); `regfd outbox flush` sends them
now (a worker thread in the milter may already have).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from regfd.compliance.disclosures import disclosure_deadline
from regfd.core.clock import from_iso
from regfd.store.client import client_from_url
from regfd.store.redis_store import RedisStore
from tests.conftest import Regfd
from tests.mta import make_message, queue_id_of, wait_until

pytestmark = pytest.mark.e2e

MTA_HOST = "mta.regfd.test"  # myhostname of the tests/mta.py instance (macro j)
CORPSEC = "corpsec@allient.com"
MATERIAL = "Between us, we will miss the quarter and the guidance will be lowered next week."
EMBARGO = "Attached is the draft press release, embargoed until Thursday 8:00."


def uniq(local: str, domain: str) -> str:
    """A fresh address, so tests sharing the session's Postfix and sink never see each other's mail."""
    return f"{local}.{uuid.uuid4().hex[:8]}@{domain}"


@pytest.fixture(scope="module")
def cli(mta_regfd: Any, postfix: Any, smtp_sink: Any, tmp_path_factory: pytest.TempPathFactory) -> Regfd:
    """A CLI on the milter's key prefix that acts on the session's Postfix, as an operator on the MTA host would."""
    r = Regfd(tmp_path_factory.mktemp("compliance-cli"), mta_regfd.redis_url, mta_regfd.prefix,
              smtp_port=smtp_sink.port, extra=f'[postfix]\nconfig_directory = "{postfix.config_dir}"\n')
    for args in (("registry", "add", "bank.com", "--category", "analyst", "--firm", "Big Bank"),
                 ("registry", "add", "fund.example", "--category", "institutional-investor"),
                 ("officer", "add", "ceo@allient.com", "--role", "CEO")):
        res = r(*args)
        assert res.rc == 0, res.err
    return r


@pytest.fixture(scope="module")
def agent(cli: Regfd, regfd_milter: Any) -> Iterator[None]:
    """`regfd milter` runs the quarantine agent for its MTA host: wait for its heartbeat."""
    store = RedisStore(client_from_url(cli.redis_url), cli.prefix)
    wait_until(lambda: store.r.exists(store.k(f"agent:alive:{MTA_HOST}")), 10, what="the milter's agent heartbeat")
    yield
    store.r.close()


def hold_one(postfix: Any, regfd_milter: Any, cli: Regfd, body: str = MATERIAL) -> tuple[str, str, str, dict[str, Any]]:
    """Send a message the policy holds; return sender, recipient, queue id and its quarantine entry."""
    sender, rcpt = uniq("bob", "allient.com"), uniq("analyst", "bank.com")
    code, text = postfix.send(sender, [rcpt], make_message(sender, rcpt, f"Numbers {uuid.uuid4().hex[:6]}", body))
    assert code == 250, text
    qid = queue_id_of(text)
    assert regfd_milter.decision_for(sender)["action"] == "hold"
    wait_until(lambda: any(q["queue_id"] == qid for q in postfix.held()), 10, what="the hold queue")

    def entry() -> dict[str, Any] | None:
        rows = json.loads(cli("quarantine", "list", "--json").out)
        return next((x for x in rows if x["queue_id"] == qid), None)

    return sender, rcpt, qid, wait_until(entry, 10, what="the quarantine entry")


def corpsec_mail(smtp_sink: Any, needle: str) -> list[Any]:
    """What the Corporate Secretary has received so far whose subject contains `needle`."""
    return [m for m in smtp_sink.to(CORPSEC) if needle in m.msg["Subject"]]


def flush_until(cli: Regfd, pred: Any, what: str) -> Any:
    """Flush the outbox until `pred` holds (notifications go out asynchronously), or time out."""
    def go() -> Any:
        cli("outbox", "flush")
        return pred()

    return wait_until(go, 15, interval=0.2, what=what)


def test_held_message_notifies_corporate_secretary(postfix: Any, regfd_milter: Any, cli: Regfd, smtp_sink: Any) -> None:
    sender, rcpt, qid, entry = hold_one(postfix, regfd_milter, cli)
    assert entry["sender"] == sender and entry["recipients"] == rcpt and "material" in entry["findings"]
    [note] = flush_until(cli, lambda: corpsec_mail(smtp_sink, entry["id"]), "the hold notification")
    msg = note.msg
    assert note.mail_from == "regfd@allient.com"
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "HELD for your review" in text and sender in text and f"{rcpt} (analyst, Big Bank)" in text
    assert "material (" in text and "»" in text and "«" in text
    assert f"regfd quarantine release {entry['id']} --by YOU@company --reason" in text
    assert "<mark>" in html
    assert qid in text
    # and the sender was told the message waits for review
    told = flush_until(cli, lambda: smtp_sink.to(sender), "the sender's hold notice")
    assert "held for review" in told[0].msg.get_content()
    assert smtp_sink.to(rcpt) == []  # nothing reached the analyst


def test_release_delivers_exactly_once_and_records_who_and_why(postfix: Any, regfd_milter: Any, cli: Regfd,
                                                                smtp_sink: Any, agent: None) -> None:
    sender, rcpt, qid, entry = hold_one(postfix, regfd_milter, cli)
    r = cli("quarantine", "release", entry["id"], "--by", "corpsec@allient.com",
            "--reason", "approved: public since 9:00", "--timeout", "20")
    assert r.rc == 0, r.err
    assert f"released {entry['id']}" in r.out
    [got] = smtp_sink.wait_for(rcpt, 20)
    assert got.mail_from == sender and got.msg["Subject"].startswith("Numbers")
    assert not any(q["queue_id"] == qid for q in postfix.queue())
    # once: a second release is refused and nothing more arrives
    again = cli("quarantine", "release", entry["id"], "--by", "other@allient.com", "--reason", "again")
    assert again.rc == 1 and "already released by corpsec@allient.com" in again.err
    time.sleep(1.0)
    assert len(smtp_sink.to(rcpt)) == 1
    audit = [e for e in json.loads(cli("audit", "--json").out)
             if e["action"] == "quarantine.release" and e["target"] == entry["id"]]
    assert len(audit) == 1
    assert audit[0]["who"] == "corpsec@allient.com" and audit[0]["detail"]["reason"] == "approved: public since 9:00"
    assert audit[0]["detail"]["queue_id"] == qid
    # the material message reached a Specified Person at release time: the disclosure clock runs from then
    shown = json.loads(cli("quarantine", "show", entry["id"], "--json").out)
    assert shown["state"] == "released" and shown["disclosure_id"]
    decided = from_iso(shown["decided_at"])
    assert isinstance(decided, datetime)
    opened = [d for d in json.loads(cli("disclosures", "--open", "--json").out) if d["id"] == shown["disclosure_id"]]
    assert len(opened) == 1 and opened[0]["source"] == "released"
    assert from_iso(opened[0]["deadline"]) == disclosure_deadline(decided)
    r = cli("disclosures", "close", shown["disclosure_id"], "--by", "corpsec@allient.com", "--reference", "8-K 2.02")
    assert r.rc == 0, r.err
    assert all(d["id"] != shown["disclosure_id"] for d in json.loads(cli("disclosures", "--open", "--json").out))


def test_reject_removes_the_message_and_tells_the_sender(postfix: Any, regfd_milter: Any, cli: Regfd,
                                                        smtp_sink: Any) -> None:
    sender, rcpt, qid, entry = hold_one(postfix, regfd_milter, cli)
    # --local: this test runs on the MTA host and acts with postsuper directly (no agent needed)
    r = cli("quarantine", "reject", entry["id"], "--by", "corpsec@allient.com", "--reason", "guidance is not public",
            "--local")
    assert r.rc == 0, r.err
    assert not any(q["queue_id"] == qid for q in postfix.queue())
    notices = flush_until(cli, lambda: [m for m in smtp_sink.to(sender)
                                        if "not delivered" in m.msg["Subject"]], "the sender's reject notice")
    body = notices[0].msg.get_content()
    assert "guidance is not public" in body and "corpsec@allient.com" in body
    assert smtp_sink.to(rcpt) == []
    again = cli("quarantine", "release", entry["id"], "--by", "corpsec@allient.com", "--reason", "oops", "--local")
    assert again.rc == 1 and "already rejected" in again.err


def test_every_message_to_a_specified_person_is_recorded(postfix: Any, regfd_milter: Any, cli: Regfd) -> None:
    officer_rcpt = uniq("analyst", "bank.com")
    code, text = postfix.send("ceo@allient.com", [officer_rcpt],
                              make_message("ceo@allient.com", officer_rcpt, "Hello", "See you at the conference."))
    assert code == 250, text
    accepted_qid = queue_id_of(text)
    _sender, held_rcpt, held_qid, _entry = hold_one(postfix, regfd_milter, cli)
    emp, pm = uniq("carol", "allient.com"), uniq("pm", "fund.example")
    code, text = postfix.send(emp, [pm], make_message(emp, pm, "Draft", EMBARGO))
    assert code == 550, text
    other = uniq("friend", "example.org")
    code, _ = postfix.send(emp, [other], make_message(emp, other, "Lunch", "Lunch on Friday?"))
    assert code == 250

    def records() -> dict[str, str]:
        rows = json.loads(cli("records", "--json").out)
        return {r["recipients"][0]["address"]: r["action"] for r in rows if r["recipients"]}

    got = wait_until(lambda: (lambda rs: rs if pm in rs else None)(records()), 10, what="the records")
    assert got[officer_rcpt] == "accept" and got[held_rcpt] == "hold" and got[pm] == "reject"
    assert other not in json.dumps(json.loads(cli("records", "--json").out))  # no Specified Person: not recorded
    rows = {r["queue_id"]: r for r in json.loads(cli("records", "--json").out)}
    assert rows[accepted_qid]["mta_host"] == MTA_HOST and rows[held_qid]["findings"]
    csv_out = cli("records", "--csv").out
    assert pm in csv_out and "reject" in csv_out


def test_tagged_material_message_opens_a_disclosure(postfix: Any, regfd_milter: Any, cli: Regfd,
                                                    smtp_sink: Any) -> None:
    rcpt = uniq("analyst", "bank.com")
    code, text = postfix.send("ceo@allient.com", [rcpt], make_message("ceo@allient.com", rcpt, "Update", MATERIAL))
    assert code == 250, text
    qid = queue_id_of(text)
    smtp_sink.wait_for(rcpt)

    def disclosure() -> dict[str, Any] | None:
        rows = json.loads(cli("disclosures", "--open", "--json").out)
        return next((d for d in rows if d["record"].get("queue_id") == qid), None)

    d = wait_until(disclosure, 10, what="the disclosure follow-up")
    assert d["source"] == "delivered"
    assert from_iso(d["deadline"]) == disclosure_deadline(from_iso(d["delivered_at"]))  # type: ignore[arg-type]
    [note] = flush_until(
        cli, lambda: [m for m in smtp_sink.to(CORPSEC) if d["id"] in m.msg.get_body(("plain",)).get_content()],
        "the tag notification")
    assert "PUBLIC DISCLOSURE DUE BY" in note.msg.get_body(("plain",)).get_content()
