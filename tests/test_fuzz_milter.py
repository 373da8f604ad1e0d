"""Fuzzing the milter: valid, truncated, oversized, out-of-order and random dialogues (tests/fuzzing/).

(a) the sans-IO core, (b) the asyncio engine over a loopback socket, (c)
`regfd milter --engine libmilter` over a loopback socket, each against the
properties of tests/fuzzing/harness.py: nothing but a clean close escapes,
every reply is one the MTA understands and a reply code is only the
configured failure's or the policy's, a valid dialogue gets a decision for
every message, the buffers stay within their documented bounds (and the
tracemalloc peak per input under harness.MEMORY_LIMIT), and a well-behaved
connection afterwards is still decided. Small counts here;
bench/bench_fuzz.py runs the same properties at 100 000 inputs.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from regfd.mta import protocol as p
from tests.conftest import free_port
from tests.fuzzing import harness
from tests.fuzzing.strategies import Script, milter_scripts, negotiation
from tests.mta import MilterProcess, make_mta_dir

_FIXTURE_REUSED = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]


@pytest.fixture
def traced() -> Iterator[None]:
    """tracemalloc on for the test, so harness.traced_peak checks the per-input peak."""
    tracemalloc.start()
    yield
    tracemalloc.stop()


@pytest.fixture
def apps(regfd: Any) -> dict[str, Any]:
    """Two apps on the same directory, one per failure action fuzzed (tempfail, reject)."""
    harness.populate(regfd)
    return {action: harness.make_app(regfd, action)[0] for action in ("tempfail", "reject")}


_HOSTILE_EXAMPLES = [
    Script((p.packet(p.BODY, b"x"),), False, "command-before-negotiation"),
    Script((negotiation(), b"\x80\x00\x00\x00B" + b"x" * 100), False, "length-2^31"),
    Script((negotiation(), b"\x00\x00\x00\x00"), False, "length-0"),
    Script((negotiation(), p.packet(p.BODYEOB)), False, "eom-without-data"),
    Script((negotiation(), p.packet(b"Z", b"??")), False, "unknown-command"),
    Script((negotiation(), p.packet(p.MAIL, b"<a@b>")), False, "mail-not-nul-terminated"),
]


@settings(max_examples=300, deadline=None, suppress_health_check=_FIXTURE_REUSED)
@given(script=milter_scripts(), action=st.sampled_from(["tempfail", "reject"]), quiet=st.booleans())
@example(script=_HOSTILE_EXAMPLES[0], action="tempfail", quiet=False)
@example(script=_HOSTILE_EXAMPLES[1], action="reject", quiet=False)
@example(script=_HOSTILE_EXAMPLES[2], action="tempfail", quiet=False)
@example(script=_HOSTILE_EXAMPLES[3], action="reject", quiet=False)
@example(script=_HOSTILE_EXAMPLES[3], action="tempfail", quiet=False)
@example(script=_HOSTILE_EXAMPLES[4], action="tempfail", quiet=False)
@example(script=_HOSTILE_EXAMPLES[5], action="reject", quiet=False)
def test_session_core_survives_any_dialogue(apps: dict[str, Any], traced: None, script: Script,
                                            action: str, quiet: bool) -> None:
    """`quiet`: the unix-socket protocol (no connect/helo, headers unanswered) as negotiated on a unix socket."""
    harness.check_session(apps[action], script, action, quiet)


@pytest.fixture(params=["inet", "unix"])
def engine(regfd: Any, request: Any) -> Iterator[tuple[harness.EngineUnderTest, Any]]:
    """The asyncio engine in this process on 127.0.0.1, or on a unix socket with the quiet protocol; and a
    separate app for the core's expected replies."""
    harness.populate(regfd)
    app, _ = harness.make_app(regfd)
    ref, _ = harness.make_app(regfd)
    harness.ENGINE_BREACHES.clear()
    eut = harness.EngineUnderTest(app, str(regfd.tmp / "milter.sock") if request.param == "unix" else None)
    yield eut, ref
    eut.close()


@settings(max_examples=120, deadline=None, suppress_health_check=_FIXTURE_REUSED)
@given(script=milter_scripts())
@example(script=_HOSTILE_EXAMPLES[1])
@example(script=_HOSTILE_EXAMPLES[3])
def test_asyncio_engine_answers_as_the_core_and_keeps_serving(
        engine: tuple[harness.EngineUnderTest, Any], traced: None, script: Script) -> None:
    eut, ref = engine
    harness.check_engine(eut, ref, script, "tempfail")


@pytest.fixture
def libmilter(regfd: Any) -> Iterator[tuple[int, MilterProcess, Any]]:
    """`regfd milter --engine libmilter` on an inet socket (a subprocess), and an app for the core's replies."""
    harness.populate(regfd)
    ref, _ = harness.make_app(regfd)  # also writes the config the subprocess reads
    port = free_port()
    m = MilterProcess.start(regfd.config, f"inet:{port}@127.0.0.1", regfd.env,
                            make_mta_dir("regfd-fuzz-") / "milter.log", engine="libmilter",
                            timeout=120)  # it compiles the lexicons first: seconds, more on a loaded machine
    yield port, m, ref
    assert m.stop() == 0, m.log.read_text()[-3000:]


@settings(max_examples=60, deadline=None, suppress_health_check=_FIXTURE_REUSED)
@given(script=milter_scripts())
@example(script=_HOSTILE_EXAMPLES[0])
@example(script=_HOSTILE_EXAMPLES[1])
def test_libmilter_engine_survives_any_dialogue(libmilter: tuple[int, MilterProcess, Any], script: Script) -> None:
    port, m, ref = libmilter
    harness.check_libmilter(port, lambda: m.proc.poll() is None, ref, script, harness.LogTail(m.log))


def test_libmilter_commands_before_negotiation_reach_the_adapter(libmilter: tuple[int, MilterProcess, Any]) -> None:
    """Regression (found by the fuzzer): libmilter passes commands on without an option negotiation; the
    callbacks found no milter object and pymilter answered "451 4.3.0 untrapped exception" to each."""
    port, m, _ref = libmilter
    z = b"<bob@allient.com>\0"
    raw, _how = harness.exchange(port, [p.packet(p.HELO, b"client\0"), p.packet(p.MAIL, z)])
    replies, _ = harness.parse_replies(raw)
    assert [r.cmd for r in replies] == [p.R_CONTINUE, p.R_CONTINUE], replies
    assert "AttributeError" not in m.log.read_text()
