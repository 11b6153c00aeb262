"""Secrets sealed at rest with AES-256-GCM: the registry's TSIG secrets, the dns service's
DNSSEC signing keys.

Such a secret must be usable (for HMAC, for signing), so it cannot be hashed like a password; it
is encrypted under the service's encryption key instead, with what it belongs to (the key's DNS
name) as associated data, so a sealed secret copied onto another row or file does not open. A
leaked database, backup or key directory without the encryption key reveals no secret. Stored
form: `sealed-v1:` + base64url(nonce || ciphertext).
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from acmezone_common import keyfiles

SEALED_PREFIX = "sealed-v1:"
_NONCE_BYTES = 12


def is_sealed(stored: str) -> bool:
    """True for the sealed form; rows written before sealing hold the plain secret."""
    return stored.startswith(SEALED_PREFIX)


class SecretSealer:
    """Seals and opens short secrets under one 32-byte key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the encryption key must be 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_setting(cls, configured: str | None, data_dir: Path) -> SecretSealer:
        """Under the configured key, or the one in `<data_dir>/encryption.key`, made once."""
        return cls(keyfiles.load_or_create_key(configured, data_dir / "encryption.key"))

    def seal(self, secret: str, context: str) -> str:
        """The sealed form of `secret`, bound to `context` (the TSIG key's name)."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, secret.encode(), context.encode())
        return SEALED_PREFIX + base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def open(self, stored: str, context: str) -> str:
        """The secret; a plain (not yet sealed) value as it is. ValueError when the sealed
        value was tampered with, moved to another context, or sealed under another key."""
        if not is_sealed(stored):
            return stored
        text = stored[len(SEALED_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            nonce, ciphertext = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
            return self._aead.decrypt(nonce, ciphertext, context.encode()).decode()
        except (InvalidTag, ValueError) as exc:
            raise ValueError(f"the sealed secret of {context!r} does not open") from exc
