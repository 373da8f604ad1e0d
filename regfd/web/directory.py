"""The directory in the console: every role reads it; admins add and remove Specified Persons and officers.

Edits go through the CLI's own rules (core/directory_rules.py: the same
normalization, vocabularies and refusals) and the store's audited writes,
with the signed-in admin as the actor. A registry CSV upload is checked
whole and previewed (added, changed, removed) before anything is written.
Delegations, exemptions and quiet periods are shown here and edited with the CLI.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from regfd.core.clock import to_iso
from regfd.core.directory import OFFICER_ROLES, REGISTRY_CATEGORIES, Officer, RegistryEntry
from regfd.core.directory_rules import (
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
                  categories=REGISTRY_CATEGORIES,
                  roles=tuple(dict.fromkeys(OFFICER_ROLES + c.config.authorized_roles)))


async def directory_page(request: Request) -> Response:
    """Registry, officers, delegations, exemptions and quiet periods."""
    user = require(request, "auditor")
    return _page(request, console(request), user)


async def registry_add(request: Request) -> Response:
    """Add (or replace) a Specified Person, validated as `regfd registry add` validates it."""
    user, form = await form_for(request, "admin")
    c = console(request)
    try:
        pattern = parse_pattern(form.get("pattern", ""))
        category = parse_choice(form.get("category", ""), REGISTRY_CATEGORIES, "category")
        c.store.registry_add(RegistryEntry(pattern, category, form.get("firm", "").strip(),
                                           form.get("note", "").strip(), to_iso(c.clock()), user.name), user.name)
    except InvalidInput as exc:
        return _page(request, c, user, str(exc), 400)
    return RedirectResponse("/directory", status_code=303)


async def registry_remove(request: Request) -> Response:
    """Remove a Specified Person (any spelling of the pattern)."""
    user, form = await form_for(request, "admin")
    c = console(request)
    try:
        c.store.registry_remove(parse_pattern(form.get("pattern", "")), user.name)
    except InvalidInput as exc:
        return _page(request, c, user, str(exc), 400)
    return RedirectResponse("/directory", status_code=303)


async def officer_add(request: Request) -> Response:
    """Add an officer, with the CLI's role rules."""
    user, form = await form_for(request, "admin")
    c = console(request)
    try:
        address = parse_address(form.get("address", ""))
        role = officer_role(form.get("role", ""), c.config.authorized_roles)
        c.store.officer_add(Officer(address, role, to_iso(c.clock()), user.name), user.name)
    except InvalidInput as exc:
        return _page(request, c, user, str(exc), 400)
    return RedirectResponse("/directory", status_code=303)


async def officer_remove(request: Request) -> Response:
    """Remove an officer; authorizations they approved stay until revoked (as in the CLI)."""
    user, form = await form_for(request, "admin")
    c = console(request)
    try:
        c.store.officer_remove(parse_address(form.get("address", "")), user.name)
    except InvalidInput as exc:
        return _page(request, c, user, str(exc), 400)
    return RedirectResponse("/directory", status_code=303)


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
            Route("/directory/registry/import/apply", registry_import_apply, methods=["POST"])]
