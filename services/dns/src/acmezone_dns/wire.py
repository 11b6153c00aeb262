"""DNS wire encoding of answers as position-independent, pre-packed bytes.

A `Packed` answer holds everything of a response except the parts that come from the query: the
ID, the RD and CD bits, and the question section. The question always sits at offset 12, so the
only compression pointers a body contains point into the question (the owner name equal to the
question name, or a label suffix of it); every other name is written in full. Splicing the
query's own question bytes in front of the body therefore keeps the pointers valid and echoes the
question exactly as received, mixed 0x20 case included. Record data comes from dnspython's
uncompressed `to_wire`, so fast and slow paths send identical bytes.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable, Sequence

import dns.rdataset

# Header flag bits (RFC 1035 section 4.1.1), as one 16-bit word.
QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
CD = 0x0010

TYPE_OPT = 41
PTR_QUESTION = 0xC00C  # a compression pointer to the question name at offset 12

_RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
_TXT_AT_QUESTION = struct.Struct("!HHHIH")  # pointer to the question name, then _RR_FIXED
_RR_AT_QUESTION = _TXT_AT_QUESTION.size
_CLASS_IN = 1
_TYPE_TXT = 16
_MAX_CHARACTER_STRING = 255

Section = Sequence[tuple[bytes, dns.rdataset.Rdataset]]
"""(owner name as lower-case wire bytes, rdataset) pairs, in section order."""


class Packed:
    """A response minus ID, RD/CD and question: ready to splice behind any matching query.

    `heads[i]` are the ten header bytes after the ID (flags, then QD..AR counts) for
    `i = RD | CD << 1` copied from the query, and `heads_edns[i]` the same with the OPT record
    counted in AR; QD is always 1. `size` is the length of the body, `rcode` the header rcode and
    `stat` the metrics slot. Flags and counts are joined ahead of time: a response is then four
    pieces (ID, head, question, body), and each piece less is measurable on the hot path.
    """

    __slots__ = ("body", "heads", "heads_edns", "rcode", "size", "stat")

    def __init__(self, flags: int, rcode: int, an: int, ns: int, ar: int, body: bytes) -> None:
        self.heads, self.heads_edns = _heads(QR | flags | rcode, an, ns, ar)
        self.rcode = rcode
        self.body = body
        self.size = len(body)
        self.stat = 0

    @classmethod
    def made(
        cls, heads: tuple[bytes, ...], heads_edns: tuple[bytes, ...], body: bytes, stat: int
    ) -> Packed:
        """A NOERROR answer from header variants already made (a re-list makes a million)."""
        packed = cls.__new__(cls)
        packed.heads = heads
        packed.heads_edns = heads_edns
        packed.rcode = 0
        packed.body = body
        packed.size = len(body)
        packed.stat = stat
        return packed

    def __repr__(self) -> str:
        return f"Packed(rcode={self.rcode}, size={self.size})"


@functools.cache
def _heads(base: int, an: int, ns: int, ar: int) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """The header variants of one flags/counts combination, made once and shared: a zone holds
    a few dozen distinct ones, and a million names each holding their own eight small bytes
    objects cost about 1.4 KB a name."""
    variants = [base, base | RD, base | CD, base | RD | CD]
    counts = struct.pack("!HHHH", 1, an, ns, ar)
    counts_edns = struct.pack("!HHHH", 1, an, ns, ar + 1)
    return (
        tuple(v.to_bytes(2, "big") + counts for v in variants),
        tuple(v.to_bytes(2, "big") + counts_edns for v in variants),
    )


def answer_count(packed: Packed) -> int:
    """The number of answer records a packed response carries (its header's ANCOUNT)."""
    return int.from_bytes(packed.heads[0][4:6], "big")


def txt_rdata(value: str) -> bytes:
    """The TXT RDATA of one logical value: its UTF-8 bytes as 255-byte character-strings (one
    empty string for an empty value), as dnspython writes it."""
    raw = value.encode("utf-8")
    if len(raw) <= _MAX_CHARACTER_STRING:
        return bytes((len(raw),)) + raw
    return b"".join(
        bytes((len(chunk),)) + chunk
        for chunk in (
            raw[i : i + _MAX_CHARACTER_STRING] for i in range(0, len(raw), _MAX_CHARACTER_STRING)
        )
    )


def txt_answer(values: Iterable[str], ttl: int) -> tuple[bytes, int]:
    """The answer section of a TXT response for the question's own name: each distinct value
    once, in order (an RRset is a set), the owner a pointer to the question. Byte for byte
    what `encode_section` makes of the same RRset, without building one: this runs once per
    name on a re-list of a million names. Returns the bytes and the record count."""
    values = list(values)
    if len(values) == 1:  # the commonest case, without the general path's temporaries
        rdata = txt_rdata(values[0])
        return _TXT_AT_QUESTION.pack(PTR_QUESTION, _TYPE_TXT, _CLASS_IN, ttl, len(rdata)) + rdata, 1
    rdatas = dict.fromkeys(map(txt_rdata, values))
    body = b"".join(
        _TXT_AT_QUESTION.pack(PTR_QUESTION, _TYPE_TXT, _CLASS_IN, ttl, len(rdata)) + rdata
        for rdata in rdatas
    )
    return body, len(rdatas)


def answer_rdatas(body: bytes) -> tuple[int, list[bytes]]:
    """The TTL and each record's RDATA of a packed answer whose records are all owned by a
    pointer to the question (a feed name's TXT answer, as `txt_answer` makes it)."""
    rdatas = []
    ttl = 0
    i = 0
    while i < len(body):
        ttl = int.from_bytes(body[i + 6 : i + 10], "big")
        length = int.from_bytes(body[i + 10 : i + 12], "big")
        rdatas.append(body[i + _RR_AT_QUESTION : i + _RR_AT_QUESTION + length])
        i += _RR_AT_QUESTION + length
    return ttl, rdatas


def folds_with_case(qtype: int) -> bool:
    """Whether either byte of a query type is an ASCII letter, so that lower-casing a question
    (name and type together, as the hot path does) can change it: HTTPS (65) is one. Answers
    to such types are never pre-packed, which keeps every pre-packed key unchanged by
    lower-casing; queries for them take the slow path."""
    return 0x61 <= ((qtype >> 8) | 0x20) <= 0x7A or 0x61 <= ((qtype & 0xFF) | 0x20) <= 0x7A


def label_offsets(name_wire: bytes) -> list[int]:
    """Offsets of every label of an uncompressed wire name (the root's too)."""
    offsets = []
    i = 0
    while True:
        offsets.append(i)
        length = name_wire[i]
        if length == 0:
            return offsets
        i += length + 1


def name_suffixes(name_wire: bytes) -> list[bytes]:
    """The name and each of its ancestors, longest first, as wire bytes (root excluded)."""
    return [name_wire[i:] for i in label_offsets(name_wire)[:-1]]


def encode_owner(owner: bytes, qname: bytes | None) -> bytes:
    """An owner name, as a pointer into the question when it is the question name or a suffix of
    it, else in full. With `qname` None nothing is compressed (a name-independent body)."""
    if qname is not None:
        if owner == qname:
            return PTR_QUESTION.to_bytes(2, "big")
        if len(owner) < len(qname) and qname.endswith(owner):
            offset = len(qname) - len(owner)
            if offset in label_offsets(qname):
                return (0xC000 | (12 + offset)).to_bytes(2, "big")
    return owner


def encode_section(
    section: Iterable[tuple[bytes, dns.rdataset.Rdataset]], qname: bytes | None
) -> tuple[bytes, int]:
    """Encode RRsets; returns the bytes and the number of records."""
    parts: list[bytes] = []
    count = 0
    for owner, rdataset in section:
        name = encode_owner(owner, qname)
        for rdata in rdataset:
            data = rdata.to_wire()
            parts.append(name)
            parts.append(_RR_FIXED.pack(rdataset.rdtype, _CLASS_IN, rdataset.ttl, len(data)))
            parts.append(data)
            count += 1
    return b"".join(parts), count


def pack_answer(
    rcode: int,
    authoritative: bool,
    answer: Section,
    authority: Section,
    additional: Section,
    qname: bytes | None,
) -> Packed:
    """Pre-pack a response for question name `qname` (lower-case wire), or a name-independent
    one when `qname` is None."""
    an_bytes, an = encode_section(answer, qname)
    ns_bytes, ns = encode_section(authority, qname)
    ar_bytes, ar = encode_section(additional, qname)
    return Packed(AA if authoritative else 0, rcode, an, ns, ar, an_bytes + ns_bytes + ar_bytes)


def opt_record(
    udp_size: int, do: bool, ext_rcode: int = 0, options: bytes = b"", *, compact_ok: bool = False
) -> bytes:
    """Our EDNS(0) OPT pseudo-record (RFC 6891): version 0, DO echoed (and CO, RFC 9824, when
    we sign), and `options` (already encoded: code, length, data), none but a COOKIE ever."""
    ttl = (ext_rcode << 24) | (0x8000 if do else 0) | (0x4000 if compact_ok else 0)
    return b"\x00" + _RR_FIXED.pack(TYPE_OPT, udp_size, ttl, len(options)) + options


def splice(packed: Packed, query: bytes, question_end: int, opt: bytes | None) -> bytes:
    """The full response to `query`: its ID, RD/CD bits and question, then the packed body."""
    flag_index = (query[2] & 1) | ((query[3] & 0x10) >> 3)
    if opt is None:
        return b"".join((query[:2], packed.heads[flag_index], query[12:question_end], packed.body))
    return b"".join(
        (query[:2], packed.heads_edns[flag_index], query[12:question_end], packed.body, opt)
    )


def header_only(query: bytes, rcode: int, *, with_question_end: int | None = None) -> bytes:
    """A response carrying only a header (and the question when its end is given): FORMERR,
    NOTIMP and friends. The opcode and RD are copied from the query."""
    flags = QR | ((query[2] & 0x79) << 8) | (rcode & 0xF)
    if with_question_end is None:
        return query[:2] + struct.pack("!HHHHH", flags, 0, 0, 0, 0)
    return query[:2] + struct.pack("!HHHHH", flags, 1, 0, 0, 0) + query[12:with_question_end]
