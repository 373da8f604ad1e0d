"""The console's commands: serve it, and manage who may sign in.

    regfd web [--listen 127.0.0.1:8080 | unix:/run/regfd/web.sock]
    regfd user add NAME --role auditor|reviewer|approver|admin [--password-stdin] [--totp] [--sso]
    regfd user list [--json] | remove NAME | passwd NAME [--password-stdin]
    regfd user token NAME [--client LABEL]      prints a new API token once

Passwords are read from a prompt (twice), or one line of standard input with
--password-stdin (for scripts); they never appear in arguments, where `ps`
would show them.
"""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys
from typing import Any

from regfd.cli.output import listing, print_json
from regfd.core.clock import now, to_iso
from regfd.errors import InvalidInput

from . import Context, actor

MIN_PASSWORD = 12


def web_cmd(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd web`: serve the console in the foreground until SIGTERM or SIGINT."""
    import uvicorn

    from regfd.mta.daemon import configure_logging  # the milter's JSON log lines, for the console too
    from regfd.web.app import create_app

    configure_logging()
    listen = a.listen or ctx.config.web.listen
    app = create_app(ctx.config, ctx.store)
    # uvicorn's access log would print query strings (an OpenID Connect callback's code): regfd logs its own
    kw: dict[str, Any] = {"log_level": "info", "access_log": False, "proxy_headers": False, "server_header": False}
    if listen.startswith("unix:"):
        kw["uds"] = listen[5:]
    else:
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit():
            raise InvalidInput(f"--listen must be HOST:PORT or unix:PATH (got {listen!r})")
        kw["host"], kw["port"] = host.strip("[]"), int(port)
    print(f"regfd web: serving the console on {listen} (store: {ctx.config.describe_store()})", file=sys.stderr)
    uvicorn.run(app, **kw)


def _password(a: argparse.Namespace) -> str:
    if a.password_stdin:
        pw = sys.stdin.readline().rstrip("\r\n")
    else:
        pw = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != pw:
            raise InvalidInput("the two passwords differ; nothing changed")
    if len(pw) < MIN_PASSWORD:
        raise InvalidInput(f"the password must have at least {MIN_PASSWORD} characters; nothing changed")
    return pw


def user_add(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd user add`: a new user (an existing name is refused: use passwd or remove first)."""
    from regfd.store.users_store import UsersStore
    from regfd.web.auth import hash_password, parse_name, parse_role

    name, role = parse_name(a.name), parse_role(a.role)
    users = UsersStore(ctx.store)
    if users.get(name) is not None:
        raise InvalidInput(f"user {name!r} exists already (regfd user passwd / remove)")
    user = {"name": name, "role": role, "hash": "" if a.sso else hash_password(_password(a)), "totp": "",
            "created_at": to_iso(now()), "created_by": actor(a.by)}
    if a.totp:
        import pyotp

        user["totp"] = pyotp.random_base32()
    users.put(user, actor(a.by), "web.user.add")
    print(f"user: added {name} ({role})", file=ctx.out)
    if a.totp:
        uri = pyotp.TOTP(user["totp"]).provisioning_uri(name=name, issuer_name="regfd")
        print(f"TOTP: add this to the user's authenticator app (shown once): {uri}", file=ctx.out)


def user_passwd(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd user passwd`: a new password for an existing user."""
    from regfd.store.users_store import UsersStore
    from regfd.web.auth import hash_password

    users = UsersStore(ctx.store)
    user = users.get(a.name)
    if user is None:
        raise InvalidInput(f"no user {a.name!r}")
    user["hash"] = hash_password(_password(a))
    users.put(user, actor(a.by), "web.user.passwd")
    print(f"user: new password for {a.name}", file=ctx.out)


def user_list(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd user list` (never the hashes)."""
    from regfd.store.users_store import UsersStore

    rows = [{"name": u["name"], "role": u["role"], "totp": bool(u.get("totp")), "created_at": u.get("created_at"),
             "created_by": u.get("created_by")} for u in UsersStore(ctx.store).list()]
    if a.json:
        print_json(ctx.out, rows)
        return
    listing(ctx.out, rows, False, ("name", "role", "totp", "created_at", "created_by"), "no users")


def user_remove(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd user remove`: their sessions and tokens stop working at once."""
    from regfd.store.users_store import UsersStore

    if not UsersStore(ctx.store).remove(a.name, actor(a.by)):
        raise InvalidInput(f"no user {a.name!r}")
    print(f"user: removed {a.name}", file=ctx.out)


def user_token(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd user token`: a new bearer token for the API, acting with the user's role; printed once."""
    from regfd.store.users_store import UsersStore

    users = UsersStore(ctx.store)
    if users.get(a.name) is None:
        raise InvalidInput(f"no user {a.name!r}")
    token = "rfd_" + secrets.token_urlsafe(32)
    users.token_add(token, a.name, a.client or "", to_iso(now()), actor(a.by))
    print(token, file=ctx.out)


def register(sub: Any) -> None:
    """Add `web` and `user` to the top-level parser."""
    p = sub.add_parser("web", help="serve the compliance console (held queue, decisions, records, directory)")
    p.add_argument("--listen", help="HOST:PORT or unix:PATH (default: [web] listen, 127.0.0.1:8080)")
    p.set_defaults(func=web_cmd)

    us = sub.add_parser("user", help="who may sign in to the console").add_subparsers(dest="sub", required=True)

    def by(q: argparse.ArgumentParser) -> None:
        q.add_argument("--by", help="who makes the change (audit; default $REGFD_ACTOR or the OS user)")

    q = us.add_parser("add", help="add a user")
    q.add_argument("name", help="the sign-in name (an email address is a good choice)")
    q.add_argument("--role", required=True, help="auditor | reviewer | approver | admin")
    q.add_argument("--password-stdin", action="store_true", help="read the password from one line of stdin")
    q.add_argument("--totp", action="store_true", help="also require a TOTP code (prints the authenticator URI)")
    q.add_argument("--sso", action="store_true", help="no password: signs in only through OpenID Connect")
    by(q)
    q.set_defaults(func=user_add)
    q = us.add_parser("passwd", help="set a new password")
    q.add_argument("name")
    q.add_argument("--password-stdin", action="store_true")
    by(q)
    q.set_defaults(func=user_passwd)
    q = us.add_parser("list", help="the users and their roles")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=user_list)
    q = us.add_parser("remove", help="remove a user, their sessions and tokens")
    q.add_argument("name")
    by(q)
    q.set_defaults(func=user_remove)
    q = us.add_parser("token", help="a new API bearer token for a user (printed once)")
    q.add_argument("name")
    q.add_argument("--client", help="a label for the integration (ticketing, SIEM ...)")
    by(q)
    q.set_defaults(func=user_token)
