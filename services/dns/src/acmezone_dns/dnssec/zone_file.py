"""A whole zone signed offline with the key directory's keys: `acmezone-dns dnssec sign-zone`.

The service signs online and proves denials with compact NSEC records made per query; this makes
the classic signed zone instead, for tools and setups that want the zone content as a file: a
hidden primary's signed copy for other authoritative servers, or `ldns-verify-zone` and
`dnssec-verify` checking that the zone a replica serves signs and verifies. The content comes
from a zone transfer of a running replica (AXFR, TSIG-signed) or from a zone file.

What the signed zone holds (RFC 4035 section 2):
- the input's records, without any DNSSEC records it had (DNSKEY, RRSIG, NSEC, NSEC3,
  NSEC3PARAM): the DNSKEY RRset is the key directory's keys of the zone, every state;
- one NSEC per name that has records, in canonical order (RFC 4034 section 6.1), the last
  pointing back at the apex; its TTL the lesser of the SOA's TTL and minimum (RFC 9077);
- an RRSIG per signing key over every authoritative RRset (the DNSKEY RRset by the `ksk`/`csk`
  keys, the rest by `zsk`/`csk`, as the service signs), made with `records.rrsig_rdatas`, the
  service's own signing code. At a delegation only DS and NSEC are signed, and names below
  it (glue) are neither signed nor in the chain.

Wildcards are refused: `rrsig_rdatas` gives the owner's full label count, which a wildcard's
RRSIG must not have (RFC 4034 section 3.1.3), and the challenge zone never has one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import dns.name
import dns.node
import dns.query
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.tsig
import dns.xfr
import dns.zone

from acmezone_dns.dnssec.keys import ZoneKey
from acmezone_dns.dnssec.records import TYPE_NSEC, TYPE_RRSIG, rrsig_rdatas, type_bitmap
from acmezone_dns.zone import wire_key

SKEW = 3600
"""Signatures start an hour in the past, as the service's do."""

_DNSSEC_TYPES = {
    dns.rdatatype.DNSKEY,
    dns.rdatatype.RRSIG,
    dns.rdatatype.NSEC,
    dns.rdatatype.NSEC3,
    dns.rdatatype.NSEC3PARAM,
}


class ZoneContentError(ValueError):
    """Zone content that cannot be signed, with why in its message."""


def read_zone_file(path: str, origin: dns.name.Name) -> dns.zone.Zone:
    """A zone file (RFC 1035 syntax, names relative to `origin` unless it sets $ORIGIN)."""
    try:
        return dns.zone.from_file(path, origin=origin, relativize=False, check_origin=True)
    except (OSError, dns.exception.DNSException) as exc:
        raise ZoneContentError(f"zone file {path}: {type(exc).__name__}: {exc}") from None


def transfer(
    host: str,
    port: int,
    origin: dns.name.Name,
    key: dns.tsig.Key | None,
    timeout: float = 30.0,
) -> dns.zone.Zone:
    """The zone by AXFR from a server (a running replica), the request signed with `key`."""
    zone = dns.zone.Zone(origin, relativize=False)
    query, _ = dns.xfr.make_query(zone)
    if key is not None:
        query.use_tsig(key)
    try:
        dns.query.inbound_xfr(host, zone, query, port=port, timeout=timeout, lifetime=timeout)
    except (OSError, dns.exception.DNSException) as exc:
        raise ZoneContentError(
            f"AXFR of {origin} from {host}:{port}: {type(exc).__name__}: {exc}"
        ) from None
    return zone


def sign(
    zone: dns.zone.Zone,
    keys: Sequence[ZoneKey],
    *,
    validity: int,
    dnskey_ttl: int,
    now: float | None = None,
) -> dns.zone.Zone:
    """The zone signed as the module docstring says (a new zone; `zone` is left as it is).
    `keys` are the zone's keys: at least one signing the DNSKEY RRset and one the rest."""
    origin = zone.origin
    assert origin is not None
    key_signers = [k for k in keys if k.signs_keys]
    data_signers = [k for k in keys if k.signs_data]
    if not key_signers or not data_signers:
        raise ZoneContentError(f"zone {origin}: no active key signs its DNSKEY RRset or its data")
    rrsets: dict[dns.name.Name, list[dns.rdataset.Rdataset]] = {}
    for name, rdataset in zone.iterate_rdatasets():
        if rdataset.rdtype in _DNSSEC_TYPES:
            continue
        owner = name.derelativize(origin)
        if owner.is_wild():
            raise ZoneContentError(f"{owner}: wildcards are not supported")
        rrsets.setdefault(owner, []).append(rdataset)
    apex_sets = {r.rdtype: r for r in rrsets.get(origin, [])}
    soa_set = apex_sets.get(dns.rdatatype.SOA)
    if soa_set is None:
        raise ZoneContentError(f"zone {origin} has no SOA record")
    soa = next(iter(soa_set))
    assert isinstance(soa, dns.rdtypes.ANY.SOA.SOA)
    dnskeys = dns.rdataset.from_rdata_list(dnskey_ttl, [k.dnskey for k in keys])
    rrsets[origin].append(dnskeys)

    cuts = [n for n, sets in rrsets.items() if n != origin and _has(sets, dns.rdatatype.NS)]
    chain = sorted(n for n in rrsets if not any(n != cut and n.is_subdomain(cut) for cut in cuts))
    start = int(time.time() if now is None else now)
    inception, expiration = (start - SKEW) & 0xFFFFFFFF, (start + validity) & 0xFFFFFFFF
    signer = wire_key(origin)
    nsec_ttl = min(soa_set.ttl, int(soa.minimum))
    out = dns.zone.Zone(origin, relativize=False)
    for i, owner in enumerate(chain):
        sets = rrsets[owner]
        node = out.find_node(owner, create=True)
        next_name = chain[(i + 1) % len(chain)]
        types = {int(r.rdtype) for r in sets} | {TYPE_NSEC, TYPE_RRSIG}
        nsec_wire = wire_key(next_name) + type_bitmap(types)
        nsec = dns.rdata.from_wire(
            dns.rdataclass.IN, dns.rdatatype.NSEC, nsec_wire, 0, len(nsec_wire)
        )
        signed_sets = [*sets, dns.rdataset.from_rdata_list(nsec_ttl, [nsec])]
        delegation = owner in cuts
        for rdataset in signed_sets:
            node.replace_rdataset(rdataset)
            if delegation and rdataset.rdtype not in (dns.rdatatype.DS, dns.rdatatype.NSEC):
                continue  # the child's NS RRset is not ours to sign
            signers = key_signers if rdataset.rdtype == dns.rdatatype.DNSKEY else data_signers
            sigs = rrsig_rdatas(
                signers,
                signer,
                wire_key(owner),
                int(rdataset.rdtype),
                rdataset.ttl,
                [r.to_digestable(origin) for r in rdataset],
                inception,
                expiration,
            )
            rrsig = node.find_rdataset(
                dns.rdataclass.IN, dns.rdatatype.RRSIG, rdataset.rdtype, create=True
            )
            rrsig.update_ttl(rdataset.ttl)
            for sig in sigs:
                rrsig.add(
                    dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.RRSIG, sig, 0, len(sig))
                )
    for owner, sets in rrsets.items():  # glue below a delegation: kept, unsigned
        if owner not in chain:
            node = out.find_node(owner, create=True)
            for rdataset in sets:
                node.replace_rdataset(rdataset)
    return out


def to_text(zone: dns.zone.Zone) -> str:
    """The zone in RFC 1035 syntax, names absolute, in canonical order (the SOA first)."""
    text: str = zone.to_text(sorted=True, relativize=False, want_origin=True)
    return text


def _has(sets: list[dns.rdataset.Rdataset], rdtype: dns.rdatatype.RdataType) -> bool:
    return any(r.rdtype == rdtype for r in sets)
