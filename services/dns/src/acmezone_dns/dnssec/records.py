"""DNSSEC record wire formats made by hand: RRSIG (RFC 4034 section 3), NSEC with compact denial
of existence (RFC 9824) and type bitmaps (RFC 4034 section 4.1.2).

dnspython can make all of these, but its `dns.dnssec.sign` builds several objects per RRset
(about 60 µs before the signature itself); here the signed data is joined from bytes the store
already holds (a feed name's TXT answer is bytes), which keeps a revision's cost the signature's.
The unit tests check every signature made here with dnspython's `dns.dnssec.validate`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from acmezone_dns.dnssec.keys import ZoneKey
from acmezone_dns.wire import label_offsets

TYPE_RRSIG = 46
TYPE_NSEC = 47
TYPE_NXNAME = 128
"""RFC 9824's NXNAME: in an NSEC type bitmap, says the owner name does not exist."""

_CLASS_IN = 1
_RR_FIXED = struct.Struct("!HHIH")  # type, class, TTL, RDLENGTH
_RRSIG_FIXED = struct.Struct(
    "!HBBIIIH"
)  # covered, algorithm, labels, TTL, expiration, inception, tag


def label_count(owner: bytes) -> int:
    """The RRSIG labels field: the owner's labels, the root not counted (no wildcards here)."""
    return len(label_offsets(owner)) - 1


def rrsig_rdatas(
    keys: Sequence[ZoneKey],
    signer: bytes,
    owner: bytes,
    rdtype: int,
    original_ttl: int,
    rdatas: Iterable[bytes],
    inception: int,
    expiration: int,
) -> list[bytes]:
    """One RRSIG RDATA per key over the RRset `owner`/`rdtype` whose canonical RDATAs are
    `rdatas` (RFC 4034 section 3.1.8.1: the RRSIG RDATA without its signature, then each RR
    in canonical form, sorted by RDATA as unsigned octet strings, duplicates dropped).
    `owner` and `signer` are lower-case uncompressed wire names."""
    rrs = b"".join(
        owner + _RR_FIXED.pack(rdtype, _CLASS_IN, original_ttl, len(rdata)) + rdata
        for rdata in sorted(set(rdatas))
    )
    labels = label_count(owner)
    out = []
    for key in keys:
        head = (
            _RRSIG_FIXED.pack(
                rdtype, key.algorithm, labels, original_ttl, expiration, inception, key.tag
            )
            + signer
        )
        out.append(head + key.sign(head + rrs))
    return out


def rr(owner: bytes, rdtype: int, ttl: int, rdata: bytes) -> bytes:
    """One resource record on the wire; `owner` already encoded (a pointer or in full)."""
    return owner + _RR_FIXED.pack(rdtype, _CLASS_IN, ttl, len(rdata)) + rdata


def type_bitmap(types: Iterable[int]) -> bytes:
    """The NSEC type bitmap field of a set of types: windows of 256 types, each as its number,
    its length and the bytes up to the last one with a bit set."""
    windows: dict[int, bytearray] = {}
    for rdtype in set(types):
        bits = windows.setdefault(rdtype >> 8, bytearray(32))
        low = rdtype & 0xFF
        bits[low >> 3] |= 0x80 >> (low & 7)
    out = []
    for window in sorted(windows):
        used = bytes(windows[window]).rstrip(b"\x00")
        out.append(bytes((window, len(used))) + used)
    return b"".join(out)


def compact_nsec_rdata(owner: bytes, types: Iterable[int]) -> bytes:
    """The NSEC RDATA of compact denial (RFC 9824 section 3): the next name is the owner's
    immediate successor in canonical order, `\\000.<owner>`, so the record covers no other
    name; the bitmap holds the owner's types, NSEC and RRSIG (and NXNAME when the owner does
    not exist). Needs room for one more label: a name of 254 or 255 bytes has none, and is
    answered with `owner` itself as the next name (the record then covers nothing)."""
    successor = b"\x01\x00" + owner if len(owner) <= 253 else owner
    return successor + type_bitmap({*types, TYPE_NSEC, TYPE_RRSIG})


def expiration_of(rrsig_rdata: bytes) -> int:
    """The signature expiration field of an RRSIG RDATA."""
    return int.from_bytes(rrsig_rdata[8:12], "big")
