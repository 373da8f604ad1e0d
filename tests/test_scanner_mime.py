"""The scanner reads every part of real messages, through encodings and evasion."""

from __future__ import annotations

import base64
import email.message
from email.mime.application import MIMEApplication
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest

from regfd.core.finding import EMBARGO, MATERIAL, NON_GAAP_UNRECONCILED
from regfd.scan.documents import html_to_text
from tests.scanner_fixtures import kinds, make_docx, make_pdf, make_xlsx, scan, text_findings

LEAK = "We are going to miss the quarter."


def _message(subject: str = "Catch-up") -> MIMEMultipart:
    msg = MIMEMultipart()
    msg["From"] = "employee@corp.example"
    msg["To"] = "analyst@bank.example"
    msg["Subject"] = subject
    return msg


def _raw_part(payload: bytes, content_type: str, cte: str) -> email.message.Message:
    part = email.message.Message()
    part["Content-Type"] = content_type
    part["Content-Transfer-Encoding"] = cte
    part.set_payload(payload)
    return part


def test_plain_message_with_no_trigger_has_no_findings() -> None:
    msg = _message()
    msg.attach(MIMEText("Thanks for meeting with us. The slides from the public investor day are attached.", "plain"))
    assert scan(msg.as_bytes()) == []


def test_rfc2047_subject_is_decoded() -> None:
    msg = _message("=?utf-8?b?" + base64.b64encode("Draft press release – Q3".encode()).decode() + "?=")
    msg.attach(MIMEText("see attached", "plain"))
    [finding] = scan(msg.as_bytes())
    assert (finding.kind, finding.location, finding.text) == (EMBARGO, "subject", "Draft press release")


@pytest.mark.parametrize("bogus", ["=?utf-8?b?not base64!?=", "=?x-bogus?q?abc?="])
def test_a_broken_encoded_word_does_not_hide_the_valid_one_beside_it(bogus: str) -> None:
    """Regression (found by fuzzing): one undecodable word made the whole Subject stay encoded."""
    msg = _message(bogus + " =?utf-8?q?Embargoed_until_Monday_8am.?=")
    msg.attach(MIMEText("see you", "plain"))
    assert (EMBARGO, "subject") in {(f.kind, f.location) for f in scan(msg.as_bytes())}


def test_base64_utf16_part() -> None:
    msg = _message()
    msg.attach(MIMEText(LEAK, "plain", "utf-16"))
    assert ("body", "earnings") in {(f.location, f.category) for f in scan(msg.as_bytes())}


def test_quoted_printable_part() -> None:
    qp = b"We are going to miss the =\r\nquarter, numbers look =E2=80=A6 soft.\r\n"
    msg = _message()
    msg.attach(_raw_part(qp, 'text/plain; charset="utf-8"', "quoted-printable"))
    assert (MATERIAL, "earnings") in kinds(scan(msg.as_bytes()))


def test_windows_1252_mislabelled_as_utf8() -> None:
    body = "The CFO\u2019s leaving \u2013 the CFO is leaving in May, \u201cconfidential\u201d.".encode("cp1252")
    msg = _message()
    msg.attach(_raw_part(base64.encodebytes(body), 'text/plain; charset="utf-8"', "base64"))
    findings = scan(msg.as_bytes())
    assert (MATERIAL, "management-changes") in kinds(findings)
    assert any("\u201cconfidential\u201d" in f.excerpt for f in findings)


def test_latin1_label_and_missing_charset() -> None:
    for ctype in ('text/plain; charset="iso-8859-1"', "text/plain", 'text/plain; charset="x-unknown"'):
        msg = _message()
        msg.attach(_raw_part("Caf\xe9 talk: we got hacked last night.".encode("latin-1"), ctype, "8bit"))
        assert (MATERIAL, "cybersecurity") in kinds(scan(msg.as_bytes())), ctype


def test_html_tags_splitting_a_word_and_script_dropped() -> None:
    html = (
        "<html><head><style>.x{}</style><script>var merger = 1;</script></head>"
        "<body><p>The <b>mer</b><span style='color:red'>ger</span> with Acme is done.</p></body></html>"
    )
    msg = _message()
    msg.attach(MIMEText(html, "html"))
    findings = scan(msg.as_bytes())
    assert [(f.category, f.text, f.location) for f in findings] == [("mergers-acquisitions", "merger", "body")]


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("Т\u0445e m\u0435rg\u0435r with Acme is done", "mergers-acquisitions"),  # Cyrillic look-alikes
        ("the mer\u200bger\u200d with Acme is done", "mergers-acquisitions"),  # zero-width
        ("the mer\u00adger with Acme is done", "mergers-acquisitions"),  # soft hyphen
        ("Our E B I T D A guidance: we will R A I S E guidance", "guidance"),  # spaced letters
        ("the m.e.r.g.e.r with Acme is done", "mergers-acquisitions"),  # dotted letters
        ("we are working on the mer-\n  ger with Acme", "mergers-acquisitions"),  # hyphenation
        ("ＷＥ ＧＯＴ ＨＡＣＫＥＤ last night", "cybersecurity"),  # fullwidth
        ("bankrupt\u0441y is on the table", "bankruptcy"),
    ],
)
def test_evasion_in_a_real_message(text: str, category: str) -> None:
    msg = _message()
    msg.attach(MIMEText(text, "plain", "utf-8"))
    findings = scan(msg.as_bytes())
    assert (MATERIAL, category) in kinds(findings), findings
    hit = next(f for f in findings if f.category == category)
    assert hit.text in text  # the original characters, not the normalized form


def test_spaced_non_gaap_measure() -> None:
    assert NON_GAAP_UNRECONCILED in {f.kind for f in text_findings("E.B.I.T.D.A. grew 12% this year")}


def test_pdf_attachment() -> None:
    msg = _message()
    msg.attach(MIMEText("Deck attached.", "plain"))
    pdf = make_pdf([["Investor update"], ["Confidential: we will cut the dividend in Q3."]])
    attachment = MIMEApplication(pdf, "pdf", Name="update.pdf")
    attachment.add_header("Content-Disposition", "attachment", filename="update.pdf")
    msg.attach(attachment)
    findings = scan(msg.as_bytes())
    assert ("attachment:update.pdf", "dividends") in {(f.location, f.category) for f in findings}


def test_docx_with_word_split_across_runs_and_xlsx() -> None:
    msg = _message()
    docx = make_docx([["Board notes"], ["The ", "mer", "ger", " with Acme closes Friday."]])
    att = MIMEApplication(docx, "vnd.openxmlformats-officedocument.wordprocessingml.document")
    att.add_header("Content-Disposition", "attachment", filename="notes.docx")
    msg.attach(att)
    xlsx = MIMEApplication(make_xlsx(["Scenario", "Chapter 11 filing"]), "octet-stream")
    xlsx.add_header("Content-Disposition", "attachment", filename="model.xlsx")
    msg.attach(xlsx)
    got = {(f.location, f.category) for f in scan(msg.as_bytes())}
    assert ("attachment:notes.docx", "mergers-acquisitions") in got
    assert ("attachment:model.xlsx", "bankruptcy") in got


def test_nested_message_with_an_attachment_inside() -> None:
    inner = _message("Fwd: board pack")
    inner.attach(MIMEText("The CFO is leaving.", "plain"))
    pdf = MIMEApplication(make_pdf([["We drew down the entire revolver."]]), "pdf")
    pdf.add_header("Content-Disposition", "attachment", filename="pack.pdf")
    inner.attach(pdf)
    outer = _message()
    outer.attach(MIMEText("FYI", "plain"))
    wrapped = MIMEMessage(inner)
    wrapped.add_header("Content-Disposition", "attachment", filename="board.eml")
    outer.attach(wrapped)
    got = {(f.location, f.category) for f in scan(outer.as_bytes())}
    assert ("attachment:board.eml/body", "management-changes") in got
    assert ("attachment:board.eml/attachment:pack.pdf", "extraordinary-borrowings") in got


def test_zip_attachment_is_read_recursively() -> None:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("notes.txt", "We will restate our financial statements.")
        z.writestr("photo.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    att = MIMEApplication(buf.getvalue(), "zip")
    att.add_header("Content-Disposition", "attachment", filename="docs.zip")
    msg = _message()
    msg.attach(att)
    findings = scan(msg.as_bytes())
    assert [(f.location, f.category) for f in findings] == [("attachment:docs.zip/attachment:notes.txt", "accounting-auditor")]


def test_images_and_unknown_binaries_are_not_unscannable() -> None:
    msg = _message()
    msg.attach(MIMEText("photo attached", "plain"))
    msg.attach(MIMEApplication(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 10, "octet-stream", Name="chart.png"))
    msg.attach(MIMEApplication(bytes(range(256)) * 10, "octet-stream", Name="blob.bin"))
    assert scan(msg.as_bytes()) == []


class TestQuotedText:
    def test_gmail_reply(self) -> None:
        body = (
            "Sounds good, see you Tuesday.\n\n"
            "On Mon, Mar 3, 2025 at 9:12 AM Jane Doe <jane@corp.example> wrote:\n"
            "> Between us, the deal should close\n> before we report.\n"
        )
        [finding] = text_findings(body)
        assert (finding.location, finding.category) == ("quoted", "mergers-acquisitions")

    def test_new_text_above_an_outlook_header(self) -> None:
        body = (
            "We got hacked, keep it quiet.\n\n"
            "From: Jane Doe\nSent: Monday, March 3, 2025 9:12 AM\nTo: Bob\nSubject: RE: status\n\n"
            "The CFO is leaving.\n"
        )
        got = {(f.category, f.location) for f in text_findings(body)}
        assert got == {("cybersecurity", "body"), ("management-changes", "quoted")}

    @pytest.mark.parametrize("marker", ["-----Original Message-----", "---------- Forwarded message ---------"])
    def test_original_and_forwarded_markers(self, marker: str) -> None:
        body = f"See below.\n\n{marker}\nFrom: x@y.example\nThe rating agencies are about to cut us.\n"
        [finding] = text_findings(body)
        assert finding.location == "quoted"

    def test_quoted_location_inside_an_attached_message(self) -> None:
        inner = _message("Re: hi")
        # A forward inside the attached message (a "> " reply quote would be the recipient's words, scored lower).
        inner.attach(MIMEText("ok\n\n---------- Forwarded message ---------\nwe will lower guidance next week\n",
                              "plain"))
        outer = _message()
        wrapped = MIMEMessage(inner)
        wrapped.add_header("Content-Disposition", "attachment", filename="re.eml")
        outer.attach(wrapped)
        assert {f.location for f in scan(outer.as_bytes())} == {"attachment:re.eml/quoted"}


def test_findings_are_deduplicated_and_capped() -> None:
    body = " ".join(["We got hacked."] * 200 + [f"The deal should close in week {i}." for i in range(200)])
    findings = text_findings(body)
    assert len([f for f in findings if f.category == "cybersecurity"]) == 1
    assert len(findings) <= 50


def test_html_blockquotes_read_as_quoted_lines() -> None:
    text = html_to_text("<p>Thanks</p><blockquote type='cite'>Is it true?<br>Asking for a friend."
                        "<blockquote>older</blockquote>back</blockquote><p>Bye &lt;blockquote&gt;</p>")
    assert [line for line in text.splitlines() if line] == [
        "Thanks", "> Is it true?", "> Asking for a friend.", "> > older", "> back", "Bye <blockquote>"]
