"""Big messages are scanned in a child process killed at a hard deadline (regfd/scan/isolation.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from regfd.config import ScanLimits, load_config
from regfd.core.finding import MATERIAL, UNSCANNABLE, Finding
from regfd.scan.isolation import scan_in_child
from regfd.scan.scanner import scan_message
from regfd.service import Services
from tests.conftest import REPO


def _big_message(size: int) -> bytes:
    filler = "The parking garage closes early on Friday for maintenance.\r\n" * (size // 60)
    return ("From: bob@allient.com\r\nTo: ana@bank.example\r\nSubject: notes\r\n\r\nAna,\r\n\r\n"
            "Between us, we will miss the quarter.\r\n\r\n" + filler).encode()


def _services(tmp_path: Path, isolate_over: int) -> Services:
    cfg = tmp_path / "regfd.toml"
    cfg.write_text(f'lexicon_dir = "{REPO / "lexicons"}"\npolicy_file = "{REPO / "config" / "policy.toml"}"\n'
                   f'state_dir = "{tmp_path / "var"}"\n[limits]\nisolate_over = {isolate_over}\n')
    return Services(load_config(cfg))


def _pipes() -> set[str]:
    """This process's open pipe ends, by inode (other tests' sockets and files come and go meanwhile)."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("pipe:"):
            out.add(f"{fd}:{target}")
    return out


def test_a_big_message_is_scanned_in_a_child_with_the_same_findings(tmp_path: Path) -> None:
    services = _services(tmp_path, isolate_over=100_000)
    raw = _big_message(400_000)
    before = _pipes()
    isolated = list(services.scan(raw))
    assert _pipes() - before == set()  # both ends of the child's pipe are closed
    assert isolated == scan_message(raw, services.lexicons, services.config.limits)
    assert any(f.kind == MATERIAL for f in isolated)


def test_a_scan_that_never_ends_is_killed_at_the_deadline(tmp_path: Path) -> None:
    # The scanner here sleeps instead of parsing: a stand-in for a hostile part that makes a parser crawl
    # (the mechanism under test is the child and its kill, whatever the child is busy with).
    pidfile = tmp_path / "pid"

    def endless(raw: bytes) -> list[Finding]:
        pidfile.write_text(str(os.getpid()))
        time.sleep(60)
        return []

    start = time.monotonic()
    found = scan_in_child(endless, b"x", 1.0)
    elapsed = time.monotonic() - start
    assert 1.0 <= elapsed < 5.0
    assert [(f.kind, f.category) for f in found] == [(UNSCANNABLE, "time-budget")]
    child = int(pidfile.read_text())
    assert child != os.getpid()
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # killed and reaped: no process, not even a zombie


def test_a_child_that_dies_is_an_unscannable_message_not_a_crash() -> None:
    def dies(raw: bytes) -> list[Finding]:
        os._exit(3)

    found = scan_in_child(dies, b"x", 5.0)
    assert [(f.kind, f.category) for f in found] == [(UNSCANNABLE, "scanner-error:child")]


@pytest.mark.parametrize(("isolate_over", "size", "children"), [(0, 2_000_000, 0), (100_000, 50_000, 0),
                                                                (100_000, 200_000, 1)])
def test_only_messages_over_isolate_over_go_to_a_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        isolate_over: int, size: int, children: int) -> None:
    import regfd.scan.isolation as isolation

    calls: list[int] = []
    real = isolation.scan_in_child

    def counted(scan, raw, seconds):  # type: ignore[no-untyped-def]
        calls.append(len(raw))
        return real(scan, raw, seconds)

    monkeypatch.setattr(isolation, "scan_in_child", counted)  # counts the calls, the child still runs
    services = _services(tmp_path, isolate_over=isolate_over)
    found = list(services.scan(_big_message(size)))
    assert len(calls) == children
    assert any(f.kind == MATERIAL for f in found)
    assert ScanLimits().isolate_over == 1024 * 1024  # the default
