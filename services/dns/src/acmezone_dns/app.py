"""Composition root: builds every dns object from settings and wires them together.

Tests build a `DnsApp` from their own settings and `CollectorRegistry` and get a complete server
on real ports; with port 0 each DNS address gets one free port shared by its UDP and TCP
listeners, as resolvers expect.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import time
from collections.abc import Callable
from functools import partial

from prometheus_client import CollectorRegistry

from acmezone.dns.v1 import zone_service_pb2, zone_service_pb2_grpc
from acmezone_common.addresses import HostPort
from acmezone_common.grpc_server import GrpcServer
from acmezone_common.metrics import MetricsServer
from acmezone_common.transport import open_channel, server_credentials
from acmezone_dns import metrics
from acmezone_dns.cookies import CookieJar, load_secret
from acmezone_dns.dnssec.setup import KeyDirectory, make_signer
from acmezone_dns.feed_client import FeedClient
from acmezone_dns.inspection import ZoneInspector
from acmezone_dns.notify import Notifier
from acmezone_dns.responder import Responder
from acmezone_dns.servicer import ZoneServicer
from acmezone_dns.settings import DnsSettings
from acmezone_dns.static_zones import load_static_zones
from acmezone_dns.store import ZoneStore
from acmezone_dns.tcp_server import TcpServer
from acmezone_dns.transfer import Journal, TransferPolicy, ZoneTransfers
from acmezone_dns.udp_server import UdpServer
from acmezone_dns.update_forwarding import UpdateForwarder
from acmezone_dns.zone_editor import ZoneEditor
from acmezone_dns.zone_reload import ZoneReloader

logger = logging.getLogger(__name__)

ERROR_DOMAIN = "dns.acmezone.dev"
_SWEEP_INTERVAL = 600.0
"""How often signatures near expiry are looked for (the refresh margin is days)."""
ZONE_SERVICE = zone_service_pb2.DESCRIPTOR.services_by_name["ZoneService"]
_PORT_ATTEMPTS = 20


class DnsApp:
    """The whole dns service: zone store, DNS listeners, feed client, gRPC API, metrics."""

    def __init__(
        self,
        settings: DnsSettings,
        metrics_registry: CollectorRegistry,
        *,
        freeze_gc: bool = False,
        handle_sighup: bool = False,
        signing_clock: Callable[[], float] = time.time,
    ) -> None:
        """`freeze_gc` (the command sets it) keeps the zone out of cyclic garbage collection;
        `handle_sighup` (the command too) reloads the zone files on SIGHUP; `signing_clock`
        dates DNSSEC signatures (a test signs in the past to see them expired)."""
        self.settings = settings
        self._handle_sighup = handle_sighup
        self.signing_stats = metrics.SigningStats()
        self.signer = make_signer(settings, self.signing_stats, signing_clock)
        self._sweeps: asyncio.Task[None] | None = None
        self.store = ZoneStore(
            load_static_zones(settings),
            feed_zone=settings.zone,
            txt_ttl=settings.txt_ttl,
            freeze_gc=freeze_gc,
            signer=self.signer,
        )
        self.stats = metrics.QueryStats()
        self.feed_metrics = metrics.FeedMetrics()
        metrics.register(
            metrics_registry,
            self.stats,
            self.feed_metrics,
            lambda: self.store.snapshot.record_count,
        )
        if self.signer is not None:
            signer = self.signer
            self.signing_stats.signed_answers = lambda: len(signer.answers)
            metrics_registry.register(metrics.SigningCollector(self.signing_stats))
        self.reload_stats = metrics.ReloadStats()
        metrics_registry.register(metrics.ReloadCollector(self.reload_stats))
        self.reloader = ZoneReloader(
            list(settings.zone_files),
            partial(load_static_zones, settings),
            self.store,
            self.reload_stats,
            interval=settings.zone_reload_interval_seconds,
            keys=KeyDirectory(settings) if self.signer is not None else None,
        )
        self.transfer_stats = metrics.TransferStats()
        metrics_registry.register(metrics.TransferCollector(self.transfer_stats))
        self.notifier = Notifier(
            settings.zone,
            list(settings.notify_targets),
            self.transfer_stats,
            delay=settings.notify_delay_seconds,
        )
        self.transfers: ZoneTransfers | None = None
        if settings.transfer_allow:
            # The serial follows the feed only when someone may transfer the zone.
            journal = Journal(self.store, settings.ixfr_journal_revisions)
            journal.on_change.append(self.notifier.changed)
            self.store.observer = journal
            self.transfers = ZoneTransfers(
                self.store,
                journal,
                TransferPolicy.from_settings(
                    [k.get_secret_value() for k in settings.transfer_keys],
                    settings.transfer_allow,
                ),
                self.transfer_stats,
                max_concurrent=settings.transfer_max_concurrent,
            )
        self.update_stats = metrics.UpdateStats()
        metrics_registry.register(metrics.UpdateCollector(self.update_stats))
        token = settings.registry_token.get_secret_value() if settings.registry_token else None
        registry_channel = partial(
            open_channel, settings.registry_target, tls=settings.registry_client_tls(), token=token
        )
        self.updates = UpdateForwarder(
            registry_channel,
            self.store,
            self.update_stats,
            timeout=settings.update_timeout_seconds,
            revision_wait=settings.update_revision_wait_seconds,
        )
        if self.transfers is not None:
            self.updates.local_signer = self.transfers.sign_answer
        secret = settings.cookie_secret
        self.responder = Responder(
            self.store,
            self.stats,
            edns_udp_size=settings.edns_udp_size,
            cookies=CookieJar(
                load_secret(
                    secret.get_secret_value() if secret else None, settings.cookie_secret_file
                )
            ),
        )
        self.grpc = GrpcServer(
            settings.grpc_address,
            registry=metrics_registry,
            error_domain=ERROR_DOMAIN,
            credentials=server_credentials(settings.grpc_server_tls()),
        )
        self.feed = FeedClient(
            registry_channel,
            self.store,
            self.feed_metrics,
            zone=settings.zone,
            backoff_initial=settings.feed_backoff_initial_seconds,
            backoff_max=settings.feed_backoff_max_seconds,
            on_first_snapshot=self._ready,
        )
        inspector = ZoneInspector(self.store, self.feed, edns_udp_size=settings.edns_udp_size)
        editor = ZoneEditor(
            list(settings.zone_files),
            self.reloader,
            feed_zone=settings.zone,
            token=settings.zone_edit_token.get_secret_value() if settings.zone_edit_token else None,
        )
        self.grpc.add_service(
            ZONE_SERVICE,
            partial(
                zone_service_pb2_grpc.add_ZoneServiceServicer_to_server,
                ZoneServicer(inspector, editor),
            ),
        )
        self.metrics_server = MetricsServer(settings.metrics_address, metrics_registry)
        self.udp: list[UdpServer] = []
        self.tcp: list[TcpServer] = []
        self.dns_addresses: list[HostPort] = list(settings.dns_addresses)
        self.grpc_address: HostPort = settings.grpc_address
        self.metrics_address: HostPort = settings.metrics_address

    async def start(self) -> None:
        """Listen for DNS (answering static zones at once, the feed zone SERVFAIL until the
        first snapshot), start the API NOT_SERVING, then follow the feed. Whatever started is
        stopped again if a later step fails (a port in use, say)."""
        try:
            await self.updates.start()
            self.dns_addresses = [await self._listen(a) for a in self.settings.dns_addresses]
            self.metrics_address = self.metrics_server.start()
            self.grpc_address = await self.grpc.start(serving=False)
        except BaseException:
            await self._close_listeners()
            await self.updates.stop()
            self.metrics_server.stop()
            raise
        self.feed.replica = self.settings.replica_name or (
            f"{socket.gethostname()}/{self.dns_addresses[0]}"
        )
        await self.feed.start()
        if self.signer is not None:
            self._sweeps = asyncio.create_task(
                self.signer.run_sweeps(_SWEEP_INTERVAL), name="dnssec-sweeps"
            )
        await self.reloader.start()
        await self.notifier.start()
        if self._handle_sighup:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reloader.trigger)
        logger.info(
            "dns serving",
            extra={
                "dns": ",".join(map(str, self.dns_addresses)),
                "grpc": str(self.grpc_address),
                "zone": self.settings.zone,
                "registry": self.settings.registry_target,
            },
        )

    async def _listen(self, address: HostPort) -> HostPort:
        """UDP and TCP on one address. With port 0 both get the same free port: the kernel
        picks it for UDP, and if TCP finds it taken we try again with another."""
        attempts = _PORT_ATTEMPTS if address.port == 0 else 1
        for attempt in range(attempts):
            udp = UdpServer(
                address,
                self.responder,
                self.stats,
                self.updates,
                batch_size=self.settings.udp_batch_size,
                native=self.settings.udp_native,
            )
            bound = await udp.start()
            tcp = TcpServer(
                bound,
                self.responder,
                self.stats,
                idle_timeout=self.settings.tcp_idle_timeout_seconds,
                max_connections=self.settings.tcp_max_connections,
                max_per_source=self.settings.tcp_max_connections_per_source,
                updates=self.updates,
                transfers=self.transfers,
            )
            try:
                await tcp.start()
            except OSError as exc:
                await udp.stop()
                if exc.errno != errno.EADDRINUSE or attempt == attempts - 1:
                    raise
                continue
            self.udp.append(udp)
            self.tcp.append(tcp)
            return bound
        raise AssertionError("unreachable")

    async def _close_listeners(self) -> None:
        for tcp in self.tcp:
            await tcp.stop()
        for udp in self.udp:
            await udp.stop()
        self.tcp, self.udp = [], []

    async def _ready(self) -> None:
        """The first snapshot is in: the challenge zone can answer, report SERVING."""
        for service in ("", ZONE_SERVICE.full_name):
            await self.grpc.set_serving(service, True)
        logger.info("first feed snapshot applied, serving", extra={"zone": self.settings.zone})

    async def stop(self, grace: float) -> None:
        """NOT_SERVING, stop the feed, drain the API within `grace`, close every listener."""
        await self.grpc.health.enter_graceful_shutdown()
        if self._handle_sighup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await self.reloader.stop()
        await self.notifier.stop()
        await self.feed.stop()
        if self._sweeps is not None:
            self._sweeps.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeps
        await self.grpc.stop(grace)
        await self._close_listeners()
        await self.updates.stop()
        self.metrics_server.stop()
