"""Random sequences of registry changes, followed live by a dns replica over the real feed,
leave its zone exactly equal to a fresh replica's built from one snapshot of the registry."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import grpc
import pytest

from acmezone.registry.v1 import record_feed_service_pb2 as feed_pb
from acmezone.registry.v1 import record_feed_service_pb2_grpc as feed_grpc
from acmezone.registry.v1 import registration_service_pb2 as reg_pb
from acmezone.registry.v1 import registration_service_pb2_grpc as reg_grpc
from acmezone.registry.v1 import txt_record_service_pb2 as txt_pb
from acmezone.registry.v1 import txt_record_service_pb2_grpc as txt_grpc
from acmezone_dns.app import DnsApp
from tests.dns.conftest import running_dns
from tests.dns.test_store import observable
from tests.registry.conftest import running_registry
from tests.registry.values import acme_digest

LABELS = [f"p{i}" for i in range(8)]


async def caught_up(app: DnsApp, feed: feed_grpc.RecordFeedServiceStub, within: float = 10) -> None:
    """Wait until the replica serves the registry's current revision."""
    status = await feed.GetFeedStatus(feed_pb.GetFeedStatusRequest())
    deadline = time.monotonic() + within
    while app.store.snapshot.revision < status.revision:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"replica at {app.store.snapshot.revision}, registry at {status.revision}"
            )
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("seed", range(3))
async def test_a_live_replica_equals_a_fresh_snapshot(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    for replica in ("live", "fresh"):
        (tmp_path / replica).mkdir()
    credentials: dict[str, tuple[str, str]] = {}
    async with running_registry(tmp_path / "registry") as registry:
        target = str(registry.grpc_address)
        async with (
            grpc.aio.insecure_channel(target) as channel,
            running_dns(tmp_path / "live", registry_target=target) as live,
        ):
            registrations = reg_grpc.RegistrationServiceStub(channel)
            txt = txt_grpc.TxtRecordServiceStub(channel)
            feed = feed_grpc.RecordFeedServiceStub(channel)
            for step in range(60):
                label = rng.choice(LABELS)
                name = f"registrations/{label}"
                if label not in credentials:
                    created = await registrations.CreateRegistration(
                        reg_pb.CreateRegistrationRequest(
                            registration_id=label,
                            registration=reg_pb.Registration(max_txt_values=rng.randint(1, 3)),
                        )
                    )
                    credentials[label] = (created.username, created.password)
                    continue
                auth = (("x-api-user", credentials[label][0]), ("x-api-key", credentials[label][1]))
                roll = rng.random()
                if roll < 0.5:
                    value = acme_digest((seed, rng.randint(0, 5)))
                    await txt.AddTxtValue(
                        txt_pb.AddTxtValueRequest(name=f"{name}/txtRecord", value=value),
                        metadata=auth,
                    )
                elif roll < 0.65:
                    value = acme_digest((seed, rng.randint(0, 5)))
                    await txt.RemoveTxtValue(
                        txt_pb.RemoveTxtValueRequest(name=f"{name}/txtRecord", value=value),
                        metadata=auth,
                    )
                elif roll < 0.75:
                    await txt.ClearTxtValues(
                        txt_pb.ClearTxtValuesRequest(name=f"{name}/txtRecord"), metadata=auth
                    )
                elif roll < 0.85:
                    await registrations.DeleteRegistration(
                        reg_pb.DeleteRegistrationRequest(name=name), metadata=auth
                    )
                    del credentials[label]
                if step % 20 == 19:
                    # now and then the replica catches up between changes, not only at the end
                    await caught_up(live, feed)
            await caught_up(live, feed)
            async with running_dns(tmp_path / "fresh", registry_target=target) as fresh:
                await caught_up(fresh, feed)
                assert observable(live.store) == observable(fresh.store)
                assert live.store.snapshot.revision == fresh.store.snapshot.revision
