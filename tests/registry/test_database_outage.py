"""A PostgreSQL outage, made real by a TCP proxy in front of the server that is taken down and
brought back: HTTP 503 with Retry-After, gRPC UNAVAILABLE, health NOT_SERVING, and recovery."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from acmezone.registry.v1 import registration_service_pb2 as reg_pb2
from acmezone.registry.v1 import registration_service_pb2_grpc as reg_grpc
from acmezone_common.testing import free_port
from tests.registry.conftest import running_registry

pytestmark = pytest.mark.postgres


class TcpProxy:
    """Forwards a loopback port to PostgreSQL; `stop` drops the listener and every connection."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.port = free_port()
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        self._writers |= {writer, upstream_writer}
        await asyncio.gather(
            self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
        )

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()


@pytest.fixture
async def proxied_url(postgres_schema_url: str) -> AsyncIterator[tuple[str, TcpProxy]]:
    parts = urlsplit(postgres_schema_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    netloc = (
        f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else f"127.0.0.1:{proxy.port}"
    )
    try:
        yield urlunsplit(parts._replace(netloc=netloc)), proxy
    finally:
        await proxy.stop()


async def _next_status(stream: object, wanted: int) -> None:
    async for response in stream:  # type: ignore[attr-defined]
        if response.status == wanted:
            return


async def test_an_outage_is_503_unavailable_and_not_serving_then_recovers(
    proxied_url: tuple[str, TcpProxy], tmp_path: Path
) -> None:
    url, proxy = proxied_url
    async with (
        running_registry(tmp_path, database_url=url, maintenance_interval_seconds=0.2) as app,
        aiohttp.ClientSession() as session,
        grpc.aio.insecure_channel(str(app.grpc_address)) as channel,
    ):
        base = f"http://{app.http_address}"
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        async with session.post(f"{base}/register") as reply:
            assert reply.status == 201

        await proxy.stop()
        async with session.post(f"{base}/register") as reply:
            assert reply.status == 503
            assert reply.headers["Retry-After"] == "2"
            assert await reply.read() == b'{"error": "db_error"}'
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await reg_grpc.RegistrationServiceStub(channel).CreateRegistration(
                reg_pb2.CreateRegistrationRequest(registration=reg_pb2.Registration())
            )
        assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
        await asyncio.wait_for(_next_status(watch, health_pb2.HealthCheckResponse.NOT_SERVING), 10)
        # What the liveness probe asks stays SERVING: an outage is no reason to restart.
        alive = await health.Check(
            health_pb2.HealthCheckRequest(service="acmezone.registry.v1.RegistrationService")
        )
        assert alive.status == health_pb2.HealthCheckResponse.SERVING

        await proxy.start()
        await asyncio.wait_for(_next_status(watch, health_pb2.HealthCheckResponse.SERVING), 10)
        async with session.post(f"{base}/register") as reply:
            assert reply.status == 201
        watch.cancel()
