"""The registry as real processes: two replicas on one PostgreSQL, SIGTERM, restarts."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from acmezone.registry.v1 import record_feed_service_pb2 as feed_pb2
from acmezone.registry.v1 import record_feed_service_pb2_grpc as feed_grpc
from acmezone.registry.v1 import registration_service_pb2 as reg_pb2
from acmezone.registry.v1 import registration_service_pb2_grpc as reg_grpc
from acmezone_common.testing import ServiceProcess, free_port
from tests.registry.values import acme_digest

pytestmark = pytest.mark.slow
REGISTRY_BIN = str(Path(sys.executable).parent / "acmezone-registry")


class Replica:
    """One registry process with its own ports."""

    def __init__(self, name: str, database_url: str, tmp_path: Path) -> None:
        self.grpc = f"127.0.0.1:{free_port()}"
        self.http = f"127.0.0.1:{free_port()}"
        self.process = ServiceProcess(
            [REGISTRY_BIN],
            {
                "ACMEZONE_REGISTRY_DATABASE_URL": database_url,
                "ACMEZONE_REGISTRY_GRPC_ADDRESS": self.grpc,
                "ACMEZONE_REGISTRY_HTTP_ADDRESS": self.http,
                "ACMEZONE_REGISTRY_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
                "ACMEZONE_REGISTRY_LOG_FORMAT": "json",
            },
            str(tmp_path / f"{name}.log"),
        )

    async def start(self) -> None:
        await self.process.start()
        await self.process.wait_for_serving(self.grpc)


@pytest.fixture
async def replicas(postgres_schema_url: str, tmp_path: Path) -> AsyncIterator[list[Replica]]:
    pair = [Replica(name, postgres_schema_url, tmp_path) for name in ("a", "b")]
    try:
        await asyncio.gather(*(replica.start() for replica in pair))
        yield pair
    finally:
        for replica in pair:
            await replica.process.stop()


async def register(replica: Replica) -> dict[str, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://{replica.http}/register") as response,
    ):
        assert response.status == 201
        body: dict[str, str] = json.loads(await response.text())
        return body


async def update(replica: Replica, account: dict[str, str], txt: str) -> None:
    headers = {"X-Api-User": account["username"], "X-Api-Key": account["password"]}
    payload = {"subdomain": account["subdomain"], "txt": txt}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://{replica.http}/update", json=payload, headers=headers) as resp,
    ):
        assert resp.status == 200, await resp.text()


@pytest.mark.postgres
async def test_watch_on_one_replica_sees_updates_made_on_the_other(
    replicas: list[Replica],
) -> None:
    a, b = replicas
    async with grpc.aio.insecure_channel(b.grpc) as channel:
        stream = feed_grpc.RecordFeedServiceStub(channel).WatchRecords(
            feed_pb2.WatchRecordsRequest(start_revision=0)
        )
        first = await stream.read()
        assert first.WhichOneof("event") == "snapshot"
        account = await register(a)
        fqdn = f"{account['fulldomain']}."
        txt = acme_digest("cross-replica")
        delays = []
        for expected in ((), (txt,)):
            started = time.monotonic()
            if expected:
                await update(a, account, txt)
            while True:
                message = await asyncio.wait_for(stream.read(), 5)
                if message.WhichOneof("event") != "changes":
                    continue
                change = message.changes.changes[-1]
                assert change.record_set.fqdn == fqdn
                assert tuple(change.record_set.txt_values) == expected
                delays.append(time.monotonic() - started)
                break
        assert max(delays) < 1.0, f"replica B saw A's changes after {delays}"
        stream.cancel()


@pytest.mark.postgres
async def test_sigterm_exits_cleanly_and_restart_keeps_everything(
    replicas: list[Replica],
) -> None:
    a, b = replicas
    account = await register(a)
    await update(a, account, acme_digest("kept"))
    assert await a.process.stop() == 0
    await a.start()
    async with grpc.aio.insecure_channel(a.grpc) as channel:
        registration = await reg_grpc.RegistrationServiceStub(channel).GetRegistration(
            reg_pb2.GetRegistrationRequest(name=f"registrations/{account['subdomain']}")
        )
        assert registration.fulldomain == account["fulldomain"]
        stream = feed_grpc.RecordFeedServiceStub(channel).WatchRecords(
            feed_pb2.WatchRecordsRequest(start_revision=0)
        )
        snapshot = await stream.read()
        stream.cancel()
    values = {rs.fqdn: tuple(rs.txt_values) for rs in snapshot.snapshot.record_sets}
    assert values[f"{account['fulldomain']}."] == (acme_digest("kept"),)
    assert b.process.running
