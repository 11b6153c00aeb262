"""Prometheus plumbing: the standard gRPC server series and the /metrics HTTP endpoint.

Every collector is created against a `CollectorRegistry` passed in by the composition root, so a
test can run several servers in one process and read each one's figures on its own. The gRPC
series use the names and labels of go-grpc-prometheus, so existing dashboards and alerts work.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app

from acmezone_common.addresses import HostPort

logger = logging.getLogger(__name__)

GRPC_CODES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)

# Latency buckets in seconds, from sub-millisecond cache hits to slow password hashing.
_HANDLING_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class GrpcServerMetrics:
    """grpc_server_started_total, grpc_server_handled_total, grpc_server_handling_seconds, and
    the per-message stream counters."""

    _LABELS = ("grpc_type", "grpc_service", "grpc_method")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.started = Counter(
            "grpc_server_started_total",
            "RPCs started on the server.",
            self._LABELS,
            registry=registry,
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, by status code.",
            (*self._LABELS, "grpc_code"),
            registry=registry,
        )
        self.handling_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from an RPC's start to its completion (whole stream for streaming RPCs).",
            self._LABELS,
            buckets=_HANDLING_BUCKETS,
            registry=registry,
        )
        self.msg_sent = Counter(
            "grpc_server_msg_sent_total",
            "Stream messages sent by the server.",
            self._LABELS,
            registry=registry,
        )

    def initialise(self, methods: Iterable[tuple[str, str, str]]) -> None:
        """Create every (type, service, method) series at 0 so rates exist before traffic."""
        for grpc_type, service, method in methods:
            self.started.labels(grpc_type, service, method)
            self.handling_seconds.labels(grpc_type, service, method)
            if grpc_type == "server_stream":
                self.msg_sent.labels(grpc_type, service, method)
            for code in GRPC_CODES:
                self.handled.labels(grpc_type, service, method, code)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _ThreadingWSGIServer6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Scrapes every few seconds are not news."""


class MetricsServer:
    """Serves a registry's /metrics over HTTP on its own port, in a daemon thread.

    A small threaded WSGI server: scraping never touches the asyncio loop that answers gRPC and
    DNS. It polls for shutdown every 50 ms, so stopping a service is quick.
    """

    def __init__(self, address: HostPort, registry: CollectorRegistry) -> None:
        self._address = address
        self._registry = registry
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HostPort:
        """Bind and start serving; returns the bound address (useful with port 0)."""
        server_class = _ThreadingWSGIServer6 if ":" in self._address.host else _ThreadingWSGIServer
        server = make_server(
            self._address.host,
            self._address.port,
            make_wsgi_app(self._registry),
            server_class,
            handler_class=_QuietHandler,
        )
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        self._server, self._thread = server, thread
        bound = self._address.with_port(server.server_port)
        logger.info("metrics listening", extra={"address": str(bound)})
        return bound

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
