"""acmezone.dns.v1.ZoneService over a real gRPC channel: zones, paging, lookups, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from acmezone.dns.v1 import zone_service_pb2 as pb
from acmezone.dns.v1 import zone_service_pb2_grpc as pb_grpc
from acmezone_common.paging import decode_page_token, encode_page_token
from acmezone_common.testing import error_info_reason
from acmezone_dns.app import DnsApp


@pytest.fixture
async def zones(dns_app: DnsApp) -> AsyncIterator[pb_grpc.ZoneServiceStub]:
    async with grpc.aio.insecure_channel(str(dns_app.grpc_address)) as channel:
        yield pb_grpc.ZoneServiceStub(channel)


async def test_get_zone_reports_the_feed_zone(zones: pb_grpc.ZoneServiceStub) -> None:
    zone = await zones.GetZone(pb.GetZoneRequest(name="zones/acme.example.test"))
    assert zone.name == "zones/acme.example.test"
    assert zone.apex == "acme.example.test."
    assert zone.source == pb.ZONE_SOURCE_FEED
    assert zone.revision == 1
    # SOA + NS + glue A + CAA + 2 + 1 + 1 + 10 TXT values
    assert zone.record_count == 4 + 2 + 1 + 1 + 10
    assert zone.feed_id == ""  # applied straight to the store: no feed connected in this test
    assert zone.serial == 1
    static = await zones.GetZone(pb.GetZoneRequest(name="zones/Example.Test."))
    assert static.source == pb.ZONE_SOURCE_STATIC
    assert static.feed_state == pb.FEED_STATE_NOT_APPLICABLE
    assert static.serial == 7


async def test_list_zones_pages(zones: pb_grpc.ZoneServiceStub) -> None:
    first = await zones.ListZones(pb.ListZonesRequest(page_size=1))
    assert [z.name for z in first.zones] == ["zones/acme.example.test"]
    assert first.next_page_token
    second = await zones.ListZones(
        pb.ListZonesRequest(page_size=1, page_token=first.next_page_token)
    )
    assert [z.name for z in second.zones] == ["zones/example.test"]
    assert not second.next_page_token
    everything = await zones.ListZones(pb.ListZonesRequest())
    assert len(everything.zones) == 2
    # A page larger than the limit is capped, as in every other service's List.
    capped = await zones.ListZones(pb.ListZonesRequest(page_size=5000))
    assert [z.name for z in capped.zones] == [z.name for z in everything.zones]


async def test_list_zones_tokens_are_the_shared_format(zones: pb_grpc.ZoneServiceStub) -> None:
    """The token is acmezone_common.paging's: the last apex returned, so a listing built from
    one continues after it; other shapes, and the old `after:<apex>` form, are refused."""
    first = await zones.ListZones(pb.ListZonesRequest(page_size=1))
    assert decode_page_token(first.next_page_token, (str,)) == ("acme.example.test.",)
    after_everything = await zones.ListZones(
        pb.ListZonesRequest(page_token=encode_page_token(("example.test.",)))
    )
    assert list(after_everything.zones) == []
    assert not after_everything.next_page_token
    for token in (encode_page_token((3,)), "YWZ0ZXI6YWNtZS5leGFtcGxlLnRlc3Qu"):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await zones.ListZones(pb.ListZonesRequest(page_token=token))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info_reason(refused.value) == "INVALID_PAGE_TOKEN"


async def test_lookup_shows_the_dns_answer(zones: pb_grpc.ZoneServiceStub) -> None:
    reply = await zones.LookupRecords(
        pb.LookupRecordsRequest(domain_name="_acme-challenge.www.example.test", record_type="txt")
    )
    assert reply.rcode == "NOERROR"
    assert reply.authoritative
    assert [(r.type, r.data) for r in reply.answer] == [
        ("CNAME", "one.acme.example.test."),
        ("TXT", '"value-one-newest"'),
        ("TXT", '"value-one-older"'),
    ]
    assert reply.revision == 1
    missing = await zones.LookupRecords(
        pb.LookupRecordsRequest(domain_name="nobody.acme.example.test.", record_type="A")
    )
    assert missing.rcode == "NXDOMAIN"
    assert [r.type for r in missing.authority] == ["SOA"]
    big = await zones.LookupRecords(
        pb.LookupRecordsRequest(domain_name="big.acme.example.test", record_type="TXT")
    )
    assert big.truncated_over_udp
    assert len(big.answer) == 10


@pytest.mark.parametrize(
    ("call", "request_", "code", "reason"),
    [
        (
            "GetZone",
            pb.GetZoneRequest(name="zones/nope.test"),
            grpc.StatusCode.NOT_FOUND,
            "ZONE_NOT_FOUND",
        ),
        (
            "GetZone",
            pb.GetZoneRequest(name="acme.example.test"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_NAME",
        ),
        (
            "ListZones",
            pb.ListZonesRequest(page_size=-1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_PAGE_SIZE",
        ),
        (
            "ListZones",
            pb.ListZonesRequest(page_token="%%%"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_PAGE_TOKEN",
        ),
        (
            "LookupRecords",
            pb.LookupRecordsRequest(domain_name="a..b", record_type="A"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_NAME",
        ),
        (
            "LookupRecords",
            pb.LookupRecordsRequest(domain_name="a.b", record_type="NOPE"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_RECORD_TYPE",
        ),
    ],
)
async def test_errors_carry_reasons(
    zones: pb_grpc.ZoneServiceStub, call: str, request_: object, code: grpc.StatusCode, reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await getattr(zones, call)(request_)
    assert info.value.code() == code
    assert error_info_reason(info.value) == reason


async def test_reflection_and_health_name_the_zone_service(dns_app: DnsApp) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async with grpc.aio.insecure_channel(str(dns_app.grpc_address)) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        reply = await call.read()
        names = {service.name for service in reply.list_services_response.service}
        call.cancel()
    assert "acmezone.dns.v1.ZoneService" in names
    assert "grpc.health.v1.Health" in names
