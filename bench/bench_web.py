"""How fast the console answers with a large quarantine: the held queue, a filtered queue, one message.

    .venv/bin/python bench/bench_web.py [--held 1000] [--decided 5000] [--rounds 20]

A private redis-server (tests/conftest.py's) gets `--held` undecided and
`--decided` released entries, registered by the real workflow
(Workflow.on_decision, as the milter does), each with its raw message. The
console (create_app) answers through Starlette's TestClient, signed in as a
reviewer; the figures are milliseconds per request (median and 95th
percentile over `--rounds`), the queue page listing every open message.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from argon2 import PasswordHasher  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from regfd.compliance.executor import Workflow  # noqa: E402
from regfd.config import load_config  # noqa: E402
from regfd.core.vocabulary import QuarantineState  # noqa: E402
from regfd.store.client import client_from_url  # noqa: E402
from regfd.store.redis_store import RedisStore  # noqa: E402
from regfd.store.users_store import UsersStore  # noqa: E402
from regfd.web.app import create_app  # noqa: E402
from tests.builders import MATERIAL, facts_for, make_verdict  # noqa: E402
from tests.conftest import Regfd, start_redis, stop_redis  # noqa: E402


def timed(c: TestClient, path: str, rounds: int) -> tuple[float, float]:
    ms = []
    for _ in range(rounds):
        t = time.perf_counter()
        r = c.get(path)
        ms.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, (path, r.status_code)
    ms.sort()
    return statistics.median(ms), ms[int(0.95 * (len(ms) - 1))]


def main() -> None:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # no access log
    ap = argparse.ArgumentParser()
    ap.add_argument("--held", type=int, default=1000)
    ap.add_argument("--decided", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="regfd-bench-web-"))
    server = start_redis(tmp / "redis")
    try:
        r = Regfd(tmp, server.url, "bench:", extra="[web]\nsecure_cookies = false\n")
        config = load_config(r.config)
        store = RedisStore(client_from_url(server.url), "bench:")
        wf = Workflow(store, config)
        t0 = time.perf_counter()
        for i in range(a.held + a.decided):
            v = make_verdict(config, findings=(MATERIAL,), queue_id=uuid.uuid4().hex[:10].upper())
            wf.on_decision(v, facts_for(v, subject=f"Q4 update {i}"))
        if a.decided:  # mark the oldest as released, as a release would leave them
            for e in wf.quarantine.list()[: a.decided]:
                done = replace(e, state=QuarantineState.RELEASED, decided_by="bench", decided_at=e.created_at)
                with store.batch("bench") as tx:
                    store.quarantine.put(tx, e.id, done.to_json())
                    store.quarantine.decided(tx, e.id)
        print(f"store: {a.held} held + {a.decided} released entries in {time.perf_counter() - t0:.1f} s")
        fast = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("bench password 1")
        UsersStore(store).put({"name": "rev", "role": "reviewer", "hash": fast, "totp": ""}, "bench", "add")
        c = TestClient(create_app(config, store), base_url="http://127.0.0.1")
        page = c.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token
        c.post("/login", data={"csrf": token.group(1), "name": "rev", "password": "bench password 1"})
        UsersStore(store).token_add("rfd_bench", "rev", "bench", "", "bench")
        api = TestClient(c.app, base_url="http://127.0.0.1", headers={"Authorization": "Bearer rfd_bench"})
        some = wf.quarantine.list()[-1].id
        for label, client, path in (("queue (all open)", c, "/"), ("queue filtered by sender", c, "/?sender=nobody"),
                                    ("dashboard", c, "/dashboard"), ("one message", c, f"/message/{some}"),
                                    ("API /api/v1/held (all open)", api, "/api/v1/held")):
            med, p95 = timed(client, path, a.rounds)
            print(f"{label:28s} median {med:7.1f} ms   p95 {p95:7.1f} ms")
        store.r.close()
    finally:
        stop_redis(server)


if __name__ == "__main__":
    main()
