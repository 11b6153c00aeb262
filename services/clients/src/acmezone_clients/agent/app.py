"""The agent's composition root: one channel to the issuer, one watcher per target, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import grpc
from prometheus_client import CollectorRegistry

from acmezone.issuer.v1 import certificate_service_pb2_grpc, delivery_target_service_pb2_grpc
from acmezone_clients.agent.config import Target
from acmezone_clients.agent.files import CrashPoint, Installer
from acmezone_clients.agent.metrics import AgentMetrics
from acmezone_clients.agent.settings import AgentSettings
from acmezone_clients.agent.watcher import CertificateWatcher, Status, WatchPolicy
from acmezone_common.addresses import HostPort
from acmezone_common.metrics import MetricsServer
from acmezone_common.tls import channel_credentials

logger = logging.getLogger(__name__)


class AgentApp:
    """Builds and runs the watchers; `stop` cancels them (an install in flight completes)."""

    def __init__(
        self,
        settings: AgentSettings,
        targets: list[Target],
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.targets = targets
        self.metrics_registry = metrics_registry or CollectorRegistry()
        self.metrics = AgentMetrics(self.metrics_registry)
        self._metrics_server = (
            MetricsServer(settings.metrics_address, self.metrics_registry)
            if settings.metrics_address is not None
            else None
        )
        self.metrics_address: HostPort | None = None
        token = settings.token_value()
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self._channel: grpc.aio.Channel | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Condition()
        self.watchers: dict[str, CertificateWatcher] = {}
        for target in targets:
            target.ownership.ids()  # an unknown user or group fails here, before any watch
        policy = WatchPolicy(
            backoff_initial=settings.backoff_initial_seconds,
            backoff_max=settings.backoff_max_seconds,
            hook_attempts=settings.hook_attempts,
            hook_backoff_initial=settings.hook_backoff_initial_seconds,
            rpc_timeout=settings.rpc_timeout_seconds,
            host=settings.host,
            report_installs=settings.report_installs,
        )
        self._policy = policy
        self._crash = CrashPoint(settings.crash_after_writes, settings.crash_signal)

    def _notify(self) -> None:
        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(notify())

    def _options(self) -> list[tuple[str, int | str]]:
        """gRPC's own reconnect backoff follows the agent's settings, and the channel keeps its
        connections to itself: grpc shares them between channels of one process by default,
        so another client's failed connection would hold back the agent's reconnect. Keepalive
        pings (at the 5 minutes gRPC servers accept by default) find a peer that vanished
        without closing the connection, which an idle watch stream would never notice."""
        initial = int(self.settings.backoff_initial_seconds * 1000)
        options: list[tuple[str, int | str]] = [
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.initial_reconnect_backoff_ms", initial),
            ("grpc.min_reconnect_backoff_ms", initial),
            ("grpc.max_reconnect_backoff_ms", int(self.settings.backoff_max_seconds * 1000)),
            ("grpc.keepalive_time_ms", 300_000),
            ("grpc.keepalive_timeout_ms", 20_000),
        ]
        if self.settings.tls_server_name:
            options.append(("grpc.ssl_target_name_override", self.settings.tls_server_name))
        return options

    async def start(self) -> None:
        """Open the channel (lazily: an issuer that is down is not an error) and start."""
        if self._metrics_server is not None:
            self.metrics_address = self._metrics_server.start()
        settings = self.settings
        if settings.uses_tls:
            credentials = channel_credentials(
                settings.tls_ca_file, settings.tls_client_cert_file, settings.tls_client_key_file
            )
            self._channel = grpc.aio.secure_channel(
                settings.issuer, credentials, options=self._options()
            )
        else:
            self._channel = grpc.aio.insecure_channel(settings.issuer, options=self._options())
        stub = certificate_service_pb2_grpc.CertificateServiceStub(self._channel)
        targets = delivery_target_service_pb2_grpc.DeliveryTargetServiceStub(self._channel)
        for target in self.targets:
            installer = Installer(target.directory, target.names, target.ownership, self._crash)
            watcher = CertificateWatcher(
                target,
                stub,
                targets,
                self._metadata,
                installer,
                self.metrics,
                self._policy,
                self._notify,
            )
            self.watchers[target.certificate_id] = watcher
            self._tasks.append(asyncio.create_task(watcher.run(), name=target.certificate))
        logger.info(
            "agent started",
            extra={"issuer": self.settings.issuer, "certificates": list(self.watchers)},
        )

    async def stop(self, grace: float = 0) -> None:
        """Cancel the watchers and wait for them, then close the channel and metrics."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._channel is not None:
            await self._channel.close(grace)
            self._channel = None
        if self._metrics_server is not None:
            self._metrics_server.stop()

    async def wait_for(
        self, certificate_id: str, predicate: Callable[[Status], bool], within: float
    ) -> Status:
        """Wait until a watcher's status satisfies `predicate` (tests and `--once`)."""
        watcher = self.watchers[certificate_id]

        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(watcher.status))

        await asyncio.wait_for(wait(), within)
        return watcher.status
