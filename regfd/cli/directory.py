"""Directory maintenance: registry, officers, delegates, exemptions, quiet periods, audit.

Every input is validated before anything is written; every write carries its
audit entry (see RedisStore).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from regfd.cli.output import listing
from regfd.core.address import normalize_address, normalize_pattern
from regfd.core.clock import now, parse_instant, to_iso
from regfd.core.directory import (
    EXEMPTION_KINDS,
    OFFICER_ROLES,
    REGISTRY_CATEGORIES,
    Authorization,
    Exemption,
    Officer,
    RegistryEntry,
    is_internal,
)
from regfd.errors import InvalidInput

from . import Context, actor

CSV_COLUMNS = ("pattern", "category", "firm", "note")


# ----- validation helpers (raise InvalidInput with one clear line)
def _pattern(text: str) -> str:
    try:
        return normalize_pattern(text)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _address(text: str, what: str = "address") -> str:
    try:
        return normalize_address(text)
    except ValueError as exc:
        raise InvalidInput(f"bad {what}: {exc}") from None


def _choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    v = value.strip().lower()
    if v not in allowed:
        raise InvalidInput(f"unknown {what} {value!r} (expected one of: {', '.join(allowed)})")
    return v


def _future(ctx: Context, text: str | None, what: str) -> datetime | None:
    if text is None:
        return None
    try:
        instant = parse_instant(text, ctx.config.tz, end_of_day=True)
    except ValueError as exc:
        raise InvalidInput(f"{what}: {exc}") from None
    if instant <= now():
        raise InvalidInput(f"{what} {text!r} is in the past")
    return instant


def _instant(ctx: Context, text: str, what: str) -> datetime:
    try:
        return parse_instant(text, ctx.config.tz)
    except ValueError as exc:
        raise InvalidInput(f"{what}: {exc}") from None


def _status(until: datetime | None, revoked: datetime | None = None) -> str:
    t = now()
    if revoked is not None and revoked <= t:
        return "revoked"
    if until is not None and until <= t:
        return "expired"
    return "active"


def _done(ctx: Context, message: str) -> None:
    print(message, file=ctx.out)


# ----- registry
def registry_add(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd registry add`; with --check-dns an unknown domain gets a warning but is still added."""
    pattern = _pattern(a.pattern)
    category = _choice(a.category, REGISTRY_CATEGORIES, "category")
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
    pattern = _pattern(a.pattern)
    ctx.store.registry_remove(pattern, actor(a.by))
    _done(ctx, f"registry: removed {pattern}")


def registry_list(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd registry list`; --json adds who added each entry and when."""
    rows = [e.to_json() for e in ctx.store.registry_list()]
    listing(ctx.out, rows, a.json, ("pattern", "category", "firm", "note"), "registry is empty")


def parse_registry_csv(path: Path, who: str) -> list[RegistryEntry]:
    """All rows valid or an error naming the first bad line; duplicates keep the last row."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise InvalidInput(f"{path}: empty file (expected a header: {','.join(CSV_COLUMNS)})") from None
    except csv.Error as exc:
        raise InvalidInput(f"{path}:1: {exc}") from None
    if "pattern" not in header or "category" not in header:
        raise InvalidInput(f"{path}:1: header must name the columns pattern and category (got {','.join(header)})")
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown:
        raise InvalidInput(f"{path}:1: unknown column {unknown[0]!r} (columns: {','.join(CSV_COLUMNS)})")
    idx = {h: i for i, h in enumerate(header)}
    at = to_iso(now())
    entries: dict[str, RegistryEntry] = {}
    try:
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) > len(header):
                raise InvalidInput(f"{path}:{line}: {len(row)} fields, header has {len(header)}")
            cell = {h: (row[i].strip() if i < len(row) else "") for h, i in idx.items()}
            try:
                pattern = normalize_pattern(cell["pattern"])
            except ValueError as exc:
                raise InvalidInput(f"{path}:{line}: {exc}") from None
            category = cell["category"].lower()
            if category not in REGISTRY_CATEGORIES:
                raise InvalidInput(f"{path}:{line}: unknown category {cell['category']!r} "
                                   f"(expected one of: {', '.join(REGISTRY_CATEGORIES)})")
            entries[pattern] = RegistryEntry(pattern, category, cell.get("firm", ""), cell.get("note", ""), at, who)
    except csv.Error as exc:
        raise InvalidInput(f"{path}:{reader.line_num}: {exc}") from None
    return list(entries.values())


def registry_import(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd registry import`: every row valid or nothing written (see parse_registry_csv)."""
    who = actor(a.by)
    entries = parse_registry_csv(Path(a.file), who)
    ctx.store.registry_import(entries, a.replace, who, str(a.file))
    replaced = " (replaced the registry)" if a.replace else ""
    _done(ctx, f"registry: imported {len(entries)} entries from {a.file}{replaced}")


def registry_export(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd registry export`: CSV in the import format, so a registry can be edited and imported back."""
    w = csv.writer(ctx.out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for e in ctx.store.registry_list():
        w.writerow([e.pattern, e.category, e.firm, e.note])


# ----- officers
def officer_add(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd officer add`: any known role is accepted; the reply says whether it is an authorized one."""
    address = _address(a.address)
    roles = tuple(dict.fromkeys(OFFICER_ROLES + ctx.config.authorized_roles))
    role = a.role.strip().upper()
    if role not in roles:
        raise InvalidInput(f"unknown role {a.role!r} (expected one of: {', '.join(roles)})")
    ctx.store.officer_add(Officer(address, role, to_iso(now()), actor(a.by)), actor(a.by))
    authorized = "authorized" if role in ctx.config.authorized_roles else "not an authorized role"
    _done(ctx, f"officer: added {address} ({role}, {authorized})")


def officer_remove(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd officer remove`; authorizations the officer approved stay in force until revoked."""
    address = _address(a.address)
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
    address = _address(a.address)
    if ctx.config.internal_domains and not is_internal(address, ctx.config.internal_domains):
        domains = ", ".join(ctx.config.internal_domains)
        raise InvalidInput(f"delegate {address} is not in an internal domain ({domains})")
    by = _address(a.by, "--by officer")
    to = tuple(dict.fromkeys(_pattern(p) for p in (a.to or [])))
    until = _future(ctx, a.until, "--until")
    officer = ctx.store.officer_get(by)
    if officer is None or officer.role not in ctx.config.authorized_roles:
        raise InvalidInput(f"--by {by} is not an authorized officer ({', '.join(ctx.config.authorized_roles)})")
    auth = Authorization(address, by, to, until, a.scope or "", None, "", to_iso(now()))
    ctx.store.delegate_add(auth, actor(None))
    covers = ", ".join(to) if to else "every Specified Person"
    _done(ctx, f"delegate: {address} authorized by {by} for {covers}" + (f" until {to_iso(until)}" if until else ""))


def delegate_revoke(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd delegate revoke`: effective now; the authorization stays listed, as revoked."""
    address = _address(a.address)
    ctx.store.delegate_revoke(address, actor(a.by), now())
    _done(ctx, f"delegate: revoked {address}")


def delegate_list(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd delegate list`, with each authorization's status now (active, expired or revoked)."""
    rows = []
    for d in ctx.store.delegate_list():
        j = d.to_json()
        j["status"] = _status(d.until, d.revoked_at)
        j["to"] = j["to"] if a.json else (", ".join(d.to) or "*")
        rows.append(j)
    listing(ctx.out, rows, a.json, ("address", "by", "to", "until", "status", "scope"), "no delegates")


# ----- exemptions
def exempt_add(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd exempt add`; a bare --until date runs through the end of that day and must be in the future."""
    pattern = _pattern(a.pattern)
    kind = _choice(a.kind, EXEMPTION_KINDS, "kind")
    until = _future(ctx, a.until, "--until")
    ctx.store.exempt_add(Exemption(pattern, kind, until, a.note or "", to_iso(now()), actor(a.by)), actor(a.by))
    _done(ctx, f"exempt: added {pattern} ({kind})" + (f" until {to_iso(until)}" if until else ""))


def exempt_remove(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd exempt remove`; the pattern is normalized first, so any spelling of it matches."""
    pattern = _pattern(a.pattern)
    ctx.store.exempt_remove(pattern, actor(a.by))
    _done(ctx, f"exempt: removed {pattern}")


def exempt_list(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd exempt list`, with each exemption's status now (active or expired)."""
    rows = [{**e.to_json(), "status": _status(e.until)} for e in ctx.store.exempt_list()]
    listing(ctx.out, rows, a.json, ("pattern", "kind", "until", "status", "note"), "no exemptions")


# ----- quiet periods
def quiet_add(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd quiet add`: END is exclusive and must not be past; a bare date is midnight in the company time zone."""
    start = _instant(ctx, a.start, "START")
    end = _instant(ctx, a.end, "END")
    if end <= start:
        raise InvalidInput(f"END {a.end!r} must be after START {a.start!r}")
    if end <= now():
        raise InvalidInput(f"END {a.end!r} is in the past")
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
        status = "in force" if q.contains(t) else ("past" if q.end <= t else "upcoming")
        rows.append({**q.to_json(), "status": status})
    listing(ctx.out, rows, a.json, ("id", "start", "end", "status", "label"), "no quiet periods")


# ----- audit
def audit_cmd(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd audit`; the table flattens each detail to key=value pairs, --json keeps it whole."""
    since = _instant(ctx, a.since, "--since") if a.since else None
    rows: list[dict[str, Any]] = [e.to_json() for e in ctx.store.audit_list(since)]
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
    json_flag(p)
    p.set_defaults(func=audit_cmd)

