"""Issuer fixtures: a real Pebble CA, a real DNS server for it, and issuers in-process.

Pebble (Debian package) runs once per session on loopback ports. For HTTP-01 it resolves every
name to 127.0.0.1 through pebble-challtestsrv (same package), and validates on the fixed HTTP-01
port every in-process issuer of the session binds in turn.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import grpc
import pytest
from prometheus_client import CollectorRegistry

from acmezone.issuer.v1 import (
    account_service_pb2,
    account_service_pb2_grpc,
    certificate_service_pb2,
    certificate_service_pb2_grpc,
)
from acmezone_clients.devpebble import LocalPebble
from acmezone_common.sql import utcnow
from acmezone_common.testing import free_port
from acmezone_issuer.app import IssuerApp
from acmezone_issuer.settings import IssuerSettings
from acmezone_issuer.storage.database import async_url, migrate
from acmezone_issuer.storage.repository import Repository

OPERATOR_TOKEN = "issuer-test-token"
AUTH = (("authorization", f"Bearer {OPERATOR_TOKEN}"),)
ENCRYPTION_KEY = "q1IVjA1Fz3bmv8-fFjGJ0Lb8w-hO6bbGzsDMCFo6s1Q"
EAB_KID = "kid-1"
EAB_HMAC = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"


@dataclass
class CA:
    """A running Pebble and what an issuer needs to use it."""

    pebble: LocalPebble
    http01_port: int

    @property
    def directory_url(self) -> str:
        return self.pebble.directory_url

    @property
    def ca_bundle(self) -> Path:
        return self.pebble.ca_bundle


def _start_challtestsrv(port: int, management: int, log: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("pebble-challtestsrv")
    if binary is None:
        pytest.fail("pebble-challtestsrv missing: run `make system-deps`")
    with log.open("wb") as output:
        process = _popen(binary, port, management, output)
    _wait_serving(process, port, management, log)
    return process


def _serving(port: int, management: int) -> bool:
    """Whether the management API accepts connections and the DNS server answers a query."""
    try:
        with socket.create_connection(("127.0.0.1", management), timeout=0.2):
            pass
        query = dns.message.make_query("ready.test.", "A")
        dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2)
    except (OSError, dns.exception.Timeout):
        return False
    return True


def _wait_serving(
    process: subprocess.Popen[bytes], port: int, management: int, log: Path, within: float = 10.0
) -> None:
    """Return once pebble-challtestsrv serves both its ports; fail at once if it exits, and
    after `within` seconds if it never serves."""
    deadline = time.monotonic() + within
    while not _serving(port, management):
        if process.poll() is not None:
            pytest.fail(f"pebble-challtestsrv exited: {log.read_text()}")
        if time.monotonic() > deadline:
            process.terminate()
            pytest.fail(f"pebble-challtestsrv did not serve within {within}s: {log.read_text()}")
        time.sleep(0.02)


def _popen(binary: str, port: int, management: int, output: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            binary,
            "-dns01",
            f"127.0.0.1:{port}",
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            f"127.0.0.1:{management}",
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
        ],
        stdout=output,
        stderr=subprocess.STDOUT,
    )


@dataclass
class FakeDns:
    """pebble-challtestsrv: `address` answers DNS, `management` takes its HTTP commands."""

    address: str
    management: str

    def set_txt(self, name: str, value: str) -> None:
        """Answer `value` for TXT queries of `name` (a fully qualified name)."""
        body = json.dumps({"host": name, "value": value}).encode()
        request = urllib.request.Request(
            f"http://{self.management}/set-txt", data=body, method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            assert response.status == 200


@pytest.fixture(scope="session")
def fake_dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeDns]:
    """pebble-challtestsrv answering A 127.0.0.1 for every name."""
    port, management = free_port(), free_port()
    process = _start_challtestsrv(port, management, tmp_path_factory.mktemp("dns") / "log")
    try:
        yield FakeDns(f"127.0.0.1:{port}", f"127.0.0.1:{management}")
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory, fake_dns: FakeDns) -> Iterator[CA]:
    """One Pebble for the session; HTTP-01 validations go to `http01_port` on 127.0.0.1."""
    http01_port = free_port()
    pebble = LocalPebble(
        tmp_path_factory.mktemp("pebble"), dns_server=fake_dns.address, http01_port=http01_port
    )
    pebble.start()
    try:
        yield CA(pebble, http01_port)
    finally:
        pebble.stop()


@pytest.fixture(scope="session")
def eab_ca(tmp_path_factory: pytest.TempPathFactory, fake_dns: FakeDns, ca: CA) -> Iterator[CA]:
    """A Pebble that requires External Account Binding (kid-1 / its HMAC key); it shares the
    session CA's TLS material, so one `acme_ca_bundle` trusts both."""
    pebble = LocalPebble(
        tmp_path_factory.mktemp("pebble-eab"),
        dns_server=fake_dns.address,
        http01_port=free_port(),
        eab_keys={EAB_KID: EAB_HMAC},
        tls_dir=ca.pebble.tls_dir,
    )
    pebble.start()
    try:
        yield CA(pebble, 0)
    finally:
        pebble.stop()


# The profiles of upstream Pebble's test/config/pebble-config.json (validity in seconds).
PEBBLE_PROFILES = {
    "default": {"description": "The profile you know and love", "validityPeriod": 7776000},
    "shortlived": {"description": "A short-lived cert profile", "validityPeriod": 518400},
}


def upstream_pebble_binary() -> str:
    """The current upstream Pebble named by ACMEZONE_TEST_PEBBLE; skips the test when unset."""
    binary = os.environ.get("ACMEZONE_TEST_PEBBLE", "")
    if not binary:
        pytest.skip(
            "ACMEZONE_TEST_PEBBLE is unset: this test needs a current upstream Pebble "
            "(ARI, profiles, dns-account-01); .ci/run sets it to ../shared/bin/pebble"
        )
    if not Path(binary).is_file():
        pytest.fail(f"ACMEZONE_TEST_PEBBLE={binary} is not a file")
    return str(Path(binary).resolve())


@pytest.fixture(scope="session")
def upstream_ca(
    tmp_path_factory: pytest.TempPathFactory, fake_dns: FakeDns, ca: CA
) -> Iterator[CA]:
    """A current upstream Pebble (ARI, `meta.profiles`) resolving through pebble-challtestsrv;
    HTTP-01 validations go to the session CA's port, and it shares the session CA's TLS
    material, so one `acme_ca_bundle` trusts both."""
    pebble = LocalPebble(
        tmp_path_factory.mktemp("upstream-pebble"),
        dns_server=fake_dns.address,
        http01_port=ca.http01_port,
        binary=upstream_pebble_binary(),
        tls_dir=ca.pebble.tls_dir,
        extra_config={"profiles": PEBBLE_PROFILES},
    )
    pebble.start()
    try:
        yield CA(pebble, ca.http01_port)
    finally:
        pebble.stop()


def issuer_settings(data_dir: Path, ca: CA, **overrides: Any) -> IssuerSettings:
    """Settings for an in-process issuer on loopback ports with fast timings."""
    values: dict[str, Any] = {
        "grpc_address": "127.0.0.1:0",
        "metrics_address": "127.0.0.1:0",
        "http01_address": f"127.0.0.1:{ca.http01_port}",
        "data_dir": data_dir,
        "encryption_key": ENCRYPTION_KEY,
        "operator_token": OPERATOR_TOKEN,
        "default_directory_url": ca.directory_url,
        "acme_ca_bundle": ca.ca_bundle,
        "registry_target": "127.0.0.1:1",
        "reconcile_interval_seconds": 0.5,
        "delegation_recheck_seconds": 0.5,
        "retry_base_seconds": 1.0,
        "retry_max_seconds": 5.0,
        "propagation_timeout_seconds": 10.0,
        "validation_timeout_seconds": 60.0,
    }
    values.update(overrides)
    return IssuerSettings(**values)


@dataclass
class Client:
    """Stubs on one channel to a running issuer."""

    app: IssuerApp
    accounts: account_service_pb2_grpc.AccountServiceStub
    certificates: certificate_service_pb2_grpc.CertificateServiceStub
    channel: grpc.aio.Channel | None = None

    async def create_account(self, **fields: Any) -> account_service_pb2.Account:
        account = account_service_pb2.Account(terms_of_service_agreed=True, **fields)
        return await self.accounts.CreateAccount(
            account_service_pb2.CreateAccountRequest(account=account), metadata=AUTH
        )

    async def create_certificate(
        self, certificate_id: str = "", **fields: Any
    ) -> certificate_service_pb2.Certificate:
        return await self.certificates.CreateCertificate(
            certificate_service_pb2.CreateCertificateRequest(
                certificate=certificate_service_pb2.Certificate(**fields),
                certificate_id=certificate_id,
            ),
            metadata=AUTH,
        )

    async def get(self, name: str) -> certificate_service_pb2.Certificate:
        return await self.certificates.GetCertificate(
            certificate_service_pb2.GetCertificateRequest(name=name), metadata=AUTH
        )

    async def wait_for(
        self, name: str, predicate: Any, within: float = 60.0
    ) -> certificate_service_pb2.Certificate:
        """Watch a certificate until `predicate(cert)` holds; fail with its last state."""
        last: certificate_service_pb2.Certificate | None = None

        async def follow() -> certificate_service_pb2.Certificate:
            nonlocal last
            stream = self.certificates.WatchCertificate(
                certificate_service_pb2.WatchCertificateRequest(name=name), metadata=AUTH
            )
            async for message in stream:
                last = message.certificate
                if predicate(last):
                    stream.cancel()
                    return last
            raise AssertionError("watch ended")

        try:
            return await asyncio.wait_for(follow(), within)
        except TimeoutError:
            raise AssertionError(f"condition not reached; last state: {last}") from None


@asynccontextmanager
async def running_issuer(
    data_dir: Path, ca: CA, metrics_registry: CollectorRegistry | None = None, **overrides: Any
) -> AsyncIterator[Client]:
    """A whole issuer started in this process, with stubs; always stopped."""
    app = IssuerApp(
        issuer_settings(data_dir, ca, **overrides),
        metrics_registry=metrics_registry or CollectorRegistry(),
    )
    await app.start()
    channel = grpc.aio.insecure_channel(app.grpc_address)
    try:
        yield Client(
            app,
            account_service_pb2_grpc.AccountServiceStub(channel),
            certificate_service_pb2_grpc.CertificateServiceStub(channel),
            channel,
        )
    finally:
        await channel.close()
        await app.stop(grace=0)


def state_name(cert: certificate_service_pb2.Certificate) -> str:
    """`STATE_ISSUED` etc."""
    return certificate_service_pb2.State.Name(cert.state)


@pytest.fixture
def repository_clock() -> Callable[[], datetime]:
    """The clock the `repository` fixture reads; a test module may override it with one
    it moves by hand."""
    return utcnow


@pytest.fixture
async def repository(
    database_url: str, tmp_path: Path, repository_clock: Callable[[], datetime]
) -> AsyncIterator[Repository]:
    """A repository on a migrated database of each kind (SQLite, PostgreSQL)."""
    url = async_url(database_url, tmp_path)
    await asyncio.to_thread(migrate, url)
    await asyncio.to_thread(migrate, url)  # idempotent
    opened = Repository.open(url, clock=repository_clock)
    try:
        yield opened
    finally:
        await opened.close()
