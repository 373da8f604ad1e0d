"""Compliance commands: records, quarantine, disclosures, the agent and the outbox.

    regfd records [--since DATE] [--archive DIR] [--json|--csv]
    regfd records keygen | export-key | checkpoint | verify | archive    (the register: cli/register.py)
    regfd quarantine list [--all] [--json] | show ID | release ID --by ADDR --reason TEXT [--local] [--timeout S]
                                                    | reject ID --by ADDR --reason TEXT [--local] [--timeout S]
    regfd disclosures [--open] [--json] | close ID --by ADDR --reference TEXT
    regfd agent [--host NAME]           run the quarantine agent on an MTA host (foreground)
    regfd outbox [--json] [--sent] | flush

release/reject: by default the request goes through Redis to the agent on
the MTA host that holds the message (a thread of `regfd milter`, or
`regfd agent`); with --local this command acts on the MTA itself (postsuper,
or Sendmail's quarantine when `mta = "sendmail"`; use it on the MTA host
when no agent runs there).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from regfd.cli.output import listing, print_json
from regfd.core.address import normalize_address
from regfd.core.clock import parse_instant
from regfd.errors import InvalidInput, RegfdError

from . import Context
from . import register as register_commands


def _by(text: str) -> str:
    try:
        return normalize_address(text)
    except ValueError as exc:
        raise InvalidInput(f"--by must be an email address: {exc}") from None


def _nonempty(text: str, what: str) -> str:
    t = " ".join((text or "").split())
    if not t:
        raise InvalidInput(f"{what} must not be empty")
    return t


# ----- records
def records_cmd(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd records`: the table is a summary per message; --json carries every field, --csv a spreadsheet row."""
    from regfd.compliance.records import Records, to_csv

    since = None
    if a.since:
        try:
            since = parse_instant(a.since, ctx.config.tz)
        except ValueError as exc:
            raise InvalidInput(f"--since: {exc}") from None
    rows = Records(ctx.store, ctx.config.records_retention_days).list(since)
    if a.archive:  # what `regfd records archive` moved out of Redis, listed first (it is older)
        from regfd.compliance.records import Record
        from regfd.compliance.register import archived_entries

        rows = [Record.from_json(d) for d in archived_entries([Path(d) for d in a.archive], "records", since)] + rows
    if a.csv:
        ctx.out.write(to_csv(rows))
        return
    if a.json:
        print_json(ctx.out, [r.to_json() for r in rows])
        return
    flat = [{"at": r.at, "queue_id": r.queue_id, "sender": f"{r.sender} ({r.sender_class})",
             "recipients": r.recipients_line(), "action": r.action, "findings": r.finding_kinds(),
             "subject": r.subject} for r in rows]
    listing(ctx.out, flat, False, ("at", "queue_id", "sender", "recipients", "action", "findings", "subject"),
            "no records")


# ----- quarantine
def _quarantine(ctx: Context) -> Any:
    from regfd.compliance.quarantine import Quarantine

    return Quarantine(ctx.store, ctx.config)


def quarantine_list(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd quarantine list`; only messages awaiting a decision unless --all."""
    rows = [e.summary() for e in _quarantine(ctx).list(include_decided=a.all)]
    listing(ctx.out, rows, a.json, ("id", "state", "held_since", "queue_id", "sender", "recipients", "findings",
                                    "subject"), "no held messages")


def quarantine_show(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd quarantine show`; --json includes the raw message, decoded with replacement characters."""
    from regfd.compliance.render import render_show

    q = _quarantine(ctx)
    entry = q.get(a.id)
    if a.json:
        print_json(ctx.out, {**entry.to_json(), "raw": q.raw(entry.id).decode("utf-8", "replace")})
        return
    ctx.out.write(render_show(entry, q.raw(entry.id), ctx.config.tz))


def _act(ctx: Context, a: argparse.Namespace, action: str) -> int:
    by = _by(a.by)
    reason = _nonempty(a.reason, "--reason")
    if a.timeout <= 0:
        raise InvalidInput("--timeout must be positive")
    q = _quarantine(ctx)
    if a.local:
        from regfd.compliance.quarantine import mta_queue

        out = q.act_local(a.id, action, by, reason, mta_queue(ctx.config))
    else:
        from regfd.compliance.agent import act_via_agent

        out = act_via_agent(q, a.id, action, by, reason, timeout=a.timeout)
    if not out.ok:
        raise InvalidInput(out.message)
    print(out.message, file=ctx.out)
    return 0


def quarantine_release(ctx: Context, a: argparse.Namespace) -> int:
    """`regfd quarantine release`: delivers the held message (see the module docstring for --local)."""
    return _act(ctx, a, "release")


def quarantine_reject(ctx: Context, a: argparse.Namespace) -> int:
    """`regfd quarantine reject`: deletes the held message and tells the sender."""
    return _act(ctx, a, "reject")


# ----- disclosures
def disclosures_cmd(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd disclosures`; the table shows deadlines in the company time zone, --json in UTC."""
    from regfd.compliance.disclosures import Disclosures

    ds = Disclosures(ctx.store, ctx.config).list(open_only=a.open)
    if a.json:
        print_json(ctx.out, [d.to_json() for d in ds])
        return
    from regfd.compliance.render import local_time

    rows = []
    for d in ds:
        s = d.summary()
        s["deadline"] = local_time(d.deadline, ctx.config.tz)
        rows.append(s)
    listing(ctx.out, rows, False, ("id", "state", "deadline", "sender", "recipients", "subject", "closed_by",
                                   "reference"),
            "no open disclosure follow-ups" if a.open else "no disclosure follow-ups")


def disclosures_close(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd disclosures close`: a close after the deadline is accepted and reported as late."""
    from regfd.compliance.disclosures import Disclosures
    from regfd.compliance.render import local_time

    by = _by(a.by)
    reference = _nonempty(a.reference, "--reference")
    d = Disclosures(ctx.store, ctx.config).close(a.id, by, reference)
    late = d.closed_at is not None and d.closed_at > d.deadline
    print(f"disclosure {d.id} closed by {by} (reference: {reference})"
          + (f"; LATE: it was due by {local_time(d.deadline, ctx.config.tz)}" if late else ""), file=ctx.out)


# ----- agent
def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError):  # not the main thread (tests)
            signal.signal(sig, handler)


def agent_cmd(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd agent`: in the foreground until SIGTERM or SIGINT; --once serves at most one request."""
    from regfd.compliance.agent import QuarantineAgent
    from regfd.compliance.executor import agent_host
    from regfd.compliance.quarantine import mta_queue

    host = a.host or agent_host(ctx.config)
    queue = mta_queue(ctx.config)
    cannot = queue.can_act()
    if cannot:
        raise RegfdError(f"the quarantine agent cannot act on this MTA: {cannot}; run `regfd agent` as root "
                         "(the regfd-agent service)")
    agent = QuarantineAgent(ctx.store, ctx.config, queue, host)
    if a.once:
        agent.heartbeat()
        out = agent.run_once(a.wait)
        print(json.dumps(out.to_json()) if out else "no request", file=ctx.out)
        return
    stop = threading.Event()
    _stop_on_signals(stop)
    print(f"regfd agent: serving quarantine requests for MTA host {agent.host!r}", file=sys.stderr)
    agent.run_forever(stop)


# ----- outbox
def outbox_cmd(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd outbox`: what is waiting to be sent (or, with --sent, what was sent recently)."""
    from regfd.compliance.outbox import Outbox

    ob = Outbox(ctx.store, ctx.config)
    if a.sent:
        listing(ctx.out, ob.sent(), a.json, ("at", "kind", "to", "subject", "attempts"), "nothing sent yet")
        return
    rows = []
    for n in ob.pending():
        rows.append({"id": n.id, "kind": n.kind, "to": ", ".join(n.to), "subject": n.subject, "next_at": n.next_at,
                     "attempts": n.attempts, "last_error": n.last_error, "ref": n.ref})
    listing(ctx.out, rows, a.json, ("id", "kind", "to", "attempts", "next_at", "last_error", "subject"),
            "outbox is empty")


def outbox_flush(ctx: Context, a: argparse.Namespace) -> int:
    """`regfd outbox flush`: follow up every recorded decision, send the digest now, then every pending
    notification, due or not; exit status 1 if any send failed."""
    from regfd.compliance.executor import Workflow
    from regfd.compliance.outbox import Outbox

    workflow = Workflow(ctx.store, ctx.config)
    workflow.follow_up()
    workflow.send_digest(force=True)
    report = Outbox(ctx.store, ctx.config).deliver_due(everything=True)
    print(f"outbox: sent {len(report.sent)}, failed {len(report.failed)}"
          + (f" (last error: {report.failed[-1][1]})" if report.failed else ""), file=ctx.out)
    return 1 if report.failed else 0


def register(sub: Any) -> None:
    """Add the compliance commands (records, quarantine, disclosures, agent, outbox) to the top-level parser."""
    def json_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("records", help="the record of every communication with a Specified Person")
    p.add_argument("--since", help="date (company time zone) or ISO date-time")
    p.add_argument("--archive", metavar="DIR", action="append",
                   help="also list the records archived to DIR (regfd records archive); may be repeated")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    p.set_defaults(func=records_cmd)
    register_commands.add_to(p)

    qu = sub.add_parser("quarantine", help="held messages: review, release, reject").add_subparsers(
        dest="sub", required=True)
    p = qu.add_parser("list", help="held messages waiting for a decision")
    p.add_argument("--all", action="store_true", help="include released and rejected ones")
    json_flag(p)
    p.set_defaults(func=quarantine_list)
    p = qu.add_parser("show", help="headers, text and findings of a held message")
    p.add_argument("id", help="quarantine id (or the MTA queue id)")
    json_flag(p)
    p.set_defaults(func=quarantine_show)
    for name, func, what in (("release", quarantine_release, "deliver the held message now"),
                             ("reject", quarantine_reject, "delete the held message; the sender is told")):
        p = qu.add_parser(name, help=what)
        p.add_argument("id", help="quarantine id (or the MTA queue id)")
        p.add_argument("--by", required=True, help="your email address (for the audit trail)")
        p.add_argument("--reason", required=True, help="why (for the audit trail)")
        p.add_argument("--local", action="store_true",
                       help="act on the MTA here (postsuper, or Sendmail per config mta) instead of asking its agent")
        p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the agent (default 30)")
        p.set_defaults(func=func)

    p = sub.add_parser("disclosures",
                       help="disclosure follow-ups (material information that reached a Specified Person)")
    p.add_argument("--open", action="store_true", help="only open follow-ups")
    json_flag(p)
    p.set_defaults(func=disclosures_cmd)
    ds = p.add_subparsers(dest="sub", required=False)
    c = ds.add_parser("close", help="the information is now public")
    c.add_argument("id")
    c.add_argument("--by", required=True, help="your email address")
    c.add_argument("--reference", required=True, help="where it was made public (8-K, press release ...)")
    c.set_defaults(func=disclosures_close)

    p = sub.add_parser("agent", help="carry out quarantine release/reject requests on this MTA host")
    p.add_argument("--host", help="the MTA host name the milter records "
                                  "(default: Postfix's myhostname, else this host's FQDN)")
    p.add_argument("--once", action="store_true", help="serve at most one request, then exit")
    p.add_argument("--wait", type=float, default=5.0, help="with --once: seconds to wait for a request")
    p.set_defaults(func=agent_cmd)

    p = sub.add_parser("outbox", help="notifications waiting to be sent")
    json_flag(p)
    p.add_argument("--sent", action="store_true", help="show recently sent notifications instead")
    p.set_defaults(func=outbox_cmd)
    ob = p.add_subparsers(dest="sub", required=False)
    f = ob.add_parser("flush", help="send every waiting notification now (the digest too)")
    f.set_defaults(func=outbox_flush)
