"""Every material category of the company policy fires on the way people
really leak, and stays quiet on ordinary business mail that a naive keyword
match would flag."""

from __future__ import annotations

import pytest

from regfd.core.finding import EMBARGO, MATERIAL, NON_GAAP_UNRECONCILED
from tests.scanner_fixtures import lexicons, text_findings

POSITIVE: dict[str, list[str]] = {
    "earnings": [
        "Heads up: we're going to miss the quarter by a wide margin.",
        "Revenue will come in light versus what you have modeled.",
        "Between us, the numbers look soft for Q3.",
        "Q3 revenue was $412.5 million, ahead of consensus.",
        "I think we are going to beat consensus handily this time.",
    ],
    "guidance": [
        "We will raise full-year guidance on the call next week.",
        "Management plans to lower guidance after the Asia slowdown.",
        "Honestly the street is too high; we won't hit the numbers this year.",
    ],
    "prospects-strategy": [
        "We are exploring strategic alternatives, including a sale of the company.",
        "The board approved shutting down the European retail business next month.",
        "Expect layoffs of about 15% of the workforce in March.",
    ],
    "write-downs-reserves": [
        "We will take a $200 million goodwill impairment in Q4.",
        "Finance is booking a big write-down on the Brazil inventory.",
        "We need to increase the bad debt reserve because of two large customers.",
    ],
    "litigation-investigations": [
        "We just received an SEC subpoena about our revenue recognition.",
        "The DOJ investigation into our pricing is widening.",
        "A class action filed against us yesterday will be unsealed soon.",
    ],
    "liquidity": [
        "We are running out of cash faster than anyone expected.",
        "We will probably breach our debt covenants at quarter end.",
        "The auditors raised going concern doubts in the draft opinion.",
    ],
    "products-customers-contracts": [
        "We're about to lose the Walmart contract.",
        "Our largest customer is not renewing at year end.",
        "The product launch is delayed to next year because of the FDA warning letter.",
        "Between us, a recall is coming on the X200 heaters.",
        "We are preparing a voluntary recall of the 2025 batches.",
        "We're going to recall every unit shipped since March.",
    ],
    "management-changes": [
        "Keep this quiet: the CFO is leaving at the end of the month.",
        "The board is replacing the CEO before the annual meeting.",
        "We have hired a new CFO who starts in June.",
    ],
    "dividends": [
        "The board will cut the dividend in half next quarter.",
        "We're going to raise our quarterly dividend by 10%.",
        "A special dividend is on the agenda for the December board meeting.",
    ],
    "extraordinary-borrowings": [
        "We drew down the entire revolver last night.",
        "Treasury is negotiating a bridge loan to cover the shortfall.",
        "We plan to borrow $2 billion in new debt to fund the buildout.",
    ],
    "accounting-auditor": [
        "We will have to restate the last three years of financial statements.",
        "Our auditor is resigning over the revenue recognition dispute.",
        "The audit found a material weakness in our controls.",
    ],
    "cybersecurity": [
        "Don't tell anyone, but we got hacked over the weekend.",
        "The ransomware encrypted every server in the Denver plant.",
        "Customer data was stolen from the billing system.",
    ],
    "debt-ratings": [
        "The rating agencies are about to cut us to junk.",
        "Moody's will downgrade us next week, I'm told.",
        "S&P put us on negative watch this morning.",
    ],
    "bankruptcy": [
        "Counsel is preparing a Chapter 11 filing for the subsidiary.",
        "We may have to file for bankruptcy protection in Q2.",
        "The lenders are discussing insolvency scenarios with us.",
    ],
    "insider-trading": [
        "The CFO is quietly selling his shares before the announcement.",
        "Insiders are dumping stock ahead of the results.",
        "You should sell your shares before the news goes public.",
    ],
    "mergers-acquisitions": [
        "The merger with Acme is basically done.",
        "The deal should close before we report.",
        "We signed a letter of intent to acquire the startup in Austin.",
    ],
    "securities-events": [
        "The board approved a 3-for-1 stock split.",
        "We'll announce a $5 billion share repurchase program next week.",
        "We will likely default on the notes due in March.",
    ],
}

NEGATIVE: dict[str, list[str]] = {
    "earnings": [
        "The Q3 earnings call is scheduled for October 24 at 8:30 ET; webcast registration is on the IR site.",
        "Please see our 10-K filed in February for last year's annual results.",
    ],
    "guidance": [
        "Can you send me the HR guidance on travel expenses before Friday?",
        "Our full-year guidance, as published in the May 2 press release, is unchanged on the IR site.",
    ],
    "prospects-strategy": [
        "Please send the deck by close of business Friday.",
        "The agenda for the strategy offsite is attached; lunch is at noon.",
    ],
    "write-downs-reserves": [
        "Could someone write down the action items from today's meeting?",
        "Please reserve the large conference room for Tuesday's training.",
    ],
    "litigation-investigations": [
        "Our 10-K filed in February describes the pending litigation in Note 12.",
        "Please investigate why the nightly build failed again.",
    ],
    "liquidity": [
        "Please submit petty cash receipts to finance by Friday.",
        "The cash register in the cafeteria is out of order.",
    ],
    "products-customers-contracts": [
        "I don't recall whether the vendor meeting is at two or three.",
        "Please sign the renewal for the coffee machine service agreement.",
        "As far as I recall, the offsite is coming up in May.",
        "Do you recall who is coming to the holiday party?",
    ],
    "management-changes": [
        "The CFO is leaving for the airport at 3 pm, so let's meet at 2.",
        "Our CEO will present at the investor day announced in March.",
    ],
    "dividends": [
        "The dividend reinvestment plan enrollment form is on the HR portal.",
        "Dividends paid last year are shown in our 10-K filed in February.",
    ],
    "extraordinary-borrowings": [
        "Please draw the credit line chart on slide 4 in blue.",
        "Can I borrow your laptop charger for the meeting?",
    ],
    "accounting-auditor": [
        "Could you restate the question from the Q&A for the minutes?",
        "The auditors from the fire marshal's office arrive Tuesday morning.",
    ],
    "cybersecurity": [
        "Reminder: the annual security awareness training covers ransomware and phishing.",
        "The data breach tabletop exercise is scheduled for Thursday.",
    ],
    "debt-ratings": [
        "Please rate the catering on a scale of one to five.",
        "Moody's published its annual sector outlook last week; the link is below.",
    ],
    "bankruptcy": [
        "Chapter 3 of the onboarding handbook covers travel expenses.",
        "Honestly that pun was morally bankrupt.",
    ],
    "insider-trading": [
        "The trading window opens two days after the release under our insider trading policy.",
        "Employees can enroll in the ESPP until Friday.",
    ],
    "mergers-acquisitions": [
        "Can you merge these two spreadsheets before the meeting?",
        "The customer acquisition cost dashboard is updated every Monday.",
    ],
    "securities-events": [
        "Let's split the lunch bill four ways.",
        "Please call our notes team about the meeting minutes.",
    ],
}


def test_every_product_category_is_in_the_lexicon() -> None:
    assert set(POSITIVE) == set(NEGATIVE)
    assert lexicons().categories("material") == set(POSITIVE)


@pytest.mark.parametrize(
    ("category", "sentence"), [(c, s) for c, sentences in POSITIVE.items() for s in sentences]
)
def test_positive_sentence_fires_its_category(category: str, sentence: str) -> None:
    findings = text_findings(sentence)
    assert (MATERIAL, category) in {(f.kind, f.category) for f in findings}, findings


@pytest.mark.parametrize(
    ("category", "sentence"), [(c, s) for c, sentences in NEGATIVE.items() for s in sentences]
)
def test_hard_negative_is_quiet(category: str, sentence: str) -> None:
    findings = [f for f in text_findings(sentence) if f.kind in (MATERIAL, EMBARGO)]
    assert findings == [], findings


@pytest.mark.parametrize(
    "sentence",
    [
        "Attached is the draft press release for Thursday.",
        "EMBARGOED UNTIL 4:05 PM ET - Q3 results",
        "Not for distribution: pre-release earnings summary",
        "Please do not forward: confidential draft 8-K for the board.",
        "EARNINGS CALL SCRIPT - DRAFT v5 - DO NOT DISTRIBUTE",
        "Draft for comment, do not distribute: Item 4.02 Non-Reliance",
        "Attached is the draft preliminary prospectus supplement. Please keep it close.",
        "I saw the draft Q2 earnings release on her desk.",
    ],
)
def test_embargo_phrases(sentence: str) -> None:
    assert EMBARGO in {f.kind for f in text_findings(sentence)}


@pytest.mark.parametrize(
    "sentence",
    [
        "If you are not the intended recipient, do not forward this message and delete it.",
        "The dividend goes up a penny in May. It is not announced. Please do not share.",
        "Subject: Q1 flash - DO NOT FORWARD",
        "Draft release notes for firmware 2.3 are in the shared folder.",
        "The final press release is posted on our investor relations website.",
        "Our export team reviews every trade embargo country list quarterly.",
    ],
)
def test_embargo_negatives(sentence: str) -> None:
    assert EMBARGO not in {f.kind for f in text_findings(sentence)}


def test_safe_harbor_paragraph_is_excluded() -> None:
    text = (
        "Thanks for the call today.\n\n"
        "This email contains forward-looking statements within the meaning of the Private Securities "
        "Litigation Reform Act. Actual results could differ materially due to litigation, a data breach, "
        "acquisitions, restatements or changes in our credit rating.\n"
    )
    assert [f for f in text_findings(text) if f.kind == MATERIAL] == []


def test_excerpt_and_text_show_the_original_characters() -> None:
    [finding] = text_findings("Quick note. We're  GOING to\nmiss the quarter, sorry.")
    assert finding.text == "GOING to\nmiss the quarter"
    assert "We're GOING to miss the quarter" in finding.excerpt
    assert finding.location == "body"


def test_word_boundaries_are_respected() -> None:
    for text in ["the submerger of the two rivers", "ebitdaish numbers", "an unmerger", "bankruptcies-free zone"]:
        got = {(f.kind, f.category) for f in text_findings(text)}
        assert ("non-gaap-unreconciled", "ebitda") not in got
        assert (MATERIAL, "mergers-acquisitions") not in got


class TestNonGaap:
    def test_unreconciled_measure_is_a_finding(self) -> None:
        findings = text_findings("Adjusted EBITDA for the quarter was $45 million, up 12%.")
        assert {f.kind for f in findings} >= {NON_GAAP_UNRECONCILED}
        assert any(f.category == "ebitda" and f.kind == NON_GAAP_UNRECONCILED for f in findings)

    def test_reconciled_measure_is_not(self) -> None:
        text = (
            "Adjusted EBITDA was $45 million. Net income was $12 million; a reconciliation to the most "
            "directly comparable GAAP measure is attached."
        )
        assert NON_GAAP_UNRECONCILED not in {f.kind for f in text_findings(text)}

    @pytest.mark.parametrize("text", [
        "Q1 free cash flow was $9.8M: operating cash flow of $14.1M less capex of $4.3M.",
        "Q2 adj EBITDA 67.1, GAAP op income 45.0 - both in the release.",
        "Adjusted operating margin was 14.8%; reported operating margin 11.3%.",
        "We guided adjusted EPS of 1.58-1.68 (GAAP 1.30-1.40).",
        "Q2 was net income 11.6 -> adjusted EBITDA 25.1.",
    ])
    def test_a_gaap_comparable_in_the_same_message_reconciles(self, text: str) -> None:
        assert NON_GAAP_UNRECONCILED not in {f.kind for f in text_findings(text)}

    def test_a_valuation_multiple_is_not_a_measure_but_a_trailing_figure_is(self) -> None:
        assert NON_GAAP_UNRECONCILED not in {f.kind for f in text_findings(
            "The price was about 11 times EBITDA, in line with the sector's EV/EBITDA multiples.")}
        assert NON_GAAP_UNRECONCILED in {f.kind for f in text_findings(
            "Net leverage was 3.6x on trailing adjusted EBITDA of $171 million.")}

    def test_a_leverage_target_or_a_growth_strategy_is_not_a_measure_but_a_growth_figure_is(self) -> None:
        for text in ["The target is 2.0x to 2.5x net debt to EBITDA, same as at the investor day.",
                     "We're focused on organic growth and small bolt-ons."]:
            assert NON_GAAP_UNRECONCILED not in {f.kind for f in text_findings(text)}, text
        assert NON_GAAP_UNRECONCILED in {f.kind for f in text_findings("Organic growth was 4.1% in Q1.")}

    def test_a_bridge_promised_for_later_does_not_reconcile(self) -> None:
        assert NON_GAAP_UNRECONCILED in {f.kind for f in text_findings(
            "Adjusted EBITDA around $24M. I'll have the GAAP bridge tomorrow.")}

    @pytest.mark.parametrize("measure", ["free cash flow", "pro forma revenue", "adjusted EPS", "organic growth", "core earnings", "non-GAAP operating margin"])
    def test_each_measure(self, measure: str) -> None:
        assert NON_GAAP_UNRECONCILED in {f.kind for f in text_findings(f"Our {measure} improved in the period.")}


_FOOTER = ("CONFIDENTIALITY NOTICE: This e-mail and any attachments are intended only for the addressee and may "
           "contain information that is privileged or confidential. If you received it in error, please notify the "
           "sender and delete it. Allient Inc., 400 Commerce Park Drive, Dayton, OH 45414.")


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_legal_footer_is_not_a_disclosure_but_does_not_hide_one(eol: str) -> None:
    # The footer's "delete it" is also how leakers sign off ("delete it after reading"): only the footer is excused.
    quiet = eol.join(["Sure, Thursday at 3 works. See you then.", "", "Marcus", "", _FOOTER, ""])
    assert [f for f in text_findings(quiet) if f.kind == MATERIAL] == []
    leak = eol.join(["Between us, we're going to miss the quarter. Delete it after reading.", "", _FOOTER, ""])
    assert MATERIAL in {f.kind for f in text_findings(leak)}
