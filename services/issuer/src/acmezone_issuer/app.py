"""The composition root: builds every object of the issuer and wires them together.

Tests build an `IssuerApp` in-process with their own settings and Prometheus registry; the
`acmezone-issuer` command builds one from the environment.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from prometheus_client import CollectorRegistry

from acmezone.issuer.v1 import (
    account_service_pb2,
    account_service_pb2_grpc,
    certificate_service_pb2,
    certificate_service_pb2_grpc,
    delivery_target_service_pb2,
    delivery_target_service_pb2_grpc,
    delivery_token_service_pb2,
    delivery_token_service_pb2_grpc,
)
from acmezone_common.addresses import HostPort
from acmezone_common.grpc_server import GrpcServer
from acmezone_common.metrics import MetricsServer
from acmezone_common.transport import open_channel, server_credentials
from acmezone_issuer.accounts import AccountManager
from acmezone_issuer.certificates import CertificateManager
from acmezone_issuer.delivery import DeliveryTokens
from acmezone_issuer.errors import ERROR_DOMAIN
from acmezone_issuer.events import CertificateEvents
from acmezone_issuer.fleet import DeliveryTargets
from acmezone_issuer.identity import replica_identity
from acmezone_issuer.keys import KeySealer
from acmezone_issuer.metrics import IssuerMetrics
from acmezone_issuer.reconciler import Reconciler
from acmezone_issuer.servicer import (
    AccountServicer,
    Authorizer,
    CertificateServicer,
    DeliveryTargetServicer,
    DeliveryTokenServicer,
)
from acmezone_issuer.settings import IssuerSettings
from acmezone_issuer.solvers.dns01 import Dns01Solver, Resolver
from acmezone_issuer.solvers.http01 import Http01Solver
from acmezone_issuer.storage.database import async_url, migrate
from acmezone_issuer.storage.repository import Repository

logger = logging.getLogger(__name__)


def _secret(value: object) -> str | None:
    getter = getattr(value, "get_secret_value", None)
    return str(getter()) if getter is not None and getter() else None


class IssuerApp:
    """The issuer: gRPC API, HTTP-01 responder, metrics endpoint and the reconciler."""

    def __init__(
        self, settings: IssuerSettings, *, metrics_registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self._registry = metrics_registry or CollectorRegistry()
        self.metrics = IssuerMetrics(self._registry)
        self._database_url = async_url(settings.database_url, settings.data_dir)
        self.repository = Repository.open(self._database_url)
        self.sealer = KeySealer.from_setting(_secret(settings.encryption_key), settings.data_dir)
        self.events = CertificateEvents()
        self.accounts = AccountManager(
            self.repository,
            self.sealer,
            self.metrics,
            default_directory_url=settings.default_directory_url,
            ca_bundle=settings.acme_ca_bundle,
        )
        self._registry_channel = open_channel(
            settings.registry_target, tls=settings.registry_client_tls()
        )
        self.dns01 = Dns01Solver(
            self.repository,
            self.sealer,
            self._registry_channel,
            Resolver(settings.dns_resolver),
            registry_token=_secret(settings.registry_token),
            propagation_timeout=settings.propagation_timeout_seconds,
            registration_id_from_domain=settings.registration_id_from_domain,
        )
        self.http01 = Http01Solver(settings.http01_address, self.repository)
        self.reconciler = Reconciler(
            self.repository,
            self.sealer,
            self.accounts,
            self.dns01,
            self.http01,
            self.events,
            self.metrics,
            replica_id=replica_identity(settings.replica_id, settings.data_dir),
            interval=settings.reconcile_interval_seconds,
            delegation_recheck=settings.delegation_recheck_seconds,
            validation_timeout=settings.validation_timeout_seconds,
            retry_base=settings.retry_base_seconds,
            retry_max=settings.retry_max_seconds,
            jitter_fraction=settings.renewal_jitter_fraction,
            lease_seconds=settings.lease_seconds,
        )
        self.certificates = CertificateManager(
            self.repository, self.sealer, self.accounts, self.reconciler, self.events, self.metrics
        )
        self.delivery_tokens = DeliveryTokens(self.repository)
        auth = Authorizer(_secret(settings.operator_token), self.delivery_tokens)
        self._grpc = GrpcServer(
            settings.grpc_address,
            registry=self._registry,
            error_domain=ERROR_DOMAIN,
            credentials=server_credentials(settings.grpc_server_tls()),
        )
        self._grpc.add_service(
            account_service_pb2.DESCRIPTOR.services_by_name["AccountService"],
            functools.partial(
                account_service_pb2_grpc.add_AccountServiceServicer_to_server,
                AccountServicer(self.repository, self.accounts, auth),
            ),
        )
        self._grpc.add_service(
            certificate_service_pb2.DESCRIPTOR.services_by_name["CertificateService"],
            functools.partial(
                certificate_service_pb2_grpc.add_CertificateServiceServicer_to_server,
                CertificateServicer(
                    self.repository, self.certificates, self.dns01, self.events, auth
                ),
            ),
        )
        self._grpc.add_service(
            delivery_token_service_pb2.DESCRIPTOR.services_by_name["DeliveryTokenService"],
            functools.partial(
                delivery_token_service_pb2_grpc.add_DeliveryTokenServiceServicer_to_server,
                DeliveryTokenServicer(self.repository, self.delivery_tokens, auth),
            ),
        )
        self._grpc.add_service(
            delivery_target_service_pb2.DESCRIPTOR.services_by_name["DeliveryTargetService"],
            functools.partial(
                delivery_target_service_pb2_grpc.add_DeliveryTargetServiceServicer_to_server,
                DeliveryTargetServicer(self.repository, DeliveryTargets(self.repository), auth),
            ),
        )
        self._metrics_server = MetricsServer(settings.metrics_address, self._registry)
        self.metrics_address: HostPort | None = None

    @property
    def grpc_address(self) -> str:
        """`host:port` the gRPC API is bound to."""
        return str(self._grpc.address)

    @property
    def http01_address(self) -> HostPort:
        """Where the HTTP-01 responder is bound."""
        return self.http01.address

    async def start(self) -> None:
        """Migrate the schema, bind every port, then start reconciling."""
        await asyncio.to_thread(migrate, self._database_url)
        await self.http01.start()
        await self._grpc.start()
        self.metrics_address = self._metrics_server.start()
        self.reconciler.start()
        logger.info("issuer started", extra={"replica": self.reconciler.replica_id})

    async def stop(self, grace: float) -> None:
        """NOT_SERVING, drain RPCs, stop the reconciler (state is persisted), release all."""
        await self._grpc.stop(grace)
        await self.reconciler.stop()
        await self.http01.stop()
        self._metrics_server.stop()
        await self._registry_channel.close()
        await self.repository.close()
