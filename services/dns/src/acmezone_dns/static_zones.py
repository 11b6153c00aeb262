"""Static zone data: the challenge zone's SOA, NS, name server addresses and settings records,
and the extra zones of RFC 1035 zone files.

Zone files are read with dnspython's zone parser (a well-tested parser beats a hand-written
one). The responder serves exactly one authoritative layer with no delegations, so zone content
it could not answer correctly (wildcards, DNAME, NS below an apex, overlapping zones) is refused
here, at start, with a `ZoneConfigError` that says which record is at fault.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.SOA
import dns.zone

from acmezone_dns.errors import ZoneConfigError
from acmezone_dns.settings import DnsSettings
from acmezone_dns.zone import TYPE_NS, TYPE_SOA, ZoneSource, wire_key

logger = logging.getLogger(__name__)

_REFUSED_TYPES = {int(dns.rdatatype.DNAME): "DNAME"}


@dataclass(frozen=True)
class StaticZone:
    """One zone apex with its records (owner key -> (owner name, type -> rdataset))."""

    name: dns.name.Name
    source: ZoneSource
    soa: dns.rdataset.Rdataset
    records: dict[bytes, tuple[dns.name.Name, dict[int, dns.rdataset.Rdataset]]]


def load_static_zones(settings: DnsSettings) -> list[StaticZone]:
    """The challenge zone (first) and every zone file's zone, validated."""
    zones = [challenge_zone(settings)]
    for path in settings.zone_files:
        try:
            parsed = dns.zone.from_file(path, relativize=False, check_origin=True)
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            raise ZoneConfigError(f"zone file {path}: {exc}") from exc
        zones.append(_from_dns_zone(parsed, ZoneSource.STATIC, str(path)))
        logger.info("zone file loaded", extra={"path": str(path), "zone": str(parsed.origin)})
    apexes = [wire_key(z.name) for z in zones]
    if len(set(apexes)) != len(apexes):
        raise ZoneConfigError("two zones have the same apex: " + ", ".join(map(str, apexes)))
    return zones


def parse_zone_text(text: str, where: str) -> StaticZone:
    """One zone file's text, parsed and validated exactly as at start (`where` names it in
    errors): the zone editor checks a change with it before writing anything."""
    try:
        parsed = dns.zone.from_text(text, relativize=False, check_origin=True)
    except (dns.exception.DNSException, ValueError) as exc:
        raise ZoneConfigError(f"zone file {where}: {exc}") from exc
    return _from_dns_zone(parsed, ZoneSource.STATIC, where)


def challenge_zone(settings: DnsSettings) -> StaticZone:
    """SOA, NS, in-zone name server addresses and the static records of the challenge zone."""
    origin = dns.name.from_text(settings.zone)
    lines = [
        f"$ORIGIN {settings.zone}",
        f"$TTL {settings.static_ttl}",
        f"@ {settings.soa_ttl} IN SOA {settings.soa_mname} {settings.soa_rname} "
        f"{settings.soa_serial} {settings.soa_refresh} {settings.soa_retry} "
        f"{settings.soa_expire} {settings.soa_minimum}",
    ]
    lines += [f"@ {settings.ns_ttl} IN NS {ns}" for ns in settings.ns_names]
    for ns in settings.ns_names:
        if dns.name.from_text(ns).is_subdomain(origin):
            for address in settings.ns_addresses:
                rdtype = "A" if ipaddress.ip_address(address).version == 4 else "AAAA"
                lines.append(f"{ns} {settings.ns_ttl} IN {rdtype} {address}")
    lines += list(settings.static_records)
    try:
        parsed = dns.zone.from_text(
            "\n".join(lines) + "\n", origin=origin, relativize=False, check_origin=True
        )
    except dns.exception.DNSException as exc:
        raise ZoneConfigError(f"static records of {settings.zone}: {exc}") from exc
    return _from_dns_zone(parsed, ZoneSource.FEED, "settings")


def _from_dns_zone(parsed: dns.zone.Zone, source: ZoneSource, where: str) -> StaticZone:
    origin = parsed.origin
    assert origin is not None
    records: dict[bytes, tuple[dns.name.Name, dict[int, dns.rdataset.Rdataset]]] = {}
    for name, rdataset in parsed.iterate_rdatasets():
        assert isinstance(name, dns.name.Name)
        text = f"{where}: {name} {dns.rdatatype.to_text(rdataset.rdtype)}"
        if rdataset.rdclass != dns.rdataclass.IN:
            raise ZoneConfigError(f"{text}: only class IN is served")
        if name.is_wild():
            raise ZoneConfigError(f"{text}: wildcards are not supported")
        if rdataset.rdtype in _REFUSED_TYPES:
            raise ZoneConfigError(f"{text}: {_REFUSED_TYPES[rdataset.rdtype]} is not supported")
        if rdataset.rdtype == TYPE_NS and name != origin:
            raise ZoneConfigError(f"{text}: delegations (NS below the apex) are not supported")
        key = wire_key(name)
        _, rrsets = records.setdefault(key, (name.canonicalize(), {}))
        rrsets[int(rdataset.rdtype)] = rdataset
    for name, rrsets in records.values():
        if int(dns.rdatatype.CNAME) in rrsets and len(rrsets) > 1:
            raise ZoneConfigError(f"{where}: {name} has a CNAME and other data")
    apex = records[wire_key(origin)][1]
    return StaticZone(origin.canonicalize(), source, apex[TYPE_SOA], records)
