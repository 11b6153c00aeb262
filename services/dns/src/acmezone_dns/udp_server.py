"""DNS over UDP: one socket drained by a reader callback on the event loop.

Not a `DatagramProtocol`: stock asyncio's datagram transport reads every packet into a fresh
256 KiB buffer, which costs more than answering the query. A reader callback calling
`recvfrom(4096)` until the socket is empty costs a system call per packet and nothing else, on
uvloop and on the stock loop alike, and it drains a burst in one wake-up. A batch is bounded so
the feed client and gRPC still get the loop under sustained load.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

from acmezone_common.addresses import HostPort
from acmezone_dns import sockets
from acmezone_dns.metrics import LATENCY_SAMPLE_EVERY, QueryStats
from acmezone_dns.responder import Responder
from acmezone_dns.updates import UPDATE_FLAGS, UpdateForwarder

logger = logging.getLogger(__name__)

_READ_SIZE = 4096  # larger than any query we answer; a longer datagram is cut and gets FORMERR
_BATCH = 64


class UdpServer:
    """Answers DNS queries on one UDP address."""

    def __init__(
        self,
        address: HostPort,
        responder: Responder,
        stats: QueryStats,
        updates: UpdateForwarder | None = None,
    ) -> None:
        self._address = address
        self._responder = responder
        self._stats = stats
        self._updates = updates
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeups = 0

    @property
    def address(self) -> HostPort:
        """The bound address once started."""
        return sockets.bound_address(self._sock) if self._sock else self._address

    async def start(self) -> HostPort:
        """Bind and start answering."""
        self._sock = sockets.bind(self._address, socket.SOCK_DGRAM)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._on_readable)
        bound = self.address
        logger.info("DNS listening", extra={"transport": "udp", "address": str(bound)})
        return bound

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        recvfrom = sock.recvfrom
        sendto = sock.sendto
        answer = self._responder.answer
        stats = self._stats
        updates = self._updates
        responder = self._responder
        # One wake-up in LATENCY_SAMPLE_EVERY has its first answer timed: per-query timing
        # would cost more than the answer.
        self._wakeups += 1
        timed = self._wakeups % LATENCY_SAMPLE_EVERY == 0
        start = 0.0
        for _ in range(_BATCH):
            try:
                data, peer = recvfrom(_READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                stats.dropped += 1
                continue
            if timed:
                start = time.perf_counter()
            if updates is not None and len(data) > 11 and data[2] & 0xF8 == UPDATE_FLAGS:
                # RFC 2136: answered later, from the registry; queries go on meanwhile.
                if not updates.submit_udp(data, peer[0], self._sender(peer)):
                    stats.dropped += 1
                continue
            try:
                response = answer(data, False)
            except Exception:
                # A bug, never bad input (the responder handles that); keep serving.
                logger.exception("answering a UDP query failed")
                stats.dropped += 1
                continue
            if response is None:
                continue
            if responder.signed_query and updates is not None:
                # TSIG-signed query: the registry signs the answer (it holds the keys).
                responder.signed_query = False
                if not updates.submit_signing(data, response, peer[0], self._sender(peer)):
                    stats.dropped += 1
                continue
            try:
                sendto(response, peer)
            except OSError:
                stats.dropped += 1
                continue
            if timed:
                stats.observe_latency(time.perf_counter() - start)
                timed = False

    def _sender(self, peer: tuple[str, int]) -> Callable[[bytes], None]:
        sock = self._sock

        def send(response: bytes) -> None:
            if sock is not None and sock.fileno() >= 0:
                sock.sendto(response, peer)

        return send

    async def stop(self) -> None:
        """Stop answering and close the socket."""
        if self._sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
