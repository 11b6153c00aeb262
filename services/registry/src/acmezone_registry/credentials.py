"""Passwords and tokens: generation, keyed fast hashing, constant-time comparison.

Passwords are 40 characters of [A-Za-z0-9_-] (240 bits) chosen by the registry. Nobody can
guess one, so a deliberately slow hash protects nothing: it only hands every caller (and every
wrong-password flood) a CPU lever. New hashes are HMAC-SHA-256 under a server key
(`hmac-sha256$<digest>`), checked in microseconds and compared in constant time; without the
key, a leaked database does not even allow checking a guess.

Hashes made elsewhere still verify, slowly, in a thread (`needs_rehash` tells the caller to
store the fast form after the first success):

- `scrypt$N$r$p$salt$digest`: this registry's own earlier form;
- `$2a$`/`$2b$`/`$2y$` bcrypt: acme-dns's form, brought in by `import-acme-dns`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

import bcrypt

PASSWORD_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
PASSWORD_LENGTH = 40
FAST_SCHEME = "hmac-sha256"
_FAST_PREFIX = FAST_SCHEME + "$"
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
# bcrypt only reads the first 72 bytes; acme-dns's passwords are 40.
_BCRYPT_MAX_PASSWORD_BYTES = 72


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


def _utf8(text: str) -> bytes:
    # HTTP headers arrive with undecodable bytes as surrogates: keep them, never raise.
    return text.encode("utf-8", "surrogateescape")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def is_fast_hash(encoded: str) -> bool:
    """True for this registry's keyed fast form: verifying it needs no thread."""
    return encoded.startswith(_FAST_PREFIX)


def is_slow_hash(encoded: str) -> bool:
    """True for a form `verify_slow` understands (scrypt, bcrypt)."""
    return encoded.startswith("scrypt$") or encoded.startswith(_BCRYPT_PREFIXES)


def verify_slow(password: str, encoded: str) -> bool:
    """Check a password against an scrypt or bcrypt hash; False for anything malformed.

    Costs tens of milliseconds by design of those hashes: run it in a thread.
    """
    if encoded.startswith(_BCRYPT_PREFIXES):
        secret = _utf8(password)
        if len(secret) > _BCRYPT_MAX_PASSWORD_BYTES:
            return False
        try:
            return bcrypt.checkpw(secret, _utf8(encoded))
        except ValueError:
            return False
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        cost, block, parallel = int(n), int(r), int(p)
        actual = hashlib.scrypt(
            _utf8(password),
            salt=_unb64(salt),
            n=cost,
            r=block,
            p=parallel,
            maxmem=256 * cost * block + 1024 * 1024,
            dklen=len(_unb64(digest)),
        )
    except (ValueError, TypeError, MemoryError):
        return False
    return hmac.compare_digest(actual, _unb64(digest))


@dataclass(frozen=True)
class Verification:
    """The outcome of checking a password: `valid`, and whether the stored hash is a slow form
    to replace with the fast one now that the password is known to be right."""

    valid: bool
    needs_rehash: bool = False


class PasswordHasher:
    """Hashes and checks registration passwords under one server key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the credential key must be at least 32 bytes")
        self._key = key

    def _digest(self, password: str) -> bytes:
        return hmac.digest(self._key, _utf8(password), "sha256")

    def hash(self, password: str) -> str:
        """The keyed fast hash of `password`."""
        return _FAST_PREFIX + _b64(self._digest(password))

    def verify_fast(self, password: str, encoded: str) -> bool:
        """Check against a fast hash, in constant time; False for any other form."""
        if not is_fast_hash(encoded):
            return False
        try:
            expected = _unb64(encoded[len(_FAST_PREFIX) :])
        except ValueError:
            return False
        return hmac.compare_digest(self._digest(password), expected)

    def verify(self, password: str, encoded: str) -> Verification:
        """Check against any stored form (slow forms block: see `verify_slow`)."""
        if is_fast_hash(encoded):
            return Verification(self.verify_fast(password, encoded))
        valid = verify_slow(password, encoded)
        return Verification(valid, needs_rehash=valid)


def tokens_equal(presented: str, expected: str) -> bool:
    """Compare two secrets in time independent of where they differ (and of their lengths:
    both are hashed first, so neither a prefix nor the length leaks)."""
    return hmac.compare_digest(
        hashlib.sha256(_utf8(presented)).digest(), hashlib.sha256(_utf8(expected)).digest()
    )
