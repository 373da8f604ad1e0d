"""The company's own names, in one file a site edits (lexicons/company.toml).

Some lexicon entries need them: "the company" as the one acting is "we",
"our" or the company's name; a published announcement carries its ticker;
staff call the officers by their first names ("Dana is leaving"). Those
entries write a placeholder instead of the names, `{company}`, `{ticker}`,
`{people}` or `{sites}`, which becomes the file's list as alternatives
("(allient)"), so that installing regfd for another company means editing
one short file, not searching the lexicons. The message model's fitter
(tools/fit_message_model.py) does not weigh these words either: a weight
learnt for one company's name or ticker means nothing in another's mail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from regfd.errors import ConfigError
from regfd.scan.message_model import read_model_file, tokens

COMPANY = "company"  # the file's kind
# placeholder -> the key of company.toml that fills it
PLACEHOLDERS = {"company": "names", "ticker": "tickers", "people": "people", "sites": "sites"}
_KEYS = {"kind", "description", *PLACEHOLDERS.values()}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_VALUE = re.compile(r"[a-z0-9][a-z0-9 .&'-]*")  # a word or a few, a ticker, a web address


@dataclass(frozen=True)
class Company:
    """The lists of company.toml, by placeholder name."""

    lists: dict[str, tuple[str, ...]]

    def expand(self, pattern: str) -> str:
        """`pattern` with each placeholder replaced by its list as alternatives; ValueError names a bad one."""
        def one(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in PLACEHOLDERS:
                raise ValueError(f"unknown placeholder {{{name}}} (known: "
                                 f"{', '.join('{' + p + '}' for p in PLACEHOLDERS)})")
            values = self.lists.get(name, ())
            if not values:
                raise ValueError(f"{{{name}}} is used but {PLACEHOLDERS[name]} in company.toml is empty")
            return "(" + "|".join(values) + ")"

        return _PLACEHOLDER.sub(one, pattern)

    def words(self) -> frozenset[str]:
        """The words of the names, tickers and people, as the message model reads words (letters, digits
        read as 0, apostrophes); not of the sites, whose words are the company's name and "investors", "com"."""
        return frozenset(w for name, values in self.lists.items() if name != "sites"
                         for v in values for w in tokens(v))


def expand(pattern: str, company: Company | None) -> str:
    """`pattern` with its placeholders filled; ValueError where it has one and there is no company.toml."""
    if company is None:
        if _PLACEHOLDER.search(pattern):
            raise ValueError("a placeholder needs company.toml beside the lexicons")
        return pattern
    return company.expand(pattern)


def load_company(path: Path) -> Company:
    """Validate company.toml; one line per mistake."""
    data, where = read_model_file(path, _KEYS)
    lists: dict[str, tuple[str, ...]] = {}
    for name, key in PLACEHOLDERS.items():
        values = data.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ConfigError(f"{where}: {key} must be a list of strings")
        folded = tuple(" ".join(v.lower().split()) for v in values)
        for v, original in zip(folded, values, strict=True):
            if not _VALUE.fullmatch(v):
                raise ConfigError(f"{where}: {key}: {original!r} is not a name (letters, digits, spaces, "
                                  f"'.', '&', \"'\" and '-', starting with a letter or digit)")
        lists[name] = folded
    return Company(lists)
