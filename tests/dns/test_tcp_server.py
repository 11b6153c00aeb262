"""DNS over TCP per RFC 7766: length prefixes, several queries on one connection, idle timeout,
a connection cap."""

from __future__ import annotations

import asyncio
import contextlib
import socket
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


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, id_: int) -> int:
    """One TXT query on an open connection; the reply's rcode."""
    query = dns.message.make_query("one.acme.example.test", "TXT", id=id_).to_wire()
    writer.write(len(query).to_bytes(2, "big") + query)
    reply = await read_message(reader)
    assert reply.id == id_
    return reply.rcode()


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    async with asyncio.timeout(3):
        try:
            return await reader.read() == b""
        except ConnectionResetError:
            return True


async def close_all(connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
    for _, writer in connections:
        writer.close()
    for _, writer in connections:
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_a_source_at_its_cap_loses_its_oldest_idle_connection(tmp_path: Path) -> None:
    async with running_dns(tmp_path, tcp_max_connections_per_source=2) as app:
        app.store.apply_snapshot(SNAPSHOT, 1, "f")
        address = v4(app)
        held = [await asyncio.open_connection(address.host, address.port) for _ in range(2)]
        try:
            # Both admitted (each answers), the first idle the longest: the third evicts it.
            assert await ask(*held[1], 2) == dns.rcode.NOERROR
            assert await ask(*held[0], 1) == dns.rcode.NOERROR
            held.append(await asyncio.open_connection(address.host, address.port))
            assert await ask(*held[2], 3) == dns.rcode.NOERROR
            assert await closed_by_server(held[1][0])
            assert await ask(*held[0], 4) == dns.rcode.NOERROR
            assert app.stats.tcp_evicted == 1
        finally:
            await close_all(held)


async def test_busy_connections_are_not_evicted_and_a_newcomer_is_refused(
    tmp_path: Path,
) -> None:
    async with running_dns(tmp_path, tcp_max_connections_per_source=1) as app:
        app.store.apply_snapshot(SNAPSHOT, 1, "f")
        address = v4(app)
        busy = await asyncio.open_connection(address.host, address.port)
        held = [busy]
        try:
            assert await ask(*busy, 1) == dns.rcode.NOERROR
            # Half a query: the connection is busy reading it and may not be evicted.
            busy[1].write(b"\x00\x40\x12")
            await busy[1].drain()
            refused_before = app.stats.tcp_refused
            while app.stats.tcp_refused == refused_before:  # the server may not have read it yet
                newcomer = await asyncio.open_connection(address.host, address.port)
                held.append(newcomer)
                if not await closed_by_server(newcomer[0]):
                    raise AssertionError("the newcomer was not closed")
            assert app.stats.tcp_refused == refused_before + 1
        finally:
            await close_all(held)


async def test_an_idle_flood_from_one_address_leaves_room_for_others(tmp_path: Path) -> None:
    """RFC 7766 section 6.2.3: 1,000 idle connections from 127.0.0.2, then 127.0.0.1's query
    is answered, both when the per-source cap holds the flood back and when the flood fills
    the whole pool (eviction of the oldest idle connection)."""
    for per_source in (32, 2000):
        async with running_dns(
            tmp_path, tcp_max_connections=256, tcp_max_connections_per_source=per_source
        ) as app:
            app.store.apply_snapshot(SNAPSHOT, 1, "f")
            address = v4(app)
            flood = [
                await asyncio.open_connection(
                    address.host, address.port, local_addr=("127.0.0.2", 0)
                )
                for _ in range(1000)
            ]
            try:
                # The newest flood connection is answered: the server has taken in the rest.
                assert await ask(*flood[-1], 1) == dns.rcode.NOERROR
                assert len(app.tcp[0].pool) <= min(per_source, 256)
                other = await asyncio.open_connection(
                    address.host, address.port, local_addr=("127.0.0.1", 0)
                )
                flood.append(other)
                assert await ask(*other, 2) == dns.rcode.NOERROR
                assert app.stats.tcp_evicted >= 1000 - min(per_source, 256)
            finally:
                await close_all(flood)


async def test_a_client_that_stops_reading_loses_its_slot(tmp_path: Path) -> None:
    """A busy connection is never evicted, so one stalled on writing must not be busy for
    longer than the idle timeout."""
    async with running_dns(tmp_path, tcp_idle_timeout_seconds=0.3) as app:
        app.store.apply_snapshot(SNAPSHOT, 1, "f")
        address = v4(app)
        reader, writer = await asyncio.open_connection(address.host, address.port)
        try:
            assert await ask(reader, writer, 1) == dns.rcode.NOERROR  # the server holds it now
            (task,) = app.tcp[0].connection_tasks
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            reader._transport.pause_reading()  # type: ignore[attr-defined]  # never read
            query = dns.message.make_query("big.acme.example.test", "TXT").to_wire()
            # About 20 MB of answers asked for and never read: the server's writes stall.
            writer.write((len(query).to_bytes(2, "big") + query) * 10_000)
            done, _ = await asyncio.wait([task], timeout=10)
            assert done == {task}  # the stalled write timed out and the slot is free
            assert len(app.tcp[0].pool) == 0
        finally:
            writer.transport.abort()
