"""The UDP listener survives anything: thousands of random and truncated packets, then it still
answers correctly."""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path

import dns.message
import dns.rcode
import dns.update
import pytest
from prometheus_client import CollectorRegistry

from acmezone_common.addresses import HostPort
from acmezone_dns import datagram_batch
from acmezone_dns.app import DnsApp
from tests.dns.conftest import SNAPSHOT, ZONE, query_udp, raw_udp, running_dns, v4


def fuzz_packets(count: int, seed: int) -> list[bytes]:
    """Random bytes, valid queries cut short, and valid queries with random bytes flipped."""
    rng = random.Random(seed)
    valid = [
        dns.message.make_query(name, rdtype, use_edns=edns).to_wire()
        for name in ("one.acme.example.test", "nobody.acme.example.test", "www.example.test")
        for rdtype in ("TXT", "A", "ANY", "AXFR")
        for edns in (False, 0)
    ]
    packets = []
    for i in range(count):
        kind = i % 3
        if kind == 0:
            packets.append(rng.randbytes(rng.randint(0, 600)))
        elif kind == 1:
            base = rng.choice(valid)
            packets.append(base[: rng.randint(0, len(base) - 1)])
        else:
            mutated = bytearray(rng.choice(valid))
            for _ in range(rng.randint(1, 6)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            packets.append(bytes(mutated))
    return packets


async def test_thousands_of_malformed_packets_leave_the_server_answering(dns_app: DnsApp) -> None:
    address = v4(dns_app)
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        for n, packet in enumerate(fuzz_packets(6000, seed=3)):
            await loop.sock_sendto(sock, packet, (address.host, address.port))
            if n % 50 == 0:
                await asyncio.sleep(0)  # let the server drain its socket
                while True:  # and drop whatever came back
                    try:
                        sock.recv(65535)
                    except BlockingIOError:
                        break
    for _ in range(3):
        reply = await query_udp(address, "one.acme.example.test", "TXT")
        assert reply.rcode() == dns.rcode.NOERROR
        assert len(reply.answer[0]) == 2
    missing = await query_udp(address, "nobody.acme.example.test", "TXT")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    formerr = dns_app.stats.counts
    assert sum(formerr) > 1000  # most of them were answered (FORMERR, REFUSED, ...)


async def test_fuzz_over_tcp_leaves_the_server_answering(dns_app: DnsApp) -> None:
    address = v4(dns_app)
    for packet in fuzz_packets(300, seed=4):
        reader, writer = await asyncio.open_connection(address.host, address.port)
        writer.write(len(packet).to_bytes(2, "big") + packet)
        await writer.drain()
        try:
            async with asyncio.timeout(1):
                await reader.read(65535)
        finally:
            writer.close()
            await writer.wait_closed()
    reply = await query_udp(address, "one.acme.example.test", "TXT")
    assert reply.rcode() == dns.rcode.NOERROR


async def burst(address: HostPort, queries: list[bytes]) -> dict[int, dns.message.Message]:
    """Send every query at once from one socket, then collect the replies by ID."""
    loop = asyncio.get_running_loop()
    replies: dict[int, dns.message.Message] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        for query in queries:
            sock.sendto(query, (address.host, address.port))
        async with asyncio.timeout(5):
            while len(replies) < len(queries):
                data = await loop.sock_recv(sock, 65535)
                reply = dns.message.from_wire(data)
                replies[reply.id] = reply
    return replies


def burst_queries(count: int) -> tuple[list[bytes], dict[int, str]]:
    """`count` queries with distinct IDs, alternating existing and missing names."""
    names = {}
    wires = []
    for n in range(count):
        name = "one.acme.example.test" if n % 2 else f"nobody{n}.acme.example.test"
        query = dns.message.make_query(name, "TXT", use_edns=n % 3 == 0)
        query.id = n
        names[n] = name
        wires.append(query.to_wire())
    return wires, names


async def test_a_burst_bigger_than_a_batch_gets_every_answer_right(
    dns_app: DnsApp, metrics_registry: CollectorRegistry
) -> None:
    """300 queries queued at once: read in several batches of up to 64, answered 16 at a
    time; every ID gets its own answer and the batch histogram sees the reads."""
    assert all(udp.batched for udp in dns_app.udp)
    expected_path = "native" if datagram_batch.native_available() else "batched"
    assert all(udp.path == expected_path for udp in dns_app.udp)
    wires, names = burst_queries(300)
    replies = await burst(v4(dns_app), wires)
    assert sorted(replies) == list(range(300))
    for n, reply in replies.items():
        assert reply.question[0].name.to_text() == names[n] + "."
        if n % 2:
            assert reply.rcode() == dns.rcode.NOERROR
            assert len(reply.answer[0]) == 2
        else:
            assert reply.rcode() == dns.rcode.NXDOMAIN
    reads = metrics_registry.get_sample_value("acmezone_dns_udp_batch_datagrams_count")
    read = metrics_registry.get_sample_value("acmezone_dns_udp_batch_datagrams_sum")
    assert read == 300
    assert reads is not None
    assert 5 <= reads <= 300


@pytest.mark.parametrize(
    ("batch_size", "native", "path"),
    [(1, True, "recvfrom"), (64, False, "batched")],
    ids=["recvfrom", "python-batch"],
)
async def test_the_python_udp_paths_answer_the_same(
    tmp_path: Path, metrics_registry: CollectorRegistry, batch_size: int, native: bool, path: str
) -> None:
    """UDP_BATCH_SIZE=1 (and installs without the C extension) read with recvfrom;
    UDP_NATIVE=false batches the system calls but answers every datagram in Python: same
    answers."""
    async with running_dns(
        tmp_path,
        metrics_registry,
        udp_batch_size=batch_size,
        udp_native=native,
        update_timeout_seconds=0.5,
    ) as app:
        app.store.apply_snapshot(SNAPSHOT, 1, "test-feed")
        assert [udp.path for udp in app.udp] == [path, path]
        wires, _names = burst_queries(100)
        replies = await burst(v4(app), wires)
        assert sorted(replies) == list(range(100))
        assert all(
            reply.rcode() == (dns.rcode.NOERROR if n % 2 else dns.rcode.NXDOMAIN)
            for n, reply in replies.items()
        )
        for packet in fuzz_packets(600, seed=5):
            await raw_udp_nowait(v4(app), packet)
        reply = await query_udp(v4(app), "one.acme.example.test", "TXT")
        assert reply.rcode() == dns.rcode.NOERROR
        # An UPDATE is answered later, to its own sender (SERVFAIL: no registry listens).
        update = dns.update.UpdateMessage(ZONE)
        update.add("x", 60, "TXT", "v")
        raw = await raw_udp(v4(app), update.to_wire(), wait=5)
        assert raw is not None
        assert dns.message.from_wire(raw).rcode() == dns.rcode.SERVFAIL
        reads = metrics_registry.get_sample_value("acmezone_dns_udp_batch_datagrams_count")
        assert (reads == 0) == (path == "recvfrom")


async def raw_udp_nowait(address: HostPort, payload: bytes) -> None:
    """Send raw bytes and do not wait for any reply."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(payload, (address.host, address.port))
    await asyncio.sleep(0)


async def test_queries_are_answered_while_a_large_relist_is_built(dns_app: DnsApp) -> None:
    """A re-list is built aside as its batches arrive: a query sent between two batches is
    answered from the current snapshot, and the new snapshot takes over only when complete."""
    relist = dns_app.store.relist()
    for i in range(2000):
        relist.add(f"bulk{i}.{ZONE}.", (f"bulk-{i}",))
    relist.add(f"one.{ZONE}.", ("after-relist",))
    during = await query_udp(v4(dns_app), "one.acme.example.test", "TXT")
    assert sorted(rd.strings[0] for rd in during.answer[0]) == [
        b"value-one-newest",
        b"value-one-older",
    ]
    missing = await query_udp(v4(dns_app), "bulk1999.acme.example.test", "TXT")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    relist.finish(2, "test-feed")
    after = await query_udp(v4(dns_app), "one.acme.example.test", "TXT")
    assert [rd.strings[0] for rd in after.answer[0]] == [b"after-relist"]
    bulk = await query_udp(v4(dns_app), "bulk1999.acme.example.test", "TXT")
    assert [rd.strings[0] for rd in bulk.answer[0]] == [b"bulk-1999"]
    assert dns_app.store.snapshot.revision == 2
