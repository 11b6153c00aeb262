"""The zone data model and the one place that decides how a question is answered.

A `ZoneView` is the picture of every zone the server is authoritative for: the zone apexes and
every existing name (empty non-terminals included) with its RRsets, as the store holds them.
`resolve` turns a question into response sections following RFC 1034 section 4.3.2 for a server
without delegations or wildcards: CNAMEs are followed inside the served zones (RFC 6604 rcodes),
ANY is answered minimally (RFC 8482), negative answers carry the SOA with the negative-caching TTL
(RFC 2308). Both the pre-packed fast path and the slow path take their answers from here, so they
can never disagree.

Names are keys in lower-case uncompressed wire format (`b"\\x01x\\x04acme..."`): DNS compares
names case-insensitively in ASCII only, and label lengths (at most 63) are never changed by
`bytes.lower()`, so a query's question bytes lowered are directly a key.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

import dns.name
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.SOA

from acmezone_dns.wire import Section, name_suffixes

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16

TYPE_A = int(dns.rdatatype.A)
TYPE_AAAA = int(dns.rdatatype.AAAA)
TYPE_NS = int(dns.rdatatype.NS)
TYPE_CNAME = int(dns.rdatatype.CNAME)
TYPE_SOA = int(dns.rdatatype.SOA)
TYPE_TXT = int(dns.rdatatype.TXT)
TYPE_DNSKEY = int(dns.rdatatype.DNSKEY)
TYPE_ANY = int(dns.rdatatype.ANY)
TYPE_NONE = 0  # never stored: asking for it gives the answer for "a type the name lacks"

MAX_CNAME_CHAIN = 8


class ZoneSource(enum.Enum):
    """Where a zone's records come from."""

    FEED = "feed"
    STATIC = "static"


def wire_key(name: dns.name.Name) -> bytes:
    """The lower-case wire form of an absolute name: the key names are stored under."""
    wire = name.canonicalize().to_wire()
    assert wire is not None
    return wire


@dataclass(frozen=True, slots=True)
class Node:
    """One existing name and its RRsets by type; no RRsets means an empty non-terminal (or a
    registration with no TXT value yet): the name exists but holds no data."""

    name: dns.name.Name
    rrsets: Mapping[int, dns.rdataset.Rdataset]

    @property
    def cname_target(self) -> bytes | None:
        """The CNAME target's key when the name is an alias."""
        rrset = self.rrsets.get(TYPE_CNAME)
        if rrset is None:
            return None
        rdata = next(iter(rrset))
        assert isinstance(rdata, dns.rdtypes.ANY.CNAME.CNAME)
        return wire_key(rdata.target)

    @property
    def record_count(self) -> int:
        """Resource records held at this name."""
        return sum(len(rrset) for rrset in self.rrsets.values())


@dataclass(frozen=True, slots=True)
class ZoneInfo:
    """One zone apex: its SOA and whether the zone may answer yet.

    A feed zone is not `ready` until the first snapshot from the registry is applied: until then
    it answers SERVFAIL rather than an NXDOMAIN a resolver would cache.
    """

    key: bytes
    name: dns.name.Name
    source: ZoneSource
    soa: dns.rdataset.Rdataset
    ready: bool = True
    negative_soa: dns.rdataset.Rdataset = field(init=False)

    def __post_init__(self) -> None:
        soa_rdata = next(iter(self.soa))
        assert isinstance(soa_rdata, dns.rdtypes.ANY.SOA.SOA)
        negative = dns.rdataset.from_rdata_list(
            min(self.soa.ttl, soa_rdata.minimum), list(self.soa)
        )
        object.__setattr__(self, "negative_soa", negative)

    @property
    def serial(self) -> int:
        """The SOA serial."""
        rdata = next(iter(self.soa))
        assert isinstance(rdata, dns.rdtypes.ANY.SOA.SOA)
        return int(rdata.serial)


@dataclass(frozen=True, slots=True)
class Resolution:
    """The sections of an answer, before encoding."""

    rcode: int
    authoritative: bool
    answer: Section = ()
    authority: Section = ()
    additional: Section = ()


REFUSED_RESOLUTION = Resolution(REFUSED, False)
SERVFAIL_RESOLUTION = Resolution(SERVFAIL, False)


@dataclass(frozen=True, slots=True)
class ZoneView:
    """Every served zone and existing name; the store changes `nodes` between queries, never
    during one."""

    zones: Mapping[bytes, ZoneInfo]
    nodes: Mapping[bytes, Node]

    def zone_of(self, name: bytes) -> ZoneInfo | None:
        """The closest enclosing zone of a name, or None when we are not authoritative."""
        zones = self.zones
        for suffix in name_suffixes(name):
            zone = zones.get(suffix)
            if zone is not None:
                return zone
        return None

    def cname_chain(self, name: bytes) -> list[bytes]:
        """The names a CNAME chain starting at `name` visits after it, in order, stopping at a
        name outside our zones, a missing name, a loop or MAX_CNAME_CHAIN links."""
        chain: list[bytes] = []
        seen = {name}
        node = self.nodes.get(name)
        while node is not None and len(chain) < MAX_CNAME_CHAIN:
            target = node.cname_target
            if target is None or target in seen or self.zone_of(target) is None:
                break
            chain.append(target)
            seen.add(target)
            node = self.nodes.get(target)
        return chain

    def resolve(self, qname: bytes, qtype: int) -> Resolution:
        """How to answer `qname`/`qtype` (class IN); AXFR/IXFR and meta types are the
        responder's business and never reach here."""
        zone = self.zone_of(qname)
        if zone is None:
            return REFUSED_RESOLUTION
        if not zone.ready:
            return SERVFAIL_RESOLUTION
        answer: list[tuple[bytes, dns.rdataset.Rdataset]] = []
        name = qname
        seen = {qname}
        while True:
            node = self.nodes.get(name)
            if node is None:
                return Resolution(NXDOMAIN, True, answer, [(zone.key, zone.negative_soa)])
            rrsets = node.rrsets
            cname = rrsets.get(TYPE_CNAME)
            if cname is not None and qtype != TYPE_CNAME:
                answer.append((name, cname))
                target = node.cname_target
                assert target is not None
                target_zone = self.zone_of(target)
                if (
                    target_zone is None
                    or target in seen
                    or len(seen) > MAX_CNAME_CHAIN
                    or not target_zone.ready
                ):
                    return Resolution(NOERROR, True, answer)
                seen.add(target)
                name, zone = target, target_zone
                continue
            if qtype == TYPE_ANY and rrsets:
                # RFC 8482: one RRset is a complete answer to ANY.
                answer.append((name, rrsets[min(rrsets)]))
                return Resolution(NOERROR, True, answer)
            rrset = rrsets.get(qtype)
            if rrset is None:
                return Resolution(NOERROR, True, answer, [(zone.key, zone.negative_soa)])
            answer.append((name, rrset))
            additional = self._glue(rrset) if qtype == TYPE_NS else []
            return Resolution(NOERROR, True, answer, (), additional)

    def _glue(self, ns_rrset: dns.rdataset.Rdataset) -> list[tuple[bytes, dns.rdataset.Rdataset]]:
        """A/AAAA of the name servers we serve ourselves, for the additional section."""
        glue: list[tuple[bytes, dns.rdataset.Rdataset]] = []
        for rdata in ns_rrset:
            assert isinstance(rdata, dns.rdtypes.ANY.NS.NS)
            target = wire_key(rdata.target)
            node = self.nodes.get(target)
            if node is None:
                continue
            for rdtype in (TYPE_A, TYPE_AAAA):
                rrset = node.rrsets.get(rdtype)
                if rrset is not None:
                    glue.append((target, rrset))
        return glue
