"""Directory maintenance: registry, officers, delegates, exemptions, quiet periods, audit.

Every input is validated (core/directory_rules.py, store/registry_csv.py)
before anything is written; every write carries its audit entry (see
RedisStore). This module parses arguments and prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from regfd.cli.output import listing
from regfd.core.clock import now, to_iso
from regfd.core.directory import EXEMPTION_KINDS, REGISTRY_CATEGORIES, Authorization, Exemption, Officer, RegistryEntry
from regfd.core.directory_rules import (
    check_approver,
    check_delegate,
    check_quiet_period,
    future_instant,
    instant,
    officer_role,
    parse_address,
    parse_choice,
    parse_pattern,
    quiet_status,
    status,
)
from regfd.store.registry_csv import parse_registry_csv, write_registry_csv

from . import Context, actor


def _done(ctx: Context, message: str) -> None:
    print(message, file=ctx.out)


# ----- registry
def registry_add(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd registry add`; with --check-dns an unknown domain gets a warning but is still added."""
    pattern = parse_pattern(a.pattern)
    category = parse_choice(a.category, REGISTRY_CATEGORIES, "category")
    if a.check_dns and "@" not in pattern:
        warning = dns_warning(pattern)
        if warning:
            print(f"regfd: warning: {warning}", file=sys.stderr)
    ctx.store.registry_add(RegistryEntry(pattern, category, a.firm or "", a.note or "", to_iso(now()), actor(a.by)),
                           actor(a.by))
    _done(ctx, f"registry: added {pattern} ({category})")


def dns_warning(domain: str) -> str:
    """A domain with neither MX nor A record is probably a typo; warn, do not refuse."""
    import dns.exception
    import dns.resolver

    resolver = dns.resolver.Resolver()
    resolver.lifetime = 3.0
    for rtype in ("MX", "A", "AAAA"):
        try:
            if resolver.resolve(domain, rtype):
                return ""
        except dns.resolver.NXDOMAIN:
            return f"{domain} does not exist in DNS (NXDOMAIN); added anyway"
        except (dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            continue
        except dns.exception.DNSException as exc:
            return f"could not verify {domain} in DNS ({type(exc).__name__}); added anyway"
    return f"{domain} has no MX, A or AAAA record; added anyway"


def registry_remove(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd registry remove`; the pattern is normalized first, so any spelling of it matches."""
    pattern = parse_pattern(a.pattern)
    ctx.store.registry_remove(pattern, actor(a.by))
    _done(ctx, f"registry: removed {pattern}")


def registry_list(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd registry list`; --json adds who added each entry and when."""
    rows = [e.to_json() for e in ctx.store.registry_list()]
    listing(ctx.out, rows, a.json, ("pattern", "category", "firm", "note"), "registry is empty")


def registry_import(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd registry import`: every row valid or nothing written (see parse_registry_csv)."""
    who = actor(a.by)
    entries = parse_registry_csv(Path(a.file), who)
    ctx.store.registry_import(entries, a.replace, who, str(a.file))
    replaced = " (replaced the registry)" if a.replace else ""
    _done(ctx, f"registry: imported {len(entries)} entries from {a.file}{replaced}")


def registry_export(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd registry export`: CSV in the import format, so a registry can be edited and imported back."""
    write_registry_csv(ctx.out, ctx.store.registry_list())


# ----- officers
def officer_add(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd officer add`: any known role is accepted; the reply says whether it is an authorized one."""
    address = parse_address(a.address)
    role = officer_role(a.role, ctx.config.authorized_roles)
    ctx.store.officer_add(Officer(address, role, to_iso(now()), actor(a.by)), actor(a.by))
    authorized = "authorized" if role in ctx.config.authorized_roles else "not an authorized role"
    _done(ctx, f"officer: added {address} ({role}, {authorized})")


def officer_remove(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd officer remove`; authorizations the officer approved stay in force until revoked."""
    address = parse_address(a.address)
    ctx.store.officer_remove(address, actor(a.by))
    _done(ctx, f"officer: removed {address}")


def officer_list(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd officer list`, with whether each role is authorized under the current config."""
    roles = ctx.config.authorized_roles
    rows = [{**o.to_json(), "authorized": o.role in roles} for o in ctx.store.officer_list()]
    listing(ctx.out, rows, a.json, ("address", "role", "authorized"), "no officers")


# ----- delegates
def delegate_add(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd delegate add`: the delegate must be internal and --by an authorized officer.

    Here --by names the approver, so the audit trail records the OS user (or $REGFD_ACTOR) as the actor.
    """
    address = parse_address(a.address)
    check_delegate(address, ctx.config.internal_domains)
    by = parse_address(a.by, "--by officer")
    to = tuple(dict.fromkeys(parse_pattern(p) for p in (a.to or [])))
    until = future_instant(a.until, ctx.config.tz, "--until", now())
    officer = ctx.store.officer_get(by)
    check_approver(by, officer, ctx.config.authorized_roles)
    auth = Authorization(address, by, to, until, a.scope or "", None, "", to_iso(now()))
    ctx.store.delegate_add(auth, actor(None))
    covers = ", ".join(to) if to else "every Specified Person"
    _done(ctx, f"delegate: {address} authorized by {by} for {covers}" + (f" until {to_iso(until)}" if until else ""))


def delegate_revoke(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd delegate revoke`: effective now; the authorization stays listed, as revoked."""
    address = parse_address(a.address)
    ctx.store.delegate_revoke(address, actor(a.by), now())
    _done(ctx, f"delegate: revoked {address}")


def delegate_list(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd delegate list`, with each authorization's status now (active, expired or revoked)."""
    rows = []
    for d in ctx.store.delegate_list():
        j = d.to_json()
        j["status"] = status(d.until, d.revoked_at, now())
        j["to"] = j["to"] if a.json else (", ".join(d.to) or "*")
        rows.append(j)
    listing(ctx.out, rows, a.json, ("address", "by", "to", "until", "status", "scope"), "no delegates")


# ----- exemptions
def exempt_add(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd exempt add`; a bare --until date runs through the end of that day and must be in the future."""
    pattern = parse_pattern(a.pattern)
    kind = parse_choice(a.kind, EXEMPTION_KINDS, "kind")
    until = future_instant(a.until, ctx.config.tz, "--until", now())
    ctx.store.exempt_add(Exemption(pattern, kind, until, a.note or "", to_iso(now()), actor(a.by)), actor(a.by))
    _done(ctx, f"exempt: added {pattern} ({kind})" + (f" until {to_iso(until)}" if until else ""))


def exempt_remove(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd exempt remove`; the pattern is normalized first, so any spelling of it matches."""
    pattern = parse_pattern(a.pattern)
    ctx.store.exempt_remove(pattern, actor(a.by))
    _done(ctx, f"exempt: removed {pattern}")


def exempt_list(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd exempt list`, with each exemption's status now (active or expired)."""
    rows = [{**e.to_json(), "status": status(e.until, None, now())} for e in ctx.store.exempt_list()]
    listing(ctx.out, rows, a.json, ("pattern", "kind", "until", "status", "note"), "no exemptions")


# ----- quiet periods
def quiet_add(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd quiet add`: END is exclusive and must not be past; a bare date is midnight in the company time zone."""
    start = instant(a.start, ctx.config.tz, "START")
    end = instant(a.end, ctx.config.tz, "END")
    check_quiet_period(start, end, a.start, a.end, now())
    period = ctx.store.quiet_add(start, end, a.label or "", actor(a.by))
    _done(ctx, f"quiet: added period {period.id} from {to_iso(start)} to {to_iso(end)} (end exclusive)")


def quiet_remove(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd quiet remove ID`, with the id `regfd quiet list` shows."""
    ctx.store.quiet_remove(a.id, actor(a.by))
    _done(ctx, f"quiet: removed period {a.id}")


def quiet_list(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd quiet list`, each period marked in force, past or upcoming."""
    t = now()
    rows = []
    for q in ctx.store.quiet_list():
        rows.append({**q.to_json(), "status": quiet_status(q, t)})
    listing(ctx.out, rows, a.json, ("id", "start", "end", "status", "label"), "no quiet periods")


# ----- audit
def audit_cmd(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd audit`; the table flattens each detail to key=value pairs, --json keeps it whole."""
    since = instant(a.since, ctx.config.tz, "--since") if a.since else None
    rows: list[dict[str, Any]] = [e.to_json() for e in ctx.store.audit_list(since)]
    if a.archive:  # what `regfd records archive` moved out of Redis, listed first (it is older)
        from pathlib import Path

        from regfd.compliance.register import archived_entries

        archived = archived_entries([Path(d) for d in a.archive], "audit", since)
        rows = [{k: d[k] for k in ("id", "at", "who", "action", "target", "detail")} for d in archived] + rows
    if not a.json:
        for r in rows:
            detail = r["detail"]
            r["detail"] = (", ".join(f"{k}={v}" for k, v in detail.items() if v not in ("", None, []))
                           if isinstance(detail, dict) else detail)
    listing(ctx.out, rows, a.json, ("at", "who", "action", "target", "detail"), "no audit events")


def register(sub: Any) -> None:
    """Add the directory commands (registry, officer, delegate, exempt, quiet, audit) to the top-level parser."""
    def by(p: argparse.ArgumentParser) -> None:
        p.add_argument("--by", help="who is making the change (default: $REGFD_ACTOR or the OS user)")

    def json_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print JSON")

    def remove(group: Any, name: str, arg: str, func: Any) -> None:
        """`<group> remove|revoke ARG [--by WHO]`: the same shape in every group."""
        p = group.add_parser(name)
        p.add_argument(arg)
        by(p)
        p.set_defaults(func=func)

    def list_cmd(group: Any, func: Any) -> None:
        p = group.add_parser("list")
        json_flag(p)
        p.set_defaults(func=func)

    reg = sub.add_parser("registry", help="the Specified Person registry").add_subparsers(dest="sub", required=True)
    p = reg.add_parser("add", help="add an address or domain (a domain covers its subdomains)")
    p.add_argument("pattern")
    p.add_argument("--category", required=True, help=", ".join(REGISTRY_CATEGORIES))
    p.add_argument("--firm")
    p.add_argument("--note")
    p.add_argument("--check-dns", action="store_true", help="warn when the domain has no MX or A record")
    by(p)
    p.set_defaults(func=registry_add)
    remove(reg, "remove", "pattern", registry_remove)
    list_cmd(reg, registry_list)
    p = reg.add_parser("import", help="import a CSV with columns pattern,category[,firm][,note]")
    p.add_argument("file")
    p.add_argument("--replace", action="store_true", help="replace the whole registry (atomically)")
    by(p)
    p.set_defaults(func=registry_import)
    p = reg.add_parser("export", help="print the registry as CSV (the import format)")
    p.set_defaults(func=registry_export)

    off = sub.add_parser("officer", help="officers (authorized roles speak to Specified Persons)").add_subparsers(
        dest="sub", required=True)
    p = off.add_parser("add")
    p.add_argument("address")
    p.add_argument("--role", required=True)
    by(p)
    p.set_defaults(func=officer_add)
    remove(off, "remove", "address", officer_remove)
    list_cmd(off, officer_list)

    dl = sub.add_parser("delegate", help="employees authorized by an officer").add_subparsers(dest="sub", required=True)
    p = dl.add_parser("add")
    p.add_argument("address")
    p.add_argument("--by", required=True, help="the authorized officer who approves")
    p.add_argument("--to", action="append", metavar="PATTERN",
                   help="recipient address or domain covered (repeatable; default: all)")
    p.add_argument("--until", help="expiry date (YYYY-MM-DD, through the end of that day) or ISO date-time")
    p.add_argument("--scope", help="approved subject matter, for the record")
    p.set_defaults(func=delegate_add)
    remove(dl, "revoke", "address", delegate_revoke)
    list_cmd(dl, delegate_list)

    ex = sub.add_parser("exempt", help="attorneys, auditors, investment bankers, NDA parties").add_subparsers(
        dest="sub", required=True)
    p = ex.add_parser("add")
    p.add_argument("pattern")
    p.add_argument("--kind", required=True, help=" | ".join(EXEMPTION_KINDS))
    p.add_argument("--until")
    p.add_argument("--note")
    by(p)
    p.set_defaults(func=exempt_add)
    remove(ex, "remove", "pattern", exempt_remove)
    list_cmd(ex, exempt_list)

    qu = sub.add_parser("quiet", help="quiet periods [START, END)").add_subparsers(dest="sub", required=True)
    p = qu.add_parser("add")
    p.add_argument("start", help="date (midnight in the company time zone) or ISO date-time; inclusive")
    p.add_argument("end", help="exclusive")
    p.add_argument("--label")
    by(p)
    p.set_defaults(func=quiet_add)
    remove(qu, "remove", "id", quiet_remove)
    list_cmd(qu, quiet_list)

    p = sub.add_parser("audit", help="who changed the directory, released or rejected what, and why")
    p.add_argument("--since")
    p.add_argument("--archive", metavar="DIR", action="append",
                   help="also list the entries archived to DIR (regfd records archive); may be repeated")
    json_flag(p)
    p.set_defaults(func=audit_cmd)

