"""Private keys: generating them, sealing them for storage, and building CSRs.

Account keys and certificate keys are the only secrets the issuer holds; they are stored sealed
with AES-256-GCM under one key-encryption key, with the row's identity as associated data, so a
copied database is useless without the key and a sealed key cannot be swapped between rows.
"""

from __future__ import annotations

import base64
import os
import secrets
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from acmezone_common.errors import InvalidArgumentError
from acmezone_issuer import errors


class KeyType(StrEnum):
    """The kinds of key an account or a certificate may have, as stored and as the CLI names
    them."""

    ECDSA_P256 = "ecdsa-p256"
    ECDSA_P384 = "ecdsa-p384"
    RSA_2048 = "rsa-2048"
    RSA_4096 = "rsa-4096"


DEFAULT_KEY_TYPE = KeyType.ECDSA_P256


def check_key_type(value: str, field: str) -> KeyType:
    """The key type a request names, or INVALID_ARGUMENT (INVALID_KEY_TYPE) naming `field`."""
    try:
        return KeyType(value)
    except ValueError:
        raise InvalidArgumentError(
            errors.INVALID_KEY_TYPE, f"unknown key type {value!r}", field=field
        ) from None


PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_SEAL_VERSION = b"\x01"
_NONCE_BYTES = 12


def generate_key(key_type: str) -> PrivateKey:
    """A fresh private key of one of the `KeyType`s."""
    if key_type == KeyType.ECDSA_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == KeyType.ECDSA_P384:
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == KeyType.RSA_2048:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == KeyType.RSA_4096:
        return rsa.generate_private_key(public_exponent=65537, key_size=4096)
    raise ValueError(f"unknown key type {key_type!r}")


def key_to_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (it is sealed separately before storage)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def key_from_pem(pem: bytes) -> PrivateKey:
    """Load a key written by `key_to_pem`."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("unsupported private key type")
    return key


def build_csr(key: PrivateKey, dns_names: list[str]) -> bytes:
    """A PEM CSR for `dns_names` (the first is the common name when it fits 64 characters)."""
    builder = x509.CertificateSigningRequestBuilder()
    if len(dns_names[0]) <= 64:
        builder = builder.subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])])
        )
    builder = builder.add_extension(
        x509.SubjectAlternativeName([x509.DNSName(name) for name in dns_names]), critical=False
    )
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


class KeySealer:
    """Seals and opens private keys with AES-256-GCM under one key-encryption key."""

    def __init__(self, kek: bytes) -> None:
        if len(kek) != 32:
            raise ValueError("the encryption key must be 32 bytes")
        self._aead = AESGCM(kek)

    @classmethod
    def from_setting(cls, value: str | None, data_dir: Path) -> KeySealer:
        """Use the configured key, or the one in `<data_dir>/encryption.key`, creating it once."""
        if value:
            return cls(_b64decode(value))
        path = data_dir / "encryption.key"
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode() + "\n")
        return cls(_b64decode(path.read_text().strip()))

    def seal(self, plaintext: bytes, context: str) -> bytes:
        """Encrypt `plaintext`, binding it to `context` (e.g. `account/abc`)."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return _SEAL_VERSION + nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, context: str) -> bytes:
        """Decrypt what `seal` produced for the same `context`; raises on any tampering."""
        if sealed[:1] != _SEAL_VERSION:
            raise ValueError("unknown sealed-key format")
        nonce = sealed[1 : 1 + _NONCE_BYTES]
        return self._aead.decrypt(nonce, sealed[1 + _NONCE_BYTES :], context.encode())

    def seal_key(self, key: PrivateKey, context: str) -> bytes:
        """Seal a private key."""
        return self.seal(key_to_pem(key), context)

    def open_key(self, sealed: bytes, context: str) -> PrivateKey:
        """Open a sealed private key."""
        return key_from_pem(self.open(sealed, context))


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
