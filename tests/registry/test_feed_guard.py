"""The feed credential: with a feed or operator token set, the record feed, UPDATE forwarding
and reflection answer only callers presenting one; dns replicas present theirs and follow the
feed, forward UPDATEs and report their revision. Real registry, real gRPC, real dns replicas."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import dns.rcode
import dns.update
import grpc
import pytest
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from acmezone.registry.v1 import dns_update_service_pb2 as upd_pb
from acmezone.registry.v1 import dns_update_service_pb2_grpc as upd_grpc
from acmezone.registry.v1 import record_feed_service_pb2 as feed_pb
from acmezone.registry.v1 import record_feed_service_pb2_grpc as feed_grpc
from acmezone.registry.v1 import registration_service_pb2 as reg_pb
from acmezone.registry.v1 import registration_service_pb2_grpc as reg_grpc
from acmezone.registry.v1 import txt_record_service_pb2 as txt_pb
from acmezone.registry.v1 import txt_record_service_pb2_grpc as txt_grpc
from acmezone_common.testing import error_info_reason, wait_for_serving
from acmezone_registry.app import RegistryApp
from tests.dns.conftest import ZONE, running_dns, v4
from tests.registry.conftest import running_registry
from tests.registry.values import acme_digest

FEED_TOKEN = "feed-token-for-tests-0123456789"
OPERATOR_TOKEN = "operator-token-for-tests-98765"

Metadata = tuple[tuple[str, str], ...]
Call = Callable[[grpc.aio.Channel, Metadata], Awaitable[Any]]


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


async def watch(channel: grpc.aio.Channel, metadata: Metadata) -> Any:
    stream = feed_grpc.RecordFeedServiceStub(channel).WatchRecords(
        feed_pb.WatchRecordsRequest(), metadata=metadata, timeout=5
    )
    async for event in stream:
        stream.cancel()
        return event
    raise AssertionError("the stream ended without an event")


async def feed_status(channel: grpc.aio.Channel, metadata: Metadata) -> Any:
    stub = feed_grpc.RecordFeedServiceStub(channel)
    return await stub.GetFeedStatus(feed_pb.GetFeedStatusRequest(), metadata=metadata, timeout=5)


async def report(channel: grpc.aio.Channel, metadata: Metadata) -> Any:
    async def one() -> AsyncIterator[feed_pb.ReportServedRevisionsRequest]:
        yield feed_pb.ReportServedRevisionsRequest(replica="test", revision=0)

    stub = feed_grpc.RecordFeedServiceStub(channel)
    return await stub.ReportServedRevisions(one(), metadata=metadata, timeout=5)


async def wait_for_replicas(channel: grpc.aio.Channel, metadata: Metadata) -> Any:
    stub = feed_grpc.RecordFeedServiceStub(channel)
    return await stub.WaitForReplicas(
        feed_pb.WaitForReplicasRequest(revision=1, timeout=duration_pb2.Duration(seconds=1)),
        metadata=metadata,
        timeout=5,
    )


def _update_wire() -> bytes:
    update = dns.update.UpdateMessage(ZONE)
    update.add(f"x.{ZONE}", 1, "TXT", acme_digest(1))
    return bytes(update.to_wire())


async def apply_update(channel: grpc.aio.Channel, metadata: Metadata) -> Any:
    stub = upd_grpc.DnsUpdateServiceStub(channel)
    return await stub.ApplyDnsUpdate(
        upd_pb.ApplyDnsUpdateRequest(message=_update_wire(), client_address="127.0.0.1"),
        metadata=metadata,
        timeout=5,
    )


async def sign_response(channel: grpc.aio.Channel, metadata: Metadata) -> Any:
    query = dns.message.make_query(f"x.{ZONE}", "TXT").to_wire()
    reply = dns.message.make_response(dns.message.from_wire(query)).to_wire()
    stub = upd_grpc.DnsUpdateServiceStub(channel)
    return await stub.SignDnsResponse(
        upd_pb.SignDnsResponseRequest(query=query, response=reply, client_address="127.0.0.1"),
        metadata=metadata,
        timeout=5,
    )


async def reflect(channel: grpc.aio.Channel, metadata: Metadata) -> Any:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    stream = stub.ServerReflectionInfo(metadata=metadata, timeout=5)
    await stream.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    reply = await stream.read()
    await stream.done_writing()
    assert reply is not grpc.aio.EOF
    return reply


GUARDED: dict[str, Call] = {
    "WatchRecords": watch,
    "GetFeedStatus": feed_status,
    "ReportServedRevisions": report,
    "WaitForReplicas": wait_for_replicas,
    "ApplyDnsUpdate": apply_update,
    "SignDnsResponse": sign_response,
    "ServerReflectionInfo": reflect,
}


@pytest.fixture
async def guarded_registry(tmp_path: Path) -> AsyncIterator[RegistryApp]:
    async with running_registry(
        tmp_path, feed_token=FEED_TOKEN, operator_token=OPERATOR_TOKEN
    ) as app:
        yield app


@pytest.mark.parametrize("method", list(GUARDED))
async def test_each_guarded_rpc_needs_a_token(guarded_registry: RegistryApp, method: str) -> None:
    call = GUARDED[method]
    async with grpc.aio.insecure_channel(str(guarded_registry.grpc_address)) as channel:
        for metadata, reason in (
            ((), "CREDENTIAL_REQUIRED"),
            ((("authorization", f"Basic {FEED_TOKEN}"),), "CREDENTIAL_REQUIRED"),
            (bearer("not-the-token"), "CREDENTIAL_INVALID"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(channel, metadata)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, method
            if method != "ServerReflectionInfo":  # bidi: a plain status, no details
                assert error_info_reason(caught.value) == reason
            assert FEED_TOKEN not in (caught.value.details() or "")
        # Both the feed token and the operator token are accepted.
        for token in (FEED_TOKEN, OPERATOR_TOKEN):
            assert await call(channel, bearer(token)) is not None
        # Health stays open: probes carry no token.
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_services_only_with_the_token(
    guarded_registry: RegistryApp,
) -> None:
    async with grpc.aio.insecure_channel(str(guarded_registry.grpc_address)) as channel:
        reply = await reflect(channel, bearer(FEED_TOKEN))
        names = {s.name for s in reply.list_services_response.service}
        assert "acmezone.registry.v1.RecordFeedService" in names


async def test_an_open_registry_stays_open(tmp_path: Path) -> None:
    async with (
        running_registry(tmp_path) as app,
        grpc.aio.insecure_channel(str(app.grpc_address)) as channel,
    ):
        assert await feed_status(channel, ()) is not None
        assert await reflect(channel, ()) is not None


async def test_a_replica_with_the_token_follows_forwards_and_reports(tmp_path: Path) -> None:
    for name in ("good", "bad"):
        (tmp_path / name).mkdir()
    async with (
        running_registry(
            tmp_path / "reg", feed_token=FEED_TOKEN, operator_token=OPERATOR_TOKEN
        ) as registry,
        running_dns(
            tmp_path / "good", registry_target=str(registry.grpc_address), registry_token=FEED_TOKEN
        ) as good,
        running_dns(tmp_path / "bad", registry_target=str(registry.grpc_address)) as bad,
        grpc.aio.insecure_channel(str(registry.grpc_address)) as channel,
    ):
        await wait_for_serving(str(good.grpc_address), within=10)
        created = await reg_grpc.RegistrationServiceStub(channel).CreateRegistration(
            reg_pb.CreateRegistrationRequest(registration_id="guarded"),
            metadata=bearer(OPERATOR_TOKEN),
        )
        record = await txt_grpc.TxtRecordServiceStub(channel).AddTxtValue(
            txt_pb.AddTxtValueRequest(name="registrations/guarded/txtRecord", value=acme_digest(7)),
            metadata=(("x-api-user", created.username), ("x-api-key", created.password)),
        )
        # The registry waits for the replica that reports with its token; then it answers.
        waited = await feed_grpc.RecordFeedServiceStub(channel).WaitForReplicas(
            feed_pb.WaitForReplicasRequest(
                revision=record.revision, timeout=duration_pb2.Duration(seconds=5)
            ),
            metadata=bearer(FEED_TOKEN),
            timeout=10,
        )
        assert [r.revision >= record.revision for r in waited.replicas] == [True]
        reply = await dns.asyncquery.udp(
            dns.message.make_query(f"guarded.{ZONE}", "TXT"), v4(good).host, port=v4(good).port
        )
        assert {b"".join(rd.strings).decode() for rr in reply.answer for rd in rr} == {
            acme_digest(7)
        }
        assert reply.rcode() == dns.rcode.NOERROR
        # UPDATE forwarding: the registry's own verdict through the good replica (an unsigned
        # UPDATE is refused there); the replica without the token can only say SERVFAIL.
        update = dns.message.from_wire(_update_wire())
        good_reply = await dns.asyncquery.udp(update, v4(good).host, port=v4(good).port, timeout=5)
        bad_reply = await dns.asyncquery.udp(update, v4(bad).host, port=v4(bad).port, timeout=5)
        assert good_reply.rcode() != dns.rcode.SERVFAIL
        assert bad_reply.rcode() == dns.rcode.SERVFAIL
        # The replica without the token never got a snapshot.
        assert bad.store.snapshot.revision == 0
