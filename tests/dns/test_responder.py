"""Protocol behaviour, one test per rule of issue 3, with real UDP/TCP packets against a running
server and answers parsed by dnspython."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest

from acmezone_dns.app import DnsApp
from acmezone_dns.store import TxtChange
from tests.dns.conftest import (
    BIG_VALUES,
    CAA,
    LONG_VALUE,
    SNAPSHOT,
    ZONE,
    query_tcp,
    query_udp,
    raw_udp,
    running_dns,
    v4,
)


def txt_strings(message: dns.message.Message) -> list[tuple[bytes, ...]]:
    """The TXT records of the answer section as tuples of character-strings."""
    return [
        tuple(rd.strings)
        for rrset in message.answer
        if rrset.rdtype == dns.rdatatype.TXT
        for rd in rrset
    ]


async def test_txt_answer_is_authoritative_with_one_record_per_value(dns_app: DnsApp) -> None:
    reply = await query_udp(v4(dns_app), "one.acme.example.test", "TXT")
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AA
    assert reply.flags & dns.flags.QR
    assert not reply.flags & dns.flags.RA
    assert sorted(txt_strings(reply)) == [(b"value-one-newest",), (b"value-one-older",)]
    assert reply.answer[0].ttl == 1  # TXT TTL default: a fresh value is never cached long


async def test_long_value_is_split_into_255_byte_character_strings(dns_app: DnsApp) -> None:
    reply = await query_udp(v4(dns_app), "long.acme.example.test", "TXT")
    (strings,) = txt_strings(reply)
    assert [len(s) for s in strings] == [255, 45]
    assert b"".join(strings).decode() == LONG_VALUE


async def test_nxdomain_carries_soa_with_negative_ttl(dns_app: DnsApp) -> None:
    reply = await query_udp(v4(dns_app), "nobody.acme.example.test", "TXT")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.flags & dns.flags.AA
    assert not reply.answer
    (soa,) = reply.authority
    assert soa.rdtype == dns.rdatatype.SOA
    assert soa.name == dns.name.from_text("acme.example.test")
    assert soa.ttl == 60  # SOA minimum default: NXDOMAIN is cached one minute at most


@pytest.mark.parametrize(
    ("name", "rdtype"),
    [
        ("one.acme.example.test", "A"),  # exists with TXT only
        ("empty.acme.example.test", "TXT"),  # a registration with no value yet
        ("sub.acme.example.test", "TXT"),  # empty non-terminal from the feed
        ("b.c.example.test", "A"),  # empty non-terminal from a zone file
        ("acme.example.test", "AAAA"),  # apex
    ],
)
async def test_nodata_is_noerror_with_soa(dns_app: DnsApp, name: str, rdtype: str) -> None:
    reply = await query_udp(v4(dns_app), name, rdtype)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AA
    assert not reply.answer
    assert [rrset.rdtype for rrset in reply.authority] == [dns.rdatatype.SOA]


async def test_names_outside_our_zones_are_refused(dns_app: DnsApp) -> None:
    for name in ("example.com", "test", "acme.example.test.evil.com"):
        reply = await query_udp(v4(dns_app), name, "A")
        assert reply.rcode() == dns.rcode.REFUSED
        assert not reply.flags & dns.flags.AA
        assert not reply.answer


async def test_question_case_is_echoed_as_sent(dns_app: DnsApp) -> None:
    reply = await query_udp(v4(dns_app), "oNe.AcMe.ExAmPlE.tEsT", "TXT")
    assert reply.question[0].name.to_text() == "oNe.AcMe.ExAmPlE.tEsT."
    assert reply.answer[0].name.to_text().lower() == "one.acme.example.test."
    missing = await query_udp(v4(dns_app), "NoBody.ACME.example.test", "TXT")
    assert missing.question[0].name.to_text() == "NoBody.ACME.example.test."


async def test_soa_ns_glue_and_static_caa(dns_app: DnsApp) -> None:
    soa = await query_udp(v4(dns_app), "acme.example.test", "SOA")
    assert soa.answer[0][0].mname == dns.name.from_text("ns1.acme.example.test")
    assert soa.answer[0][0].minimum == 60
    ns = await query_udp(v4(dns_app), "acme.example.test", "NS")
    assert [rd.target.to_text() for rd in ns.answer[0]] == ["ns1.acme.example.test."]
    assert [(r.name.to_text(), r.rdtype) for r in ns.additional] == [
        ("ns1.acme.example.test.", dns.rdatatype.A)
    ]
    caa = await query_udp(v4(dns_app), "acme.example.test", "CAA")
    assert caa.answer[0][0].value == b"letsencrypt.org"


async def test_edns_opt_is_answered_with_our_udp_size(dns_app: DnsApp) -> None:
    reply = await query_udp(v4(dns_app), "one.acme.example.test", "TXT", use_edns=0, payload=4096)
    assert reply.edns == 0
    assert reply.payload == 1232
    plain = await query_udp(v4(dns_app), "one.acme.example.test", "TXT")
    assert plain.edns == -1  # no OPT in a reply to a query without one
    do = await query_udp(v4(dns_app), "one.acme.example.test", "TXT", want_dnssec=True)
    assert do.ednsflags & dns.flags.DO  # RFC 3225: DO copied


async def test_edns_version_above_zero_gets_badvers(dns_app: DnsApp) -> None:
    reply = await query_udp(v4(dns_app), "one.acme.example.test", "TXT", use_edns=1)
    assert reply.rcode() == dns.rcode.BADVERS
    assert reply.edns == 0
    assert not reply.answer


async def test_answer_too_big_for_udp_is_truncated_and_complete_over_tcp(
    dns_app: DnsApp,
) -> None:
    query = dns.message.make_query("big.acme.example.test", "TXT", use_edns=False)
    raw = await raw_udp(v4(dns_app), query.to_wire())
    assert raw is not None
    truncated = dns.message.from_wire(raw, ignore_trailing=True)
    assert truncated.flags & dns.flags.TC
    assert len(raw) <= 512
    with_edns = await query_udp(v4(dns_app), "big.acme.example.test", "TXT", use_edns=0)
    assert with_edns.flags & dns.flags.TC  # 10 x 200 bytes do not fit 1232 either
    full = await query_tcp(v4(dns_app), "big.acme.example.test", "TXT")
    assert not full.flags & dns.flags.TC
    assert sorted(b"".join(s) for s in txt_strings(full)) == sorted(v.encode() for v in BIG_VALUES)


async def test_edns_lets_a_mid_sized_answer_through_udp(dns_app: DnsApp) -> None:
    dns_app.store.apply_changes(
        [TxtChange("mid.acme.example.test.", tuple(f"{i}" * 120 for i in range(5)))], 2
    )
    plain = await query_udp(v4(dns_app), "mid.acme.example.test", "TXT")
    assert plain.flags & dns.flags.TC
    edns = await query_udp(v4(dns_app), "mid.acme.example.test", "TXT", use_edns=0)
    assert not edns.flags & dns.flags.TC
    assert len(edns.answer[0]) == 5


async def test_any_is_answered_minimally(dns_app: DnsApp) -> None:
    apex = await query_udp(v4(dns_app), "acme.example.test", "ANY")
    assert apex.rcode() == dns.rcode.NOERROR
    assert len(apex.answer) == 1  # RFC 8482: one RRset, not all of them
    txt = await query_udp(v4(dns_app), "one.acme.example.test", "ANY")
    assert [rrset.rdtype for rrset in txt.answer] == [dns.rdatatype.TXT]
    missing = await query_udp(v4(dns_app), "nobody.acme.example.test", "ANY")
    assert missing.rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize("rdtype", ["AXFR", "IXFR"])
async def test_zone_transfers_are_refused(dns_app: DnsApp, rdtype: str) -> None:
    query = dns.message.make_query("acme.example.test", rdtype, use_edns=False)
    raw = await raw_udp(v4(dns_app), query.to_wire())
    assert raw is not None
    assert dns.message.from_wire(raw).rcode() == dns.rcode.REFUSED
    over_tcp = await query_tcp(v4(dns_app), "acme.example.test", rdtype)
    assert over_tcp.rcode() == dns.rcode.REFUSED
    assert not over_tcp.answer


@pytest.mark.parametrize("opcode", [dns.opcode.IQUERY, dns.opcode.STATUS, dns.opcode.NOTIFY, 6])
async def test_unimplemented_opcodes_get_notimp(dns_app: DnsApp, opcode: int) -> None:
    query = dns.message.make_query("acme.example.test", "SOA", use_edns=False)
    wire = bytearray(query.to_wire())
    wire[2] = (wire[2] & 0x87) | (opcode << 3)
    raw = await raw_udp(v4(dns_app), bytes(wire))
    assert raw is not None
    assert raw[:2] == wire[:2]
    assert raw[3] & 0x0F == dns.rcode.NOTIMP
    assert (raw[2] >> 3) & 0x0F == opcode
    assert raw[2] & 0x80  # QR


async def test_dynamic_update_is_forwarded_not_answered_here(dns_app: DnsApp) -> None:
    """The responder itself answers UPDATE with NOTIMP; the servers hand UPDATEs to the
    registry instead (tests/dns/test_update_forwarding.py), and with no registry there it is
    SERVFAIL."""
    import dns.update

    update = dns.update.UpdateMessage("acme.example.test")
    update.add("x", 60, "TXT", "v")
    answer = dns_app.responder.answer(update.to_wire(), False)
    assert answer is not None
    assert dns.message.from_wire(answer).rcode() == dns.rcode.NOTIMP
    raw = await raw_udp(v4(dns_app), update.to_wire(), wait=10)
    assert raw is not None
    assert dns.message.from_wire(raw).rcode() == dns.rcode.SERVFAIL


@pytest.mark.parametrize(
    "payload",
    [
        # header says two questions but carries one
        struct.pack("!HHHHHH", 7, 0, 2, 0, 0, 0) + b"\x01x\x00\x00\x01\x00\x01",
        # no question at all
        struct.pack("!HHHHHH", 7, 0, 0, 0, 0, 0),
        # question name runs past the end
        struct.pack("!HHHHHH", 7, 0, 1, 0, 0, 0) + b"\x05ab",
        # label longer than 63 (a bad compression pointer)
        struct.pack("!HHHHHH", 7, 0, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01",
        # an answer record in a query
        struct.pack("!HHHHHH", 7, 0, 1, 1, 0, 0) + b"\x01x\x00\x00\x01\x00\x01",
        # two OPT records
        struct.pack("!HHHHHH", 7, 0, 1, 0, 0, 2)
        + b"\x01x\x00\x00\x01\x00\x01"
        + 2 * b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00",
    ],
)
async def test_malformed_queries_get_formerr(dns_app: DnsApp, payload: bytes) -> None:
    raw = await raw_udp(v4(dns_app), payload)
    assert raw is not None
    assert raw[:2] == b"\x00\x07"
    assert raw[2] & 0x80
    assert raw[3] & 0x0F == dns.rcode.FORMERR


async def test_responses_and_runts_get_no_answer(dns_app: DnsApp) -> None:
    response = dns.message.make_response(dns.message.make_query("acme.example.test", "SOA"))
    assert await raw_udp(v4(dns_app), response.to_wire(), wait=0.3) is None
    assert await raw_udp(v4(dns_app), b"\x01\x02\x03", wait=0.3) is None


async def test_other_classes_are_refused(dns_app: DnsApp) -> None:
    reply = await query_udp(v4(dns_app), "version.bind", "TXT", rdclass="CH")
    assert reply.rcode() == dns.rcode.REFUSED


async def test_cname_is_followed_into_the_challenge_zone(dns_app: DnsApp) -> None:
    reply = await query_udp(v4(dns_app), "_acme-challenge.www.example.test", "TXT")
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AA
    assert [(r.name.to_text(), r.rdtype) for r in reply.answer] == [
        ("_acme-challenge.www.example.test.", dns.rdatatype.CNAME),
        ("one.acme.example.test.", dns.rdatatype.TXT),
    ]
    only_cname = await query_udp(v4(dns_app), "_acme-challenge.www.example.test", "CNAME")
    assert [r.rdtype for r in only_cname.answer] == [dns.rdatatype.CNAME]


async def test_cname_answers_follow_their_target_when_it_changes(dns_app: DnsApp) -> None:
    name = "_acme-challenge.www.example.test"
    dns_app.store.apply_changes([TxtChange("one.acme.example.test.", ("fresh",))], 2)
    reply = await query_udp(v4(dns_app), name, "TXT")
    assert txt_strings(reply)[-1] == (b"fresh",)
    dns_app.store.apply_changes([TxtChange("one.acme.example.test.", None)], 3)
    gone = await query_udp(v4(dns_app), name, "TXT")
    assert gone.rcode() == dns.rcode.NXDOMAIN  # RFC 6604: the rcode of the chain's end
    assert [r.rdtype for r in gone.answer] == [dns.rdatatype.CNAME]


async def test_cname_edge_cases(dns_app: DnsApp) -> None:
    missing = await query_udp(v4(dns_app), "_acme-challenge.missing.example.test", "TXT")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert [r.rdtype for r in missing.answer] == [dns.rdatatype.CNAME]
    assert missing.authority[0].name.to_text() == "acme.example.test."
    outside = await query_udp(v4(dns_app), "_acme-challenge.outside.example.test", "TXT")
    assert outside.rcode() == dns.rcode.NOERROR
    assert [r.rdtype for r in outside.answer] == [dns.rdatatype.CNAME]
    nodata = await query_udp(v4(dns_app), "alias.example.test", "TXT")
    assert nodata.rcode() == dns.rcode.NOERROR
    assert [r.rdtype for r in nodata.answer] == [dns.rdatatype.CNAME]
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA
    address = await query_udp(v4(dns_app), "alias.example.test", "A")
    assert [r.rdtype for r in address.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    loop = await query_udp(v4(dns_app), "loop1.example.test", "A")
    assert loop.rcode() == dns.rcode.NOERROR
    assert [r.name.to_text() for r in loop.answer] == ["loop1.example.test.", "loop2.example.test."]


async def test_static_zone_file_negative_answers_use_its_soa(dns_app: DnsApp) -> None:
    reply = await query_udp(v4(dns_app), "nothing.example.test", "A")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.authority[0].name.to_text() == "example.test."
    assert reply.authority[0].ttl == 30
    deep = await query_udp(v4(dns_app), "deep.a.b.c.example.test", "A")
    assert deep.answer[0][0].address == "192.0.2.11"


async def test_ipv6_listener_answers_udp_and_tcp(dns_app: DnsApp) -> None:
    address = dns_app.dns_addresses[1]
    assert address.host == "::1"
    udp = await query_udp(address, "one.acme.example.test", "TXT")
    tcp = await query_tcp(address, "one.acme.example.test", "TXT")
    assert txt_strings(udp) == txt_strings(tcp)
    assert udp.flags & dns.flags.AA


async def test_feed_zone_answers_servfail_until_first_snapshot(tmp_path: Path) -> None:
    from tests.dns.conftest import running_dns

    async with running_dns(tmp_path) as app:
        reply = await query_udp(v4(app), "one.acme.example.test", "TXT")
        assert reply.rcode() == dns.rcode.SERVFAIL  # never an NXDOMAIN a resolver would cache
        static = await query_udp(v4(app), "www.example.test", "A")
        assert static.rcode() == dns.rcode.NOERROR


async def test_edns_options_and_cookies_are_ignored(dns_app: DnsApp) -> None:
    cookie = dns.edns.GenericOption(dns.edns.COOKIE, b"\x01" * 8)
    reply = await query_udp(
        v4(dns_app), "one.acme.example.test", "TXT", use_edns=0, options=[cookie]
    )
    assert reply.rcode() == dns.rcode.NOERROR
    assert len(reply.answer[0]) == 2


def test_fast_and_slow_paths_give_the_same_answers(tmp_path: Path) -> None:
    """Every pre-packed answer equals what the slow path builds for the same query, whatever
    the case, EDNS, DO, CD and transport."""
    from acmezone_dns.metrics import QueryStats
    from acmezone_dns.responder import Responder
    from acmezone_dns.static_zones import load_static_zones
    from acmezone_dns.store import ZoneStore
    from tests.dns.conftest import SNAPSHOT, dns_settings

    store = ZoneStore(load_static_zones(dns_settings(tmp_path)), feed_zone=ZONE, txt_ttl=1)
    store.apply_snapshot(SNAPSHOT, 1, "f")
    responder = Responder(store, QueryStats(), edns_udp_size=1232)
    rng = random.Random(7)
    names = [node.name.to_text() for node in store.snapshot.view.nodes.values()]
    names += ["nobody.acme.example.test.", "x.y.example.test.", "example.com."]
    compared = 0
    for name in names:
        for rdtype in ("A", "AAAA", "TXT", "NS", "SOA", "CNAME", "ANY", "CAA", "HTTPS"):
            for edns, do in ((-1, False), (0, False), (0, True)):
                mixed = "".join(c.upper() if rng.random() < 0.5 else c for c in name)
                query = dns.message.make_query(mixed, rdtype, use_edns=edns, want_dnssec=do)
                if rng.random() < 0.5:
                    query.flags |= dns.flags.CD
                wire = query.to_wire()
                for tcp in (False, True):
                    fast = responder.answer(wire, tcp)
                    slow = responder._slow(wire, store.snapshot, tcp)
                    assert fast is not None
                    assert slow is not None
                    a, b = dns.message.from_wire(fast), dns.message.from_wire(slow)
                    assert (a.id, a.flags, a.rcode(), a.edns, a.ednsflags, a.payload) == (
                        b.id, b.flags, b.rcode(), b.edns, b.ednsflags, b.payload
                    )  # fmt: skip
                    assert a.question[0].name.to_text() == mixed  # 0x20 case kept
                    assert (a.answer, a.authority, a.additional) == (
                        b.answer, b.authority, b.additional
                    )  # fmt: skip
                    compared += 1
    assert compared > 1000


async def test_types_whose_bytes_are_letters_get_their_own_answers(
    tmp_path: Path,
) -> None:
    """The hot path lower-cases the question's name and type together, so a type byte that is
    an ASCII letter (HTTPS is 65, 'A') must never be looked up that way: HTTPS and type 97
    ('a', what HTTPS lower-cases to) each get their own records, over UDP and TCP, with and
    without EDNS, and type 97 gets NODATA where only HTTPS exists."""
    https = '@ HTTPS 1 . alpn="h2"'
    type97 = r"both TYPE97 \# 1 2a"
    both_https = 'both HTTPS 1 . alpn="h3"'
    async with running_dns(tmp_path, static_records=[CAA, https, type97, both_https]) as app:
        app.store.apply_snapshot(SNAPSHOT, 1, "test-feed")
        for edns in (False, 0):
            for ask in (query_udp, query_tcp):
                reply = await ask(v4(app), "ACME.example.test", "HTTPS", use_edns=edns)
                assert reply.rcode() == dns.rcode.NOERROR
                assert [rrset.rdtype for rrset in reply.answer] == [dns.rdatatype.HTTPS]
                other = await ask(v4(app), "acme.example.test", 97, use_edns=edns)
                assert other.rcode() == dns.rcode.NOERROR
                assert other.answer == []
                assert other.authority[0].rdtype == dns.rdatatype.SOA
                for rdtype in (dns.rdatatype.HTTPS, 97):
                    reply = await ask(v4(app), "Both.acme.example.test", rdtype, use_edns=edns)
                    assert [rrset.rdtype for rrset in reply.answer] == [rdtype]
                # A type 0x4141 and 0x6161 at a name that does not exist: NXDOMAIN both.
                for rdtype in (0x4141, 0x6161):
                    missing = await ask(v4(app), "nobody.acme.example.test", rdtype, use_edns=edns)
                    assert missing.rcode() == dns.rcode.NXDOMAIN


async def test_a_zero_byte_inside_a_label_is_data_and_an_early_root_is_malformed(
    dns_app: DnsApp,
) -> None:
    header = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    apex = dns.name.from_text(ZONE).to_wire()
    # "a\x00b" is a legal three-byte label: the name does not exist, so NXDOMAIN with the
    # question echoed, not FORMERR.
    inner = header + b"\x03a\x00b" + apex + b"\x00\x10\x00\x01"
    raw = await raw_udp(v4(dns_app), inner)
    assert raw is not None
    reply = dns.message.from_wire(raw)
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.question[0].name.labels[0] == b"a\x00b"
    # A root label followed by what looks like the zone apex is the root name and trailing
    # junk: never an answer from our zone.
    early_root = header + b"\x00" + apex + b"\x00\x10\x00\x01"
    raw = await raw_udp(v4(dns_app), early_root)
    assert raw is not None
    assert raw[3] & 0x0F in (dns.rcode.FORMERR, dns.rcode.REFUSED)
    assert not raw[2] & 0x04  # not authoritative


@pytest.mark.parametrize("last_byte", [0x14, 0x97, 0xC0], ids=["short", "long", "pointer"])
async def test_a_name_not_ending_in_the_root_label_is_formerr(
    dns_app: DnsApp, last_byte: int
) -> None:
    """The question runs to the end of the message but its name's last byte is not the root
    label: malformed (FORMERR), on every path, never REFUSED or NXDOMAIN."""
    header = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    apex_labels = dns.name.from_text(ZONE).to_wire()[:-1]
    for name in (b"\x03one" + apex_labels, b"\x04else\x05where"):
        query = header + name + bytes([last_byte]) + b"\x00\x10\x00\x01"
        for raw in (await raw_udp(v4(dns_app), query), dns_app.responder.answer(query, True)):
            assert raw is not None
            assert raw[3] & 0x0F == dns.rcode.FORMERR, (name, raw)


async def test_a_name_longer_than_255_bytes_is_formerr(dns_app: DnsApp) -> None:
    """RFC 1035 section 3.1: a name is at most 255 bytes. One byte more is malformed, even
    when every label is well formed; exactly 255 is a name (that does not exist here)."""
    header = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    apex = dns.name.from_text(ZONE).to_wire()
    for total, rcode in ((255, dns.rcode.NXDOMAIN), (256, dns.rcode.FORMERR)):
        labels = b""
        while total - len(apex) - len(labels) > 64:
            labels += b"\x3f" + b"a" * 63
        rest = total - len(apex) - len(labels) - 1
        name = labels + bytes([rest]) + b"b" * rest + apex
        assert len(name) == total
        for edns in (b"", b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"):
            query = header[:11] + (b"\x01" if edns else b"\x00") + name + b"\x00\x10\x00\x01" + edns
            for raw in (await raw_udp(v4(dns_app), query), dns_app.responder.answer(query, True)):
                assert raw is not None
                assert raw[3] & 0x0F == rcode, (total, edns, raw[:12])
