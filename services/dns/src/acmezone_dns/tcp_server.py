"""DNS over TCP (RFC 7766): two-byte length-prefixed messages, several queries per connection
answered in order, connections closed after an idle timeout, and a global and per-source cap on
open connections that evicts the oldest idle one when reached (`tcp_pool`), so a flood of idle
clients can neither exhaust file descriptors nor lock other clients out.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from acmezone_common.addresses import HostPort
from acmezone_dns import sockets
from acmezone_dns.metrics import QueryStats
from acmezone_dns.responder import Responder
from acmezone_dns.tcp_pool import Connection, TcpPool, source_of
from acmezone_dns.transfer import ZoneTransfers, is_transfer
from acmezone_dns.update_forwarding import UpdateForwarder, is_update

logger = logging.getLogger(__name__)


class TcpServer:
    """Answers DNS queries on one TCP address."""

    def __init__(
        self,
        address: HostPort,
        responder: Responder,
        stats: QueryStats,
        *,
        idle_timeout: float,
        max_connections: int,
        max_per_source: int | None = None,
        updates: UpdateForwarder | None = None,
        transfers: ZoneTransfers | None = None,
    ) -> None:
        """`max_connections` open at once in all, `max_per_source` from one IPv4 address or
        IPv6 /64 (None: no per-source cap); past either the oldest idle one is evicted."""
        self._address = address
        self._transfers = transfers
        self._updates = updates
        self._responder = responder
        self._stats = stats
        self._idle_timeout = idle_timeout
        self.pool = TcpPool(
            max_connections=max_connections,
            max_per_source=max_connections if max_per_source is None else max_per_source,
        )
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._bound: HostPort | None = None

    @property
    def address(self) -> HostPort:
        """The bound address once started."""
        return self._bound or self._address

    @property
    def connection_tasks(self) -> frozenset[asyncio.Task[None]]:
        """The tasks serving the open connections (each ends when its connection closes)."""
        return frozenset(self._connections)

    async def start(self) -> HostPort:
        """Bind, listen and start accepting connections."""
        sock = sockets.bind(self._address, socket.SOCK_STREAM)
        self._bound = sockets.bound_address(sock)
        self._server = await asyncio.start_server(self._serve, sock=sock, backlog=512)
        logger.info("DNS listening", extra={"transport": "tcp", "address": str(self._bound)})
        return self._bound

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connection = self._admit(writer)
        if connection is None:
            writer.transport.abort()
            return
        self._connections.add(task)
        try:
            await self._exchange(reader, writer, connection)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception:
            logger.exception("DNS over TCP failed")
        finally:
            self.pool.release(connection)
            self._connections.discard(task)
            await self._close(writer)

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        """Close gracefully (what was written is flushed), but abort a connection whose peer
        does not read: a graceful close would wait for it forever."""
        writer.close()
        try:
            async with asyncio.timeout(self._idle_timeout):
                await writer.wait_closed()
        except TimeoutError:
            writer.transport.abort()
        except Exception:  # noqa: S110 - the peer reset it: closed all the same
            pass

    def _admit(self, writer: asyncio.StreamWriter) -> Connection | None:
        """The pool's slot for a new connection (evicting an idle one if need be), or None.
        An evicted connection is aborted: its pending read ends and its task returns."""
        peer = writer.get_extra_info("peername")
        pool = self.pool
        evicted, refused = pool.evicted, pool.refused
        connection = pool.admit(source_of(str(peer[0]) if peer else ""), writer.transport.abort)
        self._stats.tcp_evicted += pool.evicted - evicted
        self._stats.tcp_refused += pool.refused - refused
        return connection

    async def _exchange(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: Connection,
    ) -> None:
        answer = self._responder.answer
        pool = self.pool
        peername = writer.get_extra_info("peername")
        host = str(peername[0]) if peername else ""
        while True:
            pool.idle(connection)
            async with asyncio.timeout(self._idle_timeout):
                prefix = await reader.readexactly(2)
                pool.busy(connection)
                message = await reader.readexactly(int.from_bytes(prefix, "big"))
            if self._transfers is not None and is_transfer(message):
                await self._transfer(message, writer)
                continue
            if self._updates is not None and is_update(message):
                peer = writer.get_extra_info("peername")
                response: bytes | None = await self._updates.forward(
                    message, str(peer[0]) if peer else "", tcp=True
                )
            else:
                response = answer(message, True, lambda: host)
                if response is not None and self._responder.signed_query and self._updates:
                    # TSIG-signed query: the registry signs the answer (it holds the keys).
                    self._responder.signed_query = False
                    peer = writer.get_extra_info("peername")
                    response = await self._updates.sign(
                        message, response, str(peer[0]) if peer else ""
                    )
            if response is None:
                # A runt or a response: nothing sensible can follow on this stream.
                return
            writer.write(len(response).to_bytes(2, "big") + response)
            # A client that stops reading holds a busy (never evicted) slot: not for longer
            # than it may sit idle.
            async with asyncio.timeout(self._idle_timeout):
                await writer.drain()

    async def _transfer(self, message: bytes, writer: asyncio.StreamWriter) -> None:
        """An AXFR/IXFR request: its response messages, each drained before the next (the
        idle timeout does not apply while a transfer is being written)."""
        assert self._transfers is not None
        peer = writer.get_extra_info("peername")
        async for response in self._transfers.answer(message, str(peer[0]) if peer else ""):
            writer.write(len(response).to_bytes(2, "big") + response)
            await writer.drain()

    async def stop(self) -> None:
        """Stop accepting, then close every open connection."""
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            if self._connections:
                await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
