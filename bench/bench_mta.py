"""Throughput and added latency of regfd behind a REAL Postfix, measured in one run.

    .venv/bin/python bench/bench_mta.py [--rounds 3] [--messages 2000] [--latency 200] [--inet]
                                        [--engines libmilter,asyncio]

One private Postfix instance (tests/mta.py) with several smtpd listeners that
differ only in their milter: `plain` (none), and one per engine (`--engines`,
default both): `libmilter` (pymilter) and `asyncio` (regfd/mta/asyncio_engine.py,
on uvloop when installed), each a regfd milter on a unix socket; with --inet
also `libmilter-tcp` and `asyncio-tcp` (the same on inet:, TCP_NODELAY).
Postfix relays everything to smtp-sink. Load comes from smtp-source (C, ships
with Postfix) with 10 KB messages of ordinary English business text (no
trigger phrase: the whole path runs, scanner included, and the verdict is
accept), half of them to a Specified Person (registry) and half to an outside
address; the sender is an authorized officer, so every message to the
analyst is recorded (the Workflow sink writes its record to Redis).

Rounds alternate between listeners so that a ratio compares like with like.
A round's throughput counts until Postfix's queue is empty again (accepted
AND delivered). Latency: one message at a time from a Python client, time
from connect to the reply to the end of DATA, alternating listeners; the
difference of the percentiles is what regfd adds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import smtplib
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

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


def postfix_cpu_seconds() -> float:
    """CPU of every live Postfix process (smtpd, cleanup, qmgr, smtp ...): approximate, processes come and go."""
    total = 0.0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            exe = os.readlink(d / "exe")
            if exe.startswith("/usr/lib/postfix/sbin/"):
                total += cpu_seconds(int(d.name))
        except OSError:
            continue
    return total


def queue_empty(pf: PostfixInstance) -> bool:
    """Whether Postfix holds no message that is still to be delivered (hold does not count)."""
    for q in ("maildrop", "incoming", "active", "deferred"):
        for _root, _dirs, files in os.walk(pf.queue_dir / q):
            if files:
                return False
    return True


def throughput_round(pf: PostfixInstance, listener: str, msgfile: Path, conc: int, count: int) -> float:
    """msgs/s from the first connection until the queue is empty again; half to the Specified Person."""
    port = pf.ports[listener]
    start = time.perf_counter()
    if conc == 1:
        for to in (SPECIFIED, OTHER):
            subprocess.run(["smtp-source", "-s", "1", "-m", str(count // 2), "-f", SENDER, "-t", to, "-F",
                            str(msgfile), f"127.0.0.1:{port}"], check=True)
    else:
        procs = [subprocess.Popen(["smtp-source", "-s", str(conc // 2), "-m", str(count // 2), "-f", SENDER,
                                   "-t", to, "-F", str(msgfile), f"127.0.0.1:{port}"]) for to in (SPECIFIED, OTHER)]
        for p in procs:
            if p.wait() != 0:
                raise RuntimeError("smtp-source failed (is the milter answering?)")
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


def pct(xs: list[float], p: float) -> float:
    """The `p`th percentile by nearest rank."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main() -> int:
    """Set up Postfix, the milters and the sink, run the rounds, and print the results; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    # Rounds run until Postfix's queue is empty again; the queue manager can
    # wake up to ~1 s late, so short rounds (400 messages, under a second)
    # made Postfix alone look bimodal (275 vs 690 msgs/s). Long rounds amortize it.
    ap.add_argument("--messages", type=int, default=2000, help="messages per round at concurrency 20")
    ap.add_argument("--messages-c1", type=int, default=400, help="messages per round at concurrency 1")
    ap.add_argument("--latency", type=int, default=200, help="one-at-a-time samples per listener")
    ap.add_argument("--inet", action="store_true", help="also measure regfd on an inet: socket")
    ap.add_argument("--engines", default="libmilter,asyncio",
                    help="milter engines to compare, comma-separated (libmilter, asyncio, asyncio-stdlib)")
    args = ap.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]

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
        kinds = [("", work / f"{engine}.sock")] + ([("-tcp", f"inet:{free_port()}@127.0.0.1")] if args.inet else [])
        for suffix, sock in kinds:
            name = engine + suffix
            milters[name] = MilterProcess.start(runner.config, sock, env, work / f"{name}.log",
                                                engine=engine.removesuffix("-stdlib"))
            sockets[name] = sock if isinstance(sock, Path) else "inet:127.0.0.1:" + sock.split(":")[1].split("@")[0]
    for name, m in milters.items():
        start = next(json.loads(line) for line in m.log.read_text().splitlines() if '"milter.start"' in line)
        print(f"{name}: engine {start.get('engine')}, loop {start.get('loop', 'libmilter threads')}, "
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
    listeners = ["plain"] + [k for k in milters]
    try:
        pf.start()
        print(f"sentences: {len(clean)} of {len([s for s in SENTENCES if s])} kept (the others led to a finding)")
        findings = scan_message(message, lexicons, cfg.limits)
        print(f"message: {len(message)} bytes of English text, findings: {len(findings)} "
              f"{[f.category for f in findings]}")
        # warm-up (Postfix processes, milter threads, Redis connections)
        for name in listeners:
            throughput_round(pf, name, msgfile, 20, 100)

        results: dict[tuple[str, int], list[float]] = {}
        cpu: dict[str, list[float]] = {name: [] for name in milters}
        pcpu: dict[str, list[float]] = {name: [] for name in listeners}
        for conc, count in ((20, args.messages), (1, args.messages_c1)):
            for r in range(args.rounds):
                order = listeners if r % 2 == 0 else list(reversed(listeners))
                for name in order:
                    before = {k: cpu_seconds(m.proc.pid) for k, m in milters.items()}
                    p0 = postfix_cpu_seconds()
                    rate = throughput_round(pf, name, msgfile, conc, count)
                    pcpu[name].append((postfix_cpu_seconds() - p0) * 1000 / count)
                    if name in milters:
                        cpu[name].append((cpu_seconds(milters[name].proc.pid) - before[name]) * 1000 / count)
                    results.setdefault((name, conc), []).append(rate)
                    print(f"  c={conc:<2} round {r + 1} {name:<14} {rate:7.1f} msgs/s", flush=True)

        print("\nthroughput (median of rounds; ratio = with regfd / Postfix alone, same run):")
        for conc in (20, 1):
            base = statistics.median(results[("plain", conc)])
            print(f"  concurrency {conc:>2}: plain {base:7.1f} msgs/s", end="")
            for name in milters:
                v = statistics.median(results[(name, conc)])
                print(f" | {name} {v:7.1f} msgs/s ratio {v / base:.2f}", end="")
            print()
        for name in milters:
            print(f"  {name}: milter CPU {statistics.median(cpu[name]):.2f} ms/message (median of rounds)")
        print("  Postfix CPU (live processes, approximate): "
              + ", ".join(f"{n} {statistics.median(v):.2f} ms/msg" for n, v in pcpu.items()))

        for name, m in milters.items():
            decisions = [json.loads(line) for line in m.log.read_text().splitlines() if '"milter.decision"' in line]
            for stage in ("data", "eom"):
                ds = [d["duration_ms"] for d in decisions if d.get("stage") == stage]
                if ds:
                    print(f"  {name} decision time at {stage.upper()}: n={len(ds)} p50 {pct(ds, 50):.2f} ms, "
                          f"p99 {pct(ds, 99):.2f} ms (lookup{' + scan + record' if stage == 'eom' else ''})")

        lat = latency_samples(pf, listeners, message, args.latency)
        print(f"\nlatency, one message at a time ({args.latency} each, alternating; connect..end of DATA):")
        b50, b99 = pct(lat["plain"], 50), pct(lat["plain"], 99)
        print(f"  plain          p50 {b50:6.2f} ms  p99 {b99:6.2f} ms")
        for name in milters:
            p50, p99 = pct(lat[name], 50), pct(lat[name], 99)
            print(f"  {name:<14} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms   added: p50 {p50 - b50:+.2f} ms, "
                  f"p99 {p99 - b99:+.2f} ms")
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
