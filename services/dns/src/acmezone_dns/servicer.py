"""The ZoneService gRPC front end: proto <-> domain translation and nothing else.

Resource names (`zones/{apex}`) are parsed here; everything else, including the errors, comes
from `inspection.ZoneInspector`, whose `acmezone_common.errors` exceptions the shared interceptor
turns into statuses.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import empty_pb2, timestamp_pb2
from typing_extensions import override

from acmezone.dns.v1 import zone_service_pb2, zone_service_pb2_grpc
from acmezone_common.errors import InvalidArgumentError
from acmezone_dns.feed_client import FeedState
from acmezone_dns.inspection import Record, ZoneInspector, ZoneStatus
from acmezone_dns.zone import ZoneSource
from acmezone_dns.zone_editor import ZoneEditor, ZoneRecordData

Context = grpc.aio.ServicerContext[Any, Any]

_COLLECTION = "zones/"
_SOURCES = {
    ZoneSource.FEED: zone_service_pb2.ZONE_SOURCE_FEED,
    ZoneSource.STATIC: zone_service_pb2.ZONE_SOURCE_STATIC,
}
_FEED_STATES = {
    None: zone_service_pb2.FEED_STATE_NOT_APPLICABLE,
    FeedState.SYNCING: zone_service_pb2.FEED_STATE_SYNCING,
    FeedState.LIVE: zone_service_pb2.FEED_STATE_LIVE,
    FeedState.DISCONNECTED: zone_service_pb2.FEED_STATE_DISCONNECTED,
}


def zone_name(apex: str) -> str:
    """`acme.example.test.` -> `zones/acme.example.test`."""
    return _COLLECTION + apex.rstrip(".")


def _zone(status: ZoneStatus) -> zone_service_pb2.Zone:
    zone = zone_service_pb2.Zone(
        name=zone_name(status.apex),
        apex=status.apex,
        source=_SOURCES[status.source],
        revision=status.revision,
        record_count=status.record_count,
        feed_state=_FEED_STATES[status.feed_state],
        feed_id=status.feed_id,
        serial=status.serial,
    )
    if status.last_sync_time is not None:
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(status.last_sync_time)
        zone.last_sync_time.CopyFrom(stamp)
    return zone


def _records(records: list[Record]) -> list[zone_service_pb2.ResourceRecord]:
    return [
        zone_service_pb2.ResourceRecord(name=r.name, type=r.type, ttl=r.ttl, data=r.data)
        for r in records
    ]


def _apex(name: str, field: str) -> str:
    """`zones/{apex}` -> apex."""
    if not name.startswith(_COLLECTION) or len(name) == len(_COLLECTION) or "/" in name[6:]:
        raise InvalidArgumentError("INVALID_NAME", "must look like zones/{apex}", field=field)
    return name[len(_COLLECTION) :]


def _zone_record(record: ZoneRecordData) -> zone_service_pb2.ZoneRecord:
    return zone_service_pb2.ZoneRecord(
        name=f"{zone_name(record.apex)}/records/{record.record_id}",
        domain_name=record.domain_name,
        type=record.type,
        ttl=record.ttl,
        data=record.data,
    )


def _bearer(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :]
    return None


class ZoneServicer(zone_service_pb2_grpc.ZoneServiceServicer):
    """acmezone.dns.v1.ZoneService."""

    def __init__(self, inspector: ZoneInspector, editor: ZoneEditor) -> None:
        self._inspector = inspector
        self._editor = editor

    @override
    async def ListZoneRecords(
        self, request: zone_service_pb2.ListZoneRecordsRequest, context: Context
    ) -> zone_service_pb2.ListZoneRecordsResponse:
        page = await self._editor.list_records(
            _apex(request.parent, "parent"), request.page_size, request.page_token
        )
        return zone_service_pb2.ListZoneRecordsResponse(
            zone_records=[_zone_record(r) for r in page.records],
            next_page_token=page.next_page_token,
        )

    @override
    async def CreateZoneRecord(
        self, request: zone_service_pb2.CreateZoneRecordRequest, context: Context
    ) -> zone_service_pb2.ZoneRecord:
        apex = _apex(request.parent, "parent")
        given = request.zone_record
        record = ZoneRecordData(apex, given.domain_name, given.type, given.ttl, given.data)
        return _zone_record(await self._editor.create(apex, record, _bearer(context)))

    @override
    async def DeleteZoneRecord(
        self, request: zone_service_pb2.DeleteZoneRecordRequest, context: Context
    ) -> empty_pb2.Empty:
        zone, sep, record_id = request.name.partition("/records/")
        if not sep or not record_id or "/" in record_id:
            raise InvalidArgumentError(
                "INVALID_NAME", "name must look like zones/{apex}/records/{id}", field="name"
            )
        await self._editor.delete(_apex(zone, "name"), record_id, _bearer(context))
        return empty_pb2.Empty()

    @override
    async def GetZone(
        self, request: zone_service_pb2.GetZoneRequest, context: Context
    ) -> zone_service_pb2.Zone:
        if not request.name.startswith(_COLLECTION) or len(request.name) == len(_COLLECTION):
            raise InvalidArgumentError(
                "INVALID_NAME", "name must look like zones/{apex}", field="name"
            )
        return _zone(self._inspector.get_zone(request.name[len(_COLLECTION) :]))

    @override
    async def ListZones(
        self, request: zone_service_pb2.ListZonesRequest, context: Context
    ) -> zone_service_pb2.ListZonesResponse:
        page = self._inspector.list_zones(request.page_size, request.page_token)
        return zone_service_pb2.ListZonesResponse(
            zones=[_zone(z) for z in page.zones], next_page_token=page.next_page_token
        )

    @override
    async def LookupRecords(
        self, request: zone_service_pb2.LookupRecordsRequest, context: Context
    ) -> zone_service_pb2.LookupRecordsResponse:
        result = self._inspector.lookup(request.domain_name, request.record_type)
        return zone_service_pb2.LookupRecordsResponse(
            rcode=result.rcode,
            authoritative=result.authoritative,
            answer=_records(result.answer),
            authority=_records(result.authority),
            additional=_records(result.additional),
            revision=result.revision,
            truncated_over_udp=result.truncated_over_udp,
        )
