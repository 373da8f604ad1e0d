"""The composition root: every service built once from the configuration, on first use.

The CLI commands and the milter ask `Services` for what they need instead of
wiring modules together themselves, so there is one place that decides
which scanner, policy and store a process uses — `regfd check`, `regfd
evaluate` and the milter get the same decision path by construction.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from regfd.config import Config
from regfd.core.decision import Decider
from regfd.core.finding import Finding
from regfd.core.policy import Policy
from regfd.errors import ConfigError

if TYPE_CHECKING:
    from regfd.compliance.executor import Workflow
    from regfd.mta.app import MilterApp
    from regfd.ports import DecisionSink, DirectoryReader
    from regfd.scan.lexicon import Lexicons
    from regfd.store.redis_store import RedisStore, StoreHandle


@functools.lru_cache(maxsize=4)
def _compiled(directory: Path, cache_dir: Path, stamp: tuple[tuple[str, int], ...]) -> Lexicons:
    """Once per process per version of the lexicon files (and, through the on-disk
    cache under state_dir, once per version across processes): compiling takes seconds."""
    try:
        from regfd.scan.lexicon import load_lexicons
    except ImportError as exc:  # hyperscan missing from this installation
        raise ConfigError(f"the content scanner is not available ({exc})") from None
    return load_lexicons(directory, cache_dir=cache_dir)


def lexicons_for(directory: Path, cache_dir: Path) -> Lexicons:
    """The compiled lexicons of `directory`, compiled again only when a file in it changes."""
    stamp = tuple(sorted((p.name, p.stat().st_mtime_ns) for p in directory.iterdir() if p.is_file()))
    return _compiled(directory, cache_dir, stamp)


class Services:
    """What a regfd process is made of, each part built once."""

    def __init__(self, config: Config) -> None:
        self.config = config

    @cached_property
    def policy(self) -> Policy:
        """The policy table and the company facts it needs (fails at start on a bad table)."""
        return Policy.from_config(self.config)

    @cached_property
    def lexicons(self) -> Lexicons:
        """The compiled lexicons (fails at start on a bad lexicon file)."""
        return lexicons_for(self.config.lexicon_dir, self.config.state_dir / "cache")

    def scan(self, raw: bytes) -> Iterable[Finding]:
        """The content scanner bound to the lexicons and limits of this configuration.

        A message over `limits.isolate_over` bytes is scanned in a child process
        that is killed at `time_budget` + 1 s (scan/isolation.py)."""
        from regfd.scan.scanner import scan_message

        limits, lexicons = self.config.limits, self.lexicons  # compiled here, not in a child that would lose them
        if limits.isolate_over and len(raw) > limits.isolate_over:
            from regfd.scan.isolation import scan_in_child

            return scan_in_child(lambda r: scan_message(r, lexicons, limits), raw, limits.time_budget + 1.0)
        return scan_message(raw, lexicons, limits)

    def decider_with(self, policy: Policy) -> Decider:
        """The decision path with another policy (an evaluation against a corpus's own directory)."""
        return Decider(policy, self.scan, self.config.limits.max_message_bytes)

    @cached_property
    def decider(self) -> Decider:
        """The one decision path of the milter, `check` and `evaluate`."""
        _ = self.lexicons  # compile now: a bad lexicon must stop start-up, not the first message
        return self.decider_with(self.policy)

    def open_store(self, timeout: float = 5.0, start_private: bool = True) -> StoreHandle:
        """The Redis store (the private redis-server when no URL is configured; started unless `start_private`
        is false)."""
        from regfd.store.redis_store import open_store

        return open_store(self.config, timeout=timeout, start_private=start_private)

    def executor(self, store: RedisStore) -> Workflow:
        """What follows each recorded decision: record, notifications, quarantine, follow-up."""
        from regfd.compliance.executor import Workflow

        return Workflow(store, self.config)

    def milter_app(self, store: DirectoryReader, sink: DecisionSink) -> MilterApp:
        """The milter's shared state, on this process's decision path."""
        from regfd.mta.app import MilterApp

        return MilterApp.from_config(self.config, store, sink, self.decider)
