"""DNSSEC test helpers: key directories made with the real CLI code, and answers checked with
dnspython's validator (an implementation independent of the signer's own wire code)."""

from __future__ import annotations

from pathlib import Path

import dns.dnssec
import dns.message
import dns.name
import dns.rdatatype
import dns.rrset

from acmezone_dns.dnssec.keys import ALGORITHMS, Role, State, ZoneKey, generate, write_key


def make_keys(
    directory: Path,
    zones: list[str],
    algorithm: str = "ecdsap256sha256",
    role: Role = Role.CSK,
    state: State = State.ACTIVE,
) -> list[ZoneKey]:
    """One key per zone, written as key files into `directory`."""
    directory.mkdir(exist_ok=True, mode=0o700)
    keys = []
    for zone in zones:
        key = generate(dns.name.from_text(zone), ALGORITHMS[algorithm], role, state)
        write_key(key, directory, None)
        keys.append(key)
    return keys


def dnskey_rrset(keys: list[ZoneKey]) -> dict[dns.name.Name, dns.rrset.RRset]:
    """The DNSKEY RRsets of the keys' zones, as dnspython's validator takes them."""
    out: dict[dns.name.Name, dns.rrset.RRset] = {}
    for key in keys:
        rrset = out.setdefault(
            key.zone, dns.rrset.RRset(key.zone, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
        )
        rrset.add(key.dnskey, 3600)
    return out


def validate_sections(
    response: dns.message.Message, keys: dict[dns.name.Name, dns.rrset.RRset]
) -> list[tuple[str, str]]:
    """Check every RRSIG of the answer and authority sections with dnspython; returns the
    (owner, type) of each RRset that carried a valid signature. Raises on a bad one."""
    signed = []
    for section in (response.answer, response.authority):
        for rrset in section:
            if rrset.rdtype == dns.rdatatype.RRSIG:
                continue
            sigs = [
                s
                for s in section
                if s.rdtype == dns.rdatatype.RRSIG
                and s.covers == rrset.rdtype
                and s.name == rrset.name
            ]
            for sig in sigs:
                dns.dnssec.validate(rrset, sig, keys)
                signed.append((rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype)))
    return signed
