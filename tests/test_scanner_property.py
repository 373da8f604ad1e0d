"""Whatever bytes arrive, scan_message returns findings within its budget."""

from __future__ import annotations

import time
from email.mime.application import MIMEApplication
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regfd.config import ScanLimits
from regfd.core.finding import FINDING_KINDS, Finding
from tests.fuzzing.harness import check_scan
from tests.fuzzing.strategies import mime_messages
from tests.scanner_fixtures import lexicons, make_docx, make_pdf, scan

LIMITS = ScanLimits(time_budget=2.0, max_depth=4, max_parts=40)


@pytest.fixture(autouse=True, scope="module")
def _compiled() -> None:
    """Compile the lexicons before the first timed scan (seconds: not the scanner's time per message)."""
    lexicons()


_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(findings: object, elapsed: float) -> None:
    assert isinstance(findings, list)
    assert all(isinstance(f, Finding) and f.kind in FINDING_KINDS for f in findings)
    # scan_message turns any internal exception into an unscannable/scanner-error finding,
    # so without this check a scanner that always raised would pass every property.
    crashed = [f for f in findings if f.category.startswith("scanner-error")]
    assert not crashed, f"the scanner raised internally: {crashed}"
    assert len(findings) <= 50
    assert elapsed < LIMITS.time_budget + 1.0


@_SETTINGS
@given(st.binary(max_size=4000))
def test_arbitrary_bytes(raw: bytes) -> None:
    start = time.monotonic()
    findings = scan(raw, LIMITS)
    _check(findings, time.monotonic() - start)


@_SETTINGS
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_after_mime_headers(body: bytes) -> None:
    raw = b"Subject: =?utf-8?q?hi?=\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/html; charset=utf-16\r\nContent-Transfer-Encoding: base64\r\n\r\n" + body + b"\r\n--b--\r\n"
    start = time.monotonic()
    _check(scan(raw, LIMITS), time.monotonic() - start)


_texts = st.lists(
    st.sampled_from(list("abcdefghij klmnop<>/-.\n\u200b\u0430\u00ad") + ["merger ", "EBITDA ", "> ", "we got hacked "]),
    max_size=120,
).map("".join)


def _leaves() -> st.SearchStrategy[object]:
    return st.one_of(
        st.builds(lambda t: MIMEText(t, "plain", "utf-8"), _texts),
        st.builds(lambda t: MIMEText(t, "html", "utf-8"), _texts),
        st.builds(lambda t, cs: MIMEText(t, "plain", cs), _texts, st.sampled_from(["utf-16", "utf-8"])),
        st.builds(lambda b: MIMEApplication(b, "octet-stream", Name="x.bin"), st.binary(max_size=300)),
        st.builds(lambda b: MIMEApplication(b, "pdf", Name="x.pdf"), st.binary(max_size=300)),
        st.builds(lambda b: MIMEApplication(b, "zip", Name="x.docx"), st.binary(max_size=300)),
        st.builds(lambda t: MIMEApplication(make_pdf([[t[:60]]]), "pdf", Name="ok.pdf"), _texts),
        st.builds(lambda t: MIMEApplication(make_docx([[t]]), "octet-stream", Name="ok.docx"), _texts),
    )


def _tree(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    def multipart(parts: list[Any]) -> MIMEMultipart:
        m = MIMEMultipart()
        for p in parts:
            m.attach(p)
        return m

    return st.one_of(
        st.builds(multipart, st.lists(children, min_size=1, max_size=4)),
        st.builds(lambda m: MIMEMessage(m), children),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(_leaves(), _tree, max_leaves=12), _texts)
def test_arbitrary_mime_trees(tree: Any, subject: str) -> None:
    tree["Subject"] = subject.replace("\n", " ")
    start = time.monotonic()
    findings = scan(tree.as_bytes(), LIMITS)
    _check(findings, time.monotonic() - start)


# ----------------------------------------------------------------------------- structured MIME (tests/fuzzing)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mime_messages())
def test_structured_mime_gets_findings_in_time(raw: bytes) -> None:
    """Nesting, encodings right and wrong, broken boundaries, huge headers, RFC 2047 words valid and broken,
    bogus charsets, pdf/docx/htm attachments real or garbage: findings (or the documented `unscannable`),
    never an internal error, within the budget. bench/bench_fuzz.py runs this at 100 000 inputs."""
    check_scan(raw)
