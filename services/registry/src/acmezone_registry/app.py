"""Composition root: builds every registry object from settings and wires them together.

Nothing else in the package constructs collaborators or reads settings; tests build a
`RegistryApp` from their own settings and `CollectorRegistry` and get a complete registry on
real ports (port 0 picks free ones).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from functools import partial

from prometheus_client import CollectorRegistry

from acmezone.registry.v1 import (
    dns_update_service_pb2,
    dns_update_service_pb2_grpc,
    record_feed_service_pb2,
    record_feed_service_pb2_grpc,
    registration_service_pb2,
    registration_service_pb2_grpc,
    tsig_key_service_pb2,
    tsig_key_service_pb2_grpc,
    txt_record_service_pb2,
    txt_record_service_pb2_grpc,
)
from acmezone_common import keyfiles
from acmezone_common.addresses import HostPort
from acmezone_common.grpc_server import GrpcServer
from acmezone_common.guard import REFLECTION_SERVICES, TokenGuard
from acmezone_common.metrics import MetricsServer
from acmezone_common.sealing import SecretSealer
from acmezone_common.transport import server_credentials
from acmezone_registry.access import ClientAddressResolver
from acmezone_registry.dns_updates import DnsUpdates
from acmezone_registry.errors import ERROR_DOMAIN
from acmezone_registry.feed import RecordFeed
from acmezone_registry.http_api import HttpApi
from acmezone_registry.http_api.connections import ConnectionLimits
from acmezone_registry.http_api.tls import ReloadingCertificate
from acmezone_registry.maintenance import Maintenance
from acmezone_registry.metrics import RegistryMetrics, ReplicaCollector
from acmezone_registry.rate_limits import AbuseLimits
from acmezone_registry.registrations import RegistrationPolicy, Registrations
from acmezone_registry.replicas import ReplicaTracker
from acmezone_registry.servicer import RecordFeedServicer, RegistrationServicer, TxtRecordServicer
from acmezone_registry.settings import RegistrySettings
from acmezone_registry.storage import migrate
from acmezone_registry.storage.database import Database
from acmezone_registry.storage.stores import Stores
from acmezone_registry.storage_watch import StorageWatch
from acmezone_registry.tsig_keys import TsigKeys
from acmezone_registry.update_servicer import DnsUpdateServicer, TsigKeyServicer

logger = logging.getLogger(__name__)


GUARDED_SERVICES = (
    record_feed_service_pb2.DESCRIPTOR.services_by_name["RecordFeedService"].full_name,
    dns_update_service_pb2.DESCRIPTOR.services_by_name["DnsUpdateService"].full_name,
    *REFLECTION_SERVICES,
)
"""What only dns replicas, the issuer and operators call: a token guards them once set."""


def _feed_guard(settings: RegistrySettings) -> TokenGuard | None:
    """The guard of `GUARDED_SERVICES`: the feed token and the operator token are accepted."""
    tokens = [t.get_secret_value() for t in (settings.feed_token, settings.operator_token) if t]
    tokens = [t for t in tokens if t]
    return TokenGuard(tokens, GUARDED_SERVICES) if tokens else None


def _sealer(settings: RegistrySettings) -> SecretSealer:
    key = settings.encryption_key
    return SecretSealer.from_setting(key.get_secret_value() if key else None, settings.data_dir)


class RegistryApp:
    """The whole registry service: storage, feed, gRPC API, HTTP API, metrics, maintenance."""

    def __init__(self, settings: RegistrySettings, metrics_registry: CollectorRegistry) -> None:
        self.settings = settings
        self.database = Database(settings.resolved_database_url())
        self.metrics = RegistryMetrics(metrics_registry)
        self.sealer = _sealer(settings)
        self.stores = Stores.open(self.database, settings.zone, self.sealer)
        self.registrations = Registrations(
            self.stores.registrations,
            self.stores.txt_values,
            RegistrationPolicy(
                zone=settings.zone,
                operator_token=settings.operator_token.get_secret_value()
                if settings.operator_token
                else None,
                reserved_subdomains=tuple(settings.reserved_subdomains),
                default_max_txt_values=settings.default_max_txt_values,
                strict_txt_values=settings.strict_txt_values,
                txt_value_lifetime=timedelta(seconds=settings.txt_value_lifetime_seconds)
                if settings.txt_value_lifetime_seconds
                else None,
                credential_key=keyfiles.load_or_create_key(
                    settings.credential_key.get_secret_value() if settings.credential_key else None,
                    settings.data_dir / "credential.key",
                ),
            ),
            self.metrics,
            AbuseLimits.from_quotas(
                auth_failures_per_minute_per_source=settings.auth_failures_per_minute_per_source,
                auth_failures_per_minute_per_username=settings.auth_failures_per_minute_per_username,
                open_registrations_per_hour_per_source=settings.open_registrations_per_hour_per_source,
                open_registrations_per_hour=settings.open_registrations_per_hour,
            ),
        )
        self.feed = RecordFeed(
            self.stores.log,
            self.stores.record_sets,
            self.metrics,
            bookmark_interval=settings.feed_bookmark_interval_seconds,
            poll_interval=settings.feed_poll_interval_seconds,
            replicas=ReplicaTracker(timeout=settings.replica_timeout_seconds),
            settle_within=settings.wait_for_replicas_seconds,
        )
        metrics_registry.register(ReplicaCollector(self.feed.replica_states))
        self.maintenance = Maintenance(
            self.stores,
            self.metrics,
            interval=settings.maintenance_interval_seconds,
            feed_retention_revisions=settings.feed_retention_revisions,
            expire_values=settings.txt_value_lifetime_seconds > 0,
        )
        resolver = ClientAddressResolver(settings.trusted_proxies)
        self.grpc = GrpcServer(
            settings.grpc_address,
            registry=metrics_registry,
            error_domain=ERROR_DOMAIN,
            guard=_feed_guard(settings),
            credentials=server_credentials(settings.grpc_server_tls()),
        )
        self.grpc.add_service(
            registration_service_pb2.DESCRIPTOR.services_by_name["RegistrationService"],
            partial(
                registration_service_pb2_grpc.add_RegistrationServiceServicer_to_server,
                RegistrationServicer(self.registrations, resolver),
            ),
        )
        self.grpc.add_service(
            txt_record_service_pb2.DESCRIPTOR.services_by_name["TxtRecordService"],
            partial(
                txt_record_service_pb2_grpc.add_TxtRecordServiceServicer_to_server,
                TxtRecordServicer(self.registrations, resolver),
            ),
        )
        self.grpc.add_service(
            record_feed_service_pb2.DESCRIPTOR.services_by_name["RecordFeedService"],
            partial(
                record_feed_service_pb2_grpc.add_RecordFeedServiceServicer_to_server,
                RecordFeedServicer(self.feed),
            ),
        )
        self.tsig_keys = TsigKeys(
            self.stores.tsig_keys, self.registrations.authorizer, settings.zone
        )
        self.dns_updates = DnsUpdates(
            self.stores.tsig_keys,
            self.stores.txt_values,
            self.metrics,
            zone=settings.zone,
            strict_txt_values=settings.strict_txt_values,
            settle=self.feed.settle,
            follow_cnames=settings.update_follow_cnames,
        )
        self.grpc.add_service(
            tsig_key_service_pb2.DESCRIPTOR.services_by_name["TsigKeyService"],
            partial(
                tsig_key_service_pb2_grpc.add_TsigKeyServiceServicer_to_server,
                TsigKeyServicer(self.tsig_keys, resolver),
            ),
        )
        self.grpc.add_service(
            dns_update_service_pb2.DESCRIPTOR.services_by_name["DnsUpdateService"],
            partial(
                dns_update_service_pb2_grpc.add_DnsUpdateServiceServicer_to_server,
                DnsUpdateServicer(self.dns_updates),
            ),
        )
        self.http = HttpApi(
            self.registrations,
            resolver,
            self.metrics,
            max_body_bytes=settings.http_max_body_bytes,
            storage_ok=self.stores.log.ping,
            connection_limits=ConnectionLimits(
                max_connections=settings.http_max_connections,
                max_connections_per_source=settings.http_max_connections_per_source,
                header_timeout=settings.http_header_timeout_seconds,
                idle_timeout=settings.http_idle_timeout_seconds,
            ),
            body_timeout=settings.http_body_timeout_seconds,
            settle=self.feed.settle,
            tls=ReloadingCertificate(
                settings.http_tls_cert_file,
                settings.http_tls_key_file,
                interval=settings.http_tls_reload_seconds,
            )
            if settings.http_tls_cert_file and settings.http_tls_key_file
            else None,
        )
        self.storage_watch = StorageWatch(
            self.stores.log.ping,
            self._report_storage,
            interval=settings.maintenance_interval_seconds,
        )
        self.metrics_server = MetricsServer(settings.metrics_address, metrics_registry)
        self.grpc_address: HostPort = settings.grpc_address
        self.http_address: HostPort = settings.http_address
        self.metrics_address: HostPort = settings.metrics_address

    async def start(self) -> None:
        """Migrate (if configured), then start serving on every port."""
        if self.settings.migrate_on_start:
            await asyncio.to_thread(migrate.upgrade, self.database, self.sealer)
        await self.feed.start()
        await self.maintenance.run_once()
        self.maintenance.start()
        self.metrics_address = self.metrics_server.start()
        self.http_address = await self.http.start(self.settings.http_address)
        self.grpc_address = await self.grpc.start()
        self.storage_watch.start()
        logger.info(
            "registry serving",
            extra={
                "grpc": str(self.grpc_address),
                "http": str(self.http_address),
                "zone": self.settings.zone,
                "database": self.database.dialect,
                "operator_token": self.settings.operator_token is not None,
            },
        )

    async def _report_storage(self, up: bool) -> None:
        """Health follows the database: the whole server is NOT_SERVING while it is down."""
        await self.grpc.set_serving("", up)

    async def stop(self, grace: float) -> None:
        """Drain: health NOT_SERVING, end watches, finish RPCs within `grace`, close storage."""
        await self.grpc.health.enter_graceful_shutdown()
        await self.storage_watch.stop()
        await self.feed.stop()
        await self.grpc.stop(grace)
        await self.http.stop()
        await self.maintenance.stop()
        self.metrics_server.stop()
        await self.database.dispose()
