"""Compositional evidence: plain-language disclosures, the harmless look-alikes, and CRLF mail.

Sentences here are written for these tests (not taken from the corpus): each
states a disclosure the way people write it, with no trade term, or a
harmless sentence that shares its words.
"""

from __future__ import annotations

import base64
from email.message import EmailMessage
from pathlib import Path

import pytest

from regfd.config import ScanLimits
from regfd.core.finding import MATERIAL, Finding
from regfd.errors import ConfigError
from regfd.scan.lexicon import Lexicons, load_lexicons
from regfd.scan.scanner import scan_message
from tests.scanner_fixtures import copy_lexicons, lexicons, scan, text_findings

PLAIN_DISCLOSURES = [
    ("products-customers-contracts",
     "Between you and me, the big customer in Ohio is walking. They told us last week and nobody outside knows."),
    ("management-changes", "Keep this one close: Marcus told the board he is leaving at the end of the quarter."),
    ("mergers-acquisitions", "We are in advanced talks to buy a German drives maker, hoping to sign next month."),
    ("liquidity", "Honestly money is tight: if the revolver draw slips we won't make payroll on Friday."),
    ("cybersecurity", "Someone got into our email system for three months and took customer files; not public yet."),
    ("earnings", "We did 212 this quarter against a plan of 240, so expect a rough print."),
    ("dividends", "Heads up, the board will raise the dividend to $0.04 when it meets on the 13th."),
]

HARMLESS = [
    "As announced in our press release on May 5, first-quarter revenue was $142.6 million.",
    "We don't comment on market rumors; any offering would be announced publicly.",
    "Congratulations on your firm's acquisition of Harbor Capital, a great deal for your team.",
    "The 1998 purchase of the Swiss stepper business is the deal people still talk about.",
    "Allient will release second-quarter results after the market close on July 29, with a webcast.",
    "Did our margins hold up in the second quarter?",
    "Our travel policy covers economy fares for flights under six hours.",
]


@pytest.mark.parametrize(("category", "sentence"), PLAIN_DISCLOSURES)
def test_plain_language_disclosure_is_material_with_its_evidence(category: str, sentence: str) -> None:
    findings = [f for f in text_findings(sentence) if f.kind == MATERIAL]
    assert category in {f.category for f in findings}, findings
    f = next(f for f in findings if f.category == category)
    assert "score" in f.rule and "evidence.toml" in f.rule  # the reviewer sees why
    assert f.severity in ("medium", "high")


@pytest.mark.parametrize("sentence", HARMLESS)
def test_harmless_sentence_with_the_same_words_is_quiet(sentence: str) -> None:
    assert [f for f in text_findings(sentence) if f.kind == MATERIAL] == []


def test_lexicon_phrase_is_dropped_when_its_sentence_refuses_to_comment() -> None:
    assert text_findings("We will miss the quarter.")
    assert not [f for f in text_findings("Is it true you will miss the quarter?") if f.kind == MATERIAL]


def _message(body: str, subject: str = "Catching up", crlf: bool = True) -> bytes:
    msg = EmailMessage()
    msg["From"] = "bob@allient.com"
    msg["To"] = "ana@bank.example"
    msg["Subject"] = subject
    msg.set_content(body)
    raw = bytes(msg)
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") if crlf else raw.replace(b"\r\n", b"\n")


@pytest.mark.parametrize("crlf", [True, False])
def test_a_later_public_reference_does_not_cancel_an_earlier_paragraph(crlf: bool) -> None:
    body = ("Ana,\n\nWe will miss the quarter, the numbers look soft.\n\n"
            "Separately, as announced in our press release last week, the dividend is unchanged.\n\nBob\n")
    found = [f for f in scan(_message(body, crlf=crlf)) if f.kind == MATERIAL]
    assert any(f.category == "earnings" for f in found), found


@pytest.mark.parametrize("scope_text", [
    # phrase scope
    "Earnings call registration is open.",
    # sentence scope, public reference in the same sentence
    "As announced in our press release, we will miss the quarter.",
    # paragraph scope, safe harbour
    "This message contains forward-looking statements.\nActual results may differ materially; we will miss the quarter.",
])
@pytest.mark.parametrize("crlf", [True, False])
def test_every_exclusion_scope_applies_alike_with_crlf_and_lf(scope_text: str, crlf: bool,
                                                             evidence_only: Lexicons) -> None:
    # The lexicons' exclusions, without the message model: it reads the whole message on its own terms
    # (a safe-harbour paragraph that says "we will miss the quarter" is still a sentence it may weigh).
    body = f"Ana,\n\n{scope_text}\n\nBob\n"
    found = scan_message(_message(body, crlf=crlf), evidence_only, ScanLimits())
    assert [f for f in found if f.kind == MATERIAL] == []


def test_material_text_only_in_a_base64_subject_with_a_typographic_apostrophe() -> None:
    subject = "=?utf-8?B?" + base64.b64encode("We’re going to miss the quarter".encode()).decode() + "?="
    raw = (f"From: bob@allient.com\r\nTo: ana@bank.example\r\nSubject: {subject}\r\n"
           "Content-Type: text/plain; charset=utf-8\r\n\r\nSee you Sunday.\r\n").encode()
    found = [f for f in scan(raw) if f.kind == MATERIAL]
    assert [f.location for f in found] == ["subject"], found


def test_material_text_only_in_an_attached_htm_file() -> None:
    msg = EmailMessage()
    msg["From"] = "bob@allient.com"
    msg["To"] = "ana@bank.example"
    msg["Subject"] = "notes"
    msg.set_content("Notes attached.")
    msg.add_attachment(b"<html><body><p>Between us, we are going to miss the quarter.</p></body></html>",
                       maintype="text", subtype="html", filename="notes.htm")
    found = [f for f in scan(bytes(msg)) if f.kind == MATERIAL]
    assert found and all(f.location == "attachment:notes.htm" for f in found), found


def test_quoted_reply_from_the_recipient_weighs_less_than_the_senders_own_words() -> None:
    own = "Ana,\n\nBetween us, Allient will go bankrupt this summer.\n\nBob\n"
    quoted = ("Ana,\n\nWe don't comment on speculation; please see our 10-Q.\n\nBob\n\n"
              "On Tue, Jun 2, 2026 at 9:00 AM, Ana <ana@bank.example> wrote:\n"
              "> People on the message board say Allient will go bankrupt. Should I sell?\n")
    assert [f for f in scan(_message(own)) if f.kind == MATERIAL]
    assert [f for f in scan(_message(quoted)) if f.kind == MATERIAL] == []


def _outlook(own: str, author: str, reader: str, quoted: str) -> str:
    return (f"{own}\n\n________________________________\nFrom: Won Kim <{author}>\n"
            "Sent: Thursday, February 12, 2026 10:08 AM\n"
            f"To: Marcus Oyelaran <{reader}>\nSubject: payout\n\n{quoted}\n")


@pytest.mark.parametrize("crlf", [False, True])
def test_an_outlook_quote_of_the_recipients_question_is_their_words_not_ours(crlf: bool) -> None:
    # Outlook quotes replies and forwards alike: the addresses say whose words the block holds.
    question = "Heard the board will cut the dividend in the spring. What is the thinking for 2026?"
    answered = _outlook("Won - nothing to add beyond the 8-K, sorry.", "wkim@granitepeak-am.com",
                        "marcus.oyelaran@allient.com", question)
    assert [f for f in scan(_message(answered, crlf=crlf)) if f.kind == MATERIAL] == []
    leak = "Between us, the board will cut the dividend in the spring. Don't share this."
    forwarded = _outlook("FYI, see below.", "cfo@allient.com", "marcus.oyelaran@allient.com", leak)
    found = [f for f in scan(_message(forwarded, crlf=crlf)) if f.kind == MATERIAL]
    assert found and {f.location for f in found} == {"quoted"}, found


@pytest.mark.parametrize("crlf", [False, True])
def test_a_subject_reads_the_public_reference_of_the_body(crlf: bool) -> None:
    # The subject is a text part of its own; "as announced" in the body now counts for it too.
    public = _message("Ana, as announced in this morning's press release, the board appointed Laura Chen "
                      "chief operating officer, effective May 1.\n",
                      subject="New COO", crlf=crlf)
    assert [f for f in scan(public) if f.kind == MATERIAL] == []
    quiet = _message("Ana, see you at the dinner on Thursday.\n", subject="New COO", crlf=crlf)
    assert [(f.location, f.category) for f in scan(quiet) if f.kind == MATERIAL] == [
        ("subject", "management-changes")]


def test_scanner_without_signal_files_still_runs_the_phrase_lexicons(tmp_path: Path) -> None:
    lx = load_lexicons(copy_lexicons(tmp_path, without=("signals.toml", "evidence.toml")))
    assert lx.signals is None
    raw = _message("Ana,\n\nWe will miss the quarter.\n\nBob\n")
    assert [f.category for f in scan_message(raw, lx, ScanLimits()) if f.kind == MATERIAL] == ["earnings"]


def _lexicons_with(tmp_path: Path, evidence: str) -> None:
    copy_lexicons(tmp_path)
    (tmp_path / "evidence.toml").write_text(evidence)
    load_lexicons(tmp_path)


@pytest.mark.parametrize(("evidence", "message"), [
    ('kind = "evidence"\n[weights]\ntopic = 1.0\n', "threshold must be a positive number"),
    ('kind = "evidence"\nthreshold = 2\n[weights]\ntopic = 1\nsecrecy = "high"\n', "weight of 'secrecy' must be a number"),
    ('kind = "evidence"\nthreshold = 2\n[weights]\ntopic = 1\nsecrcy = 3\n', "unknown signal group 'secrcy'"),
    ('kind = "evidence"\nthreshold = 2\n[weights]\ntopic = 1\n[scope]\nsecrecy = "message"\n',
     "scope of 'secrecy' must be one of"),
    ('kind = "evidence"\nthreshold = 2\ndefault_category = "gossip"\n[weights]\ntopic = 1\n',
     "'gossip' is not a material category"),
])
def test_a_bad_evidence_file_stops_loading_with_one_line(tmp_path: Path, evidence: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as exc:
        _lexicons_with(tmp_path, evidence)
    assert "\n" not in str(exc.value) and "evidence.toml" in str(exc.value)


def test_signals_without_weights_are_refused(tmp_path: Path) -> None:
    copy_lexicons(tmp_path, without=("evidence.toml",))
    with pytest.raises(ConfigError, match="needs evidence.toml"):
        load_lexicons(tmp_path)


def test_topic_group_must_name_a_material_category(tmp_path: Path) -> None:
    copy_lexicons(tmp_path)
    with (tmp_path / "signals.toml").open("a") as fh:
        fh.write('\n[[entry]]\ncategory = "topic:weather"\npatterns = ["rain"]\n')
    with pytest.raises(ConfigError, match="'topic:weather' is not a material category"):
        load_lexicons(tmp_path)


def test_lexicons_fixture_has_signals() -> None:
    assert lexicons().signals is not None


def _with_model(tmp_path: Path, model: str) -> Path:
    """The lexicons with this word model and without the message model (whose `confirm` drops short texts' findings)."""
    copy_lexicons(tmp_path, without=("model.toml", "message_model.toml"))
    (tmp_path / "model.toml").write_text(model)
    return tmp_path


def test_the_word_model_decides_only_sentences_just_under_the_threshold(tmp_path: Path) -> None:
    model = ('kind = "model"\nbias = -3.0\nthreshold = 0.7\ngray_zone = 0.5\n'
             '[weights]\n"zorblat" = 10.0\n"g:company" = 0.1\n')
    lx = load_lexicons(_with_model(tmp_path, model))

    def material(text: str) -> list[str]:
        raw = _message(f"Ana,\n\n{text}\n\nBob\n")
        return [f.rule for f in scan_message(raw, lx, ScanLimits()) if f.kind == MATERIAL]

    # topic + company = 2.0, within 0.5 of the 2.5 threshold: the model decides, and says so
    rules = material("We zorblat the quarter.")
    assert rules and "model.toml p=1.00 (zorblat" in rules[0]
    assert material("We discussed the quarter.") == []  # same score, the model says no
    assert material("Zorblat the quarter.") == []  # topic alone (1.0): too far under for the model


@pytest.mark.parametrize(("model", "message"), [
    ('kind = "model"\nbias = 0\nthreshold = 1.5\ngray_zone = 0.5\n', "threshold is a probability"),
    ('kind = "model"\nbias = "low"\nthreshold = 0.5\ngray_zone = 0.5\n', "bias must be a number"),
    ('kind = "model"\nbias = 0\nthreshold = 0.5\ngray_zone = 0.5\n[weights]\nword = "heavy"\n',
     "must map words to numbers"),
])
def test_a_bad_model_file_stops_loading_with_one_line(tmp_path: Path, model: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as exc:
        load_lexicons(_with_model(tmp_path, model))
    assert "\n" not in str(exc.value) and "model.toml" in str(exc.value)


def test_a_topic_of_three_words_or_more_counts_as_an_event() -> None:
    [f] = [f for f in text_findings("Somebody broke into our payroll system and took everyone's bank details.")
           if f.category == "cybersecurity"]
    assert "event 'broke into our payroll system'" in f.rule


# Everyday-language sentences written while tuning (not from the corpus): every one of these is found
# today; a lexicon edit that loses one should be a deliberate decision.
EVERYDAY_DISCLOSURES = [
    ('earnings', "We're going to come in a good bit under what we did last spring, maybe 10% down."),
    ('earnings', "The quarter's basically done and it wasn't pretty, call it 118 against 131 last year."),
    ('earnings', "Our sales in June fell off badly, the worst month we've had since 2020."),
    ('guidance', "I wouldn't lean on the number we gave in February, it's not going to happen."),
    ('prospects-strategy', "We're getting out of the appliance business altogether next year."),
    ('write-downs-reserves', "We'll have to eat about eight million on that inventory this quarter."),
    ('litigation-investigations', "We're settling the patent thing for around six million, papers next week."),
    ('liquidity', "If the bank doesn't extend the line by Friday we can't pay the suppliers."),
    ('products-customers-contracts', "Boeing picked us for the new seat actuator, it's worth maybe 40 million."),
    ('products-customers-contracts', "Our biggest customer told us they're moving the whole program to the Germans."),
    ('management-changes', 'Marcus is out at the end of the month, the board already has his replacement.'),
    ('management-changes', "They're making Priya the new head of finance when Marcus goes."),
    ('dividends', 'The board is going to cut the payout in half at the next meeting.'),
    ('extraordinary-borrowings', "We're taking out a 300 million loan to fund the purchase."),
    ('accounting-auditor', 'The auditors found a problem with how we booked the aerospace revenue.'),
    ('cybersecurity', "Somebody broke into our payroll system and took everyone's bank details."),
    ('debt-ratings', "Moody's is about to knock us down a notch, we heard yesterday."),
    ('bankruptcy', 'The Mexican subsidiary is going to file for protection next month.'),
    ('insider-trading', "Dana's selling a big block of her stock as soon as the window opens."),
    ('mergers-acquisitions', "We've agreed to buy Kestrel for 400 million, signing is Tuesday."),
    ('mergers-acquisitions', 'A private equity firm made us an offer at 42 a share.'),
    ('securities-events', "We're going to buy back about 50 million of our own shares this fall."),
    ('earnings', 'Between the two of us, June was a record and the quarter will beat last year handily.'),
    ('earnings', "Short version: we're going to be light. Really light."),
    ('earnings', 'Q3 is shaping up about 15% better than what we told people.'),
    ('guidance', "We're going to have to take the annual number down when we report."),
    ('guidance', "The street is way too optimistic on the back half, I'd trim it."),
    ('write-downs-reserves', 'That Czech acquisition is going to cost us a big goodwill charge in Q4.'),
    ('litigation-investigations', 'We got served yesterday - a class action over the recall.'),
    ('liquidity', "We're burning cash faster than planned; treasury thinks we have maybe four months."),
    ('products-customers-contracts', "GM just cancelled the e-axle program on us, that's 60 million a year gone."),
    ('products-customers-contracts', 'The FDA cleared the new pump drive this morning, launch is next month.'),
    ('management-changes', 'Heads up: our COO resigned this morning, it goes out Monday.'),
    ('dividends', 'Expect the dividend to go up a penny at the August meeting.'),
    ('extraordinary-borrowings', 'Treasury is lining up a $250M bond deal for September.'),
    ('accounting-auditor', 'Brightline is resigning as our auditor after the audit fight.'),
    ('cybersecurity', 'We got hit with ransomware over the weekend, Brno is down.'),
    ('debt-ratings', "S&P told us they're putting us on negative watch next week."),
    ('bankruptcy', 'The UK sub is going into administration, the board signed off last night.'),
    ('insider-trading', 'Two directors are loading up on stock before the news comes out.'),
    ('mergers-acquisitions', "We're in the final stretch on buying Ferrand, announcement in two weeks."),
    ('mergers-acquisitions', 'Siemens wants to buy us, they came in with a number last Friday.'),
    ('securities-events', "The board approved a 2-for-1 split yesterday, it'll be public after the close."),
    ('securities-events', "We're calling the 2028 notes early in August."),
    ('earnings', 'Flash numbers: revenue 151, EPS 47 cents, both ahead of consensus.'),
    ('guidance', 'Between us, the 2027 targets are getting pushed out a year.'),
    ('litigation-investigations', 'The SEC opened an inquiry into our revenue accounting last month.'),
    ('accounting-auditor', 'NT 10-K Monday, the tax provision needs two more weeks.'),  # a filing that will be late
    ('accounting-auditor', 'Heads up: the 10-Q is going to be late.'),
]

EVERYDAY_HARMLESS = [
    'Thanks for coming out to the plant last week; the team enjoyed showing you the new winding line.',
    'As you saw in our first-quarter release, revenue was $142.6 million, up 3% from last year.',
    "We don't provide intra-quarter updates, but our full-year outlook from May 5 is on the IR site.",
    'Our CFO will be at your conference in September; please send the schedule when you have it.',
    'Congrats on the new fund launch, your team must be thrilled.',
    'The Q2 call is on July 30 at 8:30; the dial-in is in the press release.',
    'We shipped the sample order to your lab yesterday; tracking is 1Z999.',
    'Our annual meeting is on June 12; the proxy has the details on the director nominees.',
    "I can't comment on market rumors, but anything material would be in an 8-K.",
    'The board declared the regular quarterly dividend of $0.025 back in April, payable May 29.',
    'We opened the Monterrey plant in 2014 and it now employs about 850 people.',
    'Our sales team is hiring two engineers in Dayton this year; feel free to pass the posting along.',
    'The supplier raised the price of copper wire 4% this month, which is in line with the LME.',
    "We're planning the offsite for next month; budget is about $12,000 for the whole team.",
    'The analyst day deck from March is still the best summary of our strategy.',
    'Your note on the sector was excellent; we agree the cycle is turning for automation names.',
    "We'll send the updated investor presentation once it's posted after the call.",
    'The 10-Q we filed yesterday has the segment detail you asked about on page 14.',
    'Good catch on the share count; the diluted figure was 16.9 million per the 10-Q.',
    'Our new CFO started in January, as announced last fall.',
    'We hosted the customer advisory board last week; lots of good feedback on the X7 drive.',
    'The IT team will patch the VPN this weekend, so expect a short outage Saturday night.',
    'Please keep the attached meeting agenda to yourselves until we confirm the room.',
    "We're aiming to finalize the dinner seating for the conference by Friday.",
    'Our quarter-end inventory count is next Tuesday, so the warehouse will be closed that day.',
    'Our gross margin was 31.2% last quarter, as we said on the call, mostly tariffs.',
    'We expect to report second-quarter results on July 30 before the market opens.',
    "We've been a supplier to that customer for twenty years and value the relationship.",
    'The CEO will present at the Northbridge conference on Sept 10; slides will be on our website.',
    'Happy to set up a plant tour for your team next month, just let Priya know the dates.',
    "We won't be able to meet next week because we're in our quiet period until the release.",
    "The company's long-term targets are the ones we laid out at investor day last year.",
    "We're hiring a new controller for the Brno site; the posting went up Monday.",
    'Thanks for the question on buybacks; our capital allocation priorities are in the 10-K.',
    'Our plant in Dayton will be closed on July 4 for the holiday, as every year.',
    'The CFO is travelling next week so please send the questions to me.',
    "We're moving the sales kickoff to the Marriott this year because of the construction.",
    'Revenue recognition for our service contracts is described in note 2 of the 10-K.',
    'I saw that your firm closed the acquisition of Harbor; congratulations to the whole team.',
    'The settlement with the EPA was announced in 2023 and is fully paid.',
    'Our new ERP goes live in October; finance will run both systems in parallel for a month.',
    'The board meets quarterly; the next scheduled meeting is in August.',
    'Could you resend the model? The file you attached last night was empty.',
    'We expect the new Monterrey line to be running by spring, as we said at investor day.',
    'Dana is out of the office until Monday, back for the board meeting on Tuesday.',
    "We'll be at the trade show in Hannover with the whole drives team.",
    'Our revolver was amended in March, as disclosed in the 8-K, extending it to 2030.',
    "We don't guide on quarterly margins, but the full-year framework hasn't changed since May.",
    "As the release said, Q3 revenue was $156.2M and GAAP EPS $0.47; the robotics segment grew 19%.",
    "Free cash flow was 22.4 for the quarter, as in the release.",
    "Aerolume's Q1 print this morning was rough, down 11% in their aero segment per their release.",
    "S&P published its action on us this morning - it's on their site and we've filed nothing further.",
    "did you see Drummond's quarter? revenue down 9% and their CFO said transitory six times on their call.",
    "Since you asked yesterday, here's the public release from Moody's; we don't comment beyond what they publish.",
    "As a non-party we intend to produce the invoices for 2021-2024 under the protective order in the case.",
    "To confirm what's in the public domain: S&P affirmed us at BBB- yesterday and moved the outlook to negative.",
    "I can't go beyond what we've filed about Brno, so I'd keep our incident remarks general.",
    "The 10-K we filed in February was on time, as every year; it's on our site.",
    "Was the 10-K late in 2019? I remember an NT filing back then.",
]


@pytest.mark.parametrize(("category", "sentence"), EVERYDAY_DISCLOSURES)
def test_everyday_disclosure_is_found(category: str, sentence: str) -> None:
    assert category in {f.category for f in text_findings(sentence) if f.kind == MATERIAL}


@pytest.mark.parametrize("sentence", EVERYDAY_HARMLESS)
def test_everyday_harmless_sentence_is_quiet(sentence: str) -> None:
    assert [f for f in text_findings(sentence) if f.kind == MATERIAL] == []


# A sentence that only names a topic with the company and a figure (2.75) is a finding on its own ...
_WEAK = "Our revenue for the year was about $610 million."


@pytest.mark.parametrize("crlf", [True, False])
def test_a_public_reference_elsewhere_in_the_text_makes_a_weak_sentence_a_restatement(
        crlf: bool, evidence_only: Lexicons) -> None:
    # The evidence stage alone: the message model's `confirm` would drop these short texts' findings anyway.
    lex = evidence_only

    def material(body: str) -> list[Finding]:
        return [f for f in scan_message(_message(body, crlf=crlf), lex, ScanLimits()) if f.kind == MATERIAL]

    assert material(f"Ana,\n\n{_WEAK}\n\nBob\n")
    # ... not when the text cites the public source two paragraphs away (elsewhere: public -1.0) ...
    assert material(f"Ana,\n\n{_WEAK}\n\nThanks for the lunch.\n\nThe release is on our website.\n\nBob\n") == []
    # ... unless the text also speaks of an announcement still to come (elsewhere_unless: pending).
    found = material(f"Ana,\n\n{_WEAK}\n\nThanks for the lunch.\n\n"
                     "It will be in the Q3 10-Q, the release is on our website.\n\nBob\n")
    assert found and not any("public elsewhere" in f.rule for f in found), found


def test_secrecy_outweighs_a_public_reference_elsewhere() -> None:
    body = ("Ana,\n\nKeep it to yourself: our revenue for the year will be about $560 million.\n\n"
            "Last year's figures are in the 10-K.\n\nBob\n")
    found = [f for f in scan(_message(body)) if f.kind == MATERIAL]
    assert found and "public elsewhere" in found[0].rule, found  # counted, and shown to the reviewer


@pytest.mark.parametrize(("evidence", "message"), [
    ('kind = "evidence"\nthreshold = 2\n[weights]\ntopic = 1\n[elsewhere]\npublished = -1\n',
     "elsewhere for 'published'"),  # published counts in the whole part already
    ('kind = "evidence"\nthreshold = 2\nelsewhere_unless = ["nonsense"]\n[weights]\ntopic = 1\n',
     "elsewhere_unless must be a list of signal groups"),
])
def test_a_bad_elsewhere_setting_stops_loading_with_one_line(tmp_path: Path, evidence: str, message: str) -> None:
    evidence = evidence.replace("[weights]", '[scope]\npublished = "part"\n[weights]') if "published" in evidence \
        else evidence
    with pytest.raises(ConfigError, match=message):
        _lexicons_with(tmp_path, evidence)


# Written for these tests in the manner of batches dev/h and dev/i (everyday words, no trade term).
@pytest.mark.parametrize(("category", "sentence"), [
    ("mergers-acquisitions", "A buyout shop has offered to take the whole company private at $61 a share."),
    ("cybersecurity", "Someone got into our customer portal and pulled contact info for thousands of accounts."),
    ("management-changes", "We're about to lose our CFO, she has been interviewing at a competitor; please don't say anything."),
    ("earnings", "Between ourselves, the quarter is running about 6% under our own plan."),
    ("prospects-strategy", "The Dayton site is going to close next spring; it won't be announced until the fall."),
])
def test_plain_words_for_an_event_with_secrecy_are_found(category: str, sentence: str) -> None:
    found = [f for f in text_findings(sentence) if f.kind == MATERIAL]
    assert category in {f.category for f in found}, found


def test_a_reconciliation_line_item_is_not_a_deal() -> None:
    table = ("GAAP net income $9.8M\nRestructuring and acquisition costs $0.6M\n"
             "Acquisition-related amortization $1.1M\nAdjusted EBITDA $21.4M\n")
    assert [f for f in text_findings(table) if f.category == "mergers-acquisitions"] == []


def test_a_signal_word_followed_by_its_clauses_comma_still_counts() -> None:
    # "our COO, has told the board he will leave": the comma after COO does not break the topic
    found = [f for f in text_findings("Ray Holt, our COO, has told the board he will leave at year end and it "
                                      "hasn't been announced.") if f.kind == MATERIAL]
    assert "management-changes" in {f.category for f in found}, found


def test_a_denial_is_not_secrecy() -> None:
    # "has not announced" (a denial, with the policy) is not "has not been announced" (a secret)
    assert [f for f in text_findings("Allient has not announced a stock split, and as a matter of policy we do "
                                     "not comment on market speculation.") if f.kind == MATERIAL] == []


@pytest.fixture(scope="module")
def evidence_only(tmp_path_factory: pytest.TempPathFactory) -> Lexicons:
    """The lexicons without the message model: the evidence stage's own verdict."""
    return load_lexicons(copy_lexicons(tmp_path_factory.mktemp("evidence-only"), without=("message_model.toml",)))


_ASKED = "Marcus, several peers preannounced this week. Any reason to expect one from Allient?"
_ANSWER = ("We're in our quiet period, so I won't comment on the quarter. Everything we have said is in "
           "the April 30 release.\n\nMarcus\n")


@pytest.mark.parametrize("crlf", [True, False])
def test_a_question_quoted_with_bare_markers_is_the_recipients_words(crlf: bool, evidence_only: Lexicons) -> None:
    # "> " lines without an "On ... wrote:" line: normalization drops the markers, so the quoted spans
    # are found on the original text and carried over; before, the question scored as the sender's.
    lex = evidence_only
    quoted = _message(f"Ming,\n\n{_ANSWER}\n> {_ASKED}\n", crlf=crlf)
    assert [f for f in scan_message(quoted, lex, ScanLimits()) if f.kind == MATERIAL] == []
    own = _message(f"Ming,\n\n{_ANSWER}\n{_ASKED}\n", crlf=crlf)
    assert [f for f in scan_message(own, lex, ScanLimits()) if f.kind == MATERIAL]


def test_an_html_reply_quotes_in_a_blockquote_as_the_plain_text_does(evidence_only: Lexicons) -> None:
    lex = evidence_only
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "marcus@allient.com", "ming@research.example", "Re: preannouncement?"
    answer = _ANSWER.replace("\n", " ")
    msg.set_content(f"<html><body><p>Ming,</p><p>{answer}</p><blockquote style='border-left:2px solid #ccc'>"
                    f"{_ASKED}</blockquote></body></html>", subtype="html")
    assert [f for f in scan_message(bytes(msg), lex, ScanLimits()) if f.kind == MATERIAL] == []
    msg.set_content(f"<html><body><p>Ming,</p><p>{answer}</p><div>{_ASKED}</div></body></html>", subtype="html")
    assert [f for f in scan_message(bytes(msg), lex, ScanLimits()) if f.kind == MATERIAL]
