"""Zone transfers of the challenge zone to secondaries: AXFR (RFC 5936) and IXFR (RFC 1995) over
TCP, TSIG-signed (RFC 8945) and allowed per key and network.

The SOA serial follows the feed: `Journal` (the store's change observer) sets it from each
revision in the same synchronous call that applies the revision, so a secondary that reads the
SOA always finds the content of that serial. The journal keeps the touched names' previous
state for the last N revisions (the packed answers themselves, which the store never changes in
place: a reference costs nothing), so an IXFR from any serial in it is answered with one
condensed difference sequence carrying only what changed; an older or unknown serial gets the
whole zone, as RFC 1995 section 4 allows. A re-list clears the journal (its difference is not
known) and moves the serial forward, never back, even when a new feed restarts revisions.

Transfers write records straight from the store's packed TXT answers (their owner is a pointer
to the question: the key replaces it), so a million-name AXFR costs no dnspython object per
name. Messages are about 16 KB and every one is signed (the TSIG chain of RFC 8945 section
5.3.1), with a drain between them so queries go on being answered during a long transfer.

Refusals: an unsigned request is REFUSED; an unknown key or algorithm gets NOTAUTH with TSIG
error BADKEY, a signature that does not verify NOTAUTH/BADSIG, a stale time NOTAUTH/BADTIME
(all unsigned, RFC 8945 section 5.2); a good key from a network it is not allowed from, or any
request over the concurrency limit, gets a signed REFUSED; a zone other than the challenge zone
NOTAUTH. None of them changes anything.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import logging
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field

import dns.exception
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TSIG
import dns.tsig

from acmezone_dns.metrics import TransferStats
from acmezone_dns.responder import question_end
from acmezone_dns.store import FeedBefore, ZoneStore
from acmezone_dns.wire import Packed
from acmezone_dns.zone import TYPE_SOA

logger = logging.getLogger(__name__)

TYPE_IXFR, TYPE_AXFR = 251, 252
_TYPE_TSIG = 250
_CLASS_ANY = 255
_SERIAL_MOD = 2**32
_MESSAGE_BYTES = 16_000
_RR_HEADER = 12  # the 2-byte owner pointer of a packed record, then type, class, TTL, RDLENGTH
_FUDGE = 300

ALGORITHMS = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-md5": dns.tsig.HMAC_MD5,
}


def serial_gt(a: int, b: int) -> bool:
    """RFC 1982 serial number arithmetic: `a` is newer than `b`."""
    return a != b and ((a - b) % _SERIAL_MOD) < 2**31


def parse_key(text: str) -> dns.tsig.Key:
    """`name:algorithm:base64-secret` (as BIND's `tsig-keygen` prints, one line) as a key;
    ValueError naming the part at fault (never the secret)."""
    name, sep, rest = text.strip().partition(":")
    algorithm, sep2, secret = rest.partition(":")
    if not (sep and sep2 and name and secret):
        raise ValueError("a transfer key is name:algorithm:base64-secret")
    if algorithm.lower() not in ALGORITHMS:
        raise ValueError(f"transfer key {name}: unknown algorithm {algorithm!r}")
    try:
        raw = base64.b64decode(secret, validate=True)
        key_name = dns.name.from_text(name)
    except (binascii.Error, ValueError, dns.exception.DNSException) as exc:
        raise ValueError(f"transfer key {name}: bad name or base64 secret") from exc
    if not raw:
        raise ValueError(f"transfer key {name}: empty secret")
    return dns.tsig.Key(key_name, raw, ALGORITHMS[algorithm.lower()])


@dataclass(frozen=True)
class AllowRule:
    """One `key@network` entry: transfers signed with `key` from an address in `network`."""

    key: dns.name.Name
    network: ipaddress.IPv4Network | ipaddress.IPv6Network

    @classmethod
    def parse(cls, text: str) -> AllowRule:
        """`key@cidr`, or `key` alone for any address."""
        name, _, network = text.strip().partition("@")
        if not name:
            raise ValueError(f"transfer rule {text!r}: a key name is required (key@network)")
        nets = [network] if network else ["0.0.0.0/0", "::/0"]
        return cls(dns.name.from_text(name), ipaddress.ip_network(nets[0], strict=False))


@dataclass(frozen=True)
class TransferPolicy:
    """Keys and the networks each may transfer from."""

    keys: dict[dns.name.Name, dns.tsig.Key]
    rules: list[AllowRule]

    @classmethod
    def from_settings(cls, keys: list[str], allow: list[str]) -> TransferPolicy:
        """Parsed and checked: every rule names a configured key. `key` alone allows any
        address, IPv4 and IPv6."""
        parsed = {k.name: k for k in map(parse_key, keys)}
        rules: list[AllowRule] = []
        for entry in allow:
            rule = AllowRule.parse(entry)
            if rule.key not in parsed:
                raise ValueError(f"transfer rule {entry!r}: no transfer key named {rule.key}")
            rules.append(rule)
            if "@" not in entry:
                rules.append(AllowRule(rule.key, ipaddress.ip_network("::/0")))
        return cls(parsed, rules)

    def allows(self, key: dns.name.Name, peer: str) -> bool:
        """Whether a request verified with `key` may transfer from `peer`."""
        try:
            address = ipaddress.ip_address(peer.split("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(r.key == key and address in r.network for r in self.rules)


@dataclass
class _Entry:
    old_serial: int
    new_serial: int
    before: FeedBefore


@dataclass
class Journal:
    """The serial and the recent differences of the challenge zone (the store's observer)."""

    store: ZoneStore
    capacity: int
    on_change: list[Callable[[], None]] = field(default_factory=list)
    serial: int | None = None
    _offset: int = 0
    _entries: deque[_Entry] = field(default_factory=deque)

    def changed(self, revision: int, before: FeedBefore) -> None:
        """Revisions applied in place: record what they touched, move the serial."""
        if self.serial is None:
            return  # no snapshot yet: nothing has been served to follow
        new = (revision + self._offset) % _SERIAL_MOD
        self._entries.append(_Entry(self.serial, new, before))
        while len(self._entries) > self.capacity:
            self._entries.popleft()
        self._set(new)

    def relisted(self, revision: int) -> None:
        """A whole new feed: forget the differences; the serial follows the revision unless
        that would move it back (a new feed), then it moves one forward."""
        new = revision % _SERIAL_MOD
        if self.serial is not None and not serial_gt(new, self.serial):
            new = (self.serial + 1) % _SERIAL_MOD
        self._offset = new - revision
        self._entries.clear()
        self._set(new)

    def _set(self, serial: int) -> None:
        self.serial = serial
        self.store.set_feed_serial(serial)
        for callback in self.on_change:
            callback()

    def since(self, serial: int) -> FeedBefore | None:
        """The state before every change made after `serial`, condensed (earliest wins); None
        when the journal does not reach back to `serial`."""
        entries = self._entries
        start = next((i for i, e in enumerate(entries) if e.old_serial == serial), None)
        if start is None:
            return None
        condensed: FeedBefore = {}
        for i in range(start, len(entries)):
            for key, state in entries[i].before.items():
                condensed.setdefault(key, state)
        return condensed


def is_transfer(data: bytes) -> bool:
    """A query (QR clear, opcode QUERY) whose first question asks AXFR or IXFR."""
    if len(data) < 17 or data[2] & 0xF8:
        return False
    end = question_end(data)
    return end > 0 and int.from_bytes(data[end - 4 : end - 2], "big") in (TYPE_AXFR, TYPE_IXFR)


def _rrs_of(packed: Packed | None) -> list[bytes]:
    """The records of a packed TXT answer without their 2-byte owner pointer."""
    if packed is None:
        return []
    body = packed.body
    records = []
    i = 0
    while i < len(body):
        end = i + _RR_HEADER + int.from_bytes(body[i + 10 : i + 12], "big")
        records.append(body[i + 2 : end])
        i = end
    return records


def _rdataset_rrs(rdataset: dns.rdataset.Rdataset | None) -> list[bytes]:
    """The records of an RRset as type, class, TTL, RDLENGTH, RDATA (owner left out)."""
    if rdataset is None:
        return []
    records = []
    for rdata in rdataset:
        wire = rdata.to_wire()
        assert wire is not None
        records.append(
            struct.pack("!HHIH", rdataset.rdtype, rdataset.rdclass, rdataset.ttl, len(wire)) + wire
        )
    return records


class ZoneTransfers:
    """Answers AXFR and IXFR requests for the challenge zone over one TCP stream."""

    def __init__(
        self,
        store: ZoneStore,
        journal: Journal,
        policy: TransferPolicy,
        stats: TransferStats,
        *,
        max_concurrent: int,
    ) -> None:
        self._store = store
        self._journal = journal
        self._policy = policy
        self._stats = stats
        self._max_concurrent = max_concurrent
        self._running = 0

    async def answer(self, data: bytes, peer: str) -> AsyncIterator[bytes]:
        """The response messages to one transfer request from `peer`, in order. Never
        raises on bad input: every refusal is one message."""
        qtype = "AXFR"
        try:
            query = dns.message.from_wire(data, keyring=self._policy.keys)
        except dns.message.UnknownTSIGKey:
            yield self._tsig_failure(data, dns.rcode.BADKEY, "unknown key")
            return
        except (dns.tsig.BadAlgorithm, dns.tsig.BadKey):
            yield self._tsig_failure(data, dns.rcode.BADKEY, "algorithm does not match")
            return
        except dns.tsig.BadSignature:
            yield self._tsig_failure(data, dns.rcode.BADSIG, "signature does not verify")
            return
        except dns.tsig.BadTime:
            yield self._tsig_failure(data, dns.rcode.BADTIME, "clock skew")
            return
        except (dns.exception.DNSException, ValueError, UnicodeError):
            self._stats.count(qtype, "formerr")
            yield _header_only(data, dns.rcode.FORMERR)
            return
        question = query.question[0] if len(query.question) == 1 else None
        if question is None or query.opcode() != dns.opcode.QUERY:
            self._stats.count(qtype, "formerr")
            yield _header_only(data, dns.rcode.FORMERR)
            return
        qtype = "IXFR" if question.rdtype == TYPE_IXFR else "AXFR"
        if not query.had_tsig:
            self._refuse(qtype, "refused", "unsigned", peer)
            yield _response(query, dns.rcode.REFUSED)
            return
        assert query.keyname is not None
        if not self._policy.allows(query.keyname, peer):
            self._refuse(qtype, "refused", f"key {query.keyname} not allowed from here", peer)
            yield _response(query, dns.rcode.REFUSED)
            return
        if question.name.canonicalize() != self._store_zone_name():
            self._refuse(qtype, "notauth", f"not a zone transferred here: {question.name}", peer)
            yield _response(query, dns.rcode.NOTAUTH)
            return
        serial = self._journal.serial
        if serial is None:
            self._stats.count(qtype, "servfail")
            yield _response(query, dns.rcode.SERVFAIL)
            return
        if self._running >= self._max_concurrent:
            self._refuse(qtype, "refused", "too many transfers at once", peer)
            yield _response(query, dns.rcode.REFUSED)
            return
        self._running += 1
        try:
            async for message in self._transfer(query, data, qtype, serial):
                yield message
        finally:
            self._running -= 1

    def sign_answer(self, query: bytes, answer: bytes) -> bytes | None:
        """The answer to an ordinary query signed with a transfer key (a secondary's SOA
        check before a transfer is signed); None when the query's key is not one of ours
        (the registry signs for customer keys). Never raises."""
        try:
            verified = dns.message.from_wire(query, keyring=self._policy.keys)
        except dns.message.UnknownTSIGKey:
            return None
        except (dns.tsig.BadAlgorithm, dns.tsig.BadKey):
            return self._tsig_failure(query, dns.rcode.BADKEY, "algorithm does not match")
        except dns.tsig.BadSignature:
            return self._tsig_failure(query, dns.rcode.BADSIG, "signature does not verify")
        except dns.tsig.BadTime:
            return self._tsig_failure(query, dns.rcode.BADTIME, "clock skew")
        except (dns.exception.DNSException, ValueError, UnicodeError):
            return None
        if not verified.had_tsig or verified.tsig is None:
            return None
        try:
            response = dns.message.from_wire(answer, keyring=False)
        except (dns.exception.DNSException, ValueError, UnicodeError):
            return None
        request = verified.tsig[0]
        response.use_tsig(verified.keyring, fudge=request.fudge, original_id=request.original_id)
        response.request_mac = verified.mac or b""
        return response.to_wire()

    def _store_zone_name(self) -> dns.name.Name:
        return dns.name.from_wire(self._store.feed_zone, 0)[0]

    async def _transfer(
        self, query: dns.message.Message, data: bytes, qtype: str, serial: int
    ) -> AsyncIterator[bytes]:
        """The transfer itself: a condensed IXFR when the journal reaches the client's
        serial, one SOA when the client is current, else the whole zone."""
        zone = self._store.feed_zone
        # Everything up to the first message is synchronous: the live feed map may be read.
        records, feed = self._store.feed_zone_state(copy=False)
        soa = b"".join(zone + rr for rr in _rdataset_rrs(records[0][1]))
        stream: Iterator[bytes] | None = None
        client = _client_serial(query) if qtype == "IXFR" else None
        if client is not None:
            before = self._journal.since(client)
            if not serial_gt(serial, client):
                kind, stream = "current", iter([soa])
            elif before is not None:
                kind, stream = "incremental", iter(self._incremental(soa, client, before, feed))
        if stream is None:
            records, feed = self._store.feed_zone_state(copy=True)
            kind, stream = "full", self._full(soa, records, feed)
        sender = _Signer(query, data)
        count = 0
        for message in sender.messages(stream):
            count += 1
            yield message
            await asyncio.sleep(0)
        self._stats.count(qtype, kind)
        logger.info(
            "zone transfer",
            extra={"type": qtype, "kind": kind, "serial": serial, "messages": count},
        )

    def _full(
        self,
        soa: bytes,
        records: list[tuple[bytes, dns.rdataset.Rdataset]],
        feed: Mapping[bytes, Packed | None],
    ) -> Iterator[bytes]:
        yield soa
        for key, rdataset in records[1:]:
            for rr in _rdataset_rrs(rdataset):
                yield key + rr
        for key, packed in feed.items():
            for rr in _rrs_of(packed):
                yield key + rr
        yield soa

    def _incremental(
        self,
        soa: bytes,
        client: int,
        before: FeedBefore,
        feed: Mapping[bytes, Packed | None],
    ) -> list[bytes]:
        """RFC 1995 section 4: current SOA, old SOA, deletions, current SOA, additions,
        current SOA; one condensed step from the client's serial to ours."""
        old_soa = bytearray(soa)
        # The serial is the first 4 bytes after the two names of the SOA rdata.
        tail = _soa_fixed_offset(soa)
        old_soa[tail : tail + 4] = client.to_bytes(4, "big")
        deleted: list[bytes] = []
        added: list[bytes] = []
        store = self._store
        for key, (was_feed, old) in before.items():
            old_rrs = _rrs_of(old) if was_feed else _rdataset_rrs(store.static_txt(key))
            new_rrs = (
                _rrs_of(feed.get(key)) if key in feed else _rdataset_rrs(store.static_txt(key))
            )
            old_set, new_set = set(old_rrs), set(new_rrs)
            deleted += [key + rr for rr in old_rrs if rr not in new_set]
            added += [key + rr for rr in new_rrs if rr not in old_set]
        return [soa, bytes(old_soa), *deleted, soa, *added, soa]

    def _refuse(self, qtype: str, result: str, why: str, peer: str) -> None:
        self._stats.count(qtype, result)
        logger.info("zone transfer refused", extra={"type": qtype, "why": why, "peer": peer})

    def _tsig_failure(self, data: bytes, error: int, why: str) -> bytes:
        """NOTAUTH with an unsigned TSIG record carrying the error (RFC 8945 section 5.2)."""
        self._stats.count("AXFR" if not is_ixfr(data) else "IXFR", "notauth")
        logger.info("zone transfer refused", extra={"tsig_error": _TSIG_ERRORS[error], "why": why})
        try:
            query = dns.message.from_wire(data, keyring=False)
        except (dns.exception.DNSException, ValueError, UnicodeError):
            return _header_only(data, dns.rcode.NOTAUTH)
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.NOTAUTH)
        wire = response.to_wire()
        if query.tsig is None:
            return wire
        request = query.tsig[0]
        rdata = dns.rdtypes.ANY.TSIG.TSIG(  # type: ignore[no-untyped-call]
            dns.rdataclass.ANY,
            dns.rdatatype.TSIG,
            request.algorithm,
            request.time_signed,
            request.fudge,
            b"",
            request.original_id,
            error,
            b"",
        )
        return _append_tsig(wire, query.tsig.name, rdata)


_TSIG_ERRORS = {16: "BADSIG", 17: "BADKEY", 18: "BADTIME"}


def is_ixfr(data: bytes) -> bool:
    """Whether a request's question asks IXFR."""
    end = question_end(data)
    return end > 0 and int.from_bytes(data[end - 4 : end - 2], "big") == TYPE_IXFR


def _soa_fixed_offset(rr: bytes) -> int:
    """Where the serial starts in one owner-included SOA record."""
    i = 0
    while rr[i]:
        i += rr[i] + 1
    i += 1 + 10  # the root label, then type, class, TTL, RDLENGTH
    for _ in range(2):  # MNAME, RNAME, written uncompressed
        while rr[i]:
            i += rr[i] + 1
        i += 1
    return i


def _client_serial(query: dns.message.Message) -> int | None:
    """The serial of the SOA in an IXFR request's authority section."""
    for rrset in query.authority:
        if rrset.rdtype == TYPE_SOA:
            for rdata in rrset:
                assert isinstance(rdata, dns.rdtypes.ANY.SOA.SOA)
                return int(rdata.serial)
    return None


def _header_only(data: bytes, rcode: int) -> bytes:
    if len(data) < 12:
        return b""
    flags = 0x8000 | (data[2] & 0x79) << 8 | (data[3] & 0x10) | rcode
    return data[:2] + flags.to_bytes(2, "big") + b"\x00" * 8


def _response(query: dns.message.Message, rcode: int) -> bytes:
    """A response with `rcode`, signed with the query's key when it had a verified one."""
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.Rcode(rcode))
    return response.to_wire()


def _append_tsig(wire: bytes, key_name: dns.name.Name, rdata: dns.rdtypes.ANY.TSIG.TSIG) -> bytes:
    rdata_wire = rdata.to_wire()
    assert rdata_wire is not None
    owner = key_name.to_wire()
    assert owner is not None
    record = owner + struct.pack("!HHIH", _TYPE_TSIG, _CLASS_ANY, 0, len(rdata_wire)) + rdata_wire
    arcount = int.from_bytes(wire[10:12], "big") + 1
    return wire[:10] + arcount.to_bytes(2, "big") + wire[12:] + record


class _Signer:
    """Frames records into response messages and signs each one, chaining the MACs."""

    def __init__(self, query: dns.message.Message, data: bytes) -> None:
        self._query = query
        end = question_end(data)
        self._question = data[12:end]
        self._id = data[:2]
        key = query.keyring
        assert isinstance(key, dns.tsig.Key)
        self._key = key
        request = query.tsig[0] if query.tsig is not None else None
        assert request is not None
        self._template = dns.rdtypes.ANY.TSIG.TSIG(  # type: ignore[no-untyped-call]
            dns.rdataclass.ANY,
            dns.rdatatype.TSIG,
            key.algorithm,
            0,
            _FUDGE,
            b"",
            query.id,
            0,
            b"",
        )
        self._request_mac = query.mac
        self._ctx: object | None = None

    def messages(self, records: Iterator[bytes]) -> Iterator[bytes]:
        """Signed messages of at most about 16 KB each (one record more when one is larger)."""
        first = True
        batch: list[bytes] = []
        size = 0
        for rr in records:
            if batch and size + len(rr) > _MESSAGE_BYTES:
                yield self._message(batch, first)
                first, batch, size = False, [], 0
            batch.append(rr)
            size += len(rr)
        if batch or first:
            yield self._message(batch, first)

    def _message(self, records: list[bytes], first: bool) -> bytes:
        flags = 0x8400  # QR, AA, opcode QUERY, NOERROR
        qd = 1 if first else 0
        header = self._id + struct.pack("!HHHHH", flags, qd, len(records), 0, 0)
        wire = header + (self._question if first else b"") + b"".join(records)
        tsig, ctx = dns.tsig.sign(  # type: ignore[no-untyped-call]
            wire,
            self._key,
            self._template,
            int(time.time()),
            self._request_mac if first else None,
            self._ctx,
            True,
        )
        self._ctx = ctx
        return _append_tsig(wire, self._key.name, tsig)
