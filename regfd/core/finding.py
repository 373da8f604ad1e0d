"""What the scanner reports: plain data shared by the scanner, policy and records."""

from __future__ import annotations

from dataclasses import asdict, dataclass

MATERIAL = "material"
EMBARGO = "embargo"
NON_GAAP_UNRECONCILED = "non-gaap-unreconciled"
UNSCANNABLE = "unscannable"

FINDING_KINDS: tuple[str, ...] = (MATERIAL, EMBARGO, NON_GAAP_UNRECONCILED, UNSCANNABLE)

# The company policy's examples of material information, one category each.
MATERIAL_CATEGORIES: tuple[str, ...] = (
    "earnings", "guidance", "prospects-strategy", "write-downs-reserves", "litigation-investigations",
    "liquidity", "products-customers-contracts", "management-changes", "dividends",
    "extraordinary-borrowings", "accounting-auditor", "cybersecurity", "debt-ratings", "bankruptcy",
    "insider-trading", "mergers-acquisitions", "securities-events",
)


@dataclass(frozen=True)
class Finding:
    """One reason the content matters, with enough context for a reviewer.

    `text` and `excerpt` are the *original* characters of the message (not the
    normalized form) so the Corporate Secretary sees what the sender wrote.
    `location` is "subject", "body", "quoted" or "attachment:<file name>"
    (nested: "attachment:outer.eml/attachment:inner.pdf").
    """

    kind: str
    category: str
    text: str
    excerpt: str
    location: str
    severity: str = "high"
    rule: str = ""  # what found it: a lexicon entry, or the evidence score and its signals

    def to_json(self) -> dict[str, str]:
        """The finding as users see it in JSON (check, records, notifications)."""
        return asdict(self)
