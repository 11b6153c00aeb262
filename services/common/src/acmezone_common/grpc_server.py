"""The gRPC server every acmezone service runs: grpc.aio with health, reflection and the shared
interceptor already in place.

A service registers its servicers with `add_service`, then `start`s; health reports SERVING for
every registered service unless the service says otherwise (the dns service stays NOT_SERVING
until its first snapshot). `stop` flips health to NOT_SERVING first, so load balancers drain the
replica before in-flight RPCs get their grace period.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from acmezone_common.addresses import HostPort
from acmezone_common.guard import TokenGuard
from acmezone_common.interceptors import ServerInterceptor
from acmezone_common.metrics import GrpcServerMetrics

logger = logging.getLogger(__name__)

HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
_MAX_MESSAGE_BYTES = 4 * 1024 * 1024

ServiceStatus = health_pb2.HealthCheckResponse.ServingStatus


class GrpcServer:
    """A grpc.aio server bound to one address, with health checking and reflection; TLS when
    given server `credentials` (acmezone_common.tls), plaintext otherwise."""

    def __init__(
        self,
        address: HostPort,
        *,
        registry: CollectorRegistry,
        error_domain: str,
        credentials: grpc.ServerCredentials | None = None,
        guard: TokenGuard | None = None,
    ) -> None:
        """`credentials` (`acmezone_common.tls`, or `ServiceSettings.grpc_server_tls`) make
        the port serve TLS.
        `guard`, when given, runs inside the shared interceptor (its refusals are counted and
        mapped like any error) and requires a token on the services it names."""
        self._address = address
        self._credentials = credentials
        self._metrics = GrpcServerMetrics(registry)
        interceptors: list[grpc.aio.ServerInterceptor] = [
            ServerInterceptor(self._metrics, error_domain)
        ]
        if guard is not None:
            interceptors.append(guard)
        self._server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                # grpc enables SO_REUSEPORT by default, which lets a second process bind the same
                # port silently; a port conflict must be an error instead.
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
                # Keep idle watch streams alive through NATs and load balancers.
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
            ],
        )
        self.health = health.aio.HealthServicer()
        self._services: list[str] = []
        self._methods: list[tuple[str, str, str]] = []
        self._bound: HostPort | None = None

    def add_service(
        self, descriptor: ServiceDescriptor, register: Callable[[grpc.aio.Server], None]
    ) -> None:
        """Register a servicer; `register` is the generated `add_XServicer_to_server` partial."""
        register(self._server)
        self._services.append(descriptor.full_name)
        for method in descriptor.methods:
            grpc_type = "server_stream" if method.server_streaming else "unary"
            self._methods.append((grpc_type, descriptor.full_name, method.name))

    @property
    def address(self) -> HostPort:
        """The bound address once started (the real port when configured with port 0)."""
        return self._bound or self._address

    async def start(self, *, serving: bool = True) -> HostPort:
        """Bind, start, and mark every registered service SERVING (or NOT_SERVING)."""
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            [*self._services, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME], self._server
        )
        try:
            if self._credentials is None:
                port = self._server.add_insecure_port(str(self._address))
            else:
                port = self._server.add_secure_port(str(self._address), self._credentials)
        except RuntimeError as exc:  # grpc's way of saying "address in use" and the like
            raise OSError(f"gRPC server could not bind {self._address}: {exc}") from exc
        await self._server.start()
        self._metrics.initialise(self._methods)
        self._bound = self._address.with_port(port)
        for name in ("", *self._services):
            await self.set_serving(name, serving)
        logger.info(
            "gRPC listening",
            extra={
                "address": str(self._bound),
                "tls": "off" if self._credentials is None else "on",
            },
        )
        return self._bound

    async def set_serving(self, service: str, serving: bool) -> None:
        """Report one service ("" is the whole server) as SERVING or NOT_SERVING."""
        await self.health.set(
            service,
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING,
        )

    async def stop(self, grace: float) -> None:
        """NOT_SERVING everywhere, then let in-flight RPCs finish for up to `grace` seconds."""
        await self.health.enter_graceful_shutdown()
        await self._server.stop(grace)

    async def wait_for_termination(self) -> None:
        """Block until the server stops."""
        await self._server.wait_for_termination()
