"""The acme-dns compatible HTTP API: `POST /register`, `POST /update`, `GET /health`.

Like the gRPC servicer, this is translation only: read the request, build a `Caller`, call one use
case of `Registrations`, and write acme-dns's response. Domain errors map to acme-dns's status
codes and error names:

    /register  OPERATOR_TOKEN_*                                -> 401 forbidden
               INVALID_CIDR                                    -> 400 invalid_allowfrom_cidr
    /update    CREDENTIALS_*, SUBDOMAIN_MISMATCH,
               SOURCE_ADDRESS_NOT_ALLOWED, REGISTRATION_NOT_FOUND -> 401 forbidden
               INVALID_SUBDOMAIN                               -> 400 bad_subdomain
               INVALID_TXT_VALUE                               -> 400 bad_txt
    both       unparseable body                                -> 400 malformed_json_payload
               STORAGE_UNAVAILABLE                             -> 500 db_error

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
from acmezone_registry.http_api.tls import ReloadingCertificate
from acmezone_registry.metrics import HTTP_ROUTES, RegistryMetrics
from acmezone_registry.registrations import Registrations

logger = logging.getLogger(__name__)

_OTHER_ROUTE = "other"
# A health probe answers within this even when the database hangs.
_HEALTH_TIMEOUT_SECONDS = 5.0
# In-flight requests get this long to finish when the server stops.
_SHUTDOWN_SECONDS = 5.0

_HTTP_ERRORS = {
    404: acme_dns.NOT_FOUND,
    405: acme_dns.METHOD_NOT_ALLOWED,
    413: acme_dns.PAYLOAD_TOO_LARGE,
}

_REGISTER_ERRORS = {errors.INVALID_CIDR: acme_dns.INVALID_ALLOWFROM_CIDR}
_UPDATE_ERRORS = {
    errors.INVALID_SUBDOMAIN: acme_dns.BAD_SUBDOMAIN,
    errors.INVALID_NAME: acme_dns.BAD_SUBDOMAIN,
    errors.INVALID_TXT_VALUE: acme_dns.BAD_TXT,
}


def _route(path: str) -> str:
    return path if path in HTTP_ROUTES and path != _OTHER_ROUTE else _OTHER_ROUTE


def _bearer_token(request: web.Request) -> str | None:
    """The token of `Authorization: Bearer <token>`; "" for another scheme, None when absent."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _domain_error(exc: AcmezoneError, invalid_names: dict[str, str]) -> web.Response:
    """acme-dns's answer for a domain error."""
    if exc.code in (ErrorCode.UNAUTHENTICATED, ErrorCode.PERMISSION_DENIED, ErrorCode.NOT_FOUND):
        # acme-dns answers every authentication and authorisation failure alike.
        return acme_dns.error(401, acme_dns.FORBIDDEN)
    if isinstance(exc, InvalidArgumentError):
        return acme_dns.error(400, invalid_names.get(exc.reason, exc.reason.lower()))
    if isinstance(exc, UnavailableError):
        return acme_dns.error(500, acme_dns.DB_ERROR)
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
        tls: ReloadingCertificate | None = None,
    ) -> None:
        """`tls`: serve HTTPS with this (reloading) certificate instead of plain HTTP."""
        self.tls = tls
        self._registrations = registrations
        self._resolver = resolver
        self._metrics = metrics
        self._max_body_bytes = max_body_bytes
        self._storage_ok = storage_ok
        self._runner: web.AppRunner | None = None

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
            self.application(), access_log=None, shutdown_timeout=_SHUTDOWN_SECONDS
        )
        await runner.setup()
        try:
            await web.TCPSite(
                runner,
                address.host,
                address.port,
                ssl_context=self.tls.context if self.tls else None,
            ).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = address.with_port(int(runner.addresses[0][1]))
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
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            name = _HTTP_ERRORS.get(exc.status, exc.reason.lower().replace(" ", "_"))
            response = acme_dns.error(exc.status, name, headers)
        except Exception:
            logger.exception("unhandled error in HTTP API", extra={"route": route})
            response = acme_dns.error(500, acme_dns.INTERNAL_ERROR)
        self._metrics.http_requests.labels(route, str(response.status)).inc()
        self._metrics.http_request_seconds.labels(route).observe(time.perf_counter() - start)
        return response

    async def _body(self, request: web.Request) -> bytes:
        """The whole body; 413 before reading when Content-Length already says it is too big."""
        length = request.content_length
        if length is not None and length > self._max_body_bytes:
            raise web.HTTPRequestEntityTooLarge(self._max_body_bytes, length)
        return await request.read()

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
            await self._registrations.add_txt_value(caller, wanted.subdomain, wanted.txt)
        except AcmezoneError as exc:
            return _domain_error(exc, _UPDATE_ERRORS)
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
