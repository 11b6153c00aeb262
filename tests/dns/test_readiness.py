"""Replicas report the revision they serve to the registry over the real feed, and
WaitForReplicas waits for all of them: three dns replicas in this process, one of which stops
following the feed for a while."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import aiohttp
import dns.rcode
import grpc
import pytest
from google.protobuf import duration_pb2
from prometheus_client import CollectorRegistry

from acmezone.registry.v1 import record_feed_service_pb2 as feed_pb
from acmezone.registry.v1 import record_feed_service_pb2_grpc as feed_grpc
from acmezone_common.testing import error_info_reason
from acmezone_dns.app import DnsApp
from tests.dns.conftest import running_dns
from tests.dns.test_feed_client import registry_client, txt_values
from tests.registry.conftest import running_registry
from tests.registry.test_dns_updates import new_client
from tests.registry.values import acme_digest


async def reported(feed: feed_grpc.RecordFeedServiceStub, count: int, revision: int) -> list[str]:
    """Wait until `count` replicas report at least `revision`; their names."""
    deadline = time.monotonic() + 10
    while True:
        status = await feed.GetFeedStatus(feed_pb.GetFeedStatusRequest())
        names = [r.replica for r in status.replicas if r.revision >= revision and r.connected]
        if len(names) >= count:
            return names
        if time.monotonic() > deadline:
            raise AssertionError(f"replicas reported: {status.replicas}")
        await asyncio.sleep(0.02)


async def test_wait_for_replicas_waits_for_the_one_behind(tmp_path: Path) -> None:
    metrics = CollectorRegistry()

    def in_state(state: str) -> float | None:
        return metrics.get_sample_value("acmezone_registry_feed_replicas", {"state": state})

    async with running_registry(tmp_path / "registry", metrics) as registry:
        target = str(registry.grpc_address)
        apps: list[DnsApp] = []
        async with (
            grpc.aio.insecure_channel(target) as channel,
            registry_client(registry.grpc_address) as api,
            contextlib.AsyncExitStack() as replicas,
        ):
            feed = feed_grpc.RecordFeedServiceStub(channel)
            for i in range(3):
                (tmp_path / f"dns{i}").mkdir()
                replica = running_dns(
                    tmp_path / f"dns{i}", registry_target=target, replica_name=f"replica-{i}"
                )
                apps.append(await replicas.enter_async_context(replica))
            await api.create("ready")
            first = await api.add("ready", acme_digest(1))
            assert sorted(await reported(feed, 3, first)) == [
                "replica-0",
                "replica-1",
                "replica-2",
            ]
            done = await feed.WaitForReplicas(feed_pb.WaitForReplicasRequest(revision=first))
            assert [r.replica for r in done.replicas] == ["replica-0", "replica-1", "replica-2"]
            assert [in_state(s) for s in ("current", "behind", "disconnected")] == [3, 0, 0]

            # replica-1 stops following: it still counts, and it is behind.
            await apps[1].feed.stop()
            second = await api.add("ready", acme_digest(2))
            with pytest.raises(grpc.aio.AioRpcError) as lagging:
                await feed.WaitForReplicas(
                    feed_pb.WaitForReplicasRequest(
                        revision=second, timeout=duration_pb2.Duration(nanos=300_000_000)
                    )
                )
            assert lagging.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert error_info_reason(lagging.value) == "REPLICAS_LAGGING"
            assert f"replica-1 at revision {first} (disconnected)" in str(lagging.value.details())
            assert "replica-0" not in str(lagging.value.details())
            assert in_state("disconnected") == 1
            lag = metrics.get_sample_value("acmezone_registry_feed_replica_lag_revisions")
            assert lag == second - first

            # Back on the feed, it catches up and the same wait ends.
            waiting = asyncio.ensure_future(
                feed.WaitForReplicas(feed_pb.WaitForReplicasRequest(revision=second))
            )
            await asyncio.sleep(0.2)
            assert not waiting.done()
            await apps[1].feed.start()
            done = await asyncio.wait_for(waiting, 10)
            assert all(r.revision >= second for r in done.replicas)
            assert len(done.replicas) == 3


async def test_bad_waits_are_refused(tmp_path: Path) -> None:
    async with (
        running_registry(tmp_path / "registry") as registry,
        grpc.aio.insecure_channel(str(registry.grpc_address)) as channel,
    ):
        feed = feed_grpc.RecordFeedServiceStub(channel)
        for request, reason in (
            (feed_pb.WaitForReplicasRequest(revision=0), "INVALID_REVISION"),
            (
                feed_pb.WaitForReplicasRequest(
                    revision=1, timeout=duration_pb2.Duration(seconds=301)
                ),
                "INVALID_TIMEOUT",
            ),
            (
                feed_pb.WaitForReplicasRequest(
                    revision=1, timeout=duration_pb2.Duration(seconds=-1)
                ),
                "INVALID_TIMEOUT",
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await feed.WaitForReplicas(request)
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error_info_reason(bad.value) == reason
        call = feed.ReportServedRevisions()
        await call.write(feed_pb.ReportServedRevisionsRequest(replica="", revision=1))
        await call.done_writing()
        with pytest.raises(grpc.aio.AioRpcError) as bad_report:
            await call
        assert bad_report.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info_reason(bad_report.value) == "INVALID_REPLICA"


async def test_a_stopping_registry_ends_the_report_streams_at_once(tmp_path: Path) -> None:
    """A report stream never ends by itself: the registry ends them when it stops, so its
    graceful stop does not wait the whole grace for them."""
    async with running_registry(tmp_path / "registry") as registry:
        (tmp_path / "dns").mkdir()
        async with running_dns(
            tmp_path / "dns", registry_target=str(registry.grpc_address), replica_name="r"
        ):
            for _ in range(200):
                if registry.feed.replicas.live():
                    break
                await asyncio.sleep(0.02)
            assert registry.feed.replicas.live()[0].connected
            started = time.monotonic()
            await registry.stop(grace=20)
            assert time.monotonic() - started < 5
            assert not registry.feed.replicas.live()[0].connected


async def test_update_answers_once_every_replica_serves_the_value(tmp_path: Path) -> None:
    """By default (WAIT_FOR_REPLICAS_SECONDS 2), an acme-dns `/update` returns only once
    every replica answers the value (a client may ask the CA at once), and past the bound it
    answers anyway, counting the timeout."""
    metrics = CollectorRegistry()
    async with running_registry(tmp_path / "registry", metrics) as registry:
        (tmp_path / "dns").mkdir()
        async with (
            running_dns(
                tmp_path / "dns", registry_target=str(registry.grpc_address), replica_name="r"
            ) as replica,
            aiohttp.ClientSession() as http,
        ):
            base = f"http://{registry.http_address}"
            async with http.post(f"{base}/register") as reply:
                account = await reply.json()
            auth = {"X-Api-User": account["username"], "X-Api-Key": account["password"]}
            fqdn = f"{account['fulldomain']}."
            for i in range(5):
                body = {"subdomain": account["subdomain"], "txt": acme_digest(("ready", i))}
                async with http.post(f"{base}/update", json=body, headers=auth) as reply:
                    assert reply.status == 200
                # Answered by the replica the moment /update has returned: no polling.
                assert acme_digest(("ready", i)) in await txt_values(replica, fqdn)
            ready = metrics.get_sample_value(
                "acmezone_registry_replica_waits_total", {"result": "ready"}
            )
            assert ready == 5

            await replica.feed.stop()  # it still counts, and it falls behind
            started = time.monotonic()
            body = {"subdomain": account["subdomain"], "txt": acme_digest("late")}
            async with http.post(f"{base}/update", json=body, headers=auth) as reply:
                assert reply.status == 200
            assert time.monotonic() - started >= 1.9
            timeouts = metrics.get_sample_value(
                "acmezone_registry_replica_waits_total", {"result": "timeout"}
            )
            assert timeouts == 1


async def test_an_rfc2136_answer_waits_for_the_replicas_too(tmp_path: Path) -> None:
    """The same opt-in wait holds the answer to an applied RFC 2136 UPDATE."""
    metrics = CollectorRegistry()
    async with running_registry(
        tmp_path / "registry", metrics, wait_for_replicas_seconds=0.5
    ) as registry:
        (tmp_path / "dns").mkdir()
        async with (
            grpc.aio.insecure_channel(str(registry.grpc_address)) as channel,
            running_dns(
                tmp_path / "dns", registry_target=str(registry.grpc_address), replica_name="r"
            ) as replica,
        ):
            client = await new_client(channel)
            update = client.update()
            update.add(client.fqdn, 60, "TXT", f'"{acme_digest("rfc2136")}"')
            response, _ = await client.send(update)
            assert response.rcode() == dns.rcode.NOERROR
            assert acme_digest("rfc2136") in await txt_values(replica, client.fqdn)
            assert (
                metrics.get_sample_value(
                    "acmezone_registry_replica_waits_total", {"result": "ready"}
                )
                == 1
            )
            await replica.feed.stop()
            late = client.update()
            late.add(client.fqdn, 60, "TXT", f'"{acme_digest("late")}"')
            started = time.monotonic()
            response, _ = await client.send(late)
            assert response.rcode() == dns.rcode.NOERROR
            assert time.monotonic() - started >= 0.45
            assert (
                metrics.get_sample_value(
                    "acmezone_registry_replica_waits_total", {"result": "timeout"}
                )
                == 1
            )
