"""gRPC server certificates that follow their files: a renewal written over the certificate and
key reaches the next connection without a restart, open connections keep working, a renewal
that does not load is refused while the old pair serves on, and a replaced client CA decides
which client certificates the next connection accepts.

Which certificate a server presents is read from a real TLS handshake on its port (what a new
client sees), not from the server's state."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from acmezone_common.addresses import HostPort
from acmezone_common.grpc_server import GrpcServer
from acmezone_common.transport import ClientTls, ServerTls, open_channel
from tests.common.local_ca import Issued, LocalCa
from tests.registry.conftest import running_registry


def served_serial(port: int, ca: LocalCa, client: Issued | None = None) -> int:
    """The serial number of the certificate the server on `port` presents to a new
    connection (verified against `ca`, for `localhost`)."""
    context = ssl.create_default_context(cafile=str(ca.cert_file))
    context.set_alpn_protocols(["h2"])
    if client is not None:
        context.load_cert_chain(client.cert_file, client.key_file)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def serial_of(issued: Issued) -> int:
    return x509.load_pem_x509_certificate(issued.cert_file.read_bytes()).serial_number


def renew_in_place(target: Issued, renewal: Issued) -> None:
    """What a renewal tool does: the new files renamed over the old ones, key first."""
    os.replace(renewal.key_file, target.key_file)
    os.replace(renewal.cert_file, target.cert_file)


async def healthy(channel: grpc.aio.Channel) -> bool:
    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=3
        )
    except grpc.aio.AioRpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def check(target: str, tls: ClientTls) -> bool:
    """A health check over a new channel."""
    async with open_channel(target, tls=tls) as channel:
        return await healthy(channel)


@pytest.fixture
def ca(tmp_path: Path) -> LocalCa:
    return LocalCa(tmp_path / "ca")


@pytest.fixture
async def served(ca: LocalCa) -> AsyncIterator[tuple[GrpcServer, Issued]]:
    issued = ca.issue("server")
    server = GrpcServer(
        HostPort("127.0.0.1", 0),
        registry=CollectorRegistry(),
        error_domain="test",
        credentials=ServerTls(issued.cert_file, issued.key_file).credentials(),
    )
    await server.start()
    try:
        yield server, issued
    finally:
        await server.stop(0)


async def test_a_renewed_certificate_reaches_new_connections_without_restart(
    served: tuple[GrpcServer, Issued], ca: LocalCa
) -> None:
    server, issued = served
    port, trust = server.address.port, ClientTls(ca.cert_file)
    first = serial_of(issued)
    assert await asyncio.to_thread(served_serial, port, ca) == first
    async with open_channel(str(server.address), tls=trust) as open_before:
        assert await healthy(open_before)
        renewal = ca.issue("server-renewed")
        renew_in_place(issued, renewal)
        second = serial_of(issued)
        assert second != first
        assert await asyncio.to_thread(served_serial, port, ca) == second
        assert await check(str(server.address), trust)
        assert await healthy(open_before)  # the connection made before the renewal lives on
        # And again: every change is picked up, not only the first.
        renew_in_place(issued, ca.issue("server-renewed-again"))
        assert await asyncio.to_thread(served_serial, port, ca) == serial_of(issued)


async def test_a_renewal_that_does_not_load_keeps_the_old_certificate(
    served: tuple[GrpcServer, Issued], ca: LocalCa, caplog: pytest.LogCaptureFixture
) -> None:
    server, issued = served
    port = server.address.port
    first = serial_of(issued)
    # A new certificate whose key never arrived: the old key does not match it.
    stray = ca.issue("stray")
    os.replace(stray.cert_file, issued.cert_file)
    with caplog.at_level(logging.WARNING, logger="acmezone_common.tls"):
        for _ in range(3):
            assert await asyncio.to_thread(served_serial, port, ca) == first
            assert await check(str(server.address), ClientTls(ca.cert_file))
    refusals = [r for r in caplog.records if "do not load" in r.getMessage()]
    assert len(refusals) == 1  # once per version of the files, not once per connection
    # The matching key arrives: the new certificate is served from the next connection on.
    os.replace(stray.key_file, issued.key_file)
    assert await asyncio.to_thread(served_serial, port, ca) == serial_of(issued) != first


async def test_a_replaced_client_ca_decides_the_next_connection(tmp_path: Path) -> None:
    old_ca, new_ca = LocalCa(tmp_path / "old"), LocalCa(tmp_path / "new", name="new client CA")
    issued = old_ca.issue("server")
    client_ca = tmp_path / "client-ca.pem"
    client_ca.write_bytes(old_ca.cert_file.read_bytes())
    old_client = old_ca.issue("old-client", server=False)
    new_client = new_ca.issue("new-client", server=False)

    def presenting(client: Issued) -> ClientTls:
        return ClientTls(old_ca.cert_file, client.cert_file, client.key_file)

    server = GrpcServer(
        HostPort("127.0.0.1", 0),
        registry=CollectorRegistry(),
        error_domain="test",
        credentials=ServerTls(issued.cert_file, issued.key_file, client_ca).credentials(),
    )
    await server.start()
    try:
        target = str(server.address)
        assert await check(target, presenting(old_client))
        assert not await check(target, presenting(new_client))
        replacement = tmp_path / "client-ca.pem.new"
        replacement.write_bytes(new_ca.cert_file.read_bytes())
        os.replace(replacement, client_ca)
        assert await check(target, presenting(new_client))
        assert not await check(target, presenting(old_client))
        # Without any client certificate: still refused, mutual TLS stays on.
        assert not await check(target, ClientTls(old_ca.cert_file))
    finally:
        await server.stop(0)


async def test_a_service_serves_its_renewed_certificate(tmp_path: Path, ca: LocalCa) -> None:
    """The same through a real service's settings (the registry's GRPC_TLS_* files)."""
    issued = ca.issue("registry")
    async with running_registry(
        tmp_path / "reg", grpc_tls_cert_file=issued.cert_file, grpc_tls_key_file=issued.key_file
    ) as registry:
        port = registry.grpc_address.port
        assert await asyncio.to_thread(served_serial, port, ca) == serial_of(issued)
        renew_in_place(issued, ca.issue("registry-renewed"))
        assert await asyncio.to_thread(served_serial, port, ca) == serial_of(issued)
        assert await check(f"localhost:{port}", ClientTls(ca.cert_file))
