"""`regfd milter`: run the milter daemon (regfd/mta/daemon.py) with the command line's settings."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add `regfd milter` to the top-level parser."""
    p = sub.add_parser("milter", help="run the milter daemon",
                       description="Run the Regulation FD milter (Postfix smtpd_milters / Sendmail INPUT_MAIL_FILTER).")
    p.add_argument("--config", dest="milter_config", metavar="FILE",
                   help="TOML configuration file (same as the global --config)")
    p.add_argument("--socket", help="inet:PORT@HOST or unix:PATH (default: milter.socket from the config)")
    p.add_argument("--engine", choices=("libmilter", "asyncio"),
                   help="milter engine (default: milter.engine from the config)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="asyncio engine processes, 1..64 (default: milter.workers from the config)")
    p.set_defaults(func=run)


def run(ctx: Any, args: argparse.Namespace) -> int:
    """`regfd milter`: fails before listening on any bad setting; returns after a stop signal and the drain."""
    from regfd.mta.daemon import configure_logging, run_daemon

    if args.milter_config:
        ctx.config_path = args.milter_config
    configure_logging()
    return run_daemon(ctx.config, ctx.services, args.socket, engine=args.engine, workers=args.workers)
