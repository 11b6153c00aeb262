"""The UDP listener survives anything: thousands of random and truncated packets, then it still
answers correctly."""

from __future__ import annotations

import asyncio
import random
import socket

import dns.message
import dns.rcode

from acmezone_dns.app import DnsApp
from tests.dns.conftest import query_udp, v4


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
