"""The tamper-evident register's commands, under `regfd records`.

    regfd records keygen                      create the Ed25519 signing key ([register] signing_key, mode 0600)
    regfd records export-key                  print its public key (PEM) for auditors
    regfd records checkpoint [--out DIR]      sign and store a checkpoint of every chain's head now
    regfd records verify [--public-key FILE]... [--archive DIR]...
                                              exit 0: intact; 1: tampered (the first bad entry is named)
    regfd records archive --before DATE --out DIR
                                              move what arrived before DATE to files, verified, then trim Redis
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from regfd.core.clock import parse_instant
from regfd.errors import InvalidInput

from . import Context


def _register(ctx: Context) -> Any:
    from regfd.compliance.register import Register

    return Register(ctx.store, ctx.config)


def keygen_cmd(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd records keygen`: refuses to replace an existing key."""
    from regfd.compliance.signing import generate, key_id

    path = ctx.config.signing_key_path
    key = generate(path)
    print(f"signing key written to {path} (mode 0600), key id {key_id(key.public_key())}; "
          "give auditors the output of `regfd records export-key`", file=ctx.out)


def export_key_cmd(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd records export-key`: the public half as PEM on stdout."""
    from regfd.compliance.signing import load_private, public_pem

    ctx.out.write(public_pem(load_private(ctx.config.signing_key_path).public_key()))


def checkpoint_cmd(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd records checkpoint`: one signed checkpoint now."""
    signed = _register(ctx).checkpoint(Path(a.out) if a.out else None)
    heads = ", ".join(f"{c} seq {p['seq']}" for c, p in signed["payload"]["chains"].items())
    print(f"checkpoint {signed['id']}: {heads}; signed by key {signed['key']}"
          + (f"; copy in {a.out}" if a.out else ""), file=ctx.out)


def verify_cmd(ctx: Context, a: argparse.Namespace) -> int:
    """`regfd records verify`: exit 0 when every chain and checkpoint is intact, 1 at the first bad entry."""
    from regfd.compliance.signing import load_private, load_public

    notes: list[str] = []
    if a.public_key:
        public = [load_public(Path(f)) for f in a.public_key]
    elif ctx.config.signing_key_path.exists():
        public = [load_private(ctx.config.signing_key_path).public_key()]
        notes.append("signatures checked with the local signing key's public half; an auditor passes the "
                     "exported key (--public-key)")
    else:
        public = []
        notes.append("checkpoint signatures NOT checked: no --public-key and no signing key here")
    report = _register(ctx).verify(public, [Path(d) for d in a.archive or ()])
    for chain, walk in report.walks.items():
        archived = report.archived.get(chain, 0)
        where = f" ({archived} from the archive)" if archived else ""
        legacy = f", {walk.legacy} written before the register" if walk.legacy else ""
        if walk.problem is not None:
            print(f"{chain}: TAMPERED: {walk.entries} entries good{where}, then the first bad one at "
                  f"seq {walk.problem.seq if walk.problem.seq is not None else walk.end.seq + 1}", file=ctx.out)
            continue
        span = f"seq {walk.start.seq + 1} to {walk.end.seq}" if walk.end.seq > walk.start.seq else "no entries"
        print(f"{chain}: intact, {span}, {walk.entries} entries checked{where}{legacy}", file=ctx.out)
    if report.checkpoints or report.intact:
        signed = f", {report.signatures_ok} signatures valid" if public else ""
        print(f"checkpoints: {report.checkpoints}{signed}, {report.agreeing} heads agree with the chains, "
              f"{report.not_checkable} before the checked range", file=ctx.out)
    for note in notes + report.notes:
        print(f"note: {note}", file=ctx.out)
    if report.intact:
        print("register intact", file=ctx.out)
        return 0
    for problem in report.problems:
        print(f"TAMPERED: {problem}", file=ctx.out)
    print(f"regfd: error: the register was tampered with: {report.problems[0]}", file=sys.stderr)
    return 1


def archive_cmd(ctx: Context, a: argparse.Namespace) -> None:
    """`regfd records archive`: files first, verified, then Redis is trimmed."""
    from regfd.compliance.register import Register

    try:
        before = parse_instant(a.before, ctx.config.tz)
    except ValueError as exc:
        raise InvalidInput(f"--before: {exc}") from None
    done = Register(ctx.store, ctx.config).archive(before, Path(a.out))
    if not done:
        print(f"nothing arrived before {a.before}: nothing archived", file=ctx.out)
    for x in done:
        print(f"{x.chain}: seq {x.first} to {x.last} ({x.entries} entries) -> {Path(a.out) / x.file}, "
              f"sha256 {x.sha256}; {x.trimmed} trimmed from Redis", file=ctx.out)


def add_to(records: argparse.ArgumentParser) -> None:
    """Add the register's subcommands to the `regfd records` parser."""
    sub = records.add_subparsers(dest="sub", required=False)
    p = sub.add_parser("keygen", help="create the register's Ed25519 signing key (mode 0600; never replaced)")
    p.set_defaults(func=keygen_cmd)
    p = sub.add_parser("export-key", help="print the signing key's public half (PEM) for auditors")
    p.set_defaults(func=export_key_cmd)
    p = sub.add_parser("checkpoint", help="sign and store a checkpoint of the register's chains now")
    p.add_argument("--out", metavar="DIR", help="also write it to DIR (e.g. the WORM archive directory)")
    p.set_defaults(func=checkpoint_cmd)
    p = sub.add_parser("verify", help="check the register's hash chains and signed checkpoints "
                                      "(exit 0 intact, 1 tampered)")
    p.add_argument("--public-key", metavar="FILE", action="append",
                   help="PEM public key (from export-key) to check signatures with; repeat it for the keys "
                        "used before a rotation")
    p.add_argument("--archive", metavar="DIR", action="append",
                   help="also verify the archive in DIR, joined to what is in Redis; repeat it for an archive "
                        "kept in several directories (and for checkpoint copies)")
    p.set_defaults(func=verify_cmd)
    p = sub.add_parser("archive", help="write what arrived before DATE to files (JSON lines + signed "
                                       "checkpoint), verify them, then trim it from Redis")
    p.add_argument("--before", required=True, metavar="DATE", help="date (company time zone) or ISO date-time")
    p.add_argument("--out", required=True, metavar="DIR", help="directory for the archive files")
    p.set_defaults(func=archive_cmd)
