"""The shared gRPC server: error mapping with rich details, standard metrics, health, reflection.

A small servicer of the feed API stands in for a service here; it exists only to raise each
kind of failure through the real interceptor over a real channel.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import CollectorRegistry

from acmezone.registry.v1 import record_feed_service_pb2 as feed_pb2
from acmezone.registry.v1 import record_feed_service_pb2_grpc as feed_grpc
from acmezone_common.addresses import HostPort
from acmezone_common.errors import FieldViolation, InvalidArgumentError, NotFoundError
from acmezone_common.grpc_server import GrpcServer

SERVICE = "acmezone.registry.v1.RecordFeedService"


class FailingFeed(feed_grpc.RecordFeedServiceServicer):
    """Fails in the way the request's start_revision selects."""

    async def GetFeedStatus(  # noqa: N802 - generated method name
        self, request: feed_pb2.GetFeedStatusRequest, context: Any
    ) -> feed_pb2.FeedStatus:
        return feed_pb2.FeedStatus(feed_id="f", revision=7)

    async def WatchRecords(  # noqa: N802 - generated method name
        self, request: feed_pb2.WatchRecordsRequest, context: Any
    ) -> AsyncIterator[feed_pb2.WatchRecordsResponse]:
        yield feed_pb2.WatchRecordsResponse(bookmark=feed_pb2.Bookmark(revision=1))
        if request.start_revision == 1:
            raise InvalidArgumentError(
                "INVALID_START_REVISION",
                "bad start",
                field="start_revision",
                field_violations=[FieldViolation("feed_id", "also bad")],
            )
        if request.start_revision == 2:
            raise NotFoundError("THING_NOT_FOUND", "no such thing", metadata={"thing": "x"})
        if request.start_revision == 3:
            raise RuntimeError("a bug with a secret inside")


@pytest.fixture
async def server(metrics_registry: CollectorRegistry) -> AsyncIterator[GrpcServer]:
    grpc_server = GrpcServer(
        HostPort("127.0.0.1", 0), registry=metrics_registry, error_domain="test.acmezone.dev"
    )
    descriptor = feed_pb2.DESCRIPTOR.services_by_name["RecordFeedService"]
    grpc_server.add_service(
        descriptor, partial(feed_grpc.add_RecordFeedServiceServicer_to_server, FailingFeed())
    )
    await grpc_server.start()
    yield grpc_server
    await grpc_server.stop(0)


async def watch_error(server: GrpcServer, start: int) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(str(server.address)) as channel:
        stub = feed_grpc.RecordFeedServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            async for _ in stub.WatchRecords(feed_pb2.WatchRecordsRequest(start_revision=start)):
                pass
        return failure.value


def details(error: grpc.aio.AioRpcError) -> tuple[Any, list[tuple[str, str]]]:
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    bad = error_details_pb2.BadRequest()
    for detail in status.details:
        if detail.Is(info.DESCRIPTOR):
            detail.Unpack(info)
        if detail.Is(bad.DESCRIPTOR):
            detail.Unpack(bad)
    return info, [(v.field, v.description) for v in bad.field_violations]


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_domain_error_becomes_status_with_error_info_and_field_violations(
    server: GrpcServer,
) -> None:
    error = await watch_error(server, 1)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "bad start"
    info, violations = details(error)
    assert (info.reason, info.domain) == ("INVALID_START_REVISION", "test.acmezone.dev")
    assert violations == [("start_revision", "bad start"), ("feed_id", "also bad")]
    not_found = await watch_error(server, 2)
    assert not_found.code() == grpc.StatusCode.NOT_FOUND
    info, _ = details(not_found)
    assert dict(info.metadata) == {"thing": "x"}


async def test_unexpected_exception_is_internal_without_details(
    server: GrpcServer, caplog: pytest.LogCaptureFixture
) -> None:
    error = await watch_error(server, 3)
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "internal error"
    assert "secret" not in (error.details() or "")
    assert any("unhandled error in RPC" in r.message for r in caplog.records)


async def test_standard_metrics_count_every_outcome(
    server: GrpcServer, metrics_registry: CollectorRegistry
) -> None:
    labels = {"grpc_type": "server_stream", "grpc_service": SERVICE, "grpc_method": "WatchRecords"}
    # Initialised at zero before any traffic, for every code.
    assert (
        metrics_registry.get_sample_value(
            "grpc_server_handled_total", {**labels, "grpc_code": "UNAVAILABLE"}
        )
        == 0.0
    )
    for start in (1, 2, 3):
        await watch_error(server, start)
    async with grpc.aio.insecure_channel(str(server.address)) as channel:
        status = await feed_grpc.RecordFeedServiceStub(channel).GetFeedStatus(
            feed_pb2.GetFeedStatusRequest()
        )
    assert status.revision == 7
    handled = "grpc_server_handled_total"
    assert sample(metrics_registry, handled, **labels, grpc_code="INVALID_ARGUMENT") == 1
    assert sample(metrics_registry, handled, **labels, grpc_code="NOT_FOUND") == 1
    assert sample(metrics_registry, handled, **labels, grpc_code="INTERNAL") == 1
    assert sample(metrics_registry, "grpc_server_started_total", **labels) == 3
    assert sample(metrics_registry, "grpc_server_msg_sent_total", **labels) == 3
    unary = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": "GetFeedStatus"}
    assert sample(metrics_registry, handled, **unary, grpc_code="OK") == 1
    assert sample(metrics_registry, "grpc_server_handling_seconds_count", **unary) == 1


async def test_health_and_reflection(server: GrpcServer) -> None:
    async with grpc.aio.insecure_channel(str(server.address)) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await server.set_serving(SERVICE, False)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE))
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for response in reflection.ServerReflectionInfo(iter([request])):
            names = {s.name for s in response.list_services_response.service}
            assert {SERVICE, "grpc.health.v1.Health"} <= names
            break


async def test_port_conflict_is_an_error(
    server: GrpcServer, metrics_registry: CollectorRegistry
) -> None:
    second = GrpcServer(server.address, registry=CollectorRegistry(), error_domain="x")
    with pytest.raises(OSError, match="could not bind"):
        await second.start()
