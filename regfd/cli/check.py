"""`regfd check`: the gateway's decision for a message, without sending it.

The same decision path as the milter (`Decider`): the sender alone, one
directory snapshot, the content only when it can matter, the policy table. An admin can run it over a directory of .eml
files or an mbox to see what a policy change would do to real past mail.
The envelope comes from --from/--to; when they are not given (handy for
archives) it is taken from the From:, To:, Cc: and Bcc: headers.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import email.utils
import json
import mailbox
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from regfd.core.address import normalize_address
from regfd.core.clock import now, parse_instant
from regfd.core.envelope import Envelope
from regfd.core.policy import ACTIONS
from regfd.core.verdict import Verdict
from regfd.errors import InvalidInput

from . import Context


def _address(text: str, what: str) -> str:
    if text.strip() in ("", "<>"):
        return ""
    try:
        return normalize_address(text)
    except ValueError as exc:
        raise InvalidInput(f"bad {what} address: {exc}") from None


def _header_envelope(raw: bytes) -> tuple[str, list[str]]:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    senders = email.utils.getaddresses([str(v) for v in msg.get_all("From", [])])
    rcpts = email.utils.getaddresses([str(v) for h in ("To", "Cc", "Bcc") for v in msg.get_all(h, [])])
    return (senders[0][1] if senders else ""), [a for _n, a in rcpts if "@" in a]


def _messages(path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, raw bytes) for a file, every file of a directory, or every message of an mbox."""
    if path.is_dir():
        for p in sorted(path.iterdir()):
            if p.is_file() and not p.name.startswith("."):
                yield str(p), p.read_bytes()
        return
    with open(path, "rb") as fh:
        head = fh.read(5)
    if head == b"From ":
        box = mailbox.mbox(str(path), create=False)
        try:
            for i, key in enumerate(box.iterkeys()):
                yield f"{path}#{i + 1}", box.get_bytes(key)
        finally:
            box.close()
        return
    yield str(path), path.read_bytes()


class Checker:
    """Holds what is loaded once (policy, lexicons) for a run over many messages."""

    def __init__(self, ctx: Context, at: datetime) -> None:
        self.ctx = ctx
        self.at = at
        self.decider = ctx.services.decider

    def verdict(self, raw: bytes, sender: str, recipients: list[str], auth: str) -> Verdict:
        """The milter's verdict for this message and envelope, with the live directory."""
        envelope = Envelope.from_raw(sender, recipients, auth)
        snapshot = self.ctx.store.snapshot(envelope.sender, envelope.recipients)
        return self.decider.decide(envelope, snapshot, raw, self.at)



def _human(v: Verdict, out: Any, name: str | None = None) -> None:
    j = v.to_json()
    if name:
        out.write(f"{name}: ")
    extra = "" if v.action == v.policy_action else f" (policy: {v.policy_action}, {v.mode} mode)"
    out.write(f"action: {v.action}{extra}\n")
    out.write(f"sender: {j['sender']['address'] or '<>'} ({j['sender']['class']})\n")
    for r in j["recipients"]:
        cat = f" {r['category']}" if r["category"] else ""
        firm = f" ({r['firm']})" if r["firm"] else ""
        act = f" -> {r['action']}" if r["class"] == "specified" else ""
        out.write(f"  to {r['address']}: {r['class']}{cat}{firm}{act}\n")
    for f in j["findings"]:
        out.write(f"  finding {f['kind']}/{f['category']} in {f['location']}: {f['excerpt']!r}\n")
    for reason in j["reasons"]:
        out.write(f"  - {reason}\n")


def check_cmd(ctx: Context, a: argparse.Namespace) -> int:
    """`regfd check`: a batch goes on past a message without recipients, and exits 1 at the end."""
    try:
        at = parse_instant(a.at, ctx.config.tz) if a.at else now()
    except ValueError as exc:
        raise InvalidInput(f"--at: {exc}") from None
    sender = _address(a.sender, "--from") if a.sender is not None else None
    recipients = [_address(t, "--to") for t in (a.to or [])]
    path = Path(a.path)
    if not path.exists():
        raise InvalidInput(f"{path}: no such file or directory")
    checker = Checker(ctx, at)
    batch = path.is_dir()
    counts: Counter[str] = Counter()
    errors = 0
    try:
        items = list(_messages(path))
    except (OSError, mailbox.Error) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from None
    batch = batch or len(items) != 1 or items[0][0] != str(path)
    for name, raw in items:
        s, rcpts = sender, recipients
        if s is None or not rcpts:
            hs, hr = _header_envelope(raw)
            s = hs if s is None else s
            rcpts = rcpts or hr
        if not rcpts:
            msg = f"{name}: no recipients (give --to, or the message needs To/Cc/Bcc headers)"
            if not batch:
                raise InvalidInput(msg)
            print(f"regfd: error: {msg}", file=sys.stderr)
            errors += 1
            continue
        v = checker.verdict(raw, s or "", rcpts, a.auth or "")
        counts[v.action] += 1
        if a.json:
            j = v.to_json()
            if batch:
                ctx.out.write(json.dumps({"message": name, **j}, ensure_ascii=False) + "\n")
            else:
                ctx.out.write(json.dumps(j, indent=2, ensure_ascii=False) + "\n")
        else:
            _human(v, ctx.out, name if batch else None)
    if batch:
        summary = {act: counts.get(act, 0) for act in ACTIONS}
        if a.json:
            ctx.out.write(json.dumps({"summary": summary, "messages": sum(counts.values()), "errors": errors}) + "\n")
        else:
            ctx.out.write("summary: " + ", ".join(f"{k} {n}" for k, n in summary.items()) +
                          f"; {sum(counts.values())} messages, {errors} errors\n")
    return 1 if errors else 0


def register(sub: Any) -> None:
    """Add `regfd check` to the top-level parser."""
    p = sub.add_parser("check", help="what the gateway would do with a message (.eml, directory or mbox)")
    p.add_argument("path", metavar="FILE.eml|DIR|MBOX")
    p.add_argument("--from", dest="sender", metavar="ADDR", help="envelope sender (default: the From: header)")
    p.add_argument("--to", action="append", metavar="ADDR", help="envelope recipient, repeatable (default: To/Cc/Bcc)")
    p.add_argument("--at", metavar="ISO8601", help="evaluate as of this instant (quiet periods, expiries)")
    p.add_argument("--auth", metavar="USER", help="as if the SMTP client authenticated as USER")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=check_cmd)
