"""Address and domain normalization.

One canonical form for every address and domain so that a registry entry,
an envelope recipient and a delegate's scope compare equal exactly when a
person would say they are the same: IDNA (Unicode and punycode are one
domain), lowercase, no trailing dot, `+tag` ignored.
"""

from __future__ import annotations

import functools

import idna
from email_validator import EmailNotValidError, validate_email


@functools.lru_cache(maxsize=65536)
def normalize_domain(domain: str) -> str:
    """Return the ASCII (punycode) lowercase form, or raise ValueError."""
    d = domain.strip().rstrip(".").lower()
    if d.startswith("@"):
        d = d[1:]
    if d.startswith("*."):
        d = d[2:]
    if not d:
        raise ValueError("empty domain")
    if "@" in d or any(c.isspace() for c in d):
        raise ValueError(f"not a domain: {domain!r}")
    try:
        ascii_domain = idna.encode(d, uts46=True, transitional=False).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(f"invalid domain {domain!r}: {exc}") from None
    labels = ascii_domain.split(".")
    if len(labels) < 2:
        raise ValueError(f"{domain!r} needs at least two labels (a registrable domain)")
    for label in labels:
        if not label or len(label) > 63:
            raise ValueError(f"invalid domain {domain!r}")
        if not all(c.isalnum() or c == "-" for c in label) or label[0] == "-" or label[-1] == "-":
            raise ValueError(f"invalid domain {domain!r}")
    return ascii_domain


def _strip_tag(local: str) -> str:
    base, plus, _tag = local.partition("+")
    return base if plus and base else local


@functools.lru_cache(maxsize=65536)
def normalize_address(address: str) -> str:
    """Return `local@domain` lowercase, tag removed, domain in ASCII; or raise ValueError."""
    a = address.strip()
    if a.startswith("<") and a.endswith(">"):
        a = a[1:-1].strip()
    a = a.rstrip(".")  # a trailing dot on the domain is the same domain
    if "@" not in a:
        raise ValueError(f"{address!r} is not an email address")
    try:
        v = validate_email(a, check_deliverability=False, allow_smtputf8=True, allow_quoted_local=True)
    except EmailNotValidError as exc:
        raise ValueError(f"{address!r} is not a valid email address: {exc}") from None
    domain = normalize_domain(v.ascii_domain or v.domain)
    return f"{_strip_tag(v.local_part.lower())}@{domain}"


def envelope_address(address: str) -> str:
    """Best-effort canonical form for addresses seen on the wire.

    The MTA has already accepted the address; the milter must never crash
    on one email-validator dislikes, so fall back to a plain lowercase split.
    """
    try:
        return normalize_address(address)
    except ValueError:
        a = address.strip().strip("<>").strip().lower()
        local, at, domain = a.rpartition("@")
        if not at:
            return a
        try:
            domain = normalize_domain(domain)
        except ValueError:
            domain = domain.rstrip(".")
        return f"{_strip_tag(local)}@{domain}"


def normalize_pattern(pattern: str) -> str:
    """A directory pattern is an address or a domain (which covers its subdomains)."""
    p = pattern.strip()
    if "@" in p.lstrip("@"):
        return normalize_address(p)
    return normalize_domain(p)


def domain_of(address: str) -> str:
    """Everything after the last `@`; expects a normalized address (an address without `@` is its own domain)."""
    return address.rpartition("@")[2]


def candidates(address: str) -> tuple[str, ...]:
    """Directory keys that could match an address, most specific first.

    `eq@eq.research.bank.com` -> the address, `eq.research.bank.com`,
    `research.bank.com`, `bank.com`. The bare TLD is never a candidate.
    """
    domain = domain_of(address)
    labels = domain.split(".")
    keys = [address] if "@" in address else []
    keys.extend(".".join(labels[i:]) for i in range(len(labels) - 1))
    return tuple(keys)


def specificity(pattern: str) -> int:
    """Larger is more specific: an address beats any domain, a longer domain its parent."""
    return 1000 if "@" in pattern else pattern.count(".") + 1


def pattern_covers(pattern: str, address: str) -> bool:
    """Does a normalized pattern (address or domain) cover a normalized address?"""
    return pattern in candidates(address)
