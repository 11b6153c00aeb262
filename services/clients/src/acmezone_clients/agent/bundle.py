"""Checking an exported bundle before anything on disk is touched.

The leaf must parse, the key must be the leaf's (compared by public key, for EC and RSA alike),
and the serial must be the one the issuer announced: a bundle that fails any of these is refused
with `BundleError` and the installed files stay as they are.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from acmezone_clients.agent.errors import BundleError


@dataclass(frozen=True)
class CheckedBundle:
    """A bundle known to be consistent, split into the pieces the files are made of."""

    serial: str
    not_after: datetime.datetime
    dns_names: tuple[str, ...]
    leaf_pem: str
    chain_pem: str
    key_pem: str

    @property
    def fullchain_pem(self) -> str:
        """The leaf followed by the intermediates, as web servers want it."""
        return self.leaf_pem + self.chain_pem


@dataclass(frozen=True)
class LeafFacts:
    """What the hook and the report need from an installed leaf."""

    serial: str
    not_after: datetime.datetime
    dns_names: tuple[str, ...]


def _names(leaf: x509.Certificate) -> tuple[str, ...]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(san.get_values_for_type(x509.DNSName))


def leaf_facts(pem: str) -> LeafFacts:
    """Serial, end of validity and DNS names of the first certificate in `pem`."""
    try:
        leaf = x509.load_pem_x509_certificates(pem.encode())[0]
    except ValueError as exc:
        raise BundleError(f"the installed certificate is not valid PEM: {exc}") from None
    return LeafFacts(format(leaf.serial_number, "x"), leaf.not_valid_after_utc, _names(leaf))


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def check_bundle(chain_pem: str, key_pem: str, expected_serial: str | None = None) -> CheckedBundle:
    """Parse and check a chain and key; raise `BundleError` saying what is wrong."""
    try:
        certificates = x509.load_pem_x509_certificates(chain_pem.encode())
    except ValueError as exc:
        raise BundleError(f"the certificate chain is not valid PEM: {exc}") from None
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"the private key is not an unencrypted PEM key: {exc}") from None
    leaf = certificates[0]
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    leaf_spki = leaf.public_key().public_bytes(serialization.Encoding.DER, public)
    key_spki = key.public_key().public_bytes(serialization.Encoding.DER, public)
    serial = format(leaf.serial_number, "x")
    if leaf_spki != key_spki:
        raise BundleError(f"the private key does not match certificate {serial}")
    if expected_serial is not None and serial != expected_serial:
        raise BundleError(f"the bundle holds certificate {serial}, not {expected_serial}")
    names = _names(leaf)
    return CheckedBundle(
        serial=serial,
        not_after=leaf.not_valid_after_utc,
        dns_names=names,
        leaf_pem=_pem(leaf),
        chain_pem="".join(_pem(c) for c in certificates[1:]),
        key_pem=key_pem if key_pem.endswith("\n") else key_pem + "\n",
    )
