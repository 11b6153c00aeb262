"""RFC 2136 dynamic updates: UPDATE messages are forwarded to the registry, untouched.

The dns service holds no TSIG secrets and applies nothing itself: every UPDATE (UDP or TCP) goes
to the registry's `DnsUpdateService.ApplyDnsUpdate` with the client's address, and the client gets
the DNS response the registry built (TSIG-signed there). For an UPDATE of a static zone served
here, the CNAMEs into the challenge zone among its names go along (`cname_targets`): the message
itself cannot be rewritten (the signature covers it), and the registry, when told to follow
them, applies the update to the targets. The registry stays the single source of
truth, and every replica learns the change from the record feed.

When the registry cannot be asked (unreachable, past the deadline, any gRPC error) the client gets
SERVFAIL, or FORMERR when the registry calls the message itself invalid (INVALID_ARGUMENT); it
never waits longer than the deadline. After a change is committed, the answer waits (bounded) until
this replica's zone holds the returned revision, so a query to the same server right after the
answer sees the change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine

import dns.exception
import dns.message
import dns.name
import grpc

from acmezone.registry.v1 import dns_update_service_pb2 as update_pb2
from acmezone.registry.v1 import dns_update_service_pb2_grpc as update_grpc
from acmezone_common.transport import ChannelFactory, channel_to
from acmezone_dns.metrics import UpdateStats
from acmezone_dns.store import ZoneStore
from acmezone_dns.wire import header_only
from acmezone_dns.zone import FORMERR, SERVFAIL, ZoneSource, wire_key

logger = logging.getLogger(__name__)

_OPCODE_UPDATE = 5
_QR_AND_OPCODE = 0xF8
UPDATE_FLAGS = _OPCODE_UPDATE << 3
"""QR clear and opcode UPDATE: the third header byte of an UPDATE request, masked with 0xF8."""
_REVISION_POLL_SECONDS = 0.005
_MAX_CNAME_TARGETS = 64
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]


def is_update(data: bytes) -> bool:
    """True for a request (not a response) with opcode UPDATE and a whole header."""
    return len(data) >= 12 and data[2] & _QR_AND_OPCODE == UPDATE_FLAGS


class UpdateForwarder:
    """Forwards UPDATE messages to the registry and answers with what it returns."""

    def __init__(
        self,
        target: str | ChannelFactory,
        store: ZoneStore,
        stats: UpdateStats,
        *,
        timeout: float,
        revision_wait: float,
        max_in_flight: int = 256,
    ) -> None:
        self._target = target
        self._store = store
        self._stats = stats
        self._timeout = timeout
        self._revision_wait = revision_wait
        self._max_in_flight = max_in_flight
        self._channel: grpc.aio.Channel | None = None
        self._stub: update_grpc.DnsUpdateServiceAsyncStub | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.local_signer: Callable[[bytes, bytes], bytes | None] | None = None
        """Signs answers to queries signed with a key held here (zone transfer keys); None
        from it means the registry signs."""

    async def start(self) -> None:
        """Open the channel to the registry (connecting lazily, on the first update)."""
        self._channel = channel_to(self._target, options=_CHANNEL_OPTIONS)
        self._stub = update_grpc.DnsUpdateServiceStub(self._channel)

    async def stop(self) -> None:
        """Abandon updates still in flight (their clients retry) and close the channel."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None

    def submit_udp(self, data: bytes, peer: str, send: Callable[[bytes], None]) -> bool:
        """Forward a UDP update in the background and `send` the answer; False (and nothing
        sent: the client retries) when too many updates are in flight already."""
        return self._submit(self.forward(data, peer, tcp=False), peer, send)

    def submit_signing(
        self, query: bytes, answer: bytes, peer: str, send: Callable[[bytes], None]
    ) -> bool:
        """Have the answer to a signed UDP query signed in the background and `send` it; False
        when too many are in flight already."""
        return self._submit(self.sign(query, answer, peer), peer, send)

    def _submit(
        self, answer: Coroutine[object, object, bytes], peer: str, send: Callable[[bytes], None]
    ) -> bool:
        if len(self._tasks) >= self._max_in_flight:
            answer.close()
            return False
        task = asyncio.get_running_loop().create_task(self._send_later(answer, peer, send))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _send_later(
        self, answer: Coroutine[object, object, bytes], peer: str, send: Callable[[bytes], None]
    ) -> None:
        response = await answer
        try:
            send(response)
        except OSError:
            logger.info("sending an answer failed", extra={"peer": peer})

    async def sign(self, query: bytes, answer: bytes, peer: str) -> bytes:
        """`answer` signed by the registry with the key of the signed `query` (or the
        registry's NOTAUTH when the query's signature does not verify); SERVFAIL when the
        registry cannot be asked. Never raises."""
        if self.local_signer is not None:
            signed = self.local_signer(query, answer)
            if signed is not None:
                return signed
        stub = self._stub
        if stub is None:
            return header_only(query, SERVFAIL)
        try:
            reply = await stub.SignDnsResponse(
                update_pb2.SignDnsResponseRequest(
                    query=query, response=answer, client_address=peer
                ),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            logger.warning(
                "having an answer signed by the registry failed",
                extra={"code": exc.code().name, "details": exc.details(), "peer": peer},
            )
            return header_only(query, SERVFAIL)
        except Exception:
            logger.exception("having an answer signed by the registry failed")
            return header_only(query, SERVFAIL)
        return reply.message

    async def forward(self, data: bytes, peer: str, *, tcp: bool) -> bytes:
        """The answer to one UPDATE message from `peer` (an IP address). Never raises."""
        rcode, response = await self._ask_registry(data, peer)
        self._stats.count(rcode, tcp)
        return response

    def cname_targets(self, data: bytes) -> dict[str, str]:
        """For an UPDATE of a static zone served here: its owner names that are CNAMEs into
        the challenge zone, mapped to their targets (the registry decides whether to follow
        them). Empty for the challenge zone, other zones and anything unparsable."""
        try:
            message = dns.message.from_wire(data, keyring=False)
        except (dns.exception.DNSException, ValueError, UnicodeError):
            return {}
        store = self._store
        if len(message.question) != 1:
            return {}
        info = store.zone_info.get(wire_key(message.question[0].name))
        if info is None or info.source is not ZoneSource.STATIC:
            return {}
        view = store.snapshot.view
        targets: dict[str, str] = {}
        for rrset in [*message.answer, *message.authority]:  # prerequisites, updates
            key = wire_key(rrset.name)
            chain = view.cname_chain(key)
            if chain and view.zone_of(chain[-1]) is view.zones.get(store.feed_zone):
                owner = rrset.name.canonicalize().to_text()
                targets[owner] = dns.name.from_wire(chain[-1], 0)[0].to_text()
            if len(targets) >= _MAX_CNAME_TARGETS:
                break
        return targets

    async def _ask_registry(self, data: bytes, peer: str) -> tuple[int, bytes]:
        stub = self._stub
        if stub is None:
            return SERVFAIL, header_only(data, SERVFAIL)
        try:
            reply = await stub.ApplyDnsUpdate(
                update_pb2.ApplyDnsUpdateRequest(
                    message=data, client_address=peer, cname_targets=self.cname_targets(data)
                ),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            rcode = FORMERR if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else SERVFAIL
            logger.warning(
                "forwarding an UPDATE to the registry failed",
                extra={"code": exc.code().name, "details": exc.details(), "peer": peer},
            )
            return rcode, header_only(data, rcode)
        except Exception:
            logger.exception("forwarding an UPDATE to the registry failed")
            return SERVFAIL, header_only(data, SERVFAIL)
        if reply.revision:
            await self._wait_for_revision(reply.revision)
        return reply.rcode, reply.message

    async def _wait_for_revision(self, revision: int) -> None:
        """Until the zone served here holds `revision`, for at most `revision_wait` seconds."""
        # The store is swapped synchronously by the feed client and signals nothing; a few
        # millisecond polls for at most a second cost less than a notification on every revision.
        deadline = time.monotonic() + self._revision_wait
        while self._store.snapshot.revision < revision and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(_REVISION_POLL_SECONDS)
