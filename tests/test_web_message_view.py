"""The message page's text view (regfd/web/message_view.py): findings marked in place, HTML never kept as markup."""

from __future__ import annotations

from email.message import EmailMessage

from regfd.core.finding import Finding
from regfd.web.message_view import Segment, html_to_text, mark, view

GUIDANCE = Finding("material", "guidance", "lower the guidance", "we will lower the guidance", "body")
QUOTED = Finding("material", "earnings", "miss the quarter", "> we will miss the quarter", "quoted")
IN_PDF = Finding("embargo", "embargo", "draft press release", "the draft press release", "attachment:pr.pdf")


def test_every_occurrence_is_marked_case_insensitively_and_overlaps_resolved() -> None:
    text = "Lower the guidance? Yes, we lower the GUIDANCE."
    segs, missing = mark(text, [(1, GUIDANCE), (2, Finding("material", "guidance", "guidance", "", "body"))])
    assert [s.text for s in segs if s.finding] == ["Lower the guidance", "lower the GUIDANCE"]
    assert "".join(s.text for s in segs) == text and missing == []
    assert mark("nothing here", [(1, GUIDANCE)]) == ([Segment("nothing here")], [1])


def test_html_to_text_drops_scripts_styles_and_tags() -> None:
    got = html_to_text("<head><title>t</title><style>p{}</style></head><script>alert(1)</script>"
                       "<p>we will <b>lower</b> the&nbsp;guidance &lt;b&gt;</p>")
    assert "alert" not in got and "p{}" not in got and "<" not in got.replace("<b>", "")
    assert "lower" in got and "<b>" in got  # an escaped tag in the text is text, decoded once


def test_view_places_body_quoted_and_attachment_findings() -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@allient.com", "bob@bank.com", "Q4"
    msg.set_content("Bob, we will lower the guidance.\n\n> we will miss the quarter\n")
    msg.add_attachment(b"%PDF-1.4 ...", maintype="application", subtype="pdf", filename="pr.pdf")
    v = view(msg.as_bytes(), (GUIDANCE, QUOTED, IN_PDF))
    assert ("Subject", "Q4") in v.headers
    assert [(s.text, s.finding) for s in v.body if s.finding] == [("lower the guidance", 1), ("miss the quarter", 2)]
    [att] = v.attachments
    assert (att.name, att.content_type, att.findings) == ("pr.pdf", "application/pdf", (3,))
    assert v.unplaced == []


def test_view_of_a_message_that_was_not_kept() -> None:
    v = view(b"", (GUIDANCE,))
    assert v.body == [] and v.unplaced == [1]
