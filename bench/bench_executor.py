"""What the MTA waits for after a decision, per action: the record alone vs the record with every follow-up.

Starts its own redis-server on a unix socket in a temp dir. For a tag (with
a material finding), a hold and a recorded accept it prints, measured in
alternating rounds in one run:
  - `hot path`: Workflow.on_decision as the milter calls it now (record,
    quarantine entry, one follow-up row: one MULTI/EXEC);
  - `all inline`: the same decision with its follow-up done inside that
    transaction (disclosure, rendered notices), which is what on_decision
    did before the follow-ups moved to the worker;
  - `follow-up`: Workflow.follow_up per decision, as the worker does it later
    (for tags also with `[notify] digest = ["tag"]`: `follow-up, digest`,
    the entry only; the digest email itself is rendered once per period);
each as wall time and as this process's CPU time per decision (the milter's
own cost; Redis's is the difference to wall).
Usage: .venv/bin/python bench/bench_executor.py [--decisions 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from regfd.compliance.disclosures import new_id  # noqa: E402
from regfd.compliance.executor import FollowUp, Workflow  # noqa: E402
from regfd.compliance.quarantine import QuarantineEntry  # noqa: E402
from regfd.compliance.records import make_record  # noqa: E402
from regfd.config import load_config  # noqa: E402
from regfd.core.clock import now  # noqa: E402
from regfd.core.message import MessageFacts  # noqa: E402
from regfd.core.verdict import Verdict  # noqa: E402
from regfd.core.vocabulary import QuarantineState  # noqa: E402
from regfd.store.client import client_from_url  # noqa: E402
from regfd.store.redis_store import RedisStore  # noqa: E402
from tests.builders import MATERIAL, facts_for, make_verdict  # noqa: E402
from tests.conftest import Regfd, start_redis, stop_redis  # noqa: E402


def all_inline(wf: Workflow, verdict: Verdict, facts: MessageFacts) -> None:
    """The decision and its whole follow-up in ONE transaction: the work on_decision did before."""
    t = wf.clock()
    action = verdict.action
    qid = new_id("q") if action == "hold" else ""
    did = new_id("d") if action in ("accept", "tag") and verdict.has_material else ""
    record = make_record(verdict, facts, quarantine_id=qid, disclosure_id=did)
    job = FollowUp(new_id("f"), record, qid, did, facts.received_at, t) if action != "accept" or did else None
    with wf.store.batch("bench", operation="record") as tx:
        wf.records.add_ops(tx, record, t)
        if action == "hold":
            wf.quarantine.add_ops(tx, QuarantineEntry(qid, QuarantineState.HELD, facts.received_at, facts.mta_host,
                                                      record.queue_id, record), facts.raw)
        if job is not None:  # (a recorded accept without material had nothing to follow up, then as now)
            wf._follow_up_ops(tx, job.id, job.to_json())


def timed(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """(wall ms, CPU ms) per call over `n` calls."""
    w, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    return (time.perf_counter() - w) / n * 1000, (time.process_time() - c) / n * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decisions", type=int, default=2000, help="decisions per action, variant and round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="regfd-bench-"))
    server = start_redis(tmp / "redis")
    try:
        runner = Regfd(tmp, server.url, "bench:")
        config = load_config(runner.config)
        store = RedisStore(client_from_url(server.url), "bench:")
        wf = Workflow(store, config)
        runner.write_config(extra='[notify]\ndigest = ["tag"]\n')
        digesting = Workflow(store, load_config(runner.config))
        at = now()
        cases = {
            "tag": make_verdict(config, officer=True, findings=(MATERIAL,), at=at),
            "hold": make_verdict(config, findings=(MATERIAL,), at=at),
            "accept": make_verdict(config, officer=True, at=at),
        }
        facts = {name: facts_for(v, at=at) for name, v in cases.items()}
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        n = args.decisions
        for r in range(args.rounds):
            for name, v in cases.items():
                f = facts[name]

                def inline(v: Verdict = v, f: MessageFacts = f) -> None:
                    all_inline(wf, v, f)

                def hot(v: Verdict = v, f: MessageFacts = f) -> None:
                    wf.on_decision(v, f)

                order = [("all inline", inline), ("hot path", hot)]
                for variant, fn in order if r % 2 == 0 else order[::-1]:  # alternate which goes first
                    results.setdefault((name, variant), []).append(timed(fn, n))
                w, c = time.perf_counter(), time.process_time()
                while wf.follow_up():  # process_due takes 100 at a time
                    pass
                results.setdefault((name, "follow-up"), []).append(
                    ((time.perf_counter() - w) / n * 1000, (time.process_time() - c) / n * 1000))
                if name == "tag":
                    for _ in range(n):
                        wf.on_decision(v, f)
                    w, c = time.perf_counter(), time.process_time()
                    while digesting.follow_up():
                        pass
                    results.setdefault((name, "follow-up, digest"), []).append(
                        ((time.perf_counter() - w) / n * 1000, (time.process_time() - c) / n * 1000))
                    digesting.send_digest(force=True)
        print(f"executor, {n} decisions per action and variant, {args.rounds} alternating rounds "
              f"(median of rounds; ms per decision)")
        print(f"{'action':8} {'variant':18} {'wall ms':>8} {'CPU ms':>8}")
        for (name, variant), rows in results.items():
            walls, cpus = sorted(r[0] for r in rows), sorted(r[1] for r in rows)
            print(f"{name:8} {variant:18} {walls[len(walls) // 2]:8.3f} {cpus[len(cpus) // 2]:8.3f}")
        for name in cases:
            before = sorted(r[1] for r in results[(name, "all inline")])[args.rounds // 2]
            after = sorted(r[1] for r in results[(name, "hot path")])[args.rounds // 2]
            print(f"{name}: CPU the MTA waits for, hot path / all inline = {after / before:.2f}")
        store.r.close()
    finally:
        stop_redis(server)


if __name__ == "__main__":
    main()
