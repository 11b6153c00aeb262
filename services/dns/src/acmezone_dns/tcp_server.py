"""DNS over TCP (RFC 7766): two-byte length-prefixed messages, several queries per connection
answered in order, connections closed after an idle timeout, and a cap on open connections so a
flood of idle clients cannot exhaust file descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from acmezone_common.addresses import HostPort
from acmezone_dns import sockets
from acmezone_dns.metrics import QueryStats
from acmezone_dns.responder import Responder
from acmezone_dns.transfer import ZoneTransfers, is_transfer
from acmezone_dns.updates import UpdateForwarder, is_update

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
        updates: UpdateForwarder | None = None,
        transfers: ZoneTransfers | None = None,
    ) -> None:
        self._address = address
        self._transfers = transfers
        self._updates = updates
        self._responder = responder
        self._stats = stats
        self._idle_timeout = idle_timeout
        self._max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._bound: HostPort | None = None

    @property
    def address(self) -> HostPort:
        """The bound address once started."""
        return self._bound or self._address

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
        if len(self._connections) >= self._max_connections:
            self._stats.dropped += 1
            writer.close()
            return
        self._connections.add(task)
        try:
            await self._exchange(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception:
            logger.exception("DNS over TCP failed")
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answer = self._responder.answer
        while True:
            async with asyncio.timeout(self._idle_timeout):
                prefix = await reader.readexactly(2)
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
                response = answer(message, True)
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
