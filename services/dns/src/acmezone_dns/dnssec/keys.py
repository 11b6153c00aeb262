"""DNSSEC signing keys: what a key is, how it is kept on disk, and the DS record it gives.

Every replica must sign with the same keys, so keys are files in one directory that all
replicas read (a Kubernetes Secret mounted as a directory, or a shared volume): one JSON file
per key, written by `acmezone-dns dnssec keygen`. A key file holds the zone, the algorithm, the
role, the state and the private key (PKCS#8 PEM), sealed with AES-GCM under
`ACMEZONE_DNS_DNSSEC_SEALING_KEY` when one is configured (`acmezone_common.sealing`; the key
file's zone and tag are the associated data, so a sealed key moved to another file does not
open). Files are created 0600.

Roles and states follow the usual rollover vocabulary (RFC 6781 section 4.1, RFC 7583):
- role `csk` signs everything (flags 257, the default: one key, one DS); `ksk` signs only the
  DNSKEY RRset (flags 257); `zsk` signs everything else (flags 256).
- state `active` keys are published in the DNSKEY RRset and sign; `published` keys are in the
  DNSKEY RRset only (a pre-published successor); `retired` keys too (a predecessor whose
  signatures may still sit in caches). A key is withdrawn by deleting its file.
"""

from __future__ import annotations

import enum
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import dns.dnssec
import dns.name
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.DS
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from acmezone_common.sealing import SecretSealer, is_sealed

ECDSAP256SHA256 = 13
ED25519 = 15
ALGORITHMS = {"ecdsap256sha256": ECDSAP256SHA256, "ed25519": ED25519}
"""The algorithms we sign with (RFC 8624: both MUST be supported by validators)."""

FLAGS_ZONE = 256
FLAGS_SEP = 257  # zone key with the Secure Entry Point bit: the key a DS points at

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class KeyFileError(ValueError):
    """A key file that cannot be used, with what is wrong in its message."""


class Role(enum.Enum):
    """What a key signs."""

    CSK = "csk"
    KSK = "ksk"
    ZSK = "zsk"

    @property
    def flags(self) -> int:
        """The DNSKEY flags field of a key of this role."""
        return FLAGS_ZONE if self is Role.ZSK else FLAGS_SEP


class State(enum.Enum):
    """Where a key is in its life."""

    PUBLISHED = "published"
    ACTIVE = "active"
    RETIRED = "retired"


@dataclass(frozen=True)
class ZoneKey:
    """One signing key of one zone, with its public DNSKEY record made once."""

    zone: dns.name.Name
    role: Role
    state: State
    private_key: PrivateKey
    dnskey: dns.rdtypes.ANY.DNSKEY.DNSKEY
    path: Path | None = None

    @property
    def algorithm(self) -> int:
        """The DNSSEC algorithm number."""
        return int(self.dnskey.algorithm)

    @property
    def tag(self) -> int:
        """The key tag (RFC 4034 appendix B)."""
        return int(dns.dnssec.key_id(self.dnskey))

    @property
    def signs_keys(self) -> bool:
        """Whether it signs the DNSKEY RRset now."""
        return self.state is State.ACTIVE and self.role is not Role.ZSK

    @property
    def signs_data(self) -> bool:
        """Whether it signs every other RRset now."""
        return self.state is State.ACTIVE and self.role is not Role.KSK

    def ds(self, digest: str = "SHA256") -> dns.rdtypes.ANY.DS.DS:
        """The DS record to hand to the parent zone (RFC 4509: SHA-256)."""
        return dns.dnssec.make_ds(self.zone, self.dnskey, digest)

    def sign(self, data: bytes) -> bytes:
        """The signature field of an RRSIG over `data` (RFC 6605: r || s, 32 bytes each, for
        ECDSA; RFC 8080: the raw 64-byte signature for Ed25519)."""
        key = self.private_key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(data)
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def generate(zone: dns.name.Name, algorithm: int, role: Role, state: State) -> ZoneKey:
    """A new key."""
    private: PrivateKey
    if algorithm == ECDSAP256SHA256:
        private = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == ED25519:
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise KeyFileError(f"algorithm {algorithm} is not supported (13 or 15)")
    return _key(zone, role, state, private, None)


def _key(
    zone: dns.name.Name, role: Role, state: State, private: PrivateKey, path: Path | None
) -> ZoneKey:
    algorithm = ED25519 if isinstance(private, ed25519.Ed25519PrivateKey) else ECDSAP256SHA256
    dnskey = dns.dnssec.make_dnskey(private.public_key(), algorithm, flags=role.flags)
    return ZoneKey(zone.canonicalize(), role, state, private, dnskey, path)


def _context(zone: dns.name.Name, tag: int) -> str:
    return f"dnssec-key {zone.to_text()} {tag}"


def key_file_name(key: ZoneKey) -> str:
    """`K<zone>-<algorithm>-<tag>.json`, after BIND's `K<zone>+<alg>+<tag>` but without the
    `+`, which a Kubernetes Secret's keys may not hold (the key directory is one mounted
    Secret)."""
    return f"K{key.zone.to_text(omit_final_dot=True)}-{key.algorithm:03d}-{key.tag:05d}.json"


def write_key(key: ZoneKey, directory: Path, sealer: SecretSealer | None) -> Path:
    """Write a key file into `directory` (0600, written aside and renamed into place)."""
    pem = key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    document = {
        "zone": key.zone.to_text(),
        "algorithm": key.algorithm,
        "tag": key.tag,
        "role": key.role.value,
        "state": key.state.value,
        "private_key": sealer.seal(pem, _context(key.zone, key.tag)) if sealer else pem,
    }
    path = directory / key_file_name(key)
    draft = directory / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
    os.replace(draft, path)
    return path


def read_key(path: Path, sealer: SecretSealer | None) -> ZoneKey:
    """One key file; `KeyFileError` saying what is wrong with it (never its content)."""
    try:
        document = json.loads(path.read_text())
        zone = dns.name.from_text(document["zone"])
        role = Role(document["role"])
        state = State(document["state"])
        stored = document["private_key"]
        tag = int(document["tag"])
        if not isinstance(stored, str):
            raise TypeError("private_key is not a string")
    except (OSError, ValueError, KeyError, TypeError, dns.exception.DNSException) as exc:
        raise KeyFileError(f"DNSSEC key file {path}: {type(exc).__name__}: {exc}") from None
    if is_sealed(stored):
        if sealer is None:
            raise KeyFileError(f"DNSSEC key file {path} is sealed and no sealing key is configured")
        try:
            stored = sealer.open(stored, _context(zone, tag))
        except ValueError:
            raise KeyFileError(
                f"DNSSEC key file {path} does not open with the sealing key"
            ) from None
    try:
        private = serialization.load_pem_private_key(stored.encode(), password=None)
    except (ValueError, TypeError):
        raise KeyFileError(f"DNSSEC key file {path}: the private key does not parse") from None
    if not isinstance(private, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) or (
        isinstance(private, ec.EllipticCurvePrivateKey)
        and not isinstance(private.curve, ec.SECP256R1)
    ):
        raise KeyFileError(f"DNSSEC key file {path}: only P-256 and Ed25519 keys are supported")
    key = _key(zone, role, state, private, path)
    if key.tag != tag:
        raise KeyFileError(f"DNSSEC key file {path}: its tag {tag} does not match its key")
    return key


def read_keys(directory: Path, sealer: SecretSealer | None) -> list[ZoneKey]:
    """Every key file (`K*.json`) in `directory`, in name order."""
    if not directory.is_dir():
        raise KeyFileError(f"DNSSEC key directory {directory} does not exist")
    return [read_key(path, sealer) for path in sorted(directory.glob("K*.json"))]


def keys_by_zone(keys: Iterable[ZoneKey]) -> dict[dns.name.Name, list[ZoneKey]]:
    """Keys grouped by zone; a zone must have at least one key signing each kind of RRset."""
    zones: dict[dns.name.Name, list[ZoneKey]] = {}
    for key in keys:
        zones.setdefault(key.zone, []).append(key)
    for zone, zone_keys in zones.items():
        if not any(k.signs_keys for k in zone_keys):
            raise KeyFileError(f"zone {zone}: no active csk or ksk signs its DNSKEY RRset")
        if not any(k.signs_data for k in zone_keys):
            raise KeyFileError(f"zone {zone}: no active csk or zsk signs its records")
    return zones
