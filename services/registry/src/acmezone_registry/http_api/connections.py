"""Connection limits and deadlines in front of aiohttp's HTTP protocol.

aiohttp bounds idle keep-alive connections but not a client that sends its request headers one
byte at a time (slowloris), nor how many connections one address may hold. Each accepted
connection therefore gets a `GuardedProtocol` wrapped around aiohttp's own protocol:

- past the global or the per-address connection limit, the connection is answered with a JSON
  503 (`too_many_connections`) and closed before aiohttp sees it;
- a request's headers must be complete within `header_timeout` of the connection opening (or
  within the keep-alive idle time plus `header_timeout` after the previous answer), else the
  connection gets a JSON 408 (`request_timeout`) and is closed; a connection that sent nothing
  since its last answer is just closed (an unasked-for 408 could be read as the answer to a
  request the client is sending at that moment);
- the parser's own errors (bad request line, headers over the size limit, ...) are answered in
  JSON like every other error, and logged at DEBUG only: they are what scanners send.

The HTTP API tells the guard when a request starts and ends (`request_started`,
`request_finished`), from its middleware.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from aiohttp import web

from acmezone_registry.metrics import RegistryMetrics

logger = logging.getLogger(__name__)

# What the parser's error statuses are called in the JSON body.
_PARSER_ERROR_NAMES = {
    400: "malformed_request",
    413: "payload_too_large",
    414: "uri_too_long",
    431: "request_header_fields_too_large",
    501: "not_implemented",
}


def raw_response(status: int, name: str, extra_headers: tuple[str, ...] = ()) -> bytes:
    """A whole HTTP/1.1 response with a JSON error body, for writing straight to a socket."""
    body = ('{"error": ' + json.dumps(name) + "}").encode()
    head = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *extra_headers,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


_TOO_MANY = raw_response(503, "too_many_connections", ("Retry-After: 1",))
_TIMEOUT = raw_response(408, "request_timeout")


@dataclass(frozen=True)
class ConnectionLimits:
    """How many connections, and how long a request's headers may take to arrive."""

    max_connections: int
    max_connections_per_source: int
    header_timeout: float
    idle_timeout: float


class ConnectionGuard:
    """Counts connections per address and enforces `ConnectionLimits` on each."""

    def __init__(self, limits: ConnectionLimits, metrics: RegistryMetrics) -> None:
        self._limits = limits
        self._metrics = metrics
        self._per_source: Counter[str] = Counter()
        self._total = 0
        self._by_transport: dict[asyncio.BaseTransport, GuardedProtocol] = {}

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for `loop.create_server` around aiohttp's `runner.server`."""
        return lambda: GuardedProtocol(self, inner)

    def admit(self, protocol: GuardedProtocol, source: str) -> str | None:
        """Count a new connection; the refusal reason when a limit is reached."""
        if self._total >= self._limits.max_connections:
            return "global"
        if self._per_source[source] >= self._limits.max_connections_per_source:
            return "per_source"
        self._total += 1
        self._per_source[source] += 1
        self._metrics.http_connections.set(self._total)
        assert protocol.transport is not None
        self._by_transport[protocol.transport] = protocol
        return None

    def release(self, protocol: GuardedProtocol, source: str) -> None:
        self._total -= 1
        self._per_source[source] -= 1
        if self._per_source[source] <= 0:
            del self._per_source[source]
        self._metrics.http_connections.set(self._total)
        if protocol.transport is not None:
            self._by_transport.pop(protocol.transport, None)

    def refused(self, reason: str) -> None:
        self._metrics.http_connections_refused.labels(reason).inc()

    def timed_out(self) -> None:
        self._metrics.http_timeouts.labels("header").inc()

    @property
    def limits(self) -> ConnectionLimits:
        return self._limits

    def request_started(self, transport: asyncio.BaseTransport | None) -> None:
        """Headers are complete: the header deadline is met."""
        protocol = self._by_transport.get(transport) if transport is not None else None
        if protocol is not None:
            protocol.request_started()

    def request_finished(self, transport: asyncio.BaseTransport | None) -> None:
        """The answer is on its way: the next request's headers are due again."""
        protocol = self._by_transport.get(transport) if transport is not None else None
        if protocol is not None:
            protocol.request_finished()


class GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the guard's limits and deadlines."""

    def __init__(self, guard: ConnectionGuard, inner_factory: Callable[[], asyncio.Protocol]):
        self._guard = guard
        self._inner_factory = inner_factory
        self._inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self._source = ""
        self._deadline: asyncio.TimerHandle | None = None
        self._in_request = False
        self._partial = False  # bytes of a request arrived since the last answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self._source = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        refusal = self._guard.admit(self, self._source)
        if refusal is not None:
            self._guard.refused(refusal)
            transport.write(_TOO_MANY)
            transport.close()
            return
        inner = self._inner_factory()
        _answer_parser_errors_in_json(inner)
        self._inner = inner
        inner.connection_made(transport)
        self._arm(self._guard.limits.header_timeout)

    def _arm(self, seconds: float) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = asyncio.get_running_loop().call_later(seconds, self._expire)

    def _expire(self) -> None:
        self._deadline = None
        if self._in_request or self.transport is None or self.transport.is_closing():
            return
        if self._partial:
            self._guard.timed_out()
            self.transport.write(_TIMEOUT)
        self.transport.close()

    def request_started(self) -> None:
        self._in_request = True
        self._partial = False
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def request_finished(self) -> None:
        self._in_request = False
        limits = self._guard.limits
        self._arm(limits.idle_timeout + limits.header_timeout)

    def data_received(self, data: bytes) -> None:
        if not self._in_request:
            self._partial = True
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._inner is not None:
            self._guard.release(self, self._source)
            self._inner.connection_lost(exc)
            self._inner = None


class _JsonErrorsRequestHandler(web.RequestHandler):
    """aiohttp's protocol, answering its own errors (a bad request line, headers over the
    limit) as `{"error": ...}` and logging them at DEBUG only: they are what scanners send."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        logger.debug("HTTP request refused by the parser", extra={"status": status})
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot answer the error")
        name = _PARSER_ERROR_NAMES.get(status, "internal_error" if status >= 500 else "bad_request")
        response = web.Response(
            status=status,
            body=('{"error": ' + json.dumps(name) + "}").encode(),
            content_type="application/json",
        )
        response.force_close()
        return response


def _answer_parser_errors_in_json(protocol: asyncio.Protocol) -> None:
    """Give aiohttp's protocol object (made by its own factory, with its own settings) the
    JSON error answers above. The subclass adds no state, so the object stays as it is."""
    if type(protocol) is web.RequestHandler:
        protocol.__class__ = _JsonErrorsRequestHandler
