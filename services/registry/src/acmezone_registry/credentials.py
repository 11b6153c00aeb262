"""Passwords and tokens: generation, slow salted hashing, constant-time comparison.

Passwords are 40 characters of [A-Za-z0-9_-] (240 bits), stored only as scrypt hashes whose
parameters travel with the hash (`scrypt$N$r$p$salt$digest`), so the cost can be raised later
without invalidating existing passwords. Hashing is deliberately slow; callers run it through
`asyncio.to_thread`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid

PASSWORD_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
PASSWORD_LENGTH = 40
_SCRYPT_R = 8
_SCRYPT_P = 1
_SALT_BYTES = 16
_DIGEST_BYTES = 32


def new_password() -> str:
    """A fresh random password."""
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


def new_username() -> str:
    """A fresh random username (a UUID, as acme-dns issues)."""
    return str(uuid.uuid4())


def plausible_username(username: str) -> bool:
    """True when `username` has the shape of a UUID; anything else cannot exist and is not
    worth a database lookup (and may hold bytes a database refuses, such as NUL)."""
    try:
        return str(uuid.UUID(username)) == username.lower() and len(username) == 36
    except ValueError:
        return False


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=256 * n * r + 1024 * 1024,
        dklen=_DIGEST_BYTES,
    )


def hash_password(password: str, *, n: int) -> str:
    """A salted scrypt hash of `password` with cost `n` (a power of two)."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(password, salt, n, _SCRYPT_R, _SCRYPT_P)
    return f"scrypt${n}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """True when `password` matches the stored hash; False for a malformed hash too."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        actual = _scrypt(password, _unb64(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, _unb64(digest))


def tokens_equal(presented: str, expected: str) -> bool:
    """Compare two secrets in time independent of where they differ."""
    return hmac.compare_digest(presented.encode(), expected.encode())
