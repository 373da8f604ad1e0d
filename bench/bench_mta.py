"""Throughput, CPU and added latency of regfd behind a REAL Postfix, every scenario in one run.

    .venv/bin/python bench/bench_mta.py [--rounds 3] [--messages 2000] [--latency 200] [--inet]
                                        [--engines libmilter,asyncio] [--workers N]
    # about 10 minutes: --rounds 1 --messages 600 --latency 50 --inet --workers 2

One private Postfix instance (tests/mta.py) with several smtpd listeners that
differ only in their milter: `plain` (none), and one per engine (`--engines`,
default both): `libmilter` (pymilter) and `asyncio` (regfd/mta/asyncio_engine.py,
on uvloop when installed), each a regfd milter on a unix socket; `--workers N`
adds `asyncio-wN`, the asyncio engine in N worker processes ([milter] workers);
with --inet each also on inet: (`-tcp`, TCP_NODELAY). Postfix relays
everything to smtp-sink. Load comes from smtp-source (C, ships with Postfix)
with 10 KB messages of ordinary English business text, in three scenarios
per milter:

- `sp-clean`: every message to the Specified Person, text without a finding
  (the whole path runs: lookup, scan, record; the verdict is accept);
- `sp-finding`: every message to the Specified Person with exactly one
  finding in the text, from an authorized officer: tag, record, follow-up
  and the Corporate Secretary's notice (the outbox sends it);
- `none`: no Specified Person (accepted at DATA, before the body).

Postfix alone is measured with the same clean message. From the measured
time per message (1 / throughput) comes the derived mix where 5 % of the
mail goes to a Specified Person: t_mix = 0.05 t_sp-clean + 0.95 t_none, and
its ratio t_plain / t_mix (throughput with regfd / Postfix alone). Milter CPU
per message is the CPU of the milter's processes (all of them with workers:
supervisor, workers, background) over a round divided by its messages.

Rounds alternate the order of the listeners so that a ratio compares like
with like. A round's throughput counts until Postfix's queue is empty again
(accepted AND delivered). Latency: one message at a time from a Python
client, time from connect to the reply to the end of DATA, alternating
listeners and recipients (Specified Person, outside); the difference of the
percentiles is what regfd adds.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import smtplib
import statistics
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import Regfd, free_port, start_redis, stop_redis  # noqa: E402
from tests.mta import MilterProcess, PostfixInstance, make_mta_dir, wait_until  # noqa: E402

SENDER = "ceo@allient.com"
SPECIFIED = "analyst@bank.com"
OTHER = "partner@example.org"

SENTENCES = """\
Thanks for sending the notes from Tuesday's meeting so quickly.
I have attached the revised agenda for the workshop next month.
Could you confirm whether the conference room on the fourth floor is still available?
The new badge readers will be installed over the weekend, so please bring your old card on Monday.
Our team spent most of the afternoon reviewing the migration plan for the ticketing system.
Maria will join the call from Denver, and she asked us to start ten minutes late.
Please remember that the parking garage closes early on Friday for maintenance.
I spoke with the vendor about the printer contract and they promised a technician by Thursday.
The draft of the onboarding guide is in the shared folder; comments are welcome until the end of the week.
We should decide soon whether the offsite will be in Austin or in Chicago.
The catering order for the training session needs a final head count by noon tomorrow.
Several people mentioned that the wireless network in the east wing drops connections in the morning.
John finished the documentation for the reporting tool and recorded a short walkthrough video.
If you travel on Sunday, the hotel near the airport has a shuttle that leaves every half hour.
I moved our weekly sync to Wednesday because of the public holiday.
The design team shared three options for the new intranet homepage.
Let me know if the timeline for the office move works for your group.
We received the replacement laptops, and IT will schedule the swaps in small batches.
The library of templates now includes a letterhead with the updated logo.
Please keep the kitchen tidy; the cleaning crew only comes in twice a week now.
I enjoyed the presentation on accessibility and would like to share the slides with my team.
The volunteer day at the food bank is confirmed for the second Saturday of the month.
A few colleagues asked for a refresher on the expense tool, so I booked a room for Thursday.
The elevator in the north tower will be out of service while the inspectors finish their work.
Our translation of the safety handbook into Spanish and French is almost complete.
Thank you again for covering the front desk during the fire drill.
The photographer will be here at ten to take portraits for the staff directory.
I suggest we keep the recurring meeting short and use the shared document for updates.
Remember to rotate your password before the reminder locks your account.
The mentoring program pairs new hires with someone from a different department.
""".splitlines()


def realistic_message(size: int = 10_240, seed: int = 7, sentences: list[str] | None = None) -> bytes:
    """About `size` bytes of ordinary business text from the CEO to the analyst, with no trigger phrase."""
    rng = random.Random(seed)
    pool = sentences or SENTENCES
    paragraphs: list[str] = []
    total = 0
    while total < size:
        para = " ".join(rng.choice(pool) for _ in range(rng.randint(3, 7)))
        text = "\r\n".join(textwrap.wrap(para, 72))
        paragraphs.append(text)
        total += len(text) + 4
    body = "\r\n\r\n".join(paragraphs)[:size]
    head = (f"From: Chief Executive <{SENDER}>\r\nTo: {SPECIFIED}\r\nSubject: Notes from this week\r\n"
            "Date: Wed, 25 Nov 2026 10:00:00 -0500\r\nMessage-ID: <bench@allient.com>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n")
    return (head + body + "\r\n").encode()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of `pid` so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def queue_empty(pf: PostfixInstance) -> bool:
    """Whether Postfix holds no message that is still to be delivered (hold does not count)."""
    for q in ("maildrop", "incoming", "active", "deferred"):
        for _root, _dirs, files in os.walk(pf.queue_dir / q):
            if files:
                return False
    return True


def throughput_round(pf: PostfixInstance, listener: str, msgfile: Path, conc: int, count: int,
                     to: str = SPECIFIED, sender: str = SENDER) -> float:
    """msgs/s from the first connection until the queue is empty again; every message from `sender` to `to`."""
    port = pf.ports[listener]
    start = time.perf_counter()
    subprocess.run(["smtp-source", "-s", str(conc), "-m", str(count), "-f", sender, "-t", to, "-F", str(msgfile),
                    f"127.0.0.1:{port}"], check=True, stdout=subprocess.DEVNULL)
    wait_until(lambda: queue_empty(pf), 120, interval=0.01, what="the queue to drain")
    return count / (time.perf_counter() - start)


def latency_samples(pf: PostfixInstance, listeners: list[str], message: bytes, n: int) -> dict[str, list[float]]:
    """`n` one-at-a-time sends per listener, in ms, alternating the order so neither goes first always."""
    out: dict[str, list[float]] = {name: [] for name in listeners}
    for i in range(n):
        to = SPECIFIED if i % 2 == 0 else OTHER
        for name in (listeners if i % 2 == 0 else list(reversed(listeners))):
            t = time.perf_counter()
            with smtplib.SMTP("127.0.0.1", pf.ports[name], timeout=30) as s:
                s.ehlo("bench.client")
                s.sendmail(SENDER, [to], message)
            out[name].append((time.perf_counter() - t) * 1000)
        if i % 20 == 19:
            wait_until(lambda: queue_empty(pf), 60, interval=0.01)
    return out




def workers_listening(log: Path, workers: int) -> bool:
    """Whether `workers` worker processes have logged their start (the supervisor logs its own first)."""
    return log.read_text().count('"milter.worker_start"') >= workers


def pct(xs: list[float], p: float) -> float:
    """The `p`th percentile by nearest rank."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def tree_pids(pid: int) -> list[int]:
    """`pid` and every live descendant (a milter with workers: supervisor, workers, background process)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            continue
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU of `pid` and its live descendants, from /proc."""
    total = 0.0
    for p in tree_pids(pid):
        try:
            total += cpu_seconds(p)
        except OSError:
            continue
    return total


# Candidate sentences for the `sp-finding` scenario: the first that gives exactly one finding is used.
FINDING_SENTENCES = [
    "We will miss the quarter.",
    "Guidance will be lowered.",
    "Attached is the draft press release.",
    "We now expect revenue for the quarter to come in below the guidance we gave in January.",
    "Between us, we will miss the quarter.",
    "Our adjusted EBITDA for the quarter will be about 40 million dollars.",
    "The board approved the acquisition of Northwind yesterday; it is not public yet.",
]
SCENARIOS = ("sp-clean", "sp-finding", "none")


def main() -> int:
    """Set up Postfix, the milters and the sink, run the rounds, and print the results; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    # Rounds run until Postfix's queue is empty again; the queue manager can
    # wake up to ~1 s late, so short rounds (400 messages, under a second)
    # made Postfix alone look bimodal (275 vs 690 msgs/s). Long rounds amortize it.
    ap.add_argument("--messages", type=int, default=2000, help="messages per round at concurrency 20")
    ap.add_argument("--messages-c1", type=int, default=400, help="messages per round at concurrency 1 (0: none)")
    ap.add_argument("--latency", type=int, default=200, help="one-at-a-time samples per listener")
    ap.add_argument("--inet", action="store_true", help="also measure regfd on an inet: socket")
    ap.add_argument("--engines", default="libmilter,asyncio",
                    help="milter engines to compare, comma-separated (libmilter, asyncio, asyncio-stdlib)")
    ap.add_argument("--workers", type=int, default=0, help="also the asyncio engine with N worker processes")
    args = ap.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if args.workers > 1:
        engines.append(f"asyncio-w{args.workers}")

    work = make_mta_dir("regfd-bench-")
    redis = start_redis(work / "redis")
    sink_port = free_port()
    sink = subprocess.Popen(["smtp-sink", "-u", "postfix", f"127.0.0.1:{sink_port}", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (work / "regfd").mkdir()
    runner = Regfd(work / "regfd", redis.url, "bench:", smtp_port=sink_port)
    assert runner("registry", "add", "bank.com", "--category", "analyst").rc == 0
    assert runner("officer", "add", SENDER, "--role", "CEO").rc == 0
    milters: dict[str, MilterProcess] = {}
    sockets: dict[str, object] = {"main": "", "plain": ""}
    for engine in engines:
        # "asyncio-stdlib": the asyncio engine on the standard event loop even where uvloop is installed
        env = {**runner.env, **({"REGFD_EVENT_LOOP": "asyncio"} if engine == "asyncio-stdlib" else {})}
        workers = int(engine.partition("-w")[2] or 0) if engine.startswith("asyncio-w") else 0
        kinds = [("", work / f"{engine}.sock")] + ([("-tcp", f"inet:{free_port()}@127.0.0.1")] if args.inet else [])
        for suffix, sock in kinds:
            name = engine + suffix
            m = milters[name] = MilterProcess.start(runner.config, sock, env, work / f"{name}.log",
                                                    engine="asyncio" if workers else engine.removesuffix("-stdlib"),
                                                    workers=workers)
            wait_until(functools.partial(workers_listening, m.log, workers), 30, what="every worker to listen")
            sockets[name] = sock if isinstance(sock, Path) else "inet:127.0.0.1:" + sock.split(":")[1].split("@")[0]
    for name, m in milters.items():
        start = next(json.loads(line) for line in m.log.read_text().splitlines() if '"milter.start"' in line)
        worker: dict[str, Any] = next((json.loads(line) for line in m.log.read_text().splitlines()
                                       if '"milter.worker_start"' in line), {})
        loop = start.get("loop") or worker.get("loop") or "libmilter threads"
        print(f"{name}: engine {start.get('engine')}, {loop}, workers {start.get('workers', 1)}, "
              f"quiet protocol {start.get('quiet_protocol')}")
    pf = PostfixInstance(work / "postfix", sink_port, sockets)
    from regfd.config import load_config
    from regfd.scan.lexicon import load_lexicons
    from regfd.scan.scanner import scan_message

    cfg = load_config(runner.config)
    lexicons = load_lexicons(cfg.lexicon_dir)
    # Sentences the current lexicons flag (alone or beside others) are left out, so the text stays clean
    # as the lexicons grow.
    clean = [s for s in SENTENCES if s]
    for _ in range(len(clean)):
        hits = [" ".join(f.text.split()).lower() for f in scan_message(realistic_message(sentences=clean), lexicons,
                                                                        cfg.limits)]
        kept = [s for s in clean if not any(h and h in s.lower() for h in hits)]
        if not hits or len(kept) == len(clean):
            break
        clean = kept
    message = realistic_message(sentences=clean)
    msgfile = work / "message.eml"
    msgfile.write_bytes(message)
    head, _, body = message.partition(b"\r\n\r\n")
    finding_msg, finding_of = b"", []
    for sentence in FINDING_SENTENCES:
        candidate = head + b"\r\n\r\n" + sentence.encode() + b"\r\n\r\n" + body
        finding_of = scan_message(candidate, lexicons, cfg.limits)
        if len(finding_of) == 1:
            finding_msg = candidate
            break
    if not finding_msg:
        print("no candidate sentence gives exactly one finding with these lexicons", file=sys.stderr)
        return 1
    findfile = work / "finding.eml"
    findfile.write_bytes(finding_msg)
    listeners = ["plain"] + [k for k in milters]
    # scenario -> (message file, recipient); Postfix alone runs only the first
    plan = {"sp-clean": (msgfile, SPECIFIED), "sp-finding": (findfile, SPECIFIED), "none": (msgfile, OTHER)}
    runs = [("plain", "sp-clean")] + [(m, sc) for m in milters for sc in SCENARIOS]
    try:
        pf.start()
        print(f"sentences: {len(clean)} of {len([s for s in SENTENCES if s])} kept (the others led to a finding)")
        findings = scan_message(message, lexicons, cfg.limits)
        print(f"message: {len(message)} bytes of English text, findings: {len(findings)}; sp-finding adds "
              f"{sentence!r}: {[f'{f.kind}:{f.category}' for f in finding_of]}")
        print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1 and 5 min), {os.cpu_count()} CPUs")
        # warm-up (Postfix processes, milter threads and workers, Redis connections)
        for name in listeners:
            throughput_round(pf, name, msgfile, 20, 100)

        results: dict[tuple[str, str, int], list[float]] = {}
        cpu: dict[tuple[str, str, int], list[float]] = {}
        concs = [(20, args.messages)] + ([(1, args.messages_c1)] if args.messages_c1 else [])
        for conc, count in concs:
            for r in range(args.rounds):
                for name, scenario in (runs if r % 2 == 0 else list(reversed(runs))):
                    f, to = plan[scenario]
                    before = tree_cpu_seconds(milters[name].proc.pid) if name in milters else 0.0
                    rate = throughput_round(pf, name, f, conc, count, to=to)
                    if name in milters:
                        used = tree_cpu_seconds(milters[name].proc.pid) - before
                        cpu.setdefault((name, scenario, conc), []).append(used * 1000 / count)
                    results.setdefault((name, scenario, conc), []).append(rate)
                    print(f"  c={conc:<2} round {r + 1} {name:<16} {scenario:<10} {rate:7.1f} msgs/s", flush=True)

        def med(table: dict[tuple[str, str, int], list[float]], *key: Any) -> float:
            return statistics.median(table[key])

        for conc, _count in concs:
            base = med(results, "plain", "sp-clean", conc)
            print(f"\nconcurrency {conc}: throughput in msgs/s (median of rounds), ratio = with regfd / Postfix alone "
                  f"({base:.1f} msgs/s); mix 5 %: t = 0.05 t_sp-clean + 0.95 t_none")
            print(f"  {'milter':<16} {'sp-clean':>9} {'sp-finding':>10} {'none':>8} {'mix 5%':>8} "
                  f"{'ratio':>6}   CPU ms/msg: {'sp-clean':>8} {'sp-finding':>10} {'none':>6}")
            print(f"  {'plain':<16} {base:9.1f} {'':>10} {'':>8} {base:8.1f} {1:6.2f}")
            for name in milters:
                rates = {sc: med(results, name, sc, conc) for sc in SCENARIOS}
                t_mix = 0.05 / rates["sp-clean"] + 0.95 / rates["none"]
                cpus = {sc: med(cpu, name, sc, conc) for sc in SCENARIOS}
                print(f"  {name:<16} {rates['sp-clean']:9.1f} {rates['sp-finding']:10.1f} {rates['none']:8.1f} "
                      f"{1 / t_mix:8.1f} {(1 / base) / t_mix:6.2f}   {'':11} {cpus['sp-clean']:8.2f} "
                      f"{cpus['sp-finding']:10.2f} {cpus['none']:6.2f}")

        print("\ndecisions per milter (from its log):")
        for name, m in milters.items():
            decisions = [json.loads(line) for line in m.log.read_text().splitlines() if '"milter.decision"' in line]
            actions = Counter(f"{d['stage']}:{d['action']}" for d in decisions)
            per_pid = Counter(d.get("pid") for d in decisions)
            print(f"  {name}: {dict(sorted(actions.items()))}, decisions per process {sorted(per_pid.values())}")
            for stage in ("data", "eom"):
                ds = [d["duration_ms"] for d in decisions if d.get("stage") == stage]
                if ds:
                    print(f"    decision time at {stage.upper()}: n={len(ds)} p50 {pct(ds, 50):.2f} ms, "
                          f"p99 {pct(ds, 99):.2f} ms (lookup{' + scan + record' if stage == 'eom' else ''})")

        lat = latency_samples(pf, listeners, message, args.latency)
        print(f"\nlatency, one message at a time ({args.latency} each, alternating; connect..end of DATA):")
        b50, b99 = pct(lat["plain"], 50), pct(lat["plain"], 99)
        print(f"  {'plain':<16} p50 {b50:6.2f} ms  p99 {b99:6.2f} ms")
        for name in milters:
            p50, p99 = pct(lat[name], 50), pct(lat[name], 99)
            print(f"  {name:<16} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms   added: p50 {p50 - b50:+.2f} ms, "
                  f"p99 {p99 - b99:+.2f} ms")
        print(f"load at the end: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1 and 5 min)")
        return 0
    finally:
        pf.stop()
        for m in milters.values():
            m.stop()
        sink.terminate()
        stop_redis(redis)
        if not os.environ.get("REGFD_KEEP_MTA"):
            import shutil

            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
