"""/metrics after real traffic through a real Postfix: the counts are what the sink and the hold queue saw.

Each engine in turn runs as `regfd milter` (a subprocess, `[metrics] listen`
on a free loopback port) behind the session Postfix's `dedicated` listener,
with a key prefix of its own, so the held-message gauge counts this test's
messages only. The figures are read from the scrape as Prometheus parses it.
"""

from __future__ import annotations

import functools
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Regfd, free_port
from tests.mta import MilterProcess, make_message, queue_id_of, wait_until

pytestmark = pytest.mark.e2e

MATERIAL = "Between us, we will miss the quarter and the guidance will be lowered next week."
EMBARGO = "Attached is the draft press release, embargoed until Thursday 8:00."
CLEAN = "Thank you for your time on Tuesday. The slides from the public conference are on our website."


def uniq(local: str, domain: str) -> str:
    return f"{local}.{uuid.uuid4().hex[:8]}@{domain}"


@dataclass
class Metered:
    milter: MilterProcess
    engine: str
    url: str
    workers: int = 0

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics: (name, sorted labels) -> value."""
        with urllib.request.urlopen(self.url, timeout=10) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            body = resp.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(body) for s in fam.samples}


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """The sum of `name` over every sample whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


@pytest.fixture(params=["libmilter", "asyncio", "asyncio-2-workers"])
def metered(request: Any, postfix: Any, redis_server: Any, smtp_sink: Any, tmp_path: Path) -> Iterator[Metered]:
    port = free_port()
    runner = Regfd(tmp_path, redis_server.url, f"m{uuid.uuid4().hex[:8]}:", smtp_port=smtp_sink.port,
                   extra=f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    for args in (("registry", "add", "bank.com", "--category", "analyst"),
                 ("registry", "add", "fund.example", "--category", "institutional-investor"),
                 ("officer", "add", "ceo@allient.com", "--role", "CEO")):
        r = runner(*args)
        assert r.rc == 0, r.err
    engine, _, rest = request.param.partition("-")  # with workers, the background process adds their counts up
    workers = int(rest.split("-")[0]) if rest else 0
    m = MilterProcess.start(runner.config, postfix.sockets["dedicated"], runner.env, tmp_path / "milter.log",
                            engine=engine, timeout=60,  # start-up compiles the lexicons: slow on a busy machine
                            workers=workers)
    wait_until(lambda: '"metrics.start"' in (tmp_path / "milter.log").read_text(), 30, what="/metrics to be served")
    try:
        yield Metered(m, engine, f"http://127.0.0.1:{port}/metrics", workers)
    finally:
        assert m.stop() == 0


def test_scraped_counts_match_the_sink_and_the_hold_queue(postfix: Any, smtp_sink: Any, metered: Metered) -> None:
    port = postfix.ports["dedicated"]
    before = metered.scrape()
    assert total(before, "regfd_messages_total") == 0
    assert total(before, "regfd_build_info", version="0.1.0") == 1

    def send(sender: str, rcpt: str, subject: str, body: str) -> tuple[int, str]:
        code, text = postfix.send(sender, [rcpt], make_message(sender, rcpt, subject, body), port=port)
        return int(code), str(text)

    accepted = [  # (sender, recipient, body): accepted at MAIL (inbound), at DATA (no Specified Person), at EOM
        (uniq("analyst", "bank.com"), uniq("ir", "allient.com"), MATERIAL),
        (uniq("bob", "allient.com"), uniq("friend", "example.org"), MATERIAL),
        (uniq("bob", "allient.com"), uniq("friend", "example.org"), CLEAN),
        ("ceo@allient.com", uniq("analyst", "bank.com"), CLEAN),
        ("ceo@allient.com", uniq("pm", "fund.example"), CLEAN),
    ]
    for sender, rcpt, body in accepted:
        code, text = send(sender, rcpt, "Hello", body)
        assert code == 250, text
    tagged = uniq("analyst", "bank.com")
    assert send("ceo@allient.com", tagged, "Update", MATERIAL)[0] == 250
    held_qids, held_senders = [], [uniq("bob", "allient.com") for _ in range(2)]
    for sender in held_senders:
        code, text = send(sender, uniq("analyst", "bank.com"), "Numbers", MATERIAL)
        assert code == 250, text
        held_qids.append(queue_id_of(text))
    rejected_sender = uniq("carol", "allient.com")
    code, _text = send(rejected_sender, uniq("pm", "fund.example"), "Draft", EMBARGO)
    assert code == 550

    # What the sink and the hold queue saw.
    delivered = [smtp_sink.wait_for(rcpt)[0] for _s, rcpt, _b in accepted]
    assert all("X-RegFD-Action" not in m.msg for m in delivered)
    assert smtp_sink.wait_for(tagged)[0].msg["X-RegFD-Action"] == "tag"
    held = wait_until(lambda: (h := [q for q in postfix.held() if q["queue_id"] in held_qids]) and len(h) == 2 and h,
                      15, what="both messages in the hold queue")

    s = metered.scrape()
    assert total(s, "regfd_messages_total", action="accept") == len(delivered) == 5
    assert total(s, "regfd_messages_total", action="accept", stage="mail") == 1
    assert total(s, "regfd_messages_total", action="accept", stage="data") == 2
    assert total(s, "regfd_messages_total", action="accept", stage="eom") == 2
    assert total(s, "regfd_messages_total", action="tag") == 1
    assert total(s, "regfd_messages_total", action="hold") == len(held) == 2
    assert total(s, "regfd_messages_total", action="reject") == 1
    assert total(s, "regfd_messages_total", action="failure") == 0
    assert total(s, "regfd_held_messages") == 2  # read from the store at scrape time
    assert 0 <= total(s, "regfd_held_oldest_age_seconds") < 120
    assert total(s, "regfd_store_up") == 1
    # Scanned: the two clean messages to Specified Persons, the tag, both holds and the reject.
    assert total(s, "regfd_scan_duration_seconds_count") == 6
    assert total(s, "regfd_message_size_bytes_count") == 6
    assert total(s, "regfd_message_size_bytes_sum") > 6 * len(CLEAN)
    assert total(s, "regfd_decision_duration_seconds_count") == 9
    # One directory lookup per message past MAIL, one record per message to a Specified Person.
    assert total(s, "regfd_store_round_trips_total", operation="snapshot") == 8
    assert total(s, "regfd_store_round_trips_total", operation="record") == 6
    assert total(s, "regfd_store_errors_total") == 0
    assert total(s, "regfd_milter_connections_total") >= 1
    assert total(s, "regfd_milter_open_connections") >= 0
    assert total(s, "regfd_config_info", engine=metered.engine, mode="enforce", failure_action="tempfail") == 1
    # process_* describe one process: served by a single milter, left out with workers (one per process would mislead)
    assert (total(s, "process_cpu_seconds_total") > 0) == (metered.workers == 0)
    # The milter's worker follows every decision up (notices for the tag, both holds and the reject, and
    # each held sender is told), and its outbox delivers them: then nothing is pending any more.
    def notice_about(who: str) -> list[Any]:  # the subject names the sender and the first recipient
        return [m for m in smtp_sink.to("corpsec@allient.com") if who in m.msg["Subject"]]

    for who in (*held_senders, rejected_sender, tagged):
        wait_until(functools.partial(notice_about, who), 20, what=f"the Corporate Secretary's notice about {who}")
    for sender in held_senders:
        smtp_sink.wait_for(sender)
    wait_until(lambda: (d := metered.scrape()) and total(d, "regfd_outbox_depth") == 0
               and total(d, "regfd_followups_pending") == 0, 20, what="the follow-ups and the outbox to drain")
    no_address = [ls for (_n, ls) in s for _k, v in ls if "@" in v or v.startswith("127.")]
    assert not no_address, no_address


@pytest.mark.parametrize(("listen", "problem"), [
    ("0.0.0.0:9464", "must be a loopback address"),
    ("192.0.2.10:9464", "must be a loopback address"),
    ("127.0.0.1", "must be HOST:PORT"),
    ("127.0.0.1:99999", "must be HOST:PORT"),
])
def test_metrics_listen_is_loopback_host_and_port(listen: str, problem: str) -> None:
    from regfd.config import parse_config
    from regfd.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        parse_config({"metrics": {"listen": listen}})
    assert str(exc.value).startswith("config: metrics.listen: " + problem)


@pytest.mark.parametrize("listen", ["127.0.0.1:9464", "[::1]:9464", "localhost:9464"])
def test_metrics_listen_accepts_loopback(listen: str) -> None:
    from regfd.config import parse_config

    assert parse_config({"metrics": {"listen": listen}}).metrics.port == 9464


def test_a_hung_store_makes_the_scrape_say_store_down_not_hang() -> None:
    """A probe that blocks stands in for a Redis that accepts the query and never answers."""
    import threading
    import time

    from prometheus_client import generate_latest

    from regfd.monitoring.health import Backlog
    from regfd.monitoring.prometheus import PrometheusMetrics

    release = threading.Event()
    calls = []

    def probe() -> Backlog:
        calls.append(1)
        if len(calls) == 1:
            release.wait(10)
        return Backlog(3, 42.0, 1, 7.0)

    m = PrometheusMetrics()
    m.watch_backlog(probe, timeout=0.2)
    t = time.monotonic()
    first = generate_latest(m.registry).decode()
    assert time.monotonic() - t < 2
    assert "regfd_store_up 0.0" in first and "regfd_outbox_depth" not in first
    generate_latest(m.registry)  # the first probe still runs: not started twice
    assert len(calls) == 1
    release.set()
    second = wait_until(lambda: (out := generate_latest(m.registry).decode()) and "regfd_store_up 1.0" in out and out,
                        5, what="a successful probe")
    assert "regfd_outbox_depth 3.0" in second and "regfd_held_oldest_age_seconds 7.0" in second
