"""The ways a certificate may prove control of its names, and where each one's record lives.

dns-01 answers at `_acme-challenge.<domain>`, one owner name shared by every client of that
domain. dns-account-01 (draft-ietf-acme-dns-account-label, CA/B Forum BR 3.2.2.4.21) moves the
record under a label derived from the ACME account URL, so several accounts or ACME clients can
validate the same domain at the same time without touching each other's records; its TXT value
is the same as dns-01's. Both are delegated by one permanent CNAME at their owner name into the
challenge zone. dns-persist-01 (draft-ietf-acme-dns-persist, BR 3.2.2.4.22) needs no value per
order at all: one permanent `_validation-persist.<domain>` TXT record names the CA and the
account, published once (by the operator, or by the issuer through a delegating CNAME).
http-01 is answered by the issuer's HTTP port and cannot prove wildcards. `auto` lets the issuer
take, per name, the best method the CA offers whose delegation is in place.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum


class ChallengeType(StrEnum):
    """A certificate's challenge setting as stored (the ACME type names, plus `auto`)."""

    DNS01 = "dns-01"
    DNS_ACCOUNT01 = "dns-account-01"
    DNS_PERSIST01 = "dns-persist-01"
    HTTP01 = "http-01"
    AUTO = "auto"


# The delegated DNS methods, best first: an account's own label cannot collide with another
# client's `_acme-challenge` values.
DNS_METHODS = (ChallengeType.DNS_ACCOUNT01, ChallengeType.DNS01)
# What `auto` tries per name, best first.
AUTO_PREFERENCE = (*DNS_METHODS, ChallengeType.HTTP01)

ACME_CHALLENGE_LABEL = "_acme-challenge"
PERSIST_LABEL = "_validation-persist"


def dns_account_label(account_url: str) -> str:
    """`_` + base32(SHA-256(account URL)[0:10]), lower case: 17 characters, no padding."""
    digest = hashlib.sha256(account_url.encode()).digest()[:10]
    return "_" + base64.b32encode(digest).decode().lower()


def challenge_owner(method: ChallengeType, domain: str, account_url: str) -> str:
    """The owner name (no trailing dot) of the TXT record, and so of its delegating CNAME."""
    if method == ChallengeType.DNS_ACCOUNT01:
        return f"{dns_account_label(account_url)}.{ACME_CHALLENGE_LABEL}.{domain}"
    if method == ChallengeType.DNS_PERSIST01:
        return f"{PERSIST_LABEL}.{domain}"
    return f"{ACME_CHALLENGE_LABEL}.{domain}"


@dataclass(frozen=True)
class PersistRecord:
    """One parsed dns-persist-01 value (an RFC 8659 issue-value)."""

    issuer_domain: str
    account_uri: str
    wildcard: bool
    persist_until: datetime | None

    def authorizes(
        self, issuer_domains: list[str], account_url: str, wildcard: bool, now: datetime
    ) -> bool:
        """Whether the CA (any of its issuer domain names) may validate this account with it."""
        return (
            self.issuer_domain in issuer_domains
            and self.account_uri == account_url
            and (self.wildcard or not wildcard)
            and (self.persist_until is None or now <= self.persist_until)
        )


def persist_value(issuer_domain: str, account_url: str, wildcard: bool) -> str:
    """The record the issuer publishes: no persistUntil, so it holds until withdrawn."""
    value = f"{issuer_domain}; accounturi={account_url}"
    return value + "; policy=wildcard" if wildcard else value


def parse_persist_value(text: str) -> PersistRecord | None:
    """The value's fields, or None when it is not a well-formed dns-persist-01 value (tags are
    case-insensitive; a policy other than `wildcard` counts as none, as the draft says)."""
    issuer, *params = [part.strip(" \t") for part in text.split(";")]
    if not issuer:
        return None
    tags: dict[str, str] = {}
    for param in params:
        tag, sep, value = param.partition("=")
        tag = tag.strip(" \t").lower()
        if not sep or not tag or tag in tags:
            return None
        tags[tag] = value.strip(" \t")
    if not tags.get("accounturi"):
        return None
    persist_until = None
    if "persistuntil" in tags:
        try:
            persist_until = datetime.fromtimestamp(int(tags["persistuntil"]), UTC)
        except (ValueError, OverflowError):
            return None
    return PersistRecord(
        issuer_domain=issuer,
        account_uri=tags["accounturi"],
        wildcard=tags.get("policy", "").lower() == "wildcard",
        persist_until=persist_until,
    )
