"""The ways a certificate may prove control of its names, and where each one's record lives.

dns-01 answers at `_acme-challenge.<domain>`, one owner name shared by every client of that
domain. dns-account-01 (draft-ietf-acme-dns-account-label, CA/B Forum BR 3.2.2.4.21) moves the
record under a label derived from the ACME account URL, so several accounts or ACME clients can
validate the same domain at the same time without touching each other's records; its TXT value
is the same as dns-01's. Both are delegated by one permanent CNAME at their owner name into the
challenge zone. http-01 is answered by the issuer's HTTP port and cannot prove wildcards. `auto`
lets the issuer take, per name, the best method the CA offers whose delegation is in place.
"""

from __future__ import annotations

import base64
import hashlib
from enum import StrEnum


class ChallengeType(StrEnum):
    """A certificate's challenge setting as stored (the ACME type names, plus `auto`)."""

    DNS01 = "dns-01"
    DNS_ACCOUNT01 = "dns-account-01"
    HTTP01 = "http-01"
    AUTO = "auto"


# The delegated DNS methods, best first: an account's own label cannot collide with another
# client's `_acme-challenge` values.
DNS_METHODS = (ChallengeType.DNS_ACCOUNT01, ChallengeType.DNS01)
# What `auto` tries per name, best first.
AUTO_PREFERENCE = (*DNS_METHODS, ChallengeType.HTTP01)

ACME_CHALLENGE_LABEL = "_acme-challenge"


def dns_account_label(account_url: str) -> str:
    """`_` + base32(SHA-256(account URL)[0:10]), lower case: 17 characters, no padding."""
    digest = hashlib.sha256(account_url.encode()).digest()[:10]
    return "_" + base64.b32encode(digest).decode().lower()


def challenge_owner(method: ChallengeType, domain: str, account_url: str) -> str:
    """The owner name (no trailing dot) of the TXT record, and so of its delegating CNAME."""
    if method == ChallengeType.DNS_ACCOUNT01:
        return f"{dns_account_label(account_url)}.{ACME_CHALLENGE_LABEL}.{domain}"
    return f"{ACME_CHALLENGE_LABEL}.{domain}"
