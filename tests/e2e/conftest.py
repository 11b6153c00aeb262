"""End-to-end fixtures: a real Pebble that resolves through our dns service, and the registry,
dns and issuer services started together.

Pebble and its ports are per session; the three services start per test in this process (fast,
and each test gets its own databases), always on the same dns port Pebble was told about. The
dev zone `example.test` is an RFC 1035 zone file the dns service loads; "adding a CNAME" is
rewriting that file and restarting the dns service, as a domain owner's DNS would change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from acmezone.issuer.v1 import account_service_pb2_grpc, certificate_service_pb2_grpc
from acmezone_clients.devpebble import LocalPebble
from acmezone_common.testing import free_port
from acmezone_dns.app import DnsApp
from acmezone_dns.settings import DnsSettings
from acmezone_issuer.app import IssuerApp
from acmezone_issuer.settings import IssuerSettings
from acmezone_registry.app import RegistryApp
from acmezone_registry.settings import RegistrySettings
from tests.issuer.conftest import (
    CA,
    ENCRYPTION_KEY,
    OPERATOR_TOKEN,
    PEBBLE_PROFILES,
    Client,
    FakeDns,
    fake_dns,
    upstream_pebble_binary,
)

__all__ = ["fake_dns"]

CHALLENGE_ZONE = "acme.example.test"
# In-flight registry RPCs get to finish: a query cancelled half-way leaves the registry's
# aiosqlite connection to be closed at loop teardown, which can then hang.
REGISTRY_GRACE = 1.0
ZONE_EDIT_TOKEN = "e2e-zone-edit-token"


def zone_text(cnames: dict[str, str], records: list[str] | None = None) -> str:
    """The dev zone `example.test` with `_acme-challenge` CNAMEs for the given names (a name
    starting with `_` is taken as the CNAME's whole owner name)."""
    lines = [
        "$ORIGIN example.test.",
        "$TTL 60",
        "@ SOA ns1.acme.example.test. hostmaster.example.test. 1 3600 600 86400 1",
        "@ NS ns1.acme.example.test.",
        "@ A 127.0.0.1",
    ]
    for name, target in sorted(cnames.items()):
        if name.startswith("_"):
            # A whole owner name already, e.g. a dns-account-01 `_<label>._acme-challenge.x`.
            owner = name.removesuffix(".example.test")
        else:
            label = name.removesuffix(".example.test").removesuffix("example.test")
            owner = "_acme-challenge" + (f".{label}" if label else "")
        lines.append(f"{owner} CNAME {target}.")
    return "\n".join([*lines, *(records or [])]) + "\n"


@dataclass
class Ports:
    """Fixed loopback ports shared by Pebble and the services of every test."""

    dns: int
    http01: int


@pytest.fixture(scope="session")
def ports() -> Ports:
    """Ports picked once, so Pebble's `-dnsserver` and `httpPort` stay right."""
    return Ports(dns=free_port(), http01=free_port())


@pytest.fixture(scope="session")
def e2e_ca(tmp_path_factory: pytest.TempPathFactory, ports: Ports) -> Iterator[CA]:
    """Pebble resolving through the dns service's port."""
    pebble = LocalPebble(
        tmp_path_factory.mktemp("e2e-pebble"),
        dns_server=f"127.0.0.1:{ports.dns}",
        http01_port=ports.http01,
    )
    pebble.start()
    try:
        yield CA(pebble, ports.http01)
    finally:
        pebble.stop()


@pytest.fixture(scope="session")
def e2e_upstream_ca(
    tmp_path_factory: pytest.TempPathFactory, ports: Ports, e2e_ca: CA
) -> Iterator[CA]:
    """A current upstream Pebble (dns-account-01, profiles, ARI) resolving through the dns
    service's port; it shares the e2e Pebble's TLS material and HTTP-01 port."""
    pebble = LocalPebble(
        tmp_path_factory.mktemp("e2e-upstream-pebble"),
        dns_server=f"127.0.0.1:{ports.dns}",
        http01_port=ports.http01,
        binary=upstream_pebble_binary(),
        tls_dir=e2e_ca.pebble.tls_dir,
        extra_config={"profiles": PEBBLE_PROFILES},
    )
    pebble.start()
    try:
        yield CA(pebble, ports.http01)
    finally:
        pebble.stop()


@dataclass
class System:
    """Registry, dns and issuer running together, and a client for the issuer."""

    workdir: Path
    ports: Ports
    registry: RegistryApp
    issuer: IssuerApp
    client: Client
    metrics: CollectorRegistry
    dns: DnsApp | None = None
    cnames: dict[str, str] = field(default_factory=dict)
    # Other records of the dev zone, as zone file lines (what an operator publishes directly).
    records: list[str] = field(default_factory=list)
    registry_running: bool = True
    # More dns settings (DNSSEC signing, say), applied at every dns start.
    dns_extra: dict[str, Any] = field(default_factory=dict)

    @property
    def zone_file(self) -> Path:
        return self.workdir / "example.test.zone"

    def dns_settings(self) -> DnsSettings:
        return DnsSettings(
            grpc_address="127.0.0.1:0",
            metrics_address="127.0.0.1:0",
            dns_addresses=[f"127.0.0.1:{self.ports.dns}"],
            registry_target=str(self.registry.grpc_address),
            zone=CHALLENGE_ZONE,
            zone_files=[str(self.zone_file)],
            txt_ttl=0,
            soa_minimum=0,
            feed_backoff_initial_seconds=0.05,
            feed_backoff_max_seconds=0.5,
            zone_edit_token=ZONE_EDIT_TOKEN,
            **self.dns_extra,
        )

    async def start_dns(self) -> None:
        self.zone_file.write_text(zone_text(self.cnames, self.records))
        self.dns = DnsApp(self.dns_settings(), CollectorRegistry())
        await self.dns.start()

    async def stop_dns(self) -> None:
        if self.dns is not None:
            await self.dns.stop(grace=0)
            self.dns = None

    async def stop_registry(self) -> None:
        """Stop the registry (its database stays)."""
        await self.registry.stop(grace=REGISTRY_GRACE)
        self.registry_running = False

    async def start_registry(self) -> None:
        """Start the registry again on the same port with the same database."""
        settings = self.registry.settings.model_copy(
            update={"grpc_address": self.registry.grpc_address}
        )
        self.registry = RegistryApp(settings, CollectorRegistry())
        await self.registry.start()
        self.registry_running = True

    async def add_cname(self, name: str, target: str) -> None:
        """The domain owner adds `_acme-challenge.<name> CNAME <target>` (or, for a name
        starting with `_`, `<name> CNAME <target>`)."""
        await self.add_cnames({name: target})

    async def add_cnames(self, cnames: dict[str, str]) -> None:
        """Several CNAMEs in one change of the zone."""
        self.cnames.update(cnames)
        await self.stop_dns()
        await self.start_dns()

    async def add_record(self, line: str) -> None:
        """The domain owner publishes one record (a zone file line, relative to example.test)."""
        self.records.append(line)
        await self.stop_dns()
        await self.start_dns()


def issuer_settings_for(
    workdir: Path, ca: CA, registry: RegistryApp, ports: Ports, **extra: Any
) -> IssuerSettings:
    """Issuer settings pointing at the registry, the dns port and Pebble."""
    values: dict[str, Any] = {
        "grpc_address": "127.0.0.1:0",
        "metrics_address": "127.0.0.1:0",
        "http01_address": f"127.0.0.1:{ports.http01}",
        "data_dir": workdir / "issuer",
        "encryption_key": ENCRYPTION_KEY,
        "operator_token": OPERATOR_TOKEN,
        "default_directory_url": ca.directory_url,
        "acme_ca_bundle": ca.ca_bundle,
        "registry_target": str(registry.grpc_address),
        "dns_resolver": f"127.0.0.1:{ports.dns}",
        "reconcile_interval_seconds": 0.5,
        "delegation_recheck_seconds": 0.3,
        "retry_base_seconds": 30.0,
        "retry_max_seconds": 60.0,
        "propagation_timeout_seconds": 10.0,
        "validation_timeout_seconds": 60.0,
    }
    values.update(extra)
    return IssuerSettings(**values)


@asynccontextmanager
async def running_system(
    workdir: Path,
    ca: CA,
    ports: Ports,
    metrics: CollectorRegistry,
    dns_extra: dict[str, Any] | None = None,
    *,
    registry_extra: dict[str, Any] | None = None,
    **issuer_extra: Any,
) -> AsyncIterator[System]:
    """Registry (with `registry_extra` settings), dns (with the dev zone, and `dns_extra`
    settings) and issuer in this process; always stopped."""
    registry = RegistryApp(
        RegistrySettings(
            grpc_address="127.0.0.1:0",
            http_address="127.0.0.1:0",
            metrics_address="127.0.0.1:0",
            database_url=f"sqlite:///{workdir}/registry.db",
            zone=CHALLENGE_ZONE,
            **(registry_extra or {}),
        ),
        CollectorRegistry(),
    )
    await registry.start()
    issuer = IssuerApp(
        issuer_settings_for(workdir, ca, registry, ports, **issuer_extra),
        metrics_registry=metrics,
    )
    system: System | None = None
    channel: grpc.aio.Channel | None = None
    try:
        await issuer.start()
        channel = grpc.aio.insecure_channel(issuer.grpc_address)
        client = Client(
            issuer,
            account_service_pb2_grpc.AccountServiceStub(channel),
            certificate_service_pb2_grpc.CertificateServiceStub(channel),
        )
        system = System(
            workdir, ports, registry, issuer, client, metrics, dns_extra=dns_extra or {}
        )
        await system.start_dns()
        yield system
    finally:
        if channel is not None:
            await channel.close()
        await issuer.stop(grace=0)
        if system is not None:
            await system.stop_dns()
            if system.registry_running:
                await system.registry.stop(grace=REGISTRY_GRACE)
        else:
            await registry.stop(grace=REGISTRY_GRACE)


@pytest.fixture(scope="session")
def split_view_ca(
    tmp_path_factory: pytest.TempPathFactory, fake_dns: FakeDns, e2e_ca: CA
) -> Iterator[CA]:
    """A second Pebble that resolves through pebble-challtestsrv instead of our dns service, so
    a test can make the CA see a different TXT value than the one the issuer published (as a
    stale or split-horizon DNS would). It shares the e2e Pebble's TLS material."""
    pebble = LocalPebble(
        tmp_path_factory.mktemp("split-pebble"),
        dns_server=fake_dns.address,
        http01_port=free_port(),
        tls_dir=e2e_ca.pebble.tls_dir,
    )
    pebble.start()
    try:
        yield CA(pebble, 0)
    finally:
        pebble.stop()
