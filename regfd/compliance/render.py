"""What the Corporate Secretary (and senders) are told: rendering is pure.

A record in, a `Notification` (or, for `regfd quarantine show`, text) out,
so the wording is unit-tested without SMTP or Redis.
"""

from __future__ import annotations

import email
import email.policy
import html
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from regfd.compliance.disclosures import new_id
from regfd.compliance.notification import Notification
from regfd.compliance.records import Record
from regfd.core.clock import from_iso, to_iso

if TYPE_CHECKING:
    from regfd.compliance.quarantine import QuarantineEntry


def highlight_text(excerpt: str, matched: str) -> str:
    """The excerpt with the matched words between » and «."""
    i = excerpt.casefold().find(matched.casefold()) if matched else -1
    if i < 0 or len(excerpt.casefold()) != len(excerpt):
        return f"{excerpt}  [matched: »{matched}«]" if matched and matched not in excerpt else excerpt
    return f"{excerpt[:i]}»{excerpt[i:i + len(matched)]}«{excerpt[i + len(matched):]}"


def highlight_html(excerpt: str, matched: str) -> str:
    """The excerpt, HTML-escaped, with the matched words in <mark>."""
    i = excerpt.casefold().find(matched.casefold()) if matched else -1
    if i < 0 or len(excerpt.casefold()) != len(excerpt):
        tail = f" <small>[matched: <mark>{html.escape(matched)}</mark>]</small>" if matched else ""
        return html.escape(excerpt) + tail
    return (html.escape(excerpt[:i]) + "<mark>" + html.escape(excerpt[i:i + len(matched)]) + "</mark>"
            + html.escape(excerpt[i + len(matched):]))


def local_time(iso_or_dt: str | datetime | None, tz: ZoneInfo) -> str:
    """For people: the instant in the company's time zone with the zone's name; '' for no instant."""
    dt = from_iso(iso_or_dt) if isinstance(iso_or_dt, str) or iso_or_dt is None else iso_or_dt
    if dt is None:
        return ""
    loc = dt.astimezone(tz)
    return f"{loc:%a %Y-%m-%d %H:%M} {loc.tzname()}"


_HEADLINES = {
    "tag": "DELIVERED and tagged: the message went out; review it.",
    "accept": "DELIVERED: the message went out; review it.",
    "hold": "HELD for your review: it waits in the mail queue until you release or reject it.",
    "reject": "REJECTED at the gateway: not delivered; the sender was told to contact you.",
}


@dataclass(frozen=True)
class Commands:
    """The exact commands a reviewer runs (also shown in the HTML)."""

    lines: tuple[tuple[str, str], ...]  # (what it does, command)


def quarantine_commands(qid: str, base_url: str = "") -> Commands:
    """What a reviewer runs to read, release or reject a held message (YOU@company left to fill in);
    with the console's `[web] base_url`, first the message's page there."""
    page = (("Open it in the compliance console", f"{base_url.rstrip('/')}/message/{qid}"),) if base_url else ()
    return Commands(page + (
        ("Read the whole message", f"regfd quarantine show {qid}"),
        ("Release (deliver now)", f'regfd quarantine release {qid} --by YOU@company --reason "why it may go"'),
        ("Reject (delete; the sender is told)", f'regfd quarantine reject {qid} --by YOU@company --reason "why not"'),
    ))


def disclosure_commands(did: str) -> Commands:
    """What a reviewer runs to close a disclosure follow-up once the information is public."""
    return Commands((
        ("When the information is public",
         f'regfd disclosures close {did} --by YOU@company --reference "8-K filed ..."'),
        ("See open follow-ups", "regfd disclosures --open"),
    ))


def _section_text(title: str, body: list[str]) -> list[str]:
    return [title, *body, ""] if body else []


def render_case(record: Record, *, headline: str, tz: ZoneInfo, quarantine_id: str = "",
                deadline: datetime | None = None, disclosure_id: str = "", extra: Iterable[str] = (),
                commands: Iterable[Commands] = ()) -> tuple[str, str]:
    """Plain text and HTML bodies describing one message and what to do about it."""
    recipients = record.recipients
    findings = record.findings
    cmds = [c for group in commands for c in group.lines]
    extra = list(extra)
    # ---- text
    t: list[str] = [headline, ""]
    t += extra + ([""] if extra else [])
    if deadline is not None:
        t += [f"PUBLIC DISCLOSURE DUE BY: {local_time(deadline, tz)} (follow-up {disclosure_id})", ""]
    t += [f"Sender:      {record.sender} ({record.sender_class})",
          "Specified Persons:"]
    t += [f"  - {r.line()}" for r in recipients]
    others = record.other_recipients
    if others:
        t.append("Other recipients: " + ", ".join(o.address for o in others))
    t += [f"Subject:     {record.subject}",
          f"Received:    {local_time(record.at, tz)} on {record.mta_host or '?'}, queue id {record.queue_id or '?'}",
          f"Message-ID:  {record.message_id}",
          f"Action:      {record.action}" + (
              f" (policy: {record.policy_action})"
              if record.policy_action and record.policy_action != record.action else "")]
    if quarantine_id:
        t.append(f"Quarantine:  {quarantine_id}")
    t.append("")
    t += _section_text("Findings:", [
        f"  {n}. {f.kind} ({f.category}) in {f.location}:\n"
        f"       {highlight_text(f.excerpt, f.text)}"
        for n, f in enumerate(findings, 1)] or ["  none"])
    t += _section_text("Why:", [f"  - {r}" for r in record.reasons])
    for what, cmd in cmds:
        t += [f"{what}:", f"  {cmd}", ""]
    t.append("-- regfd, Regulation FD gateway (automatic message)")
    text = "\n".join(t) + "\n"
    # ---- HTML
    e = html.escape
    h: list[str] = ["<!DOCTYPE html><html><body style=\"font-family:sans-serif\">",
                    f"<p><strong>{e(headline)}</strong></p>"]
    for line in extra:
        h.append(f"<p>{e(line)}</p>")
    if deadline is not None:
        h.append(f"<p style=\"color:#b00\"><strong>Public disclosure due by {e(local_time(deadline, tz))}</strong>"
                 f" (follow-up {e(disclosure_id)})</p>")
    h.append("<table>")
    rows = [("Sender", f"{record.sender} ({record.sender_class})"),
            ("Specified Persons", "; ".join(r.line() for r in recipients)),
            ("Subject", record.subject),
            ("Received", f"{local_time(record.at, tz)} on {record.mta_host or '?'}, "
                         f"queue id {record.queue_id or '?'}"),
            ("Message-ID", record.message_id),
            ("Action", record.action)]
    if quarantine_id:
        rows.append(("Quarantine", quarantine_id))
    for k, v in rows:
        h.append(f"<tr><th align=\"left\">{e(k)}</th><td>{e(str(v))}</td></tr>")
    h.append("</table><h3>Findings</h3><ol>")
    for f in findings:
        h.append(f"<li><strong>{e(f.kind)}</strong> ({e(f.category)}) in {e(f.location)}:<br>"
                 f"<q>{highlight_html(f.excerpt, f.text)}</q></li>")
    if not findings:
        h.append("<li>none</li>")
    h.append("</ol>")
    if record.reasons:
        h.append("<h3>Why</h3><ul>" + "".join(f"<li>{e(r)}</li>" for r in record.reasons) + "</ul>")
    if cmds:
        h.append("<h3>What to do</h3>")
        for what, cmd in cmds:
            shown = f"<a href=\"{e(cmd)}\">{e(cmd)}</a>" if cmd.startswith(("https://", "http://")) else \
                f"<code>{e(cmd)}</code>"
            h.append(f"<p>{e(what)}:<br>{shown}</p>")
    h.append("<p><small>regfd, Regulation FD gateway (automatic message)</small></p></body></html>")
    return text, "\n".join(h) + "\n"


def _short(subject: str, n: int = 60) -> str:
    s = " ".join(subject.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _to_line(record: Record) -> str:
    rs = [r.address for r in record.recipients]
    return rs[0] + (f" +{len(rs) - 1}" if len(rs) > 1 else "") if rs else "?"


def render_decision(record: Record, *, to: tuple[str, ...], tz: ZoneInfo, now: datetime,
                    quarantine_id: str = "", deadline: datetime | None = None, disclosure_id: str = "",
                    base_url: str = "") -> Notification:
    """To the Corporate Secretary: a message was tagged, held or rejected (with the console link when set)."""
    action = record.action
    commands = []
    if quarantine_id:
        commands.append(quarantine_commands(quarantine_id, base_url))
    if disclosure_id:
        commands.append(disclosure_commands(disclosure_id))
    text, body = render_case(record, headline=_HEADLINES.get(action, action.upper()), tz=tz,
                             quarantine_id=quarantine_id, deadline=deadline, disclosure_id=disclosure_id,
                             commands=commands)
    kinds = sorted({f.kind for f in record.findings})
    subject = (f"[RegFD] {action.upper()}{' ' + quarantine_id if quarantine_id else ''}: "
               f"{record.sender} to {_to_line(record)}"
               f"{' (' + ', '.join(kinds) + ')' if kinds else ''}: {_short(record.subject)}")
    return Notification(new_id("n"), "decision", to, subject, text, body, quarantine_id or disclosure_id, to_iso(now))


def render_sender_held(record: Record, *, corpsec: tuple[str, ...], tz: ZoneInfo, now: datetime,
                       quarantine_id: str) -> Notification:
    """To the sender: the message waits for review (no findings: the reviewer explains if needed)."""
    contact = ", ".join(corpsec) or "the Corporate Secretary"
    text = (f"Your message \"{record.subject}\" to {record.recipients_line()}\n"
            f"(sent {local_time(record.at, tz)}) is held for review under the company's "
            f"Regulation FD communications policy.\n\n"
            f"It has not been delivered yet. The Corporate Secretary will release or reject it; "
            f"you will be told if it is rejected.\nQuestions: {contact}. Reference: {quarantine_id}.\n\n"
            f"-- regfd, Regulation FD gateway (automatic message)\n")
    return Notification(new_id("n"), "held-sender", (record.sender,),
                        f"[RegFD] Your message is held for review: {_short(record.subject)}",
                        text, "", quarantine_id, to_iso(now))


def render_sender_rejected(record: Record, *, corpsec: tuple[str, ...], tz: ZoneInfo, now: datetime,
                           quarantine_id: str, by: str, reason: str) -> Notification:
    """To the sender: not delivered, by whom and why, with whom to ask."""
    contact = ", ".join(corpsec) or "the Corporate Secretary"
    text = (f"Your message \"{record.subject}\" to {record.recipients_line()}\n"
            f"(sent {local_time(record.at, tz)}) was NOT delivered: after review under the company's "
            f"Regulation FD communications policy it was rejected by {by}.\n\n"
            f"Reason: {reason}\n\nQuestions: {contact}. Reference: {quarantine_id}.\n\n"
            f"-- regfd, Regulation FD gateway (automatic message)\n")
    return Notification(new_id("n"), "rejected-sender", (record.sender,),
                        f"[RegFD] Your message was not delivered: {_short(record.subject)}",
                        text, "", quarantine_id, to_iso(now))


def render_outcome(record: Record, *, to: tuple[str, ...], tz: ZoneInfo, now: datetime, quarantine_id: str,
                   outcome: str, by: str, reason: str, deadline: datetime | None = None,
                   disclosure_id: str = "") -> Notification:
    """To the Corporate Secretary: who released or rejected a held message, and why (the others need to know)."""
    headline = f"{outcome.upper()} by {by} at {local_time(now, tz)}: {reason}"
    commands = [disclosure_commands(disclosure_id)] if disclosure_id else []
    text, body = render_case(record, headline=headline, tz=tz, quarantine_id=quarantine_id, deadline=deadline,
                             disclosure_id=disclosure_id, commands=commands)
    return Notification(new_id("n"), outcome, to,
                        f"[RegFD] {outcome.upper()} {quarantine_id} by {by}: {_short(record.subject)}",
                        text, body, quarantine_id, to_iso(now))


def render_hold_reminder(record: Record, *, to: tuple[str, ...], tz: ZoneInfo, now: datetime,
                         quarantine_id: str, held_since: datetime, base_url: str = "") -> Notification:
    """To the Corporate Secretary: a held message is still waiting, with how long and the commands again."""
    hours = (now - held_since).total_seconds() / 3600
    headline = (f"REMINDER: held for {hours:.1f} hours and still waiting for your decision "
                f"(held since {local_time(held_since, tz)}).")
    text, body = render_case(record, headline=headline, tz=tz, quarantine_id=quarantine_id,
                             commands=[quarantine_commands(quarantine_id, base_url)])
    return Notification(new_id("n"), "hold-reminder", to,
                        f"[RegFD] REMINDER: {quarantine_id} held {hours:.0f} h: {_short(record.subject)}",
                        text, body, quarantine_id, to_iso(now))


def render_disclosure_reminder(record: Record, *, to: tuple[str, ...], tz: ZoneInfo, now: datetime,
                               disclosure_id: str, deadline: datetime, overdue: bool) -> Notification:
    """To the Corporate Secretary: a disclosure deadline is near, or with `overdue` has passed."""
    if overdue:
        headline = f"OVERDUE: public disclosure was due by {local_time(deadline, tz)} and the follow-up is still open."
    else:
        left = (deadline - now).total_seconds() / 3600
        headline = f"REMINDER: public disclosure due in {left:.1f} hours, by {local_time(deadline, tz)}."
    text, body = render_case(record, headline=headline, tz=tz, deadline=deadline, disclosure_id=disclosure_id,
                             commands=[disclosure_commands(disclosure_id)])
    word = "OVERDUE" if overdue else "due soon"
    return Notification(new_id("n"), "disclosure-overdue" if overdue else "disclosure-reminder", to,
                        f"[RegFD] Disclosure {word} ({disclosure_id}): {_short(record.subject)}",
                        text, body, disclosure_id, to_iso(now))


def render_show(entry: QuarantineEntry, raw: bytes, tz: Any, max_body: int = 20000) -> str:
    """What a reviewer reads: state, envelope, headers, the text, the findings highlighted."""
    r = entry.record
    lines = [f"Quarantine {entry.id}: {entry.state.upper()}"
             + (f" by {entry.decided_by} at {local_time(entry.decided_at, tz)}: {entry.reason}"
                if entry.decided_by else ""),
             f"Held since:  {local_time(entry.created_at, tz)} on {entry.mta_host or '?'}, "
             f"queue id {entry.queue_id or '?'}",
             f"Sender:      {r.sender} ({r.sender_class})",
             "Specified:   " + "; ".join(f"{x.address} ({', '.join(v for v in (x.category, x.firm) if v)})"
                                         for x in r.recipients)]
    if entry.last_error:
        lines.append(f"Last error:  {entry.last_error}")
    if entry.request:
        lines.append(f"In progress: {entry.request.get('action')} requested by {entry.request.get('by')} "
                     f"at {entry.request.get('at')}")
    if entry.disclosure_id:
        lines.append(f"Disclosure:  {entry.disclosure_id}")
    lines += ["", "Findings:"]
    for n, f in enumerate(r.findings, 1):
        lines.append(f"  {n}. {f.kind} ({f.category}) in {f.location}: {highlight_text(f.excerpt, f.text)}")
    if not r.findings:
        lines.append("  none")
    lines += ["", "Why:"] + [f"  - {x}" for x in r.reasons]
    lines += ["", "-" * 72]
    if not raw:
        lines.append("(the message text was not kept)")
        return "\n".join(lines) + "\n"
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    for h in ("From", "To", "Cc", "Date", "Subject", "Message-ID"):
        for v in msg.get_all(h, []):
            lines.append(f"{h}: {v}")
    lines.append("")
    body = None
    attachments = []
    try:
        body_part = msg.get_body(preferencelist=("plain", "html"))
        if body_part is not None:
            body = body_part.get_content()
            if body_part.get_content_subtype() == "html":
                import re as _re

                body = _re.sub(r"<[^>]+>", " ", body)
        for part in msg.iter_attachments():
            attachments.append(f"{part.get_filename() or '(unnamed)'} ({part.get_content_type()})")
    except Exception as exc:  # hostile MIME: still show what we can
        body = f"(could not decode the body: {type(exc).__name__})"
    text = body if isinstance(body, str) else "(no text part)"
    for f in r.findings:
        t = f.text
        if t and t in text and "»" + t not in text:
            text = text.replace(t, f"»{t}«")
    if len(text) > max_body:
        text = text[:max_body] + f"\n… ({len(text) - max_body} more characters)"
    lines.append(text.rstrip())
    if attachments:
        lines += ["", "Attachments: " + ", ".join(attachments)]
    return "\n".join(lines) + "\n"


_BODY_OPEN = '<body style="font-family:sans-serif">'


@dataclass(frozen=True)
class DigestCase:
    """One message in a digest: its record, and the quarantine and disclosure ids it was given."""

    record: Record
    quarantine_id: str = ""
    disclosure_id: str = ""
    deadline: datetime | None = None


def render_digest(cases: list[DigestCase], *, to: tuple[str, ...], tz: ZoneInfo, now: datetime) -> Notification:
    """To the Corporate Secretary: every message of the period whose notice waits for a digest, in one email.

    Each message reads as in its own notice (headline, deadline, findings, commands), oldest first.
    """
    counts: dict[str, int] = {}
    for c in cases:
        counts[c.record.action] = counts.get(c.record.action, 0) + 1
    summary = ", ".join(f"{n} {action}" for action, n in sorted(counts.items()))
    first, last = local_time(cases[0].record.at, tz), local_time(cases[-1].record.at, tz)
    intro = f"DIGEST: {len(cases)} message(s) ({summary}) between {first} and {last}."
    texts, bodies = [intro, ""], []
    for n, c in enumerate(cases, 1):
        commands = [g for g in (quarantine_commands(c.quarantine_id) if c.quarantine_id else None,
                                disclosure_commands(c.disclosure_id) if c.disclosure_id else None) if g]
        text, body = render_case(c.record, headline=f"{n}/{len(cases)}. " + _HEADLINES.get(
            c.record.action, c.record.action.upper()), tz=tz, quarantine_id=c.quarantine_id, deadline=c.deadline,
            disclosure_id=c.disclosure_id, commands=commands)
        texts.append(text.rsplit("-- regfd", 1)[0].rstrip() + "\n\n" + "=" * 72 + "\n")
        # the inner part of each case's HTML page, one after the other
        bodies.append(body.partition(_BODY_OPEN)[2].rsplit("<p><small>", 1)[0])
    texts.append("-- regfd, Regulation FD gateway (automatic message)\n")
    page = (f"<!DOCTYPE html><html>{_BODY_OPEN}"
            f"<p><strong>{html.escape(intro)}</strong></p><hr>" + "<hr>".join(bodies)
            + "<p><small>regfd, Regulation FD gateway (automatic message)</small></p></body></html>\n")
    subject = f"[RegFD] DIGEST: {len(cases)} message(s) ({summary}), {first} to {last}"
    return Notification(new_id("n"), "digest", to, subject, "\n".join(texts), page, "", to_iso(now))
