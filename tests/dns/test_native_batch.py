"""The C accelerator of the UDP hot loop (`_native_batch.c`) against the Python responder: the
same bytes for every query, over real loopback sockets. The plain queries with a pre-packed
answer must be answered in C (the Python callback never sees them) and everything else must
reach Python; bad table contents send a datagram to Python instead of failing."""

from __future__ import annotations

import os
import random
import select
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from acmezone_dns import datagram_batch
from acmezone_dns.app import DnsApp
from acmezone_dns.cookies import CookieJar, client_ip
from acmezone_dns.datagram_batch import NativeDatagramBatch
from acmezone_dns.responder import FastTables
from acmezone_dns.shards import ShardedTable
from acmezone_dns.wire import Packed
from tests.dns.conftest import SNAPSHOT, running_dns
from tests.dns.dnssec_support import make_keys

pytestmark = pytest.mark.skipif(
    not datagram_batch.native_available(), reason="the C accelerator was not built"
)

Handle = Callable[[int, bytes], bytes | None]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="built on Linux only")
def test_the_accelerator_is_built_by_the_install() -> None:
    """`make install` compiles it (an optional extension: a missing compiler would silently
    leave every query to Python). Not skipped on Linux: this is the check that it built."""
    assert datagram_batch.native_available()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A non-blocking server socket and a client socket, IPv4 loopback."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        server.bind(("127.0.0.1", 0))
        server.setblocking(False)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        client.bind(("127.0.0.1", 0))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        client.settimeout(2)
        yield server, client


def exchange_all(
    server: socket.socket,
    client: socket.socket,
    queries: list[bytes],
    batch: NativeDatagramBatch,
    handle: Handle,
    tables: FastTables | None,
) -> list[bytes]:
    """Send `queries` 64 at a time, let the batch answer them, and return the replies."""
    replies: list[bytes] = []
    for first in range(0, len(queries), 64):
        chunk = queries[first : first + 64]
        for query in chunk:
            client.sendto(query, server.getsockname())
        select.select([server], [], [], 2)
        time.sleep(0.01)
        read = 0
        while read < len(chunk):
            if tables is None:
                count, lost = batch.exchange(server.fileno(), handle)
            else:
                count, lost = batch.exchange(server.fileno(), handle, tables)
            assert lost == 0
            assert count, "a datagram went missing on loopback"
            read += count
        client.setblocking(False)
        try:
            while True:
                try:
                    replies.append(client.recv(65535))
                except BlockingIOError:
                    if not select.select([client], [], [], 0.05)[0]:
                        break
        finally:
            client.settimeout(2)
    return replies


MUTATIONS = int(os.environ.get("ACMEZONE_DNS_FUZZ_MUTATIONS", "1500"))
"""Mutated queries per differential run. A longer run under AddressSanitizer and UBSan:

    CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -O1 -g" \\
        .venv/bin/pip install --no-deps --no-build-isolation --force-reinstall -e services/dns
    LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so.6)" \\
        ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1 \\
        ACMEZONE_DNS_FUZZ_MUTATIONS=60000 .venv/bin/python -m pytest --timeout 0 tests/dns

(libstdc++ is preloaded too: grpcio's C++ exceptions crash ASan's interceptor otherwise), then
the same pip command without CFLAGS to go back to the normal build."""


def long_names(rng: random.Random) -> list[bytes]:
    """Raw questions (type TXT, class IN) whose names are 250-258 bytes of 1-63-byte labels,
    under a zone of ours and elsewhere: around the 255-byte limit of a name."""
    questions = []
    for suffix in (b"\x04acme\x07example\x04test\x00", b"\x04else\x00"):
        for total in range(250, 259):
            labels = b""
            while len(labels) + len(suffix) < total:
                room = total - len(labels) - len(suffix) - 1
                size = min(rng.randint(1, 63), room) if room > 0 else 0
                if size <= 0:
                    break
                labels += bytes([size]) + bytes(rng.choice(b"abcXYZ09-") for _ in range(size))
            questions.append(labels + suffix + b"\x00\x10\x00\x01")
    return questions


def corpus(seed: int) -> tuple[list[bytes], list[bytes]]:
    """(well-formed queries of every shape the zone answers, random mutations of them and
    random questions behind a plain header)."""
    rng = random.Random(seed)
    names = [
        "one.acme.example.test",
        "long.acme.example.test",
        "big.acme.example.test",
        "empty.acme.example.test",
        "leaf.sub.acme.example.test",
        "sub.acme.example.test",
        "acme.example.test",
        "nobody.acme.example.test",
        "www.example.test",
        "alias.example.test",
        "_acme-challenge.www.example.test",
        "elsewhere.test",
    ]
    types = ["TXT", "A", "AAAA", "SOA", "NS", "CAA", "CNAME", "ANY", "HTTPS", "TYPE97", "MX"]
    names.append("deep.a.b.c.example.test")
    names.append("x." * 40 + "nobody.acme.example.test")
    plain: list[bytes] = []
    for name in names:
        for rdtype in types:
            for _ in range(3):
                mixed = "".join(c.upper() if rng.random() < 0.5 else c for c in name)
                edns = rng.choice([None, 512, 1232, 4096, 700])
                query = dns.message.make_query(
                    mixed,
                    rdtype,
                    use_edns=edns is not None,
                    payload=edns or 512,
                    want_dnssec=edns is not None and rng.random() < 0.5,
                )
                query.flags = (dns.flags.RD if rng.random() < 0.5 else 0) | (
                    dns.flags.CD if rng.random() < 0.5 else 0
                )
                query.id = rng.randrange(1 << 16)
                plain.append(query.to_wire())
    header = b"\x00\x07\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    plain += [header + question for question in long_names(rng)]
    plain += cookie_queries(rng, names, types)
    mutated: list[bytes] = []
    for _ in range(300):
        question = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
        mutated.append(header + question)
    for _ in range(MUTATIONS):
        wire = bytearray(rng.choice(plain))
        how = rng.randrange(4)
        if how == 0:
            wire = wire[: rng.randrange(len(wire))]
        elif how == 1:
            for _ in range(rng.randint(1, 4)):
                wire[rng.randrange(len(wire))] = rng.randrange(256)
        elif how == 2:
            wire[2] = rng.randrange(256)  # QR, opcode, AA, TC, RD
            wire[3] = rng.randrange(256)
        else:
            wire += bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
        mutated.append(bytes(wire))
    return plain, mutated


def cookie_queries(rng: random.Random, names: list[str], types: list[str]) -> list[bytes]:
    """Queries whose OPT carries options: a client cookie alone, with a server cookie, with
    an unknown option beside it, malformed lengths, two cookies, an unknown option alone."""
    queries = []
    shapes: list[list[dns.edns.Option]] = [
        [dns.edns.GenericOption(dns.edns.COOKIE, bytes(rng.randrange(256) for _ in range(8)))],
        [dns.edns.GenericOption(dns.edns.COOKIE, bytes(range(8)) + bytes(range(16)))],
        [
            dns.edns.GenericOption(65001, b"unknown"),
            dns.edns.GenericOption(dns.edns.COOKIE, b"12345678"),
        ],
        [dns.edns.GenericOption(dns.edns.COOKIE, b"1234")],
        [dns.edns.GenericOption(dns.edns.COOKIE, b"123456789abc")],
        [dns.edns.GenericOption(dns.edns.COOKIE, b"c" * 41)],
        [dns.edns.GenericOption(dns.edns.COOKIE, b"12345678")] * 2,
        [dns.edns.GenericOption(65001, b"x")],
    ]
    for name in names:
        for rdtype in types:
            query = dns.message.make_query(
                name, rdtype, use_edns=0, payload=1232, options=rng.choice(shapes)
            )
            query.id = rng.randrange(1 << 16)
            queries.append(query.to_wire())
    return queries


@pytest.fixture(params=["unsigned", "signed"])
async def either_dns_app(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[DnsApp]:
    """`dns_app`, and the same with both zones signed (DNSSEC): DO=1 queries then take the
    signed table."""
    overrides = {}
    if request.param == "signed":
        make_keys(tmp_path / "keys", ["acme.example.test", "example.test"])
        overrides["dnssec_key_dir"] = str(tmp_path / "keys")
    async with running_dns(tmp_path, **overrides) as app:
        app.store.apply_snapshot(SNAPSHOT, 1, "test-feed")
        yield app


async def test_every_reply_matches_the_python_responder(
    either_dns_app: DnsApp, pair: tuple[socket.socket, socket.socket]
) -> None:
    dns_app = either_dns_app
    server, client = pair
    responder = dns_app.responder
    # Server cookies hold a timestamp: one clock for both runs.
    responder.cookies = CookieJar(bytes(range(16)), clock=lambda: 1_700_000_000)
    plain, mutated = corpus(seed=11)
    queries = plain + mutated
    client_host = client.getsockname()[0]

    def peer() -> str:
        return str(client_host)

    # Python answers first (this also fills the OPT cache the C loop reads, as live traffic
    # would), then once more, watching which queries need more than the shortcuts of
    # `Responder.answer`: those the C loop must hand back to Python, and only those.
    expected = [responder.answer(query, False, peer) for query in queries]
    counts_before = list(dns_app.stats.counts)
    needs_python: set[bytes] = set()
    for method in ("_answer_located", "_slow"):
        original = getattr(responder, method)

        def watched(
            data: bytes, *args: object, _original: Callable[..., object] = original
        ) -> object:
            needs_python.add(data)
            return _original(data, *args)

        setattr(responder, method, watched)
    try:
        for query in queries:
            responder.answer(query, False, peer)
    finally:
        del responder._answer_located, responder._slow
    python_counts = [b - a for a, b in zip(counts_before, dns_app.stats.counts, strict=True)]
    dns_app.stats.counts[:] = counts_before

    called: list[bytes] = []

    batch = NativeDatagramBatch(socket.AF_INET, capacity=64, slot=4096)

    def handle(index: int, data: bytes) -> bytes | None:
        called.append(data)
        return responder.answer(data, False, lambda: str(batch.peer(index)[0]))

    replies = exchange_all(server, client, queries, batch, handle, responder.fast_tables())
    assert replies == [reply for reply in expected if reply is not None]
    native_counts = [b - a for a, b in zip(counts_before, dns_app.stats.counts, strict=True)]
    assert native_counts == python_counts
    # Who answered: C every plain query the shortcuts settle (pre-packed answers, NODATA,
    # NXDOMAIN, REFUSED), Python all the rest (TC, malformed, other opcodes and shapes).
    assert set(called) == needs_python
    in_c = [query for query in queries if query not in needs_python]
    assert len(in_c) > len(plain) // 2
    rcodes = set()
    for query in in_c:
        reply = responder.answer(query, False, peer)
        assert reply is not None
        rcodes.add(dns.message.from_wire(reply).rcode())
    assert {dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.REFUSED} <= rcodes
    # COOKIE queries of the two common shapes are answered in C too, with a server cookie
    # Python accepts for this client.
    cookies_in_c = 0
    for query in in_c:
        parsed = dns.message.from_wire(query)
        if not any(o.otype == dns.edns.COOKIE for o in parsed.options):
            continue
        reply = dns.message.from_wire(responder.answer(query, False, peer) or b"")
        (option,) = [o.to_wire() for o in reply.options if o.otype == dns.edns.COOKIE]
        assert responder.cookies.validate(option[:8], option[8:], client_ip(client_host))
        cookies_in_c += 1
    assert cookies_in_c > 20
    if dns_app.signer is not None:
        # Signed answers to DO=1 queries are answered in C once made, and validate.
        signed_in_c = [q for q in in_c if dns.message.from_wire(q).ednsflags & dns.flags.DO]
        assert len(signed_in_c) >= 20
        for query in signed_in_c:
            reply = dns.message.from_wire(responder.answer(query, False, peer) or b"")
            assert any(r.rdtype == dns.rdatatype.RRSIG for r in reply.answer)


def test_without_tables_every_datagram_goes_to_python(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    plain, _ = corpus(seed=12)
    seen: list[bytes] = []

    def handle(index: int, data: bytes) -> bytes:
        seen.append(data)
        return data[:2] + b"reply"

    batch = NativeDatagramBatch(socket.AF_INET, capacity=16, slot=512)
    replies = exchange_all(server, client, plain[:40], batch, handle, None)
    assert seen == plain[:40]
    assert replies == [query[:2] + b"reply" for query in plain[:40]]


def tables(
    answers: dict[bytes, object],
    edns: dict[bytes, tuple[bytes, int]] | None = None,
    counts: list[int] | None = None,
) -> FastTables:
    """Hand-made tables: no other names, no zones (a miss would be REFUSED)."""
    return FastTables(
        ShardedTable(answers.items()).shards,  # type: ignore[arg-type]
        edns or {},
        counts if counts is not None else [0],
        ShardedTable[Packed]().shards,
        {},
        Packed(0, 5, 0, 0, 0, b""),
        {},
        0,
        1,
        bytes(16),
        0,
        None,
    )


def one_txt_query(query_id: int, edns: bool = False) -> bytes:
    query = dns.message.make_query("One.Acme.Example.Test", "TXT", use_edns=edns)
    query.id = query_id
    return query.to_wire()


@pytest.mark.parametrize(
    "table_value",
    [
        "not a Packed",
        42,
        Packed(0, 0, 0, 0, 0, b""),  # stat 0 is fine ...
    ],
    ids=["str", "int", "packed-with-counter-out-of-range"],
)
def test_odd_table_contents_send_the_datagram_to_python(
    pair: tuple[socket.socket, socket.socket], table_value: object
) -> None:
    server, client = pair
    # Three at once: the batch warm-up (which reads the table before any query is answered)
    # meets the odd value too.
    queries = [one_txt_query(7 + i) for i in range(3)]
    answers = {queries[0][12:].lower(): table_value}
    counts: list[int] = []  # ... but no counter exists: the C loop must not answer
    seen: list[bytes] = []

    def handle(index: int, data: bytes) -> bytes:
        seen.append(data)
        return b"from-python"

    batch = NativeDatagramBatch(socket.AF_INET, capacity=4, slot=512)
    replies = exchange_all(server, client, queries, batch, handle, tables(answers, counts=counts))
    assert seen == queries
    assert replies == [b"from-python"] * 3


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ({}, "answers and defaults as shards"),  # a plain dict, as before the tables were split
        (({}, {}, {}), "answers and defaults as shards"),  # not a power of two
        (({}, "not a dict"), "a table shard is not a dict"),
    ],
    ids=["dict", "three-shards", "shard-not-a-dict"],
)
def test_tables_that_are_not_sharded_are_refused(
    pair: tuple[socket.socket, socket.socket], answers: object, message: str
) -> None:
    """The C loop picks a shard by the key's hash: tables of any other shape are a
    TypeError that says what it expects, never a wrong answer or a crash."""
    server, client = pair
    # A query whose key lands in shard 1 of 2 (the bad one in the last case).
    query = next(
        q
        for q in (one_txt_query(9)[:12] + _question(f"n{i}.acme.example.test") for i in range(64))
        if hash(q[12:].lower()) & 1
    )
    bad = tables({})._replace(answers=answers)
    client.sendto(query, server.getsockname())
    select.select([server], [], [], 2)
    batch = NativeDatagramBatch(socket.AF_INET, capacity=4, slot=512)
    with pytest.raises(TypeError, match=message):
        batch.exchange(server.fileno(), lambda index, data: None, bad)


def _question(name: str) -> bytes:
    return dns.message.make_query(name, "TXT").to_wire()[12:]


def test_a_pre_packed_answer_is_spliced_behind_the_query(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """The splice itself, with a hand-made table: ID, head for RD/CD, the question in its own
    case, the body, and our OPT for an EDNS query whose OPT bytes are in the table."""
    server, client = pair
    plain = one_txt_query(0x1234)
    with_opt = one_txt_query(0x4321, edns=True)
    packed = Packed(0x0400, 0, 1, 0, 0, b"BODY")
    packed.stat = 2
    answers = {plain[12:].lower(): packed}
    our_opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
    edns = {with_opt[-11:]: (our_opt, 1232)}
    counts = [0, 0, 0, 0]

    def handle(index: int, data: bytes) -> bytes:
        raise AssertionError("answered in C, never here")

    batch = NativeDatagramBatch(socket.AF_INET, capacity=4, slot=512)
    replies = exchange_all(
        server, client, [plain, with_opt], batch, handle, tables(answers, edns, counts)
    )
    rd = 1  # make_query sets RD
    assert replies == [
        b"\x12\x34" + packed.heads[rd] + plain[12:] + b"BODY",
        b"\x43\x21" + packed.heads_edns[rd] + with_opt[12:-11] + b"BODY" + our_opt,
    ]
    assert counts == [0, 0, 2, 0]


def test_an_answer_over_the_size_limit_goes_to_python(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    query = one_txt_query(1)
    packed = Packed(0x0400, 0, 1, 0, 0, b"x" * (512 - len(query) + 1))
    answers = {query[12:].lower(): packed}
    seen: list[bytes] = []

    def handle(index: int, data: bytes) -> bytes:
        seen.append(data)
        return b"truncated-by-python"

    batch = NativeDatagramBatch(socket.AF_INET, capacity=4, slot=4096)
    replies = exchange_all(server, client, [query], batch, handle, tables(answers, counts=[0]))
    assert seen == [query]
    assert replies == [b"truncated-by-python"]


def test_an_error_in_python_is_raised_after_the_staged_replies_go(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    for n in range(3):
        client.sendto(b"q%d" % n, server.getsockname())
    select.select([server], [], [], 2)
    time.sleep(0.01)

    def handle(index: int, data: bytes) -> bytes:
        if index == 2:
            raise RuntimeError("a bug in the Python path")
        return b"r" + data

    batch = NativeDatagramBatch(socket.AF_INET, capacity=8, slot=64)
    with pytest.raises(RuntimeError, match="a bug"):
        batch.exchange(server.fileno(), handle)
    assert client.recv(64) == b"rq0"
    assert client.recv(64) == b"rq1"


def test_bad_arguments_are_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="family"):
        NativeDatagramBatch(socket.AF_UNIX)
    with pytest.raises(ValueError, match="capacity"):
        NativeDatagramBatch(socket.AF_INET, capacity=0)
    batch = NativeDatagramBatch(socket.AF_INET)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        with pytest.raises(TypeError, match="FastTables"):
            batch.exchange(sock.fileno(), lambda i, d: d, ({}, {}, []))
        with pytest.raises(TypeError, match="FastTables"):
            batch.exchange(sock.fileno(), lambda i, d: d, tables({})._replace(defaults=[]))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="FastTables"):
            batch.exchange(sock.fileno(), lambda i, d: d, tables({})._replace(counts=()))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="2 or 3 arguments"):
            batch.exchange(sock.fileno())  # type: ignore[call-arg]
        with pytest.raises(ValueError, match="file descriptor"):
            batch.exchange(-1, lambda i, d: d)
        with pytest.raises(IndexError):
            batch.peer(64)
