"""TLS on the issuer's gRPC port, with a local CA made by `cryptography`: the agent verifies
the issuer and installs over TLS; plaintext and an unknown CA are refused; with a client CA
configured, only an agent presenting a certificate from it gets through."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry

from acmezone.issuer.v1 import certificate_service_pb2 as pb
from acmezone.issuer.v1 import certificate_service_pb2_grpc
from acmezone_clients.agent.app import AgentApp
from acmezone_common.tls import channel_credentials
from acmezone_issuer.settings import IssuerSettings
from tests.clients.agent_pki import TlsFiles, write_tls_files
from tests.clients.agent_support import agent_settings, restartable_issuer, target
from tests.issuer.conftest import AUTH, CA, ca, fake_dns

__all__ = ["ca", "fake_dns"]

WITHIN = 60.0


async def _list(channel: grpc.aio.Channel) -> None:
    stub = certificate_service_pb2_grpc.CertificateServiceStub(channel)
    await stub.ListCertificates(pb.ListCertificatesRequest(), metadata=AUTH, timeout=5)


async def test_agent_installs_over_tls_and_plaintext_is_refused(tmp_path: Path, ca: CA) -> None:
    tls = write_tls_files(tmp_path / "tls")
    async with restartable_issuer(
        tmp_path / "issuer",
        ca,
        channel_credentials(tls.ca),
        grpc_tls_cert_file=tls.server_cert,
        grpc_tls_key_file=tls.server_key,
    ) as issuer:
        await issuer.start()
        first = await issuer.issue("tls", "tls.agent.example.test")
        agent = AgentApp(
            agent_settings(issuer.address, tls_ca_file=tls.ca),
            [target("tls", tmp_path / "out")],
            CollectorRegistry(),
        )
        await agent.start()
        try:
            await agent.wait_for(
                "tls", lambda s: s.installed_serial == first.serial_number, within=WITHIN
            )
        finally:
            await agent.stop()

        options = [("grpc.use_local_subchannel_pool", 1)]
        async with grpc.aio.insecure_channel(issuer.address, options=options) as plain:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _list(plain)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.secure_channel(
            issuer.address, channel_credentials(tls.other_ca), options=options
        ) as unknown:
            with pytest.raises(grpc.aio.AioRpcError) as unverified:
                await _list(unknown)
            assert unverified.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_client_certificates_are_required_when_a_client_ca_is_set(
    tmp_path: Path, ca: CA
) -> None:
    tls: TlsFiles = write_tls_files(tmp_path / "tls")
    async with restartable_issuer(
        tmp_path / "issuer",
        ca,
        channel_credentials(tls.ca, tls.client_cert, tls.client_key),
        grpc_tls_cert_file=tls.server_cert,
        grpc_tls_key_file=tls.server_key,
        grpc_tls_client_ca_file=tls.ca,
    ) as issuer:
        await issuer.start()
        first = await issuer.issue("mtls", "mtls.agent.example.test")

        without = AgentApp(
            agent_settings(issuer.address, tls_ca_file=tls.ca), [target("mtls", tmp_path / "no")]
        )
        await without.start()
        try:
            await without.wait_for("mtls", lambda s: "UNAVAILABLE" in s.last_error, within=WITHIN)
            assert without.watchers["mtls"].status.installed_serial is None
        finally:
            await without.stop()

        with_cert = AgentApp(
            agent_settings(
                issuer.address,
                tls_ca_file=tls.ca,
                tls_client_cert_file=tls.client_cert,
                tls_client_key_file=tls.client_key,
            ),
            [target("mtls", tmp_path / "yes")],
        )
        await with_cert.start()
        try:
            await with_cert.wait_for(
                "mtls", lambda s: s.installed_serial == first.serial_number, within=WITHIN
            )
        finally:
            await with_cert.stop()


def test_tls_settings_come_in_pairs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="set together"):
        IssuerSettings(grpc_tls_cert_file=tmp_path / "c.pem")
    with pytest.raises(ValueError, match="needs grpc_tls_cert_file"):
        IssuerSettings(grpc_tls_client_ca_file=tmp_path / "ca.pem")
