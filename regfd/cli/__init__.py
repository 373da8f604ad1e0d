"""The `regfd` command line: a thin adapter over the core and the store.

Each command group lives in its own module with a `register(subparsers)`
function. Errors become one line on stderr and a non-zero exit, never a
traceback: 1 refused input or failed action, 2 usage, 3 store unreachable,
70 internal error.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from regfd.config import Config, load_config
from regfd.errors import InvalidInput, RegfdError, StoreUnavailable
from regfd.service import Services
from regfd.store.redis_store import RedisStore, StoreHandle

EXIT_ERROR, EXIT_USAGE, EXIT_STORE, EXIT_INTERNAL = 1, 2, 3, 70


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line pointing to --help, not the whole usage."""

    def error(self, message: str) -> NoReturn:
        """Exit with EXIT_USAGE after one line naming the error and pointing to --help."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@dataclass
class Context:
    """What every command may need, opened lazily and closed once."""

    config_path: str | None
    verbose: bool = False
    _config: Config | None = None
    _handle: StoreHandle | None = None
    _services: Services | None = None
    out: Any = field(default_factory=lambda: sys.stdout)

    @property
    def config(self) -> Config:
        """Loaded on first use, so commands that need no config never read one."""
        if self._config is None:
            self._config = load_config(self.config_path)
            if self.verbose:
                print(f"regfd: config: {self._config.source}", file=sys.stderr)
        return self._config

    @property
    def services(self) -> Services:
        """The composition root for this configuration, built once."""
        if self._services is None:
            self._services = Services(self.config)
        return self._services

    @property
    def store(self) -> RedisStore:
        """Opened and pinged on first use, so commands without a store start no redis-server."""
        if self._handle is None:
            if self.verbose:
                print(f"regfd: store: {self.config.describe_store()}", file=sys.stderr)
            self._handle = self.services.open_store()
            self._handle.store.ping()
        return self._handle.store

    def close(self) -> None:
        """Idempotent; closes the store (and its private server, if this process started it)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def actor(explicit: str | None = None) -> str:
    """Who is making a change, for the audit trail: --by, $REGFD_ACTOR, or the OS user."""
    if explicit:
        return explicit
    if os.environ.get("REGFD_ACTOR"):
        return os.environ["REGFD_ACTOR"]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


Handler = Callable[[Context, argparse.Namespace], int | None]


def build_parser() -> argparse.ArgumentParser:
    """The parser for every command; each command module adds itself through its `register`."""
    from . import check, compliance, directory, evaluate, milter
    from . import status as status_cmd

    parser = Parser(prog="regfd", description="Regulation FD gateway for outgoing email")
    parser.add_argument("--config", help="TOML configuration file (default: $REGFD_CONFIG, else "
                                         "/etc/regfd/regfd.toml, else built-in defaults)")
    parser.add_argument("--verbose", action="store_true", help="say on stderr which configuration and store are used")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in (milter, check, evaluate, directory, compliance, status_cmd):
        module.register(sub)
    from . import web  # the compliance console and its users

    web.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; every error is one line on stderr and an exit status (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    ctx = Context(args.config, verbose=args.verbose)
    try:
        return int(args.func(ctx, args) or 0)
    except StoreUnavailable as exc:
        print(f"regfd: error: {exc}", file=sys.stderr)
        return EXIT_STORE
    except (RegfdError, InvalidInput) as exc:
        print(f"regfd: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except PermissionError as exc:  # the deployment's permissions, not a bug: say what was refused
        what = f"{exc.filename}" if exc.filename else str(exc)
        print(f"regfd: error: permission denied: {what} (running as uid {os.geteuid()})", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug: still one line, never a traceback
        print(f"regfd: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        if os.environ.get("REGFD_DEBUG"):
            raise
        return EXIT_INTERNAL
    finally:
        ctx.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
