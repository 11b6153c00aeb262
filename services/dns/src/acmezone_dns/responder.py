"""Turns one DNS query message into its response bytes: a fast path for ordinary questions and a
slow, thorough path for everything else.

The fast path handles a standard query (opcode QUERY, one question, class IN, no EDNS or a plain
EDNS(0) OPT) with a dict lookup on the lower-cased question bytes and a splice of the pre-packed
answer behind the query's own ID, RD/CD bits and question (see `wire`). It costs about a
microsecond; parsing and packing with a DNS library costs about 70. Anything the fast path does
not recognise exactly goes to the slow path, which parses with dnslib and answers every case
correctly: FORMERR, NOTIMP, BADVERS, REFUSED for AXFR/IXFR and foreign classes, truncation
(TC) when an answer does not fit the UDP size. Both paths take their answers from
`ZoneView.resolve`, so they agree record for record (only where a name is compressed may
differ: a name-independent NXDOMAIN body spells the zone apex out).

Over UDP the C loop of `_native_batch.c` takes the same shortcuts (`answer` and
`_not_prepacked`) from `fast_tables()` before Python sees a datagram: a change to either shortcut
must be made there too. tests/dns/test_native_batch.py checks, byte for byte and counter for
counter, that the two agree and that C hands Python exactly what needs the slow paths.

DNS COOKIE (RFC 7873, server cookies per RFC 9018, `cookies`) is answered on every path for the
peer `answer` was told of. The commonest shapes, a lone COOKIE option holding a client cookie
alone or with a 16-byte server cookie, take `_cookie_shortcut` (and the same shortcut in C);
any other OPT with options is read by `_plain_opt` or `_slow`, which answer a COOKIE among
other options the same way, FORMERR a malformed one and ignore options they do not know.

Nothing here raises on bad input: a message the slow path cannot parse gets FORMERR, and one too
short to carry an ID, or that is itself a response, gets no answer at all.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import NamedTuple

import dnslib

from acmezone_dns.cookies import (
    CookieJar,
    MalformedCookieError,
    client_ip,
    find_cookie,
    load_secret,
)
from acmezone_dns.metrics import (
    QTYPE_INDEX,
    QTYPE_OTHER,
    RCODE_SLOTS,
    TCP_OFFSET,
    QueryStats,
    qtype_index,
    slot,
)
from acmezone_dns.store import Snapshot, ZoneStore
from acmezone_dns.wire import (
    AA,
    TC,
    Packed,
    folds_with_case,
    header_only,
    opt_record,
    pack_answer,
    splice,
)
from acmezone_dns.zone import BADVERS, FORMERR, NOTIMP, REFUSED

logger = logging.getLogger(__name__)

_ONE_QUESTION = b"\x00\x01\x00\x00\x00\x00"  # QDCOUNT 1, ANCOUNT 0, NSCOUNT 0
_PLAIN_SECTIONS = _ONE_QUESTION + b"\x00\x00"  # ... and ARCOUNT 0
_OPT_SECTIONS = _ONE_QUESTION + b"\x00\x01"  # ... and ARCOUNT 1
_NO_ADDITIONAL = b"\x00\x00"
_ONE_ADDITIONAL = b"\x00\x01"
_OPT_TYPE = b"\x00\x29"
_CLASS_IN = b"\x00\x01"
_OPT_LEN = 11
_MIN_QUERY = 17  # header, root name, type, class
_COOKIE_SHAPES = (
    (12, b"\x00\x0c\x00\x0a\x00\x08"),  # OPT RDLEN 12: COOKIE of a client cookie alone
    (28, b"\x00\x1c\x00\x0a\x00\x18"),  # OPT RDLEN 28: client and 16-byte server cookie
)
_COOKIE_REPLY_HEAD = b"\x00\x1c\x00\x0a\x00\x18"  # RDLEN 28, COOKIE, 24 bytes
_PLAIN_UDP_SIZE = 512
_MAX_NAME = 255  # bytes of a wire name, root label included (RFC 1035 section 3.1)
_TCP_SIZE = 65535

_TYPE_OPT, _TYPE_TKEY, _TYPE_TSIG = 41, 249, 250
_TYPE_IXFR, _TYPE_AXFR, _TYPE_MAILB, _TYPE_MAILA = 251, 252, 253, 254
_TYPE_ANY = 255
_CLASS_ANY = 255
_SLOW_QTYPES = frozenset(
    {_TYPE_OPT, _TYPE_TKEY, _TYPE_TSIG, _TYPE_IXFR, _TYPE_AXFR, _TYPE_MAILB, _TYPE_MAILA, _TYPE_ANY}
)
"""Types never answered from `defaults` or `fallbacks`: meta types, and ANY, which feed names
do not pre-pack (store module docstring) and whose answer is the name's data, not NODATA."""


def question_end(data: bytes) -> int:
    """The offset just past the first question (name, type, class), or -1 when the name is not a
    plain sequence of labels of at most 63 bytes, at most 255 bytes in all (RFC 1035 section
    3.1), ending inside the message (compression pointers can only point backwards into the
    header there, so they are malformed too)."""
    i = 12
    n = len(data)
    while i < n:
        length = data[i]
        if length == 0:
            if i + 1 - 12 > _MAX_NAME:
                return -1
            return i + 5 if i + 5 <= n else -1
        if length > 63:
            return -1
        i += length + 1
    return -1


class FastTables(NamedTuple):
    """Everything the C hot loop (`_native_batch.c`) reads, in the order it reads it: the
    snapshot's three answer tables (the sharded two as their shards) and REFUSED answer, the
    remembered option-less OPT records with their UDP size limits, the query counters, how a
    counter slot is made (`metrics.slot`), the server cookie secret and current time
    (`cookies`), and the signed answers DO=1 queries take when DNSSEC signing is on (None when
    off)."""

    answers: tuple[dict[bytes, Packed], ...]
    edns: dict[bytes, tuple[bytes, int]]
    counts: list[int]
    defaults: tuple[dict[bytes, Packed], ...]
    fallbacks: dict[bytes, Packed]
    refused: Packed
    qtype_index: dict[int, int]
    qtype_other: int
    rcode_slots: int
    cookie_secret: bytes
    cookie_time: int
    signed: tuple[dict[bytes, Packed], ...] | None


class Responder:
    """Answers DNS messages from the store's current snapshot; counts into `stats`."""

    def __init__(
        self,
        store: ZoneStore,
        stats: QueryStats,
        *,
        edns_udp_size: int,
        cookies: CookieJar | None = None,
    ) -> None:
        """`cookies` makes the server cookies; None: a jar with a secret of this process's own."""
        self._store = store
        self.cookies = cookies or CookieJar(load_secret(None, None))
        """Makes and checks server cookies; replaceable (a test fixes its clock)."""
        self._peer: Callable[[], str] | None = None
        self._stats = stats
        self._counts = stats.counts
        self._udp_size = edns_udp_size
        self._opt = opt_record(edns_udp_size, do=False)
        self._opt_do = opt_record(edns_udp_size, do=True)
        self._opt_co = opt_record(edns_udp_size, do=True, compact_ok=True)
        self._signer = store.signer
        self._edns: dict[bytes, tuple[bytes, int]] = {}
        self._fast_tables: FastTables | None = None
        self._fast_tables_of: Snapshot | None = None
        self.signed_query = False
        """True right after `answer` answered a query carrying a TSIG record: the servers read
        it at once (same event-loop turn) and have the answer signed by the registry, which
        holds the keys. Only the slow path sets it: the fast path never sees a TSIG record."""

    def fast_tables(self) -> FastTables:
        """What the C hot loop (`_native_batch.c`) needs to answer plain UDP queries as
        `answer` does, for the current snapshot. Read once per batch: a snapshot swap happens
        between batches, never during one."""
        snapshot = self._store.snapshot
        tables = self._fast_tables
        now = self.cookies.now()
        if tables is None or self._fast_tables_of is not snapshot or tables.cookie_time != now:
            self._fast_tables_of = snapshot
            fallbacks = snapshot.fallbacks
            tables = self._fast_tables = FastTables(
                snapshot.answers.shards,
                self._edns,
                self._counts,
                snapshot.defaults.shards,
                fallbacks if isinstance(fallbacks, dict) else dict(fallbacks),
                snapshot.refused,
                QTYPE_INDEX,
                QTYPE_OTHER,
                RCODE_SLOTS,
                self.cookies.secret,
                now,
                snapshot.signed.shards if snapshot.signed is not None else None,
            )
        return tables

    def answer(self, data: bytes, tcp: bool, peer: Callable[[], str] | None = None) -> bytes | None:
        """The hot path: pre-packed answers for plain queries, the slow path for the rest.
        `peer` tells the sender's IP address when a server cookie has to be made for it (only
        the paths past the shortcuts ask).

        The two commonest shapes are tried first without locating the question: one question
        and nothing else (the question runs to the end), or one question and an option-less
        OPT record this responder has seen before (the question ends 11 bytes before the end).
        A hit in the pre-packed table proves the question is well formed, since every key is a
        valid name, type and class; anything else, a miss included, takes `_answer_located`.
        """
        snapshot = self._store.snapshot
        sections = data[4:12]
        if sections == _PLAIN_SECTIONS and not data[2] & 0xF8:
            question = data[12:]
            packed = snapshot.answers.get(question.lower())
            if packed is None:
                # The question runs to the end; `_not_prepacked` checks it is well formed.
                self._peer = peer
                limit = _TCP_SIZE if tcp else _PLAIN_UDP_SIZE
                return self._not_prepacked(data, snapshot, tcp, len(data), None, limit)
            if tcp or len(data) + packed.size <= _PLAIN_UDP_SIZE:
                self._counts[packed.stat + (TCP_OFFSET if tcp else 0)] += 1
                return b"".join(
                    (
                        data[:2],
                        packed.heads[(data[2] & 1) | ((data[3] & 0x10) >> 3)],
                        question,
                        packed.body,
                    )
                )
        elif sections == _OPT_SECTIONS and not data[2] & 0xF8:
            edns = self._edns.get(data[-_OPT_LEN:])
            if edns is not None:
                if edns[0][7] & 0x80 and self._signer is not None:
                    limit = _TCP_SIZE if tcp else edns[1]
                    return self._signed_fast(
                        data, snapshot, tcp, len(data) - _OPT_LEN, edns[0], limit
                    )
                question = data[12:-_OPT_LEN]
                packed = snapshot.answers.get(question.lower())
                limit = _TCP_SIZE if tcp else edns[1]
                if packed is None:
                    self._peer = peer
                    qend = len(data) - _OPT_LEN
                    return self._not_prepacked(data, snapshot, tcp, qend, edns[0], limit)
                if len(data) + packed.size <= limit:
                    self._counts[packed.stat + (TCP_OFFSET if tcp else 0)] += 1
                    return b"".join(
                        (
                            data[:2],
                            packed.heads_edns[(data[2] & 1) | ((data[3] & 0x10) >> 3)],
                            question,
                            packed.body,
                            edns[0],
                        )
                    )
            else:
                return self._cookie_shortcut(data, snapshot, tcp, peer)
        self._peer = peer
        return self._answer_located(data, snapshot, tcp)

    def _cookie_shortcut(
        self, data: bytes, snapshot: Snapshot, tcp: bool, peer: Callable[[], str] | None
    ) -> bytes | None:
        """A query whose OPT's only option is a COOKIE (a client cookie, alone or with a
        16-byte server cookie; tried in that order) and whose option-less OPT is remembered:
        answered like an option-less one, with our OPT carrying a fresh server cookie. The C
        loop takes the same shortcut (`cookie_shape`); anything else goes on as before."""
        self._peer = peer
        n = len(data)
        for size, shape in _COOKIE_SHAPES:
            qend = n - size - _OPT_LEN
            if qend >= _MIN_QUERY and data[qend + 9 : qend + 15] == shape:
                break
        else:
            return self._answer_located(data, snapshot, tcp)
        edns = self._edns.get(data[qend : qend + 9] + _NO_ADDITIONAL)
        if edns is None or len(edns[0]) != _OPT_LEN:
            return self._answer_located(data, snapshot, tcp)
        client = data[n - size + 4 : n - size + 12]
        server = self.cookies.server_cookie(
            client, client_ip(peer() if peer is not None else ""), self.cookies.now()
        )
        opt = edns[0][:9] + _COOKIE_REPLY_HEAD + client + server
        limit = _TCP_SIZE if tcp else edns[1]
        if opt[7] & 0x80 and self._signer is not None:
            return self._signed_fast(data, snapshot, tcp, qend, opt, limit)
        packed = snapshot.answers.get(data[12:qend].lower())
        if packed is None:
            return self._not_prepacked(data, snapshot, tcp, qend, opt, limit)
        if qend + packed.size + len(opt) > limit:
            return self._answer_located(data, snapshot, tcp)
        self._counts[packed.stat + (TCP_OFFSET if tcp else 0)] += 1
        return splice(packed, data, qend, opt)

    def _answer_located(self, data: bytes, snapshot: Snapshot, tcp: bool) -> bytes | None:
        """Plain queries of any shape the fast checks in `answer` did not settle: finds where
        the question ends, then answers from the pre-packed tables or the slow path."""
        n = len(data)
        if n < 17 or data[2] & 0xF8 or data[4:10] != _ONE_QUESTION:
            return self._slow(data, snapshot, tcp)
        end = data.find(0, 12)
        qend = end + 5
        if end < 0 or qend > n:
            return self._slow(data, snapshot, tcp)
        additional = data[10:12]
        if additional == _NO_ADDITIONAL:
            if qend != n:
                return self._slow(data, snapshot, tcp)
            opt = None
            limit = _TCP_SIZE if tcp else _PLAIN_UDP_SIZE
        elif additional == _ONE_ADDITIONAL:
            tail = data[qend:]
            edns = self._edns.get(tail)
            if edns is None:
                edns = self._plain_opt(tail)
                if edns is None:
                    return self._slow(data, snapshot, tcp)
            opt, limit = edns
            if tcp:
                limit = _TCP_SIZE
        else:
            return self._slow(data, snapshot, tcp)
        if opt is not None and opt[7] & 0x80 and self._signer is not None:
            return self._signed_fast(data, snapshot, tcp, qend, opt, limit)
        # Lower-casing the type bytes too is safe: no pre-packed key holds a type that
        # lower-casing could produce (wire.folds_with_case).
        packed = snapshot.answers.get(data[12:qend].lower())
        if packed is None:
            return self._not_prepacked(data, snapshot, tcp, qend, opt, limit)
        if qend + packed.size + (len(opt) if opt else 0) > limit:
            return self._slow(data, snapshot, tcp)
        self._counts[packed.stat + (TCP_OFFSET if tcp else 0)] += 1
        return splice(packed, data, qend, opt)

    def _plain_opt(self, tail: bytes) -> tuple[bytes, int] | None:
        """Our OPT record and the UDP size limit for a query's additional section when it is
        exactly one EDNS(0) OPT at the root (a COOKIE answered, other options ignored, as RFC
        6891 allows); None otherwise, and for a malformed COOKIE (`_slow` says FORMERR).
        Option-less OPTs are remembered: clients use a handful of sizes, and the cache is
        bounded by the 2^16 sizes times the DO bit."""
        if (
            len(tail) < _OPT_LEN
            or tail[0]
            or tail[1:3] != _OPT_TYPE
            or tail[6]
            or _OPT_LEN + int.from_bytes(tail[9:11], "big") != len(tail)
        ):
            return None
        opt = self._opt_do if tail[7] & 0x80 else self._opt
        limit = min(max(int.from_bytes(tail[3:5], "big"), _PLAIN_UDP_SIZE), self._udp_size)
        if len(tail) > _OPT_LEN:
            if not tail[5] and not tail[7] & 0x7F and not tail[8]:
                # Remembered under its option-less form, for `_cookie_shortcut` (and C's):
                # a resolver that sends a cookie with every query never sends that form.
                self._edns.setdefault(tail[:9] + _NO_ADDITIONAL, (opt, limit))
            try:
                cookie = self._cookie_opt(tail[_OPT_LEN:], bool(tail[7] & 0x80))
            except MalformedCookieError:
                return None
            return cookie or opt, limit
        if not tail[5] and not tail[7] & 0x7F and not tail[8]:
            self._edns[tail] = (opt, limit)
        return opt, limit

    def _signed_fast(
        self, data: bytes, snapshot: Snapshot, tcp: bool, qend: int, opt: bytes, limit: int
    ) -> bytes | None:
        """A DO=1 query while signing is on: the signed answer when one is held (as the C
        loop answers it), else the slow path, which signs."""
        signed = snapshot.signed
        packed = signed.get(data[12:qend].lower()) if signed is not None else None
        if packed is None or qend + packed.size + len(opt) > limit:
            return self._slow(data, snapshot, tcp)
        self._counts[packed.stat + (TCP_OFFSET if tcp else 0)] += 1
        return splice(packed, data, qend, opt)

    def _cookie_opt(self, options: bytes, do: bool, compact_ok: bool = False) -> bytes | None:
        """Our OPT record answering a COOKIE among `options`, with a server cookie for the
        peer `answer` was given; None when there is no COOKIE. `MalformedCookieError` when the
        options are malformed."""
        cookie = find_cookie(options)
        if cookie is None:
            return None
        peer = self._peer
        option = self.cookies.option(cookie, peer() if peer is not None else "")
        return opt_record(self._udp_size, do=do, compact_ok=compact_ok, options=option)

    def _not_prepacked(
        self,
        data: bytes,
        snapshot: Snapshot,
        tcp: bool,
        qend: int,
        opt: bytes | None,
        limit: int,
    ) -> bytes | None:
        """A plain query with no exact pre-packed answer: a type the name lacks (NODATA or
        the CNAME chain), a name that does not exist, or one outside our zones."""
        qtype = int.from_bytes(data[qend - 4 : qend - 2], "big")
        if data[qend - 2 : qend] != _CLASS_IN or qtype in _SLOW_QTYPES:
            return self._slow(data, snapshot, tcp)
        name = data[12 : qend - 4].lower()
        if len(name) > _MAX_NAME:
            return self._slow(data, snapshot, tcp)
        found = snapshot.defaults.get(name)
        if found is not None:
            if folds_with_case(qtype):
                # The name exists and may hold this type: it was left out of the table.
                return self._slow(data, snapshot, tcp)
        else:
            # Walk the labels: this checks that the name is labels of at most 63 bytes ending
            # in the root label exactly at its last byte (a zero byte inside a label is data;
            # a root label before the end is malformed here), and finds the closest enclosing
            # zone on the way.
            fallbacks = snapshot.fallbacks
            last = len(name) - 1
            i = 0
            while i < last:
                length = name[i]
                if length > 63 or not length:
                    return self._slow(data, snapshot, tcp)
                if found is None:
                    found = fallbacks.get(name[i:])
                i += length + 1
            if i != last or name[last]:
                return self._slow(data, snapshot, tcp)
        packed = snapshot.refused if found is None else found
        if qend + packed.size + (len(opt) if opt else 0) > limit:
            return self._slow(data, snapshot, tcp)
        self._count(packed.stat + QTYPE_INDEX.get(qtype, QTYPE_OTHER) * RCODE_SLOTS, tcp)
        return splice(packed, data, qend, opt)

    def _count(self, counter_slot: int, tcp: bool) -> None:
        self._counts[counter_slot + (TCP_OFFSET if tcp else 0)] += 1

    def _slow(self, data: bytes, snapshot: Snapshot, tcp: bool) -> bytes | None:
        """Everything that is not a plain query, parsed with dnslib and answered to the letter."""
        if len(data) < 12 or data[2] & 0x80:
            # No room for an ID, or a response: answering could start a packet loop.
            self._stats.dropped += 1
            return None
        if (data[2] >> 3) & 0xF:
            self._count(slot(QTYPE_OTHER, NOTIMP), tcp)
            return header_only(data, NOTIMP)
        try:
            record = dnslib.DNSRecord.parse(data)
        except Exception:  # dnslib raises a handful of types on garbage; all mean FORMERR
            return self._formerr(data, tcp)
        header = record.header
        qend = question_end(data)
        if header.q != 1 or header.a or header.auth or qend < 0:
            return self._formerr(data, tcp)
        opts = [rr for rr in record.ar if rr.rtype == _TYPE_OPT]
        opt: bytes | None = None
        limit = _TCP_SIZE if tcp else _PLAIN_UDP_SIZE
        do = compact_ok = False
        if opts:
            if len(opts) > 1 or str(opts[0].rname) not in ("", "."):
                return self._formerr(data, tcp)
            ttl = int(opts[0].ttl)
            do = bool(ttl & 0x8000)
            # RFC 9824 section 4: CO (Compact Answers OK) is echoed when we sign.
            compact_ok = do and bool(ttl & 0x4000) and self._signer is not None
            try:
                cookie = self._cookie_opt(_options_of(opts[0]), do, compact_ok)
            except MalformedCookieError:
                return self._formerr(data, tcp)
            if (ttl >> 16) & 0xFF:
                # RFC 6891 section 6.1.3: BADVERS, with our highest version (0) in the OPT
                # (and the cookie, as BIND sends it).
                self._count(slot(QTYPE_OTHER, BADVERS), tcp)
                cookie_option = cookie[_OPT_LEN:] if cookie else b""
                return splice(
                    Packed(0, 0, 0, 0, 0, b""),
                    data,
                    qend,
                    opt_record(
                        self._udp_size, do=do, ext_rcode=BADVERS >> 4, options=cookie_option
                    ),
                )
            opt = cookie or (self._opt_co if compact_ok else self._opt_do if do else self._opt)
            if not tcp:
                limit = min(max(int(opts[0].rclass), _PLAIN_UDP_SIZE), self._udp_size)
        qtype = int.from_bytes(data[qend - 4 : qend - 2], "big")
        qclass = int.from_bytes(data[qend - 2 : qend], "big")
        qtype_idx = qtype_index(qtype)
        if qtype in (_TYPE_OPT, _TYPE_TKEY, _TYPE_TSIG):
            return self._formerr(data, tcp, qtype_idx)
        if qtype in (_TYPE_MAILA, _TYPE_MAILB):
            packed = Packed(0, NOTIMP, 0, 0, 0, b"")
        elif qclass not in (1, _CLASS_ANY) or qtype in (_TYPE_AXFR, _TYPE_IXFR):
            # Zone transfers are refused (RFC 5936 section 4.2); so are other classes.
            packed = Packed(0, REFUSED, 0, 0, 0, b"")
        else:
            qname = data[12 : qend - 4].lower()
            if do and self._signer is not None:
                packed = self._signer.respond(
                    snapshot.view,
                    qname,
                    qtype,
                    compact_ok=compact_ok,
                    tcp=tcp,
                    stat=slot(qtype_idx, 0),
                )
                authoritative = packed.rcode in (0, 3)
            else:
                resolution = snapshot.view.resolve(qname, qtype)
                authoritative = resolution.authoritative
                packed = pack_answer(
                    resolution.rcode,
                    authoritative,
                    resolution.answer,
                    resolution.authority,
                    resolution.additional,
                    qname=qname,
                )
            if qend + packed.size + (len(opt) if opt else 0) > limit:
                # RFC 2181 section 9: set TC and send what fits; we send no records at all,
                # and the resolver asks again over TCP.
                flags = TC | (AA if authoritative else 0)
                packed = Packed(flags, packed.rcode, 0, 0, 0, b"")
        self._count(slot(qtype_idx, packed.rcode), tcp)
        self.signed_query = bool(record.ar) and record.ar[-1].rtype == _TYPE_TSIG
        return splice(packed, data, qend, opt)

    def _formerr(self, data: bytes, tcp: bool, qtype_idx: int = QTYPE_OTHER) -> bytes:
        self._count(slot(qtype_idx, FORMERR), tcp)
        return header_only(data, FORMERR)


def _options_of(opt: dnslib.RR) -> bytes:
    """The EDNS options of an OPT record dnslib parsed, encoded again (code, length, data)."""
    return b"".join(
        struct.pack("!HH", option.code, len(option.data)) + option.data for option in opt.rdata
    )
