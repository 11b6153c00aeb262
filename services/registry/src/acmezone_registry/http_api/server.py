"""The acme-dns compatible HTTP API: `POST /register`, `POST /update`, `GET /health`.

Like the gRPC servicer, this is translation only: read the request, build a `Caller`, call one use
case of `Registrations`, and write acme-dns's response. Domain errors map to acme-dns's status
codes and error names:

    /register  OPERATOR_TOKEN_*                                -> 401 forbidden
               INVALID_CIDR                                    -> 400 invalid_allowfrom_cidr
               TOO_MANY_CIDRS                                  -> 400 too_many_allowfrom_cidrs
    /update    CREDENTIALS_*, SUBDOMAIN_MISMATCH,
               SOURCE_ADDRESS_NOT_ALLOWED, REGISTRATION_NOT_FOUND -> 401 forbidden
               INVALID_SUBDOMAIN                               -> 400 bad_subdomain
               INVALID_TXT_VALUE                               -> 400 bad_txt
    both       unparseable body                                -> 400 malformed_json_payload
               STORAGE_UNAVAILABLE                             -> 503 db_error, Retry-After
               RATE_LIMITED                                    -> 429 rate_limited, Retry-After

Every answer is JSON, including the 404, 405 and 413 that aiohttp itself would write as text and
any unexpected failure (500 internal_error, logged). The caller's address is the socket peer;
X-Forwarded-For counts only through the `ClientAddressResolver` (trusted proxies).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from acmezone_common.addresses import HostPort
from acmezone_common.errors import (
    AcmezoneError,
    ErrorCode,
    InvalidArgumentError,
    UnavailableError,
)
from acmezone_registry import errors
from acmezone_registry.access import Caller, ClientAddressResolver, parse_address
from acmezone_registry.http_api import acme_dns
from acmezone_registry.http_api.connections import ConnectionGuard, ConnectionLimits
from acmezone_registry.http_api.tls import ReloadingCertificate
from acmezone_registry.metrics import HTTP_ROUTES, RegistryMetrics
from acmezone_registry.registrations import Registrations

logger = logging.getLogger(__name__)

_OTHER_ROUTE = "other"
# A health probe answers within this even when the database hangs.
_HEALTH_TIMEOUT_SECONDS = 5.0
# What a client is told to wait before retrying while the database is unavailable.
_UNAVAILABLE_RETRY_AFTER_SECONDS = 2
# How long a rate-limited answer is held back (see `_tarpit`).
_RATE_LIMITED_DELAY_SECONDS = 1.0
# In-flight requests get this long to finish when the server stops.
_SHUTDOWN_SECONDS = 5.0

_HTTP_ERRORS = {
    404: acme_dns.NOT_FOUND,
    405: acme_dns.METHOD_NOT_ALLOWED,
    413: acme_dns.PAYLOAD_TOO_LARGE,
}

_REGISTER_ERRORS = {
    errors.INVALID_CIDR: acme_dns.INVALID_ALLOWFROM_CIDR,
    errors.TOO_MANY_CIDRS: acme_dns.TOO_MANY_ALLOWFROM_CIDRS,
}
_UPDATE_ERRORS = {
    errors.INVALID_SUBDOMAIN: acme_dns.BAD_SUBDOMAIN,
    errors.INVALID_NAME: acme_dns.BAD_SUBDOMAIN,
    errors.INVALID_TXT_VALUE: acme_dns.BAD_TXT,
}


class RequestBodyTimeoutError(Exception):
    """The request body did not arrive within the body timeout."""


def _route(path: str) -> str:
    return path if path in HTTP_ROUTES and path != _OTHER_ROUTE else _OTHER_ROUTE


def _bearer_token(request: web.Request) -> str | None:
    """The token of `Authorization: Bearer <token>`; "" for another scheme, None when absent."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def _tarpit(exc: AcmezoneError) -> None:
    """Hold a rate-limited answer back a little: a flooding client then waits instead of
    costing us a request per round trip (its connections are capped per address anyway)."""
    if exc.reason == errors.RATE_LIMITED:
        await asyncio.sleep(_RATE_LIMITED_DELAY_SECONDS)


def _domain_error(exc: AcmezoneError, invalid_names: dict[str, str]) -> web.Response:
    """acme-dns's answer for a domain error."""
    if exc.reason == errors.RATE_LIMITED:
        retry_after = exc.metadata.get("retry_after_seconds", "1")
        return acme_dns.error(429, acme_dns.RATE_LIMITED, {"Retry-After": retry_after})
    if exc.code in (ErrorCode.UNAUTHENTICATED, ErrorCode.PERMISSION_DENIED, ErrorCode.NOT_FOUND):
        # acme-dns answers every authentication and authorisation failure alike.
        return acme_dns.error(401, acme_dns.FORBIDDEN)
    if isinstance(exc, InvalidArgumentError):
        return acme_dns.error(400, invalid_names.get(exc.reason, exc.reason.lower()))
    if isinstance(exc, UnavailableError):
        # Temporary by nature: clients (and proxies) retry a 503 after Retry-After.
        return acme_dns.error(
            503, acme_dns.DB_ERROR, {"Retry-After": str(_UNAVAILABLE_RETRY_AFTER_SECONDS)}
        )
    status = 409 if exc.code is ErrorCode.ALREADY_EXISTS else 400
    return acme_dns.error(status, exc.reason.lower())


class HttpApi:
    """acme-dns's HTTP API over `Registrations`, served by aiohttp."""

    def __init__(
        self,
        registrations: Registrations,
        resolver: ClientAddressResolver,
        metrics: RegistryMetrics,
        *,
        max_body_bytes: int,
        storage_ok: Callable[[], Awaitable[bool]],
        connection_limits: ConnectionLimits | None = None,
        body_timeout: float = 10.0,
        settle: Callable[[int], Awaitable[None]] | None = None,
        tls: ReloadingCertificate | None = None,
    ) -> None:
        """`settle(revision)` holds an `/update` answer until the change is served
        (`RecordFeed.settle`); None answers at once. `tls`: serve HTTPS with this (reloading)
        certificate instead of plain HTTP."""
        self.tls = tls
        self._registrations = registrations
        self._settle = settle or _answer_at_once
        self._resolver = resolver
        self._metrics = metrics
        self._max_body_bytes = max_body_bytes
        self._storage_ok = storage_ok
        self._limits = connection_limits or ConnectionLimits(
            max_connections=1024,
            max_connections_per_source=256,
            header_timeout=10.0,
            idle_timeout=30.0,
        )
        self._body_timeout = body_timeout
        self._guard = ConnectionGuard(self._limits, metrics)
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None

    def application(self) -> web.Application:
        """The aiohttp application with acme-dns's routes."""
        app = web.Application(
            client_max_size=self._max_body_bytes, middlewares=[self._observe_and_translate]
        )
        app.router.add_post("/register", self._register)
        app.router.add_post("/update", self._update)
        app.router.add_get("/health", self._health)
        return app

    async def start(self, address: HostPort) -> HostPort:
        """Bind and serve; returns the bound address (the real port when given port 0)."""
        runner = web.AppRunner(
            self.application(),
            access_log=None,
            shutdown_timeout=_SHUTDOWN_SECONDS,
            # aiohttp's own idle close comes after the guard's deadlines, which answer first.
            keepalive_timeout=self._limits.idle_timeout + self._limits.header_timeout + 1,
        )
        await runner.setup()
        assert runner.server is not None
        try:
            # Our own listening socket, so every connection passes the guard first. With TLS
            # the guard sees a connection once its handshake is done: the handshake gets the
            # header timeout, so a slow one cannot sit outside the limits for long.
            server = await asyncio.get_running_loop().create_server(
                self._guard.factory(runner.server),
                address.host,
                address.port,
                reuse_address=True,
                backlog=1024,
                ssl=self.tls.context if self.tls else None,
                ssl_handshake_timeout=self._limits.header_timeout if self.tls else None,
            )
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._server = server
        bound = address.with_port(int(server.sockets[0].getsockname()[1]))
        if self.tls is not None:
            self.tls.start()
        logger.info(
            "acme-dns HTTP API listening",
            extra={"address": str(bound), "scheme": "https" if self.tls else "http"},
        )
        return bound

    async def stop(self) -> None:
        """Stop accepting connections, let in-flight requests finish briefly, release the port."""
        if self.tls is not None:
            await self.tls.stop()
        if self._server is not None:
            self._server.close()  # no new connections; open ones drain below
            self._server = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # -- plumbing -------------------------------------------------------------------------------

    @web.middleware
    async def _observe_and_translate(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Count and time every request; turn aiohttp's own errors and crashes into JSON."""
        route = _route(request.path)
        start = time.perf_counter()
        response: web.StreamResponse
        self._guard.request_started(request.transport)
        try:
            response = await handler(request)
        except RequestBodyTimeoutError:
            self._metrics.http_timeouts.labels("body").inc()
            response = acme_dns.error(408, acme_dns.REQUEST_TIMEOUT)
            response.force_close()
        except web.HTTPException as exc:
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            name = _HTTP_ERRORS.get(exc.status, exc.reason.lower().replace(" ", "_"))
            response = acme_dns.error(exc.status, name, headers)
        except Exception:
            logger.exception("unhandled error in HTTP API", extra={"route": route})
            response = acme_dns.error(500, acme_dns.INTERNAL_ERROR)
        finally:
            self._guard.request_finished(request.transport)
        self._metrics.http_requests.labels(route, str(response.status)).inc()
        self._metrics.http_request_seconds.labels(route).observe(time.perf_counter() - start)
        return response

    async def _body(self, request: web.Request) -> bytes:
        """The whole body; 413 before reading when Content-Length already says it is too big."""
        length = request.content_length
        if length is not None and length > self._max_body_bytes:
            raise web.HTTPRequestEntityTooLarge(self._max_body_bytes, length)
        try:
            async with asyncio.timeout(self._body_timeout):
                return await request.read()
        except TimeoutError as exc:
            raise RequestBodyTimeoutError from exc

    def _caller(
        self,
        request: web.Request,
        *,
        operator_token: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> Caller:
        peer = parse_address(request.remote) if request.remote else None
        forwarded_for = request.headers.getall("X-Forwarded-For", [])
        return Caller(
            address=self._resolver.resolve(peer, forwarded_for),
            operator_token=operator_token,
            username=username,
            password=password,
        )

    # -- routes ---------------------------------------------------------------------------------

    async def _register(self, request: web.Request) -> web.StreamResponse:
        try:
            wanted = acme_dns.parse_register(await self._body(request))
        except acme_dns.MalformedBodyError:
            return acme_dns.error(400, acme_dns.MALFORMED_JSON_PAYLOAD)
        caller = self._caller(request, operator_token=_bearer_token(request))
        try:
            issued = await self._registrations.create(caller, allowed_cidrs=wanted.allowfrom)
        except AcmezoneError as exc:
            if exc.code is ErrorCode.UNAUTHENTICATED:
                return acme_dns.error(
                    401, acme_dns.FORBIDDEN, {"WWW-Authenticate": 'Bearer realm="acmezone"'}
                )
            await _tarpit(exc)
            return _domain_error(exc, _REGISTER_ERRORS)
        return acme_dns.registered(issued.registration, issued.password)

    async def _update(self, request: web.Request) -> web.StreamResponse:
        try:
            wanted = acme_dns.parse_update(await self._body(request))
        except acme_dns.MalformedBodyError:
            return acme_dns.error(400, acme_dns.MALFORMED_JSON_PAYLOAD)
        caller = self._caller(
            request,
            username=request.headers.get("X-Api-User"),
            password=request.headers.get("X-Api-Key"),
        )
        try:
            record = await self._registrations.add_txt_value(caller, wanted.subdomain, wanted.txt)
        except AcmezoneError as exc:
            await _tarpit(exc)
            return _domain_error(exc, _UPDATE_ERRORS)
        await self._settle(record.revision)
        return acme_dns.updated(wanted.txt)

    async def _health(self, request: web.Request) -> web.StreamResponse:
        try:
            async with asyncio.timeout(_HEALTH_TIMEOUT_SECONDS):
                healthy = await self._storage_ok()
        except Exception:
            logger.warning("health check: storage check failed", exc_info=True)
            healthy = False
        if healthy:
            return web.Response(status=200)  # acme-dns answers 200 with an empty body
        return acme_dns.error(503, acme_dns.STORAGE_UNAVAILABLE)


async def _answer_at_once(_revision: int) -> None:
    """The `settle` of an HttpApi that does not wait for the dns replicas."""
