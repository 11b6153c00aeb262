"""Online DNSSEC signing of the served zones: signed answers made once and kept, negative
answers proven with compact denial of existence (RFC 9824), the signing cost bounded.

What costs what:
- A feed name's signed TXT answer is made when a revision touches the name (`changed`: one
  signature per active zone-signing key, about 50 µs), so a CA's query never waits for a
  signature. After a re-list (a cold start is a million names) signed answers are made on a
  name's first DO query instead: signing a million names up front would take a minute.
- Every other positive answer (SOA, NS, DNSKEY, name server addresses, static records, CNAME
  chains) is signed on its first DO query and kept in `answers`, which the C loop reads for
  DO=1 queries exactly as it reads the unsigned table for the others.
- A negative answer needs one NSEC record owned by the name asked for, signed on the fly: a
  random-subdomain flood would otherwise be a signature per query. Proofs are cached by name
  (bounded, oldest dropped first), and new ones are made at most `denial_rate` per second
  (a token bucket); past it a UDP query is told to retry over TCP (TC, which a spoofed flood
  cannot follow) and a TCP query gets SERVFAIL. Positive answers are never refused: there is
  one per existing RRset.

Signatures are valid from an hour ago (clock skew) for `validity` seconds; `sweep` drops every
signed answer and proof that expires within `refresh` seconds, to be signed again on demand,
so no signature served is ever closer than `refresh` to its expiry.

Every zone with keys is signed; a name's signatures are its own zone's (a static CNAME in an
unsigned parent into the signed challenge zone gets an unsigned CNAME and a signed TXT).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import dns.name
import dns.rdata
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.CNAME

from acmezone_dns import metrics
from acmezone_dns.dnssec.keys import KeyFileError, ZoneKey
from acmezone_dns.dnssec.records import (
    TYPE_NXNAME,
    TYPE_RRSIG,
    compact_nsec_rdata,
    rr,
    rrsig_rdatas,
)
from acmezone_dns.shards import ShardedTable
from acmezone_dns.static_zones import StaticZone
from acmezone_dns.wire import AA, TC, Packed, answer_rdatas, encode_owner, label_offsets
from acmezone_dns.zone import (
    NOERROR,
    NXDOMAIN,
    SERVFAIL,
    TYPE_CNAME,
    TYPE_DNSKEY,
    TYPE_SOA,
    TYPE_TXT,
    ZoneInfo,
    ZoneView,
    wire_key,
)

logger = logging.getLogger(__name__)

_TYPE_NSEC = 47
_CLASS_IN = b"\x00\x01"
_TXT_IN = TYPE_TXT.to_bytes(2, "big") + _CLASS_IN
_RRSIG_CACHE = 10_000
"""Signatures of static RRsets kept at most (see `_rrset_sigs`)."""
_SKEW = 3600
"""Signatures start an hour in the past: a validator whose clock is behind still accepts them."""


class SignedPacked(Packed):
    """A signed answer, with when its earliest signature expires (for `Signer.sweep`)."""

    __slots__ = ("expires",)

    expires: int


@dataclass(frozen=True)
class _Zone:
    """One signed zone: its keys split by what they sign, and its signer name."""

    apex: bytes
    key_signers: tuple[ZoneKey, ...]
    data_signers: tuple[ZoneKey, ...]
    dnskeys: dns.rdataset.Rdataset


@dataclass(slots=True)
class _Proof:
    """The NSEC record of compact denial for one name and its signatures, owner left out (it
    is encoded per answer: a pointer to the question when the name is the question's)."""

    nsec: bytes
    rrsigs: list[bytes]
    ttl: int
    expires: int


class Signer:
    """Signs the answers of every zone that has keys; see the module docstring."""

    def __init__(
        self,
        keys: dict[dns.name.Name, list[ZoneKey]],
        *,
        validity: int,
        refresh: int,
        dnskey_ttl: int,
        denial_rate: float,
        denial_cache: int,
        stats: metrics.SigningStats,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if refresh >= validity:
            raise ValueError("the signature refresh margin must be shorter than the validity")
        self._clock = clock
        self._validity = validity
        self._refresh = refresh
        self._denial_rate = denial_rate
        self._denial_cache = denial_cache
        self._tokens = denial_rate
        self._tokens_at = clock()
        self.stats = stats
        self._dnskey_ttl = dnskey_ttl
        self.zones: dict[bytes, _Zone] = {}
        self.set_keys(keys)
        self.answers: ShardedTable[Packed] = ShardedTable()
        """Signed positive answers by question key (name, type, class IN): the C loop's table
        for DO=1 queries."""
        self._kept: dict[bytes, list[bytes]] = {}  # name -> answer keys made by `respond`
        self._proofs: dict[bytes, _Proof] = {}
        self._rrsigs: dict[tuple[bytes, int, bytes], tuple[list[bytes], int]] = {}

    # -- zone data --------------------------------------------------------------------------

    def set_keys(self, keys: dict[dns.name.Name, list[ZoneKey]]) -> None:
        """Sign with these keys from now on (a rollover step, read again from the key
        directory). The store calls it just before `reset`: nothing signed with the old set
        is served after."""
        zones = {}
        for zone, zone_keys in keys.items():
            apex = wire_key(zone)
            dnskeys = dns.rdataset.from_rdata_list(self._dnskey_ttl, [k.dnskey for k in zone_keys])
            zones[apex] = _Zone(
                apex,
                tuple(k for k in zone_keys if k.signs_keys),
                tuple(k for k in zone_keys if k.signs_data),
                dnskeys,
            )
        self.zones = zones

    def with_dnskeys(self, zones: list[StaticZone]) -> list[StaticZone]:
        """The static zones with each signed zone's DNSKEY RRset at its apex (copies: the
        caller's are left as they are). A zone with keys that is not served is an error."""
        check_served(self.zones, zones)
        out = []
        for zone in zones:
            signed = self.zones.get(wire_key(zone.name))
            if signed is None:
                out.append(zone)
                continue
            records = dict(zone.records)
            name, rrsets = records[signed.apex]
            records[signed.apex] = (name, {**rrsets, TYPE_DNSKEY: signed.dnskeys})
            out.append(replace(zone, records=records))
        return out

    def zone_of(self, view: ZoneView, name: bytes) -> _Zone | None:
        """The signed zone a name belongs to (its closest enclosing served zone), if signed."""
        info = view.zone_of(name)
        return None if info is None else self.zones.get(info.key)

    # -- invalidation -------------------------------------------------------------------------

    def changed(self, names: Iterable[bytes], plain_txt: Callable[[bytes], Packed | None]) -> None:
        """Names whose data changed in a revision: their signed answers and proofs are
        dropped, and the TXT answer of a plain feed name (`plain_txt` gives its unsigned
        one, None for any other name) is signed again at once."""
        answers = self.answers
        proofs = self._proofs
        for name in names:
            answers.pop(name + _TXT_IN, None)
            for key in self._kept.pop(name, ()):
                answers.pop(key, None)
            proofs.pop(name, None)
            unsigned = plain_txt(name)
            if unsigned is not None:
                signed = self.sign_txt(name, unsigned)
                if signed is not None:
                    answers[name + _TXT_IN] = signed

    def dropped(self, answer_key: bytes) -> None:
        """One signed answer is stale (the challenge zone's SOA serial moved)."""
        self.answers.pop(answer_key, None)

    def reset(self) -> ShardedTable[Packed]:
        """Forget every signed answer and proof (a re-list or a static reload replaced the
        data); returns the new answer table, and the old one is left to the caller to free."""
        retired = self.answers
        self.answers = ShardedTable()
        self._kept = {}
        self._proofs = {}
        self._rrsigs = {}
        return retired

    def sweep(self) -> int:
        """Drop what expires within the refresh margin (signed again when next asked for);
        returns how many answers were dropped. Runs periodically (see `run_sweeps`)."""
        horizon = int(self._clock()) + self._refresh
        answers = self.answers
        stale = [
            k
            for k, p in answers.pairs()
            if isinstance(p, SignedPacked) and _before(p.expires, horizon)
        ]
        for key in stale:
            answers.pop(key, None)
        for name in [n for n, p in self._proofs.items() if _before(p.expires, horizon)]:
            del self._proofs[name]
        for sig_key in [k for k, (_, e) in self._rrsigs.items() if _before(e, horizon)]:
            del self._rrsigs[sig_key]
        return len(stale)

    async def run_sweeps(self, interval: float) -> None:
        """`sweep` every `interval` seconds, forever."""
        while True:
            await asyncio.sleep(interval)
            dropped = self.sweep()
            if dropped:
                logger.info("signatures near expiry dropped", extra={"answers": dropped})

    # -- signing ------------------------------------------------------------------------------

    def _window(self) -> tuple[int, int]:
        now = int(self._clock())
        return (now - _SKEW) & 0xFFFFFFFF, (now + self._validity) & 0xFFFFFFFF

    def sign_txt(self, name: bytes, unsigned: Packed) -> SignedPacked | None:
        """A plain feed name's signed TXT answer, from its unsigned one (whose records are
        owned by a pointer to the question)."""
        zone = None
        for i in label_offsets(name)[1:-1]:
            zone = self.zones.get(name[i:])
            if zone is not None:
                break
        if zone is None:
            return None
        body = unsigned.body
        ttl, rdatas = answer_rdatas(body)
        inception, expiration = self._window()
        sigs = rrsig_rdatas(
            zone.data_signers, zone.apex, name, TYPE_TXT, ttl, rdatas, inception, expiration
        )
        self.stats.signatures += len(sigs)
        tail = b"".join(rr(b"\xc0\x0c", TYPE_RRSIG, ttl, sig) for sig in sigs)
        return _signed(
            NOERROR, len(rdatas) + len(sigs), 0, 0, body + tail, unsigned.stat, expiration
        )

    def _rrset_sigs(
        self, zone: _Zone, owner: bytes, rdataset: dns.rdataset.Rdataset
    ) -> tuple[list[bytes], int]:
        """The RRSIG RDATAs of one RRset (kept: static RRsets are few and asked often)."""
        rdatas = [rdata.to_digestable() for rdata in rdataset]
        cache_key = (owner, int(rdataset.rdtype), b"".join(sorted(rdatas)))
        kept = self._rrsigs.get(cache_key)
        if kept is not None:
            return kept
        signers = zone.key_signers if rdataset.rdtype == TYPE_DNSKEY else zone.data_signers
        inception, expiration = self._window()
        # The SOA of a negative answer is served with the negative TTL but signed with its
        # own (RFC 4035 section 2.2: the original TTL field); callers pass the zone's.
        sigs = rrsig_rdatas(
            signers,
            zone.apex,
            owner,
            int(rdataset.rdtype),
            rdataset.ttl,
            rdatas,
            inception,
            expiration,
        )
        self.stats.signatures += len(sigs)
        if len(self._rrsigs) >= _RRSIG_CACHE:
            # Static RRsets are few; what fills this is the challenge zone's SOA, whose serial
            # follows the feed when transfers are on: start over rather than grow.
            self._rrsigs.clear()
        self._rrsigs[cache_key] = (sigs, expiration)
        return sigs, expiration

    def _section(
        self, view: ZoneView, section: Sequence[tuple[bytes, dns.rdataset.Rdataset]], qname: bytes
    ) -> tuple[list[bytes], int, int | None]:
        """RRsets with their RRSIGs (where their zone is signed): wire parts, record count,
        earliest expiration (None: nothing signed)."""
        parts: list[bytes] = []
        count = 0
        expires: int | None = None
        for owner, rdataset in section:
            name = encode_owner(owner, qname)
            for rdata in rdataset:
                parts.append(rr(name, int(rdataset.rdtype), rdataset.ttl, rdata.to_wire()))
                count += 1
            zone = self.zone_of(view, owner)
            if zone is not None:
                sigs, expiration = self._rrset_sigs(zone, owner, rdataset)
                parts.extend(rr(name, TYPE_RRSIG, rdataset.ttl, sig) for sig in sigs)
                count += len(sigs)
                expires = _earliest(expires, expiration)
        return parts, count, expires

    def respond(
        self, view: ZoneView, qname: bytes, qtype: int, *, compact_ok: bool, tcp: bool, stat: int
    ) -> Packed:
        """The signed answer to a DO=1 question (the slow path's; kept when positive).
        `compact_ok` (the query's CO flag, RFC 9824 section 4) sets NXDOMAIN for a name that
        does not exist; without it the rcode is NOERROR, as compact denial proves it."""
        resolution = view.resolve(qname, qtype)
        if resolution.rcode not in (NOERROR, NXDOMAIN) or not resolution.authoritative:
            packed = Packed(0, resolution.rcode, 0, 0, 0, b"")
            packed.stat = stat
            return packed
        answer, an, expires = self._section(view, resolution.answer, qname)
        extra, ar, extra_expires = self._section(view, resolution.additional, qname)
        expires = _earliest(expires, extra_expires)
        if not resolution.authority:  # a positive answer: the same for every DO query
            packed = _signed(
                NOERROR, an, 0, ar, b"".join(answer + extra), stat, self._expiry(expires)
            )
            answer_key = qname + qtype.to_bytes(2, "big") + _CLASS_IN
            self.answers[answer_key] = packed
            self._kept.setdefault(qname, []).append(answer_key)
            return packed
        # A negative answer: the SOA, then the proof for the name the answer ends at (the
        # question's, or the last CNAME target's).
        end = qname
        for owner, rdataset in resolution.answer:
            if rdataset.rdtype == TYPE_CNAME and owner == end:
                cname = next(iter(rdataset))
                assert isinstance(cname, dns.rdtypes.ANY.CNAME.CNAME)
                end = wire_key(cname.target)
        info = view.zone_of(end)
        assert info is not None
        zone = self.zones.get(info.key)
        exists = view.nodes.get(end) is not None
        rcode = NOERROR if exists or (zone is not None and not compact_ok) else NXDOMAIN
        authority: list[bytes] = []
        ns = 0
        if zone is None:
            soa_parts, ns, _ = self._section(view, [(info.key, info.negative_soa)], qname)
            authority = soa_parts
        else:
            proof = self._proof(view, zone, info, end)
            if proof is None:
                self.stats.denials_refused += 1
                flags = TC | AA if not tcp else 0
                packed = Packed(flags, NOERROR if not tcp else SERVFAIL, 0, 0, 0, b"")
                packed.stat = stat
                return packed
            soa_sigs, soa_expires = self._rrset_sigs(zone, info.key, info.soa)
            owner_soa = encode_owner(info.key, qname)
            negative = info.negative_soa
            soa_rdata = next(iter(negative)).to_wire()
            authority.append(rr(owner_soa, TYPE_SOA, negative.ttl, soa_rdata))
            authority.extend(rr(owner_soa, TYPE_RRSIG, negative.ttl, s) for s in soa_sigs)
            owner_end = encode_owner(end, qname)
            authority.append(rr(owner_end, _TYPE_NSEC, proof.ttl, proof.nsec))
            authority.extend(rr(owner_end, TYPE_RRSIG, proof.ttl, s) for s in proof.rrsigs)
            ns = 2 + len(soa_sigs) + len(proof.rrsigs)
            expires = _earliest(expires, _earliest(soa_expires, proof.expires))
        body = b"".join(answer + authority + extra)
        return _signed(rcode, an, ns, ar, body, stat, self._expiry(expires))

    def _proof(self, view: ZoneView, zone: _Zone, info: ZoneInfo, name: bytes) -> _Proof | None:
        """The signed compact-denial NSEC of `name`; None when the signing budget is spent."""
        proof = self._proofs.get(name)
        if proof is not None:
            return proof
        if not self._take_token():
            return None
        node = view.nodes.get(name)
        types = set(node.rrsets) if node is not None else {TYPE_NXNAME}
        nsec = compact_nsec_rdata(name, types)
        # RFC 9077: an NSEC's TTL is the lesser of the SOA's TTL and its minimum field.
        ttl = info.negative_soa.ttl
        inception, expiration = self._window()
        sigs = rrsig_rdatas(
            zone.data_signers, zone.apex, name, _TYPE_NSEC, ttl, [nsec], inception, expiration
        )
        self.stats.signatures += len(sigs)
        self.stats.denials_signed += 1
        proof = _Proof(nsec, sigs, ttl, expiration)
        proofs = self._proofs
        if len(proofs) >= self._denial_cache:
            del proofs[next(iter(proofs))]  # the oldest (dicts keep insertion order)
        proofs[name] = proof
        return proof

    def _expiry(self, expires: int | None) -> int:
        """When an answer must be signed again: its earliest signature's expiry, or, for one
        that holds no signature (all of it in unsigned zones), the latest time the sweep's
        serial arithmetic can tell from now."""
        if expires is not None:
            return expires
        return (int(self._clock()) + 0x7FFFFFFE) & 0xFFFFFFFF

    def _take_token(self) -> bool:
        now = self._clock()
        rate = self._denial_rate
        self._tokens = min(rate, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


def check_served(apexes: Iterable[bytes], zones: list[StaticZone]) -> None:
    """KeyFileError when keys name a zone (by its apex key) that is not served: a typo would
    sign nothing."""
    served = {wire_key(z.name) for z in zones}
    missing = [apex for apex in apexes if apex not in served]
    if missing:
        names = ", ".join(dns.name.from_wire(a, 0)[0].to_text() for a in missing)
        raise KeyFileError(f"DNSSEC keys for zones that are not served: {names}")


def _signed(
    rcode: int, an: int, ns: int, ar: int, body: bytes, stat: int, expires: int
) -> SignedPacked:
    packed = SignedPacked(AA, rcode, an, ns, ar, body)
    packed.stat = stat
    packed.expires = expires
    return packed


def _before(a: int, b: int) -> bool:
    """Whether timestamp `a` is before `b` in RFC 1982 serial arithmetic (RRSIG times wrap)."""
    return a != b and ((b - a) & 0xFFFFFFFF) < 0x80000000


def _earliest(a: int | None, b: int | None) -> int | None:
    if a is None or b is None:
        return b if a is None else a
    return a if _before(a, b) else b
