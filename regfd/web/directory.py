"""The directory in the console: every role reads it; admins add and remove Specified Persons and officers.

Edits go through the CLI's own rules (core/directory_rules.py: the same
normalization, vocabularies and refusals) and the store's audited writes,
with the signed-in admin as the actor. Delegations, exemptions and quiet
periods are shown here and edited with the CLI.
"""

from __future__ import annotations

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
from regfd.web.auth import User, form_for, require
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


def routes() -> list[Route]:
    """The directory page and its edits."""
    return [Route("/directory", directory_page, methods=["GET"]),
            Route("/directory/registry/add", registry_add, methods=["POST"]),
            Route("/directory/registry/remove", registry_remove, methods=["POST"]),
            Route("/directory/officer/add", officer_add, methods=["POST"]),
            Route("/directory/officer/remove", officer_remove, methods=["POST"])]
