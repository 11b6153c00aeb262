"""Test data: ACME-shaped TXT values (43 characters of base64url, like real DNS-01 digests)."""

from __future__ import annotations

import base64
import hashlib


def acme_digest(seed: object) -> str:
    """A deterministic, valid DNS-01 TXT value for `seed`."""
    digest = hashlib.sha256(str(seed).encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")
