"""The directory in the console: every role reads it; admins edit it.

Edits go through the CLI's own rules (core/directory_rules.py: the same
normalization, vocabularies and refusals) and the store's audited writes,
with the signed-in admin as the actor. A registry CSV upload is checked
whole and previewed (added, changed, removed) before anything is written.
Delegations, exemptions and quiet periods likewise (an authorization needs an
approving officer in an authorized role, as on the command line).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from regfd.core.clock import to_iso
from regfd.core.directory import (
    EXEMPTION_KINDS,
    OFFICER_ROLES,
    REGISTRY_CATEGORIES,
    Authorization,
    Exemption,
    Officer,
    RegistryEntry,
)
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
from regfd.errors import InvalidInput
from regfd.store.registry_csv import parse_registry_text
from regfd.web.auth import User, checked_form, form_for, require
from regfd.web.console import Console, console


def _page(request: Request, c: Console, user: User, error: str = "", status_code: int = 200) -> Response:
    at = c.clock()
    st = c.store
    return c.page(request, "directory.html", user, status=status_code, error=error,
                  registry=sorted(st.registry_list(), key=lambda e: e.pattern),
                  officers=sorted(st.officer_list(), key=lambda o: o.address),
                  authorized=c.config.authorized_roles,
                  delegates=[(d, status(d.until, d.revoked_at, at)) for d in st.delegate_list()],
                  exemptions=[(x, status(x.until, None, at)) for x in st.exempt_list()],
                  quiet=[(p, quiet_status(p, at)) for p in st.quiet_list()],
                  categories=REGISTRY_CATEGORIES, kinds=EXEMPTION_KINDS,
                  roles=tuple(dict.fromkeys(OFFICER_ROLES + c.config.authorized_roles)))


async def directory_page(request: Request) -> Response:
    """Registry, officers, delegations, exemptions and quiet periods."""
    user = require(request, "auditor")
    return _page(request, console(request), user)


async def _edit(request: Request, change: Callable[[Console, User, dict[str, str]], object]) -> Response:
    """An admin's change: CSRF-checked, refused with the CLI's one-line reason, else back to the directory."""
    user, form = await form_for(request, "admin")
    c = console(request)
    try:
        change(c, user, form)
    except InvalidInput as exc:
        return _page(request, c, user, str(exc), 400)
    return RedirectResponse("/directory", status_code=303)


def _registry_add(c: Console, user: User, f: dict[str, str]) -> None:
    pattern = parse_pattern(f.get("pattern", ""))
    category = parse_choice(f.get("category", ""), REGISTRY_CATEGORIES, "category")
    c.store.registry_add(RegistryEntry(pattern, category, f.get("firm", "").strip(), f.get("note", "").strip(),
                                       to_iso(c.clock()), user.name), user.name)


def _officer_add(c: Console, user: User, f: dict[str, str]) -> None:
    address = parse_address(f.get("address", ""))
    role = officer_role(f.get("role", ""), c.config.authorized_roles)
    c.store.officer_add(Officer(address, role, to_iso(c.clock()), user.name), user.name)


async def registry_add(request: Request) -> Response:
    """Add (or replace) a Specified Person, validated as `regfd registry add` validates it."""
    return await _edit(request, _registry_add)


async def registry_remove(request: Request) -> Response:
    """Remove a Specified Person (any spelling of the pattern)."""
    return await _edit(request, lambda c, u, f: c.store.registry_remove(parse_pattern(f.get("pattern", "")), u.name))


async def officer_add(request: Request) -> Response:
    """Add an officer, with the CLI's role rules."""
    return await _edit(request, _officer_add)


async def officer_remove(request: Request) -> Response:
    """Remove an officer; authorizations they approved stay until revoked (as in the CLI)."""
    return await _edit(request, lambda c, u, f: c.store.officer_remove(parse_address(f.get("address", "")), u.name))


def _exempt_add(c: Console, user: User, f: dict[str, str]) -> None:
    pattern = parse_pattern(f.get("pattern", ""))
    kind = parse_choice(f.get("kind", ""), EXEMPTION_KINDS, "kind")
    until = future_instant(f.get("until") or None, c.config.tz, "until", c.clock())
    c.store.exempt_add(Exemption(pattern, kind, until, f.get("note", "").strip(), to_iso(c.clock()), user.name),
                       user.name)


def _quiet_add(c: Console, user: User, f: dict[str, str]) -> None:
    start = instant(f.get("start", ""), c.config.tz, "start")
    end = instant(f.get("end", ""), c.config.tz, "end")
    check_quiet_period(start, end, f.get("start", ""), f.get("end", ""), c.clock())
    c.store.quiet_add(start, end, f.get("label", "").strip(), user.name)


def _delegate_add(c: Console, user: User, f: dict[str, str]) -> None:
    address = parse_address(f.get("address", ""))
    check_delegate(address, c.config.internal_domains)
    by = parse_address(f.get("by", ""), "approving officer")
    to = tuple(dict.fromkeys(parse_pattern(p) for p in f.get("to", "").replace(",", " ").split()))
    until = future_instant(f.get("until") or None, c.config.tz, "until", c.clock())
    check_approver(by, c.store.officer_get(by), c.config.authorized_roles)
    c.store.delegate_add(Authorization(address, by, to, until, f.get("scope", "").strip(), None, "",
                                       to_iso(c.clock())), user.name)


async def exempt_add(request: Request) -> Response:
    """Add an exemption (attorney, auditor, investment banker, NDA), as `regfd exempt add`."""
    return await _edit(request, _exempt_add)


async def exempt_remove(request: Request) -> Response:
    """Remove an exemption."""
    return await _edit(request, lambda c, u, f: c.store.exempt_remove(parse_pattern(f.get("pattern", "")), u.name))


async def quiet_add(request: Request) -> Response:
    """Add a quiet period [start, end), as `regfd quiet add`."""
    return await _edit(request, _quiet_add)


async def quiet_remove(request: Request) -> Response:
    """Remove a quiet period by id."""
    return await _edit(request, lambda c, u, f: c.store.quiet_remove(f.get("id", ""), u.name))


async def delegate_add(request: Request) -> Response:
    """Authorize a delegate, approved by an authorized officer, as `regfd delegate add`."""
    return await _edit(request, _delegate_add)


async def delegate_revoke(request: Request) -> Response:
    """Revoke a delegate's authorization now (it stays listed, as revoked)."""
    return await _edit(request, lambda c, u, f: c.store.delegate_revoke(parse_address(f.get("address", "")),
                                                                         u.name, c.clock()))


MAX_UPLOAD = 5 * 1024 * 1024


def preview(current: list[RegistryEntry], new: list[RegistryEntry], replace: bool) -> dict[str, list[Any]]:
    """What an import would change: added, changed (old, new), removed (only with replace), unchanged."""
    old = {e.pattern: e for e in current}
    seen = {e.pattern for e in new}
    out: dict[str, list[Any]] = {"added": [], "changed": [], "removed": [], "unchanged": []}
    for e in new:
        was = old.get(e.pattern)
        if was is None:
            out["added"].append(e)
        elif (was.category, was.firm, was.note) != (e.category, e.firm, e.note):
            out["changed"].append((was, e))
        else:
            out["unchanged"].append(e)
    if replace:
        out["removed"] = [e for p, e in sorted(old.items()) if p not in seen]
    return out


async def registry_import(request: Request) -> Response:
    """Step 1: the uploaded CSV checked whole (the CLI's rules) and what it would change; nothing written."""
    user, form = await checked_form(request, "admin")
    c = console(request)
    upload = form.get("file")
    text = ""
    if upload is not None and not isinstance(upload, str):
        data = await upload.read(MAX_UPLOAD + 1)
        if len(data) > MAX_UPLOAD:
            return _page(request, c, user, "the file is larger than 5 MB", 400)
        text = data.decode("utf-8", "replace")
    elif isinstance(form.get("csv"), str):
        text = str(form.get("csv"))
    replace = form.get("replace") == "1"
    name = upload.filename if upload is not None and not isinstance(upload, str) and upload.filename else "upload"
    try:
        entries = parse_registry_text(text, name, user.name)
    except InvalidInput as exc:
        return _page(request, c, user, str(exc), 400)
    changes = preview(c.store.registry_list(), entries, replace)
    return c.page(request, "import.html", user, changes=changes, csv=text, replace=replace, name=name,
                  rows=len(entries))


async def registry_import_apply(request: Request) -> Response:
    """Step 2: the same CSV, checked again, imported in one transaction (all rows or none), audited."""
    user, form = await form_for(request, "admin")
    c = console(request)
    name = form.get("name", "upload")
    try:
        entries = parse_registry_text(form.get("csv", ""), name, user.name)
        c.store.registry_import(entries, form.get("replace") == "1", user.name, f"console:{name}")
    except InvalidInput as exc:
        return _page(request, c, user, str(exc), 400)
    return RedirectResponse("/directory", status_code=303)


def routes() -> list[Route]:
    """The directory page and its edits."""
    return [Route("/directory", directory_page, methods=["GET"]),
            Route("/directory/registry/add", registry_add, methods=["POST"]),
            Route("/directory/registry/remove", registry_remove, methods=["POST"]),
            Route("/directory/officer/add", officer_add, methods=["POST"]),
            Route("/directory/officer/remove", officer_remove, methods=["POST"]),
            Route("/directory/registry/import", registry_import, methods=["POST"]),
            Route("/directory/exempt/add", exempt_add, methods=["POST"]),
            Route("/directory/exempt/remove", exempt_remove, methods=["POST"]),
            Route("/directory/quiet/add", quiet_add, methods=["POST"]),
            Route("/directory/quiet/remove", quiet_remove, methods=["POST"]),
            Route("/directory/delegate/add", delegate_add, methods=["POST"]),
            Route("/directory/delegate/revoke", delegate_revoke, methods=["POST"]),
            Route("/directory/registry/import/apply", registry_import_apply, methods=["POST"])]
