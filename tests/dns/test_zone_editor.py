"""ZoneService's record methods over a real gRPC channel: list a static zone's records, add a
CNAME (served before the call returns, the zone file's comments kept), remove it; refusals with
clear statuses and the file untouched."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import dns.rcode
import grpc
import pytest

from acmezone.dns.v1 import zone_service_pb2 as pb
from acmezone.dns.v1 import zone_service_pb2_grpc as pb_grpc
from acmezone_common.testing import error_info_reason
from acmezone_dns.app import DnsApp
from tests.dns.conftest import SNAPSHOT, ZONE, query_udp, running_dns, v4

TOKEN = "zone-edit-token-for-tests"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


@pytest.fixture
async def editable(tmp_path: Path) -> AsyncIterator[tuple[DnsApp, pb_grpc.ZoneServiceStub]]:
    async with running_dns(tmp_path, zone_edit_token=TOKEN, zone_reload_interval_seconds=0) as app:
        app.store.apply_snapshot(SNAPSHOT, 1, "f")
        async with grpc.aio.insecure_channel(str(app.grpc_address)) as channel:
            yield app, pb_grpc.ZoneServiceStub(channel)


def cname(owner: str, target: str) -> pb.ZoneRecord:
    return pb.ZoneRecord(domain_name=owner, type="CNAME", data=target)


async def test_add_list_and_remove_a_cname(
    editable: tuple[DnsApp, pb_grpc.ZoneServiceStub], tmp_path: Path
) -> None:
    app, stub = editable
    zone_file = tmp_path / "example.test.zone"
    zone_file.write_text("; the lab zone, kept by hand\n" + zone_file.read_text())
    owner = "_acme-challenge.shop.example.test."
    assert (await query_udp(v4(app), owner, "TXT")).rcode() == dns.rcode.NXDOMAIN
    created = await stub.CreateZoneRecord(
        pb.CreateZoneRecordRequest(
            parent="zones/example.test", zone_record=cname(owner, f"one.{ZONE}.")
        ),
        metadata=AUTH,
    )
    assert created.name.startswith("zones/example.test/records/")
    assert (created.domain_name, created.type, created.data) == (owner, "CNAME", f"one.{ZONE}.")
    # Served at once, through the CNAME into the challenge zone.
    answer = await query_udp(v4(app), owner, "TXT")
    assert answer.rcode() == dns.rcode.NOERROR
    assert {b"".join(rd.strings).decode() for rd in answer.answer[-1]} >= {"value-one-newest"}
    text = zone_file.read_text()
    assert text.startswith("; the lab zone, kept by hand\n")
    assert text.endswith(f"{owner} IN CNAME one.{ZONE}.\n")
    listed = await stub.ListZoneRecords(pb.ListZoneRecordsRequest(parent="zones/example.test"))
    assert created.name in {r.name for r in listed.zone_records}
    page = await stub.ListZoneRecords(
        pb.ListZoneRecordsRequest(parent="zones/example.test", page_size=2)
    )
    assert len(page.zone_records) == 2
    assert page.next_page_token
    rest = await stub.ListZoneRecords(
        pb.ListZoneRecordsRequest(
            parent="zones/example.test", page_size=1000, page_token=page.next_page_token
        )
    )
    # The two pages are the whole listing, neither overlapping nor leaving a record out.
    assert [r.name for r in page.zone_records] + [r.name for r in rest.zone_records] == [
        r.name for r in listed.zone_records
    ]
    assert not rest.next_page_token
    # Again: ALREADY_EXISTS.
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await stub.CreateZoneRecord(
            pb.CreateZoneRecordRequest(
                parent="zones/example.test", zone_record=cname(owner, f"one.{ZONE}.")
            ),
            metadata=AUTH,
        )
    assert again.value.code() == grpc.StatusCode.ALREADY_EXISTS
    await stub.DeleteZoneRecord(pb.DeleteZoneRecordRequest(name=created.name), metadata=AUTH)
    assert (await query_udp(v4(app), owner, "TXT")).rcode() == dns.rcode.NXDOMAIN
    assert zone_file.read_text() == text[: -len(f"{owner} IN CNAME one.{ZONE}.\n")]
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.DeleteZoneRecord(pb.DeleteZoneRecordRequest(name=created.name), metadata=AUTH)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("request_", "metadata", "code", "reason"),
    [
        (
            pb.CreateZoneRecordRequest(
                parent="zones/example.test", zone_record=cname("x.example.test.", "a.test.")
            ),
            (),
            grpc.StatusCode.UNAUTHENTICATED,
            "TOKEN_REQUIRED",
        ),
        (
            pb.CreateZoneRecordRequest(
                parent="zones/example.test", zone_record=cname("x.example.test.", "a.test.")
            ),
            (("authorization", "Bearer wrong"),),
            grpc.StatusCode.UNAUTHENTICATED,
            "TOKEN_REQUIRED",
        ),
        (
            # www holds A and AAAA: a CNAME beside them is not a valid zone.
            pb.CreateZoneRecordRequest(
                parent="zones/example.test", zone_record=cname("www.example.test.", "a.test.")
            ),
            AUTH,
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_RECORD",
        ),
        (
            pb.CreateZoneRecordRequest(
                parent="zones/example.test", zone_record=cname("x.elsewhere.test.", "a.test.")
            ),
            AUTH,
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_RECORD",
        ),
        (
            pb.CreateZoneRecordRequest(
                parent="zones/example.test",
                zone_record=pb.ZoneRecord(domain_name="x.example.test.", type="A", data="nope"),
            ),
            AUTH,
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_RECORD",
        ),
        (
            pb.CreateZoneRecordRequest(
                parent="zones/example.test",
                zone_record=pb.ZoneRecord(
                    domain_name="x.example.test.", type="TXT", data='"a"\n$INCLUDE /etc/passwd'
                ),
            ),
            AUTH,
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_RECORD",
        ),
        (
            pb.CreateZoneRecordRequest(
                parent=f"zones/{ZONE}", zone_record=cname(f"x.{ZONE}.", "a.test.")
            ),
            AUTH,
            grpc.StatusCode.FAILED_PRECONDITION,
            "ZONE_NOT_EDITABLE",
        ),
        (
            pb.CreateZoneRecordRequest(
                parent="zones/nowhere.test", zone_record=cname("x.nowhere.test.", "a.test.")
            ),
            AUTH,
            grpc.StatusCode.NOT_FOUND,
            "ZONE_NOT_FOUND",
        ),
    ],
    ids=[
        "no-token",
        "wrong-token",
        "cname-and-other-data",
        "outside-zone",
        "bad-data",
        "injected-line",
        "challenge-zone",
        "unknown-zone",
    ],
)
async def test_refused_changes_leave_the_file_alone(
    editable: tuple[DnsApp, pb_grpc.ZoneServiceStub],
    tmp_path: Path,
    request_: pb.CreateZoneRecordRequest,
    metadata: tuple[tuple[str, str], ...],
    code: grpc.StatusCode,
    reason: str,
) -> None:
    _, stub = editable
    zone_file = tmp_path / "example.test.zone"
    before = zone_file.read_text()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateZoneRecord(request_, metadata=metadata)
    assert (refused.value.code(), error_info_reason(refused.value)) == (code, reason)
    assert refused.value.details()
    assert zone_file.read_text() == before


async def test_without_a_token_setting_editing_is_off(tmp_path: Path) -> None:
    async with (
        running_dns(tmp_path) as app,
        grpc.aio.insecure_channel(str(app.grpc_address)) as channel,
    ):
        stub = pb_grpc.ZoneServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as off:
            await stub.CreateZoneRecord(
                pb.CreateZoneRecordRequest(
                    parent="zones/example.test", zone_record=cname("x.example.test.", "a.test.")
                ),
                metadata=AUTH,
            )
        assert off.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        listed = await stub.ListZoneRecords(pb.ListZoneRecordsRequest(parent="zones/example.test"))
        assert any(r.type == "SOA" for r in listed.zone_records)


async def test_a_zone_file_that_cannot_be_rewritten_is_a_clear_error(
    editable: tuple[DnsApp, pb_grpc.ZoneServiceStub], tmp_path: Path
) -> None:
    """As with a read-only ConfigMap mount: the write fails (here the temporary file's name is
    taken by a directory, which stops root too), the change is refused with
    FAILED_PRECONDITION, and the file and what is served stay as they were."""
    app, stub = editable
    zone_file = tmp_path / "example.test.zone"
    before = zone_file.read_text()
    (tmp_path / f".example.test.zone.{os.getpid()}.tmp").mkdir()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateZoneRecord(
            pb.CreateZoneRecordRequest(
                parent="zones/example.test", zone_record=cname("ro.example.test.", "a.test.")
            ),
            metadata=AUTH,
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info_reason(refused.value) == "ZONE_FILE_NOT_WRITABLE"
    assert zone_file.read_text() == before
    assert (await query_udp(v4(app), "ro.example.test.", "A")).rcode() == dns.rcode.NXDOMAIN
