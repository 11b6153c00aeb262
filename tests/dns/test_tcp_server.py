"""DNS over TCP per RFC 7766: length prefixes, several queries on one connection, idle timeout,
a connection cap."""

from __future__ import annotations

import asyncio
from pathlib import Path

import dns.message
import dns.rcode

from acmezone_dns.app import DnsApp
from tests.dns.conftest import SNAPSHOT, running_dns, v4


async def read_message(reader: asyncio.StreamReader) -> dns.message.Message:
    length = int.from_bytes(await reader.readexactly(2), "big")
    return dns.message.from_wire(await reader.readexactly(length))


async def test_several_pipelined_queries_on_one_connection(dns_app: DnsApp) -> None:
    address = v4(dns_app)
    reader, writer = await asyncio.open_connection(address.host, address.port)
    try:
        names = ["one.acme.example.test", "nobody.acme.example.test", "www.example.test"]
        queries = [dns.message.make_query(n, "TXT", id=100 + i) for i, n in enumerate(names)]
        # All three written at once, even split across writes: answers come back in order.
        wire = b"".join(len(w).to_bytes(2, "big") + w for w in (q.to_wire() for q in queries))
        writer.write(wire[:7])
        await writer.drain()
        writer.write(wire[7:])
        replies = [await read_message(reader) for _ in queries]
        assert [r.id for r in replies] == [100, 101, 102]
        assert [r.rcode() for r in replies] == [
            dns.rcode.NOERROR,
            dns.rcode.NXDOMAIN,
            dns.rcode.NOERROR,
        ]
    finally:
        writer.close()
        await writer.wait_closed()


async def test_idle_connections_are_closed(tmp_path: Path) -> None:
    async with running_dns(tmp_path, tcp_idle_timeout_seconds=0.2) as app:
        app.store.apply_snapshot(SNAPSHOT, 1, "f")
        address = v4(app)
        reader, writer = await asyncio.open_connection(address.host, address.port)
        try:
            query = dns.message.make_query("one.acme.example.test", "TXT").to_wire()
            writer.write(len(query).to_bytes(2, "big") + query)
            assert (await read_message(reader)).rcode() == dns.rcode.NOERROR
            async with asyncio.timeout(3):
                assert await reader.read() == b""  # the server hung up after 0.2 s idle
        finally:
            writer.close()
            await writer.wait_closed()


async def test_connections_beyond_the_cap_are_closed(tmp_path: Path) -> None:
    async with running_dns(tmp_path, tcp_max_connections=2) as app:
        address = v4(app)
        held = [await asyncio.open_connection(address.host, address.port) for _ in range(2)]
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection(address.host, address.port)
        try:
            async with asyncio.timeout(3):
                assert await reader.read() == b""
        finally:
            writer.close()
            await writer.wait_closed()
            for _, w in held:
                w.close()
                await w.wait_closed()
