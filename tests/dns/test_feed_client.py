"""The feed client against a real registry over real gRPC: snapshot, live changes, resume after a
registry restart, re-list when the feed is gone, a dns restart, and how fast an update shows."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from acmezone.dns.v1 import zone_service_pb2, zone_service_pb2_grpc
from acmezone.registry.v1 import registration_service_pb2 as reg_pb
from acmezone.registry.v1 import registration_service_pb2_grpc as reg_grpc
from acmezone.registry.v1 import txt_record_service_pb2 as txt_pb
from acmezone.registry.v1 import txt_record_service_pb2_grpc as txt_grpc
from acmezone_common.addresses import HostPort
from acmezone_common.testing import free_port, wait_for_serving
from acmezone_dns.app import DnsApp
from tests.dns.conftest import ZONE, query_udp, running_dns, v4
from tests.registry.conftest import running_registry
from tests.registry.values import acme_digest


class Registry:
    """Registration and TXT stubs of a running registry, with the credentials of what we made."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._registrations = reg_grpc.RegistrationServiceStub(channel)
        self._txt = txt_grpc.TxtRecordServiceStub(channel)
        self._credentials: dict[str, tuple[str, str]] = {}

    async def create(self, label: str) -> str:
        """Create a registration with this subdomain label; returns its fqdn (no dot)."""
        created = await self._registrations.CreateRegistration(
            reg_pb.CreateRegistrationRequest(
                registration_id=label, registration=reg_pb.Registration(max_txt_values=10)
            )
        )
        self._credentials[label] = (created.username, created.password)
        return str(created.fulldomain)

    async def add(self, label: str, value: str) -> int:
        """Publish a TXT value; returns the feed revision that holds it."""
        username, password = self._credentials[label]
        record = await self._txt.AddTxtValue(
            txt_pb.AddTxtValueRequest(name=f"registrations/{label}/txtRecord", value=value),
            metadata=(("x-api-user", username), ("x-api-key", password)),
        )
        return int(record.revision)

    async def delete(self, label: str) -> None:
        """Delete a registration (its name goes NXDOMAIN)."""
        username, password = self._credentials[label]
        await self._registrations.DeleteRegistration(
            reg_pb.DeleteRegistrationRequest(name=f"registrations/{label}"),
            metadata=(("x-api-user", username), ("x-api-key", password)),
        )


@asynccontextmanager
async def registry_client(address: HostPort) -> AsyncIterator[Registry]:
    async with grpc.aio.insecure_channel(str(address)) as channel:
        yield Registry(channel)


async def txt_values(app: DnsApp, fqdn: str) -> set[str] | str | None:
    """The TXT values dns answers for a name; None for NXDOMAIN, the rcode for other errors
    (SERVFAIL before the first snapshot). EDNS, so ten values fit without truncation."""
    reply = await query_udp(v4(app), fqdn, "TXT", use_edns=0)
    if reply.rcode() == dns.rcode.NXDOMAIN:
        return None
    if reply.rcode() != dns.rcode.NOERROR:
        return dns.rcode.to_text(reply.rcode())
    return {b"".join(rd.strings).decode() for rrset in reply.answer for rd in rrset}


async def eventually(
    app: DnsApp, fqdn: str, expected: set[str] | None, seconds: float = 10
) -> None:
    """Poll over real DNS until `fqdn` answers `expected`."""
    deadline = time.monotonic() + seconds
    while True:
        got = await txt_values(app, fqdn)
        if got == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{fqdn}: expected {expected}, dns answers {got}")
        await asyncio.sleep(0.01)


async def zone_status(app: DnsApp) -> zone_service_pb2.Zone:
    async with grpc.aio.insecure_channel(str(app.grpc_address)) as channel:
        stub = zone_service_pb2_grpc.ZoneServiceStub(channel)
        zone: zone_service_pb2.Zone = await stub.GetZone(
            zone_service_pb2.GetZoneRequest(name=f"zones/{ZONE}")
        )
        return zone


async def health(app: DnsApp, service: str = "") -> Any:
    async with grpc.aio.insecure_channel(str(app.grpc_address)) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service)
        )
        return reply.status


async def test_not_serving_until_the_first_snapshot_then_live(tmp_path: Path) -> None:
    port = free_port()
    async with running_dns(tmp_path, registry_target=f"127.0.0.1:{port}") as app:
        assert await health(app) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await health(app, "acmezone.dns.v1.ZoneService") == (
            health_pb2.HealthCheckResponse.NOT_SERVING
        )
        assert (await zone_status(app)).feed_state == zone_service_pb2.FEED_STATE_SYNCING
        reply = await query_udp(v4(app), f"x.{ZONE}", "TXT")
        assert reply.rcode() == dns.rcode.SERVFAIL
        async with (
            running_registry(tmp_path / "reg", grpc_address=f"127.0.0.1:{port}") as registry,
            registry_client(registry.grpc_address) as api,
        ):
            await wait_for_serving(str(app.grpc_address), within=10)
            status = await zone_status(app)
            assert status.feed_state == zone_service_pb2.FEED_STATE_LIVE
            assert status.HasField("last_sync_time")
            assert await txt_values(app, f"x.{ZONE}") is None  # an empty zone, now NXDOMAIN
            fqdn = await api.create("live")
            await eventually(app, fqdn, set())  # registered, no value yet: NODATA
            revision = await api.add("live", acme_digest(1))
            await eventually(app, fqdn, {acme_digest(1)})
            assert app.store.snapshot.revision >= revision
            await api.add("live", acme_digest(2))
            await eventually(app, fqdn, {acme_digest(1), acme_digest(2)})
            await api.delete("live")
            await eventually(app, fqdn, None)


async def test_snapshot_holds_what_the_registry_had_before(tmp_path: Path) -> None:
    async with (
        running_registry(tmp_path / "reg") as registry,
        registry_client(registry.grpc_address) as api,
    ):
        names = [await api.create(f"pre{i}") for i in range(5)]
        for i in range(5):
            await api.add(f"pre{i}", acme_digest(i))
        async with running_dns(tmp_path, registry_target=str(registry.grpc_address)) as app:
            await wait_for_serving(str(app.grpc_address), within=10)
            for i, fqdn in enumerate(names):
                assert await txt_values(app, fqdn) == {acme_digest(i)}
            assert app.feed_metrics.snapshots_applied == 1


async def test_registry_restart_resumes_and_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "reg"
    address = f"127.0.0.1:{port}"
    async with running_dns(tmp_path, registry_target=address) as app:
        async with (
            running_registry(data, grpc_address=address) as registry,
            registry_client(registry.grpc_address) as api,
        ):
            fqdn = await api.create("restart")
            await api.add("restart", acme_digest("before"))
            await eventually(app, fqdn, {acme_digest("before")})
        # The registry is gone: the zone keeps answering from its last state.
        assert await txt_values(app, fqdn) == {acme_digest("before")}
        for _ in range(200):
            if (await zone_status(app)).feed_state == zone_service_pb2.FEED_STATE_DISCONNECTED:
                break
            await asyncio.sleep(0.01)
        assert (await zone_status(app)).feed_state == zone_service_pb2.FEED_STATE_DISCONNECTED
        async with (
            running_registry(data, grpc_address=address) as registry,
            registry_client(registry.grpc_address) as api,
        ):
            api._credentials = {}  # a new client: log in again with the stored credentials
            await _reuse_credentials(api, registry, "restart")
            for i in range(20):
                await api.add("restart", acme_digest(i))
            # max_txt_values is 10: the 10 newest survive
            expected = {acme_digest(i) for i in range(10, 20)}
            await eventually(app, fqdn, expected)
        assert app.feed_metrics.snapshots_applied == 1  # resumed, never re-listed
        assert app.feed_metrics.reconnects >= 1


async def _reuse_credentials(api: Registry, registry: Any, label: str) -> None:
    """Rotate the password through the operator API so the test can act as the owner again."""
    async with grpc.aio.insecure_channel(str(registry.grpc_address)) as channel:
        stub = reg_grpc.RegistrationServiceStub(channel)
        got = await stub.GetRegistration(
            reg_pb.GetRegistrationRequest(name=f"registrations/{label}")
        )
        rotated = await stub.RotateRegistrationPassword(
            reg_pb.RotateRegistrationPasswordRequest(name=f"registrations/{label}")
        )
        api._credentials[label] = (got.username, rotated.password)


async def test_feed_gone_means_relist(tmp_path: Path) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    async with running_dns(tmp_path, registry_target=address) as app:
        async with (
            running_registry(tmp_path / "old", grpc_address=address) as registry,
            registry_client(registry.grpc_address) as api,
        ):
            old = await api.create("old")
            await api.add("old", acme_digest("old"))
            await eventually(app, old, {acme_digest("old")})
        # A registry with a new database: same address, another feed_id -> OUT_OF_RANGE.
        async with (
            running_registry(tmp_path / "new", grpc_address=address) as registry,
            registry_client(registry.grpc_address) as api,
        ):
            new = await api.create("new")
            await api.add("new", acme_digest("new"))
            await eventually(app, new, {acme_digest("new")})
            await eventually(app, old, None)
        assert app.feed_metrics.snapshots_applied == 2


async def test_dns_restart_sees_every_update(tmp_path: Path) -> None:
    async with (
        running_registry(tmp_path / "reg") as registry,
        registry_client(registry.grpc_address) as api,
    ):
        fqdn = await api.create("dnsrestart")
        target = str(registry.grpc_address)
        async with running_dns(tmp_path, registry_target=target) as app:
            await api.add("dnsrestart", acme_digest(1))
            await eventually(app, fqdn, {acme_digest(1)})
        await api.add("dnsrestart", acme_digest(2))  # while no dns runs
        async with running_dns(tmp_path, registry_target=target) as app:
            await eventually(app, fqdn, {acme_digest(1), acme_digest(2)})
            await api.add("dnsrestart", acme_digest(3))
            await eventually(app, fqdn, {acme_digest(i) for i in (1, 2, 3)})


async def test_feed_client_stop_and_resume_mid_stream(tmp_path: Path) -> None:
    async with (
        running_registry(tmp_path / "reg") as registry,
        registry_client(registry.grpc_address) as api,
        running_dns(tmp_path, registry_target=str(registry.grpc_address)) as app,
    ):
        fqdn = await api.create("mid")
        await api.add("mid", acme_digest(0))
        await eventually(app, fqdn, {acme_digest(0)})
        await app.feed.stop()
        for i in range(1, 4):
            await api.add("mid", acme_digest(i))
        assert await txt_values(app, fqdn) == {acme_digest(0)}
        await app.feed.start()
        await eventually(app, fqdn, {acme_digest(i) for i in range(4)})
        assert app.feed_metrics.snapshots_applied == 1


async def test_update_to_visible_latency(tmp_path: Path) -> None:
    """Prints how long an update takes to be answered; asserts only that each one is."""
    async with (
        running_registry(tmp_path / "reg") as registry,
        registry_client(registry.grpc_address) as api,
        running_dns(tmp_path, registry_target=str(registry.grpc_address)) as app,
    ):
        await wait_for_serving(str(app.grpc_address), within=10)
        fqdn = await api.create("latency")
        delays = []
        for i in range(30):
            value = acme_digest(("latency", i))
            await api.add("latency", value)
            start = time.perf_counter()
            while value not in (await txt_values(app, fqdn) or ""):
                assert time.perf_counter() - start < 10
            delays.append(time.perf_counter() - start)
        delays.sort()
        print(
            f"update visible after: p50 {statistics.median(delays) * 1000:.2f} ms, "
            f"max {delays[-1] * 1000:.2f} ms over {len(delays)} updates (in-process)"
        )


async def test_lookup_metrics_follow_the_feed(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    metrics = CollectorRegistry()
    async with (
        running_registry(tmp_path / "reg") as registry,
        registry_client(registry.grpc_address) as api,
        running_dns(tmp_path, metrics, registry_target=str(registry.grpc_address)) as app,
    ):
        fqdn = await api.create("metrics")
        revision = await api.add("metrics", acme_digest(1))
        await eventually(app, fqdn, {acme_digest(1)})
        assert metrics.get_sample_value("acmezone_dns_feed_connected") == 1
        assert metrics.get_sample_value("acmezone_dns_feed_revision") == revision
        assert metrics.get_sample_value("acmezone_dns_feed_snapshots_total") == 1
        assert (metrics.get_sample_value("acmezone_dns_feed_changes_total") or 0) >= 1


async def test_compacted_revision_means_relist(tmp_path: Path) -> None:
    async with (
        running_registry(
            tmp_path / "reg", feed_retention_revisions=1, maintenance_interval_seconds=0.1
        ) as registry,
        registry_client(registry.grpc_address) as api,
        running_dns(tmp_path, registry_target=str(registry.grpc_address)) as app,
    ):
        fqdn = await api.create("compact")
        served = await api.add("compact", acme_digest(0))
        await eventually(app, fqdn, {acme_digest(0)})
        await app.feed.stop()
        for i in range(1, 6):
            latest = await api.add("compact", acme_digest(i))
        # Maintenance compacts all but the latest revision: wait until the one after what the
        # replica serves is gone, so resuming from it must be refused.
        deadline = time.monotonic() + 10
        while (await registry.stores.log.feed_status()).compacted_revision <= served:
            assert time.monotonic() < deadline, "maintenance never compacted the feed"
            await asyncio.sleep(0.02)
        assert (await registry.stores.log.feed_status()).compacted_revision < latest
        await app.feed.start()
        await eventually(app, fqdn, {acme_digest(i) for i in range(6)})
        assert app.feed_metrics.snapshots_applied == 2  # told the revision is gone: re-listed
