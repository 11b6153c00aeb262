"""gRPC over TLS between hosts, with a local CA: a server-verified channel, client certificates
required and presented, a wrong CA or a missing certificate refused, and a dns replica following
a registry that serves mutual TLS and guards its feed with a token."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pydantic
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from acmezone_clients.cli import commands as cli
from acmezone_common.addresses import HostPort
from acmezone_common.grpc_server import GrpcServer
from acmezone_common.testing import wait_for_serving
from acmezone_common.transport import ClientTls, ServerTls, open_channel
from acmezone_registry.settings import RegistrySettings
from tests.common.local_ca import Issued, LocalCa
from tests.dns.conftest import running_dns
from tests.registry.conftest import running_registry


@pytest.fixture
def ca(tmp_path: Path) -> LocalCa:
    return LocalCa(tmp_path / "ca")


@pytest.fixture
def other_ca(tmp_path: Path) -> LocalCa:
    return LocalCa(tmp_path / "other-ca", name="some other CA")


async def started(tls: ServerTls) -> GrpcServer:
    server = GrpcServer(
        HostPort("127.0.0.1", 0),
        registry=CollectorRegistry(),
        error_domain="test",
        credentials=tls.credentials(),
    )
    await server.start()
    return server


@pytest.fixture
async def tls_server(ca: LocalCa) -> AsyncIterator[GrpcServer]:
    issued = ca.issue("server")
    server = await started(ServerTls(issued.cert_file, issued.key_file))
    try:
        yield server
    finally:
        await server.stop(0)


@pytest.fixture
async def mtls_server(ca: LocalCa) -> AsyncIterator[GrpcServer]:
    issued = ca.issue("server")
    server = await started(ServerTls(issued.cert_file, issued.key_file, ca.cert_file))
    try:
        yield server
    finally:
        await server.stop(0)


async def health(target: str, tls: ClientTls | None) -> grpc.StatusCode:
    """OK when a health check over this channel answers SERVING, else the failure's code."""
    async with open_channel(target, tls=tls) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=3
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    return grpc.StatusCode.OK


async def test_a_server_verified_channel(
    tls_server: GrpcServer, ca: LocalCa, other_ca: LocalCa
) -> None:
    address = tls_server.address
    by_ip, by_name = str(address), f"localhost:{address.port}"
    assert await health(by_ip, ClientTls(ca.cert_file)) == grpc.StatusCode.OK
    assert await health(by_name, ClientTls(ca.cert_file)) == grpc.StatusCode.OK
    # Plaintext against TLS, an unknown CA, a name the certificate lacks: all refused.
    assert await health(by_ip, None) == grpc.StatusCode.UNAVAILABLE
    assert await health(by_ip, ClientTls(other_ca.cert_file)) == grpc.StatusCode.UNAVAILABLE
    wrong_name = ClientTls(ca.cert_file, server_name="registry.elsewhere.test")
    assert await health(by_ip, wrong_name) == grpc.StatusCode.UNAVAILABLE
    assert await health(by_ip, ClientTls(None)) == grpc.StatusCode.UNAVAILABLE  # system roots


async def test_client_certificates_required_and_checked(
    mtls_server: GrpcServer, ca: LocalCa, other_ca: LocalCa
) -> None:
    target = str(mtls_server.address)
    mine, theirs = ca.issue("client", server=False), other_ca.issue("client", server=False)
    assert await health(target, ClientTls(ca.cert_file, mine.cert_file, mine.key_file)) == (
        grpc.StatusCode.OK
    )
    assert await health(target, ClientTls(ca.cert_file)) == grpc.StatusCode.UNAVAILABLE
    stranger = ClientTls(ca.cert_file, theirs.cert_file, theirs.key_file)
    assert await health(target, stranger) == grpc.StatusCode.UNAVAILABLE


def test_incomplete_or_unreadable_tls_settings_are_named(tmp_path: Path, ca: LocalCa) -> None:
    issued = ca.issue("server")
    with pytest.raises(pydantic.ValidationError, match="set together"):
        RegistrySettings(grpc_tls_cert_file=issued.cert_file)
    with pytest.raises(pydantic.ValidationError, match="needs grpc_tls_cert_file"):
        RegistrySettings(grpc_tls_client_ca_file=ca.cert_file)
    with pytest.raises(ValueError, match="both its certificate and key"):
        ClientTls(ca.cert_file, cert_file=issued.cert_file)
    missing = ServerTls(tmp_path / "absent.pem", issued.key_file)
    with pytest.raises(ValueError, match=r"cannot read the TLS certificate .*absent\.pem"):
        missing.credentials()


async def test_a_replica_follows_a_mutual_tls_registry(tmp_path: Path, ca: LocalCa) -> None:
    server = ca.issue("registry")
    replica: Issued = ca.issue("dns-replica", server=False)
    (tmp_path / "dns").mkdir()
    async with (
        running_registry(
            tmp_path / "reg",
            grpc_tls_cert_file=server.cert_file,
            grpc_tls_key_file=server.key_file,
            grpc_tls_client_ca_file=ca.cert_file,
            feed_token="feed-token-over-tls",
        ) as registry,
        running_dns(
            tmp_path / "dns",
            registry_target=f"localhost:{registry.grpc_address.port}",
            registry_tls_ca_file=ca.cert_file,
            registry_tls_cert_file=replica.cert_file,
            registry_tls_key_file=replica.key_file,
            registry_token="feed-token-over-tls",
        ) as dns,
    ):
        # The dns gRPC port is plaintext here: SERVING means the first snapshot came over TLS.
        await wait_for_serving(str(dns.grpc_address), within=10)
        assert dns.feed.feed_id


async def test_the_cli_reaches_a_mutual_tls_registry(tmp_path: Path, ca: LocalCa) -> None:
    server = ca.issue("registry")
    operator = ca.issue("operator", server=False)
    async with running_registry(
        tmp_path / "reg",
        grpc_tls_cert_file=server.cert_file,
        grpc_tls_key_file=server.key_file,
        grpc_tls_client_ca_file=ca.cert_file,
        operator_token="operator-token-over-tls",
    ) as registry:
        base = ["--registry", f"localhost:{registry.grpc_address.port}", "--json"]
        base += ["--registry-token", "operator-token-over-tls", "--tls-ca", str(ca.cert_file)]
        with_cert = [*base, "--tls-cert", str(operator.cert_file)]
        with_cert += ["--tls-key", str(operator.key_file)]
        out = io.StringIO()
        assert await cli.run([*with_cert, "registration", "create", "--id", "over-tls"], out) == 0
        out = io.StringIO()
        assert await cli.run([*with_cert, "registration", "list"], out) == 0
        assert "over-tls" in out.getvalue()
        out = io.StringIO()
        assert await cli.run([*base, "registration", "list"], out) == 1  # no client certificate
        assert "UNAVAILABLE" in out.getvalue()
