"""DNS over UDP: one socket drained by a reader callback on the event loop.

Not a `DatagramProtocol`: stock asyncio's datagram transport reads every packet into a fresh
256 KiB buffer, which costs more than answering the query. A reader callback drains the socket
itself. Where the C extension was built (Linux) it reads up to `batch_size` datagrams with one
recvmmsg and writes their answers with one sendmmsg (`datagram_batch`): per query, the system
calls were most of the cost that was left. With `native` (the default) the batch loop also
answers plain queries from the pre-packed table itself; Python sees only the datagrams that
need more.
Without the extension, or with a batch size of 1, it calls `recvfrom(4096)` and `sendto` per
datagram.
The work per wake-up is bounded so the feed client and gRPC still get the loop under sustained
load.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from functools import partial

from acmezone_common.addresses import HostPort
from acmezone_dns import datagram_batch, sockets
from acmezone_dns.datagram_batch import NativeDatagramBatch, Peer
from acmezone_dns.metrics import LATENCY_SAMPLE_EVERY, QueryStats
from acmezone_dns.responder import Responder
from acmezone_dns.update_forwarding import UPDATE_FLAGS, UpdateForwarder

logger = logging.getLogger(__name__)

_READ_SIZE = 4096  # larger than any query we answer; a longer datagram is cut and gets FORMERR
_READS_PER_WAKEUP = 64  # datagrams read one by one before yielding the loop
_BATCHES_PER_WAKEUP = 4  # batches read before yielding the loop


class UdpServer:
    """Answers DNS queries on one UDP address."""

    def __init__(
        self,
        address: HostPort,
        responder: Responder,
        stats: QueryStats,
        updates: UpdateForwarder | None = None,
        *,
        batch_size: int = 64,
        native: bool = True,
    ) -> None:
        """`batch_size`: datagrams read per system call where recvmmsg exists; 1 reads one at
        a time with recvfrom. `native`: run the batch loop in the C accelerator if it was
        built."""
        self._address = address
        self._batch_size = batch_size
        self._native = native
        self._batch: NativeDatagramBatch | None = None
        self._unbatched_peer: Peer = ("", 0)  # the sender of the datagram just read, unbatched
        self._index = 0  # the batch index of the datagram being answered
        self._current_host = self._host_of_current  # bound once: the responder's `peer`
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
        family = self._sock.family
        if self._batch_size > 1 and datagram_batch.native_available():
            self._batch = NativeDatagramBatch(family, self._batch_size, _READ_SIZE)
        reader = self._on_readable_batched if self._batch is not None else self._on_readable
        self._loop.add_reader(self._sock.fileno(), reader)
        bound = self.address
        logger.info(
            "DNS listening",
            extra={
                "transport": "udp",
                "address": str(bound),
                "udp_path": self.path,
                "batch_size": self._batch_size if self._batch else 1,
            },
        )
        return bound

    @property
    def batched(self) -> bool:
        """Whether datagrams are read and answered in batches (recvmmsg/sendmmsg)."""
        return self._batch is not None

    @property
    def path(self) -> str:
        """Which UDP loop answers: "native" (the C batch loop answers plain queries),
        "batched" (the same recvmmsg/sendmmsg batches, every datagram answered in Python:
        UDP_NATIVE=false) or "recvfrom" (one datagram per system call)."""
        if self._batch is None:
            return "recvfrom"
        return "native" if self._native else "batched"

    def _on_readable_batched(self) -> None:
        sock = self._sock
        batch = self._batch
        if sock is None or batch is None:
            return
        fd = sock.fileno()
        stats = self._stats
        exchange: Callable[[], tuple[int, int]]
        if self._native:
            # The C loop answers plain queries from the tables itself; they are read once per
            # wake-up (snapshots swap between callbacks, never during one).
            exchange = partial(
                batch.exchange, fd, self._handle_datagram, self._responder.fast_tables()
            )
        else:
            exchange = partial(batch.exchange, fd, self._handle_datagram)
        # One wake-up in LATENCY_SAMPLE_EVERY has its first batch timed, from the read to the
        # last answer handed to the kernel: at most what any query of that batch waited.
        self._wakeups += 1
        timed = self._wakeups % LATENCY_SAMPLE_EVERY == 0
        for _ in range(_BATCHES_PER_WAKEUP):
            start = time.perf_counter() if timed else 0.0
            try:
                count, lost = exchange()
            except OSError:
                stats.dropped += 1
                continue
            if count == 0:
                return
            stats.observe_batch(count)
            if lost:
                stats.dropped += lost
            if timed:
                stats.observe_latency(time.perf_counter() - start)
                timed = False
            if count < batch.capacity:
                return

    def _handle_datagram(self, index: int, data: bytes) -> bytes | None:
        """The answer to datagram `index` of the current batch (or to the datagram just read,
        unbatched), or None when it gets none now: UPDATE messages and TSIG-signed queries are
        answered later, once the registry has replied."""
        updates = self._updates
        if updates is not None and len(data) > 11 and data[2] & 0xF8 == UPDATE_FLAGS:
            # RFC 2136: answered later, from the registry; queries go on meanwhile.
            peer = self._peer(index)
            if not updates.submit_udp(data, peer[0], self._sender(peer)):
                self._stats.dropped += 1
            return None
        self._index = index
        try:
            response = self._responder.answer(data, False, self._current_host)
        except Exception:
            # A bug, never bad input (the responder handles that); keep serving.
            logger.exception("answering a UDP query failed")
            self._stats.dropped += 1
            return None
        if response is not None and updates is not None and self._responder.signed_query:
            # TSIG-signed query: the registry signs the answer (it holds the keys).
            self._responder.signed_query = False
            peer = self._peer(index)
            if not updates.submit_signing(data, response, peer[0], self._sender(peer)):
                self._stats.dropped += 1
            return None
        return response

    def _host_of_current(self) -> str:
        """The sender's address of the datagram being answered (for its server cookie)."""
        return str(self._peer(self._index)[0])

    def _peer(self, index: int) -> Peer:
        """The sender of datagram `index`: only the rare paths ask, so it is built on demand."""
        if self._batch is not None:
            return self._batch.peer(index)
        return self._unbatched_peer

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        recvfrom = sock.recvfrom
        sendto = sock.sendto
        handle = self._handle_datagram
        stats = self._stats
        # One wake-up in LATENCY_SAMPLE_EVERY has its first answer timed: per-query timing
        # would cost more than the answer.
        self._wakeups += 1
        timed = self._wakeups % LATENCY_SAMPLE_EVERY == 0
        start = 0.0
        for _ in range(_READS_PER_WAKEUP):
            try:
                data, peer = recvfrom(_READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                stats.dropped += 1
                continue
            if timed:
                start = time.perf_counter()
            self._unbatched_peer = peer
            response = handle(0, data)
            if response is None:
                continue
            try:
                sendto(response, peer)
            except OSError:
                stats.dropped += 1
                continue
            if timed:
                stats.observe_latency(time.perf_counter() - start)
                timed = False

    def _sender(self, peer: Peer) -> Callable[[bytes], None]:
        sock = self._sock
        stats = self._stats

        def send(response: bytes) -> None:
            if sock is not None and sock.fileno() >= 0:
                try:
                    sock.sendto(response, peer)
                except OSError:
                    stats.dropped += 1

        return send

    async def stop(self) -> None:
        """Stop answering and close the socket."""
        if self._sock is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            self._batch = None
