"""The registry's gRPC API over real channels to a whole registry running in this process.

Most tests share one registry per configuration (open, operator token, trusted proxy) for speed
and create registrations of their own; tests that count things or watch the feed closely get a
fresh registry. Every rejected request is checked for its exact code, ErrorInfo reason and
BadRequest field, and for having changed nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client import CollectorRegistry

from acmezone.registry.v1 import record_feed_service_pb2 as feed_pb
from acmezone.registry.v1 import record_feed_service_pb2_grpc as feed_grpc
from acmezone.registry.v1 import registration_service_pb2 as reg_pb
from acmezone.registry.v1 import registration_service_pb2_grpc as reg_grpc
from acmezone.registry.v1 import txt_record_service_pb2 as txt_pb
from acmezone.registry.v1 import txt_record_service_pb2_grpc as txt_grpc
from acmezone_common.testing import error_info_reason
from acmezone_registry import errors
from acmezone_registry.access import ClientAddressResolver, parse_address
from acmezone_registry.app import RegistryApp
from acmezone_registry.servicer import caller_from_metadata, peer_address
from tests.registry.conftest import ZONE, running_registry
from tests.registry.values import acme_digest

pytestmark = pytest.mark.asyncio(loop_scope="module")

OPERATOR_TOKEN = "operator-token-for-tests"
Metadata = Sequence[tuple[str, str]]


@dataclass
class Api:
    """Async stubs of the three registry services over one channel."""

    registrations: Any
    txt: Any
    feed: Any


@asynccontextmanager
async def connect(app: RegistryApp) -> AsyncIterator[Api]:
    async with grpc.aio.insecure_channel(str(app.grpc_address)) as channel:
        yield Api(
            reg_grpc.RegistrationServiceStub(channel),
            txt_grpc.TxtRecordServiceStub(channel),
            feed_grpc.RecordFeedServiceStub(channel),
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def open_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RegistryApp]:
    """A registry without an operator token or trusted proxies (acme-dns defaults)."""
    async with running_registry(tmp_path_factory.mktemp("open")) as app:
        yield app


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def guarded_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RegistryApp]:
    """A registry whose management methods need the operator token."""
    async with running_registry(
        tmp_path_factory.mktemp("guarded"), operator_token=OPERATOR_TOKEN
    ) as app:
        yield app


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def proxied_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RegistryApp]:
    """A registry that believes X-Forwarded-For from loopback peers (a local reverse proxy)."""
    async with running_registry(
        tmp_path_factory.mktemp("proxied"), trusted_proxies=["127.0.0.0/8", "::1/128"]
    ) as app:
        yield app


@pytest_asyncio.fixture(loop_scope="module")
async def api(open_app: RegistryApp) -> AsyncIterator[Api]:
    async with connect(open_app) as stubs:
        yield stubs


@pytest_asyncio.fixture(loop_scope="module")
async def guarded_api(guarded_app: RegistryApp) -> AsyncIterator[Api]:
    async with connect(guarded_app) as stubs:
        yield stubs


@pytest_asyncio.fixture(loop_scope="module")
async def proxied_api(proxied_app: RegistryApp) -> AsyncIterator[Api]:
    async with connect(proxied_app) as stubs:
        yield stubs


def operator() -> Metadata:
    return (("authorization", f"Bearer {OPERATOR_TOKEN}"),)


def owner(registration: reg_pb.Registration, password: str | None = None) -> Metadata:
    return (
        ("x-api-user", registration.username),
        ("x-api-key", registration.password if password is None else password),
    )


def txt_name(registration: reg_pb.Registration) -> str:
    return f"{registration.name}/txtRecord"


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def field_violations(error: grpc.aio.AioRpcError) -> list[str]:
    """The fields of the BadRequest detail an INVALID_ARGUMENT carries."""
    status = rpc_status.from_call(error)
    assert status is not None
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields.extend(v.field for v in bad_request.field_violations)
    return fields


def assert_error(
    error: grpc.aio.AioRpcError, code: grpc.StatusCode, reason: str, field: str | None = None
) -> None:
    assert (error.code(), error_info_reason(error)) == (code, reason), error.details()
    if field is not None:
        assert field_violations(error) == [field]


async def create(api: Api, metadata: Metadata = (), **fields: Any) -> reg_pb.Registration:
    registration_id = fields.pop("registration_id", "")
    request = reg_pb.CreateRegistrationRequest(
        registration=reg_pb.Registration(**fields), registration_id=registration_id
    )
    created: reg_pb.Registration = await api.registrations.CreateRegistration(
        request, metadata=metadata
    )
    return created


async def all_registrations(api: Api, metadata: Metadata = ()) -> list[reg_pb.Registration]:
    listed: list[reg_pb.Registration] = []
    token = ""
    while True:
        page = await api.registrations.ListRegistrations(
            reg_pb.ListRegistrationsRequest(page_size=1000, page_token=token), metadata=metadata
        )
        listed.extend(page.registrations)
        token = page.next_page_token
        if not token:
            return listed


async def txt_values(api: Api, registration: reg_pb.Registration) -> list[str]:
    record = await api.txt.GetTxtRecord(
        txt_pb.GetTxtRecordRequest(name=txt_name(registration)), metadata=owner(registration)
    )
    return [value.value for value in record.values]


async def add(api: Api, registration: reg_pb.Registration, value: str) -> txt_pb.TxtRecord:
    record: txt_pb.TxtRecord = await api.txt.AddTxtValue(
        txt_pb.AddTxtValueRequest(name=txt_name(registration), value=value),
        metadata=owner(registration),
    )
    return record


async def next_message(call: Any, seconds: float = 10.0) -> feed_pb.WatchRecordsResponse:
    message = await asyncio.wait_for(call.read(), seconds)
    assert message is not grpc.aio.EOF
    return message  # type: ignore[no-any-return]


# -- metadata and peers (no server needed) -------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("ipv4:127.0.0.1:50432", "127.0.0.1"),
        ("ipv6:[::1]:50432", "::1"),
        ("ipv6:%5B2001:db8::7%5D:443", "2001:db8::7"),
        ("ipv6:[::ffff:192.0.2.1]:443", "192.0.2.1"),
        ("unix:/run/registry.sock", None),
        ("unix-abstract:registry", None),
        ("ipv4:not-an-address:1", None),
        ("", None),
    ],
)
async def test_peer_address_reads_grpc_peer_strings(peer: str, expected: str | None) -> None:
    assert peer_address(peer) == (parse_address(expected) if expected else None)


async def test_caller_takes_credentials_and_ignores_forwarded_for_from_untrusted_peers() -> None:
    resolver = ClientAddressResolver(["10.0.0.0/8"])
    metadata: list[tuple[str, str | bytes]] = [
        ("authorization", "Bearer  tok "),
        ("x-api-user", "user"),
        ("x-api-key", "key"),
        ("x-forwarded-for", "192.0.2.1"),
        ("x-other-bin", b"\x00"),
    ]
    direct = caller_from_metadata(metadata, "ipv4:198.51.100.9:1", resolver)
    assert (direct.operator_token, direct.username, direct.password) == ("tok", "user", "key")
    assert direct.address == parse_address("198.51.100.9")
    proxied = caller_from_metadata(metadata, "ipv4:10.1.2.3:1", resolver)
    assert proxied.address == parse_address("192.0.2.1")


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer abc", "abc"), ("Basic abc", ""), ("Bearer", "")],
)
async def test_caller_reads_only_bearer_tokens(header: str, token: str) -> None:
    caller = caller_from_metadata(
        [("authorization", header)], "ipv4:127.0.0.1:1", ClientAddressResolver([])
    )
    assert caller.operator_token == token


# -- RegistrationService --------------------------------------------------------------------


async def test_create_returns_the_password_once_and_get_never(api: Api) -> None:
    created = await create(api, allowed_cidrs=["192.0.2.7", "2001:DB8::/32"], description="web")
    assert created.name == f"registrations/{created.subdomain}"
    assert created.fulldomain == f"{created.subdomain}.{ZONE}"
    assert len(created.username) == 36
    assert len(created.password) == 40
    assert list(created.allowed_cidrs) == ["192.0.2.7/32", "2001:db8::/32"]
    assert (created.description, created.max_txt_values) == ("web", 2)
    assert created.create_time.seconds > 0
    assert created.update_time == created.create_time

    fetched = await api.registrations.GetRegistration(
        reg_pb.GetRegistrationRequest(name=created.name)
    )
    expected = reg_pb.Registration()
    expected.CopyFrom(created)
    expected.password = ""
    assert fetched == expected
    listed = {r.name: r for r in await all_registrations(api)}
    assert listed[created.name] == expected


async def test_create_with_a_chosen_label_folds_case_and_refuses_a_taken_one(api: Api) -> None:
    created = await create(api, registration_id="Web-Prod-1", max_txt_values=5)
    assert (created.subdomain, created.name) == ("web-prod-1", "registrations/web-prod-1")
    assert created.max_txt_values == 5
    error = await rpc_error(create(api, registration_id="web-prod-1"))
    assert_error(error, grpc.StatusCode.ALREADY_EXISTS, errors.SUBDOMAIN_TAKEN)


@pytest.mark.parametrize(
    ("fields", "reason", "field"),
    [
        (
            {"allowed_cidrs": ["192.0.2.0/24", "192.0.2.0/33"]},
            errors.INVALID_CIDR,
            "registration.allowed_cidrs[1]",
        ),
        ({"allowed_cidrs": ["example.com"]}, errors.INVALID_CIDR, "registration.allowed_cidrs[0]"),
        (
            {"allowed_cidrs": [f"10.0.{i}.0/24" for i in range(65)]},
            errors.TOO_MANY_CIDRS,
            "registration.allowed_cidrs",
        ),
        ({"description": "line\nbreak"}, errors.INVALID_DESCRIPTION, "registration.description"),
        ({"description": "x" * 257}, errors.INVALID_DESCRIPTION, "registration.description"),
        ({"max_txt_values": 11}, errors.INVALID_MAX_TXT_VALUES, "registration.max_txt_values"),
        ({"max_txt_values": -1}, errors.INVALID_MAX_TXT_VALUES, "registration.max_txt_values"),
        ({"registration_id": "-web"}, errors.INVALID_SUBDOMAIN, "registration_id"),
        ({"registration_id": "under_score"}, errors.INVALID_SUBDOMAIN, "registration_id"),
        ({"registration_id": "a" * 64}, errors.INVALID_SUBDOMAIN, "registration_id"),
        ({"registration_id": "ns1"}, errors.INVALID_SUBDOMAIN, "registration_id"),
    ],
)
async def test_create_rejects_bad_input_and_creates_nothing(
    api: Api, fields: dict[str, Any], reason: str, field: str
) -> None:
    before = await all_registrations(api)
    error = await rpc_error(create(api, **fields))
    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, reason, field)
    assert await all_registrations(api) == before


@pytest.mark.parametrize(
    "name",
    [
        "",
        "registrations",
        "registrations/",
        "registrations/a/b",
        "registration/abc",
        "registrations/under_score",
        "registrations/-abc",
        "registrations/abc/txtRecord",
        "//registrations/abc",
    ],
)
async def test_malformed_registration_names_are_invalid_name(api: Api, name: str) -> None:
    for call in (
        api.registrations.GetRegistration(reg_pb.GetRegistrationRequest(name=name)),
        api.registrations.DeleteRegistration(reg_pb.DeleteRegistrationRequest(name=name)),
        api.registrations.RotateRegistrationPassword(
            reg_pb.RotateRegistrationPasswordRequest(name=name)
        ),
    ):
        assert_error(
            await rpc_error(call), grpc.StatusCode.INVALID_ARGUMENT, errors.INVALID_NAME, "name"
        )


async def test_unknown_registration_is_not_found(api: Api) -> None:
    error = await rpc_error(
        api.registrations.GetRegistration(
            reg_pb.GetRegistrationRequest(name="registrations/does-not-exist")
        )
    )
    assert_error(error, grpc.StatusCode.NOT_FOUND, errors.REGISTRATION_NOT_FOUND)
    error = await rpc_error(
        api.registrations.DeleteRegistration(
            reg_pb.DeleteRegistrationRequest(name="registrations/does-not-exist")
        )
    )
    assert_error(error, grpc.StatusCode.NOT_FOUND, errors.REGISTRATION_NOT_FOUND)


async def test_list_walks_every_page_oldest_first_without_passwords(tmp_path: Any) -> None:
    async with running_registry(tmp_path) as app, connect(app) as fresh:
        created = [await create(fresh, description=f"n{i}") for i in range(7)]
        pages: list[list[str]] = []
        token = ""
        while True:
            page = await fresh.registrations.ListRegistrations(
                reg_pb.ListRegistrationsRequest(page_size=3, page_token=token)
            )
            pages.append([r.name for r in page.registrations])
            assert all(r.password == "" for r in page.registrations)
            token = page.next_page_token
            if not token:
                break
        names = [r.name for r in created]
        assert pages == [names[0:3], names[3:6], names[6:7]]

        default_page = await fresh.registrations.ListRegistrations(
            reg_pb.ListRegistrationsRequest()
        )
        assert [r.name for r in default_page.registrations] == names
        assert default_page.next_page_token == ""


@pytest.mark.parametrize(
    ("request_fields", "reason", "field"),
    [
        ({"page_size": -1}, errors.INVALID_PAGE_SIZE, "page_size"),
        ({"page_token": "not a token"}, errors.INVALID_PAGE_TOKEN, "page_token"),
        ({"page_token": "eyJ0IjogMX0="}, errors.INVALID_PAGE_TOKEN, "page_token"),
    ],
)
async def test_list_rejects_bad_page_requests(
    api: Api, request_fields: dict[str, Any], reason: str, field: str
) -> None:
    error = await rpc_error(
        api.registrations.ListRegistrations(reg_pb.ListRegistrationsRequest(**request_fields))
    )
    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, reason, field)


async def test_update_changes_only_the_masked_fields(api: Api) -> None:
    created = await create(api, allowed_cidrs=["192.0.2.0/24"], description="before")
    await asyncio.sleep(0.01)
    updated = await api.registrations.UpdateRegistration(
        reg_pb.UpdateRegistrationRequest(
            registration=reg_pb.Registration(
                name=created.name,
                description="after",
                max_txt_values=4,
                allowed_cidrs=["198.51.100.0/24"],
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["description", "max_txt_values"]),
        )
    )
    assert (updated.description, updated.max_txt_values) == ("after", 4)
    assert list(updated.allowed_cidrs) == ["192.0.2.0/24"]
    assert updated.password == ""
    assert updated.update_time.ToDatetime() > created.update_time.ToDatetime()

    cleared = await api.registrations.UpdateRegistration(
        reg_pb.UpdateRegistrationRequest(
            registration=reg_pb.Registration(name=created.name),
            update_mask=field_mask_pb2.FieldMask(paths=["allowed_cidrs"]),
        )
    )
    assert list(cleared.allowed_cidrs) == []
    assert cleared.description == "after"


async def test_lowering_max_txt_values_drops_the_oldest_values(api: Api) -> None:
    created = await create(api, max_txt_values=3)
    for seed in range(3):
        await add(api, created, acme_digest(f"lower-{created.subdomain}-{seed}"))
    await api.registrations.UpdateRegistration(
        reg_pb.UpdateRegistrationRequest(
            registration=reg_pb.Registration(name=created.name, max_txt_values=1),
            update_mask=field_mask_pb2.FieldMask(paths=["max_txt_values"]),
        )
    )
    assert await txt_values(api, created) == [acme_digest(f"lower-{created.subdomain}-2")]


@pytest.mark.parametrize(
    ("registration", "paths", "reason", "field"),
    [
        ({}, [], errors.INVALID_UPDATE_MASK, "update_mask"),
        ({"description": "x"}, ["description", "username"], errors.INVALID_UPDATE_MASK,
         "update_mask.paths[1]"),
        ({}, ["*"], errors.INVALID_UPDATE_MASK, "update_mask.paths[0]"),
        ({}, ["name"], errors.INVALID_UPDATE_MASK, "update_mask.paths[0]"),
        ({"allowed_cidrs": ["10.0.0.0/8", "nope"]}, ["allowed_cidrs"], errors.INVALID_CIDR,
         "registration.allowed_cidrs[1]"),
        ({"max_txt_values": 99}, ["max_txt_values"], errors.INVALID_MAX_TXT_VALUES,
         "registration.max_txt_values"),
        ({"description": "\x00"}, ["description"], errors.INVALID_DESCRIPTION,
         "registration.description"),
    ],
)  # fmt: skip
async def test_update_rejects_bad_input_and_changes_nothing(
    api: Api, registration: dict[str, Any], paths: list[str], reason: str, field: str
) -> None:
    created = await create(api, allowed_cidrs=["192.0.2.0/24"], description="kept")
    before = await api.registrations.GetRegistration(
        reg_pb.GetRegistrationRequest(name=created.name)
    )
    error = await rpc_error(
        api.registrations.UpdateRegistration(
            reg_pb.UpdateRegistrationRequest(
                registration=reg_pb.Registration(name=created.name, **registration),
                update_mask=field_mask_pb2.FieldMask(paths=paths),
            )
        )
    )
    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, reason, field)
    after = await api.registrations.GetRegistration(
        reg_pb.GetRegistrationRequest(name=created.name)
    )
    assert after == before


async def test_update_names_the_registration_field_in_errors(api: Api) -> None:
    mask = field_mask_pb2.FieldMask(paths=["description"])
    error = await rpc_error(
        api.registrations.UpdateRegistration(reg_pb.UpdateRegistrationRequest(update_mask=mask))
    )
    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, errors.INVALID_NAME, "registration.name")
    error = await rpc_error(
        api.registrations.UpdateRegistration(
            reg_pb.UpdateRegistrationRequest(
                registration=reg_pb.Registration(name="registrations/not-there"),
                update_mask=mask,
            )
        )
    )
    assert_error(error, grpc.StatusCode.NOT_FOUND, errors.REGISTRATION_NOT_FOUND)


async def test_rotate_password_replaces_the_old_one_at_once(api: Api) -> None:
    created = await create(api)
    rotated = await api.registrations.RotateRegistrationPassword(
        reg_pb.RotateRegistrationPasswordRequest(name=created.name), metadata=owner(created)
    )
    assert len(rotated.password) == 40
    assert rotated.password != created.password
    assert (rotated.name, rotated.username) == (created.name, created.username)

    value = acme_digest(f"rotate-{created.subdomain}")
    error = await rpc_error(add(api, created, value))
    assert_error(error, grpc.StatusCode.UNAUTHENTICATED, errors.CREDENTIALS_INVALID)
    record = await add(api, rotated, value)
    assert [v.value for v in record.values] == [value]
    fetched = await api.registrations.GetRegistration(
        reg_pb.GetRegistrationRequest(name=created.name), metadata=owner(rotated)
    )
    assert fetched.password == ""


async def test_delete_removes_the_registration_and_its_values(api: Api) -> None:
    created = await create(api)
    await add(api, created, acme_digest(f"delete-{created.subdomain}"))
    fqdn = f"{created.fulldomain}."

    await api.registrations.DeleteRegistration(
        reg_pb.DeleteRegistrationRequest(name=created.name), metadata=owner(created)
    )
    error = await rpc_error(
        api.registrations.GetRegistration(reg_pb.GetRegistrationRequest(name=created.name))
    )
    assert_error(error, grpc.StatusCode.NOT_FOUND, errors.REGISTRATION_NOT_FOUND)
    error = await rpc_error(txt_values(api, created))
    assert_error(error, grpc.StatusCode.UNAUTHENTICATED, errors.CREDENTIALS_INVALID)
    assert created.name not in {r.name for r in await all_registrations(api)}

    call = api.feed.WatchRecords(feed_pb.WatchRecordsRequest(start_revision=0))
    names: set[str] = set()
    while True:
        snapshot = (await next_message(call)).snapshot
        names.update(record_set.fqdn for record_set in snapshot.record_sets)
        if snapshot.last:
            break
    call.cancel()
    assert fqdn not in names


async def test_operator_token_guards_management(guarded_api: Api) -> None:
    before = await all_registrations(guarded_api, operator())
    for metadata, reason in [
        ((), errors.OPERATOR_TOKEN_REQUIRED),
        ((("authorization", "Basic dXNlcjpwYXNz"),), errors.OPERATOR_TOKEN_REQUIRED),
        ((("authorization", "Bearer wrong"),), errors.OPERATOR_TOKEN_INVALID),
    ]:
        error = await rpc_error(create(guarded_api, metadata))
        assert_error(error, grpc.StatusCode.UNAUTHENTICATED, reason)
        error = await rpc_error(all_registrations(guarded_api, metadata))
        assert_error(error, grpc.StatusCode.UNAUTHENTICATED, reason)
    assert await all_registrations(guarded_api, operator()) == before

    created = await create(guarded_api, operator())
    name = reg_pb.GetRegistrationRequest(name=created.name)
    error = await rpc_error(guarded_api.registrations.GetRegistration(name))
    assert_error(error, grpc.StatusCode.UNAUTHENTICATED, errors.OPERATOR_TOKEN_REQUIRED)
    assert (await guarded_api.registrations.GetRegistration(name, metadata=operator())).name
    # A registration's own credentials work for its own Get, Rotate and Delete ...
    fetched = await guarded_api.registrations.GetRegistration(name, metadata=owner(created))
    assert fetched.username == created.username
    error = await rpc_error(
        guarded_api.registrations.GetRegistration(name, metadata=owner(created, "x" * 40))
    )
    assert_error(error, grpc.StatusCode.UNAUTHENTICATED, errors.CREDENTIALS_INVALID)
    # ... but not for another registration's, nor for management.
    other = await create(guarded_api, operator())
    error = await rpc_error(
        guarded_api.registrations.GetRegistration(
            reg_pb.GetRegistrationRequest(name=other.name), metadata=owner(created)
        )
    )
    assert_error(error, grpc.StatusCode.PERMISSION_DENIED, errors.SUBDOMAIN_MISMATCH)
    error = await rpc_error(
        guarded_api.registrations.UpdateRegistration(
            reg_pb.UpdateRegistrationRequest(
                registration=reg_pb.Registration(name=created.name, description="mine"),
                update_mask=field_mask_pb2.FieldMask(paths=["description"]),
            ),
            metadata=owner(created),
        )
    )
    assert_error(error, grpc.StatusCode.UNAUTHENTICATED, errors.OPERATOR_TOKEN_REQUIRED)
    error = await rpc_error(
        guarded_api.registrations.DeleteRegistration(
            reg_pb.DeleteRegistrationRequest(name=created.name)
        )
    )
    assert_error(error, grpc.StatusCode.UNAUTHENTICATED, errors.OPERATOR_TOKEN_REQUIRED)
    assert (await guarded_api.registrations.GetRegistration(name, metadata=operator())).name

    rotated = await guarded_api.registrations.RotateRegistrationPassword(
        reg_pb.RotateRegistrationPasswordRequest(name=created.name), metadata=owner(created)
    )
    await guarded_api.registrations.DeleteRegistration(
        reg_pb.DeleteRegistrationRequest(name=created.name), metadata=owner(rotated)
    )
    error = await rpc_error(guarded_api.registrations.GetRegistration(name, metadata=operator()))
    assert_error(error, grpc.StatusCode.NOT_FOUND, errors.REGISTRATION_NOT_FOUND)


# -- TxtRecordService -----------------------------------------------------------------------


async def test_txt_values_newest_first_keeping_the_latest_two(api: Api) -> None:
    created = await create(api)
    first, second, third = (acme_digest(f"{created.subdomain}-{i}") for i in range(3))
    record = await add(api, created, first)
    assert record.name == f"registrations/{created.subdomain}/txtRecord"
    assert record.fqdn == f"{created.subdomain}.{ZONE}."
    assert record.revision > 0
    assert record.values[0].create_time.seconds > 0
    assert not record.values[0].HasField("expire_time")

    record = await add(api, created, second)
    record = await add(api, created, third)
    assert [v.value for v in record.values] == [third, second]

    again = await add(api, created, third)
    assert [v.value for v in again.values] == [third, second]
    assert again.revision == record.revision

    fetched = await api.txt.GetTxtRecord(
        txt_pb.GetTxtRecordRequest(name=txt_name(created)), metadata=owner(created)
    )
    assert fetched == again


async def test_remove_and_clear_values(api: Api) -> None:
    created = await create(api)
    first, second = acme_digest(f"{created.subdomain}-a"), acme_digest(f"{created.subdomain}-b")
    await add(api, created, first)
    await add(api, created, second)
    removed = await api.txt.RemoveTxtValue(
        txt_pb.RemoveTxtValueRequest(name=txt_name(created), value=first), metadata=owner(created)
    )
    assert [v.value for v in removed.values] == [second]
    unchanged = await api.txt.RemoveTxtValue(
        txt_pb.RemoveTxtValueRequest(name=txt_name(created), value=acme_digest("never")),
        metadata=owner(created),
    )
    assert [v.value for v in unchanged.values] == [second]
    cleared = await api.txt.ClearTxtValues(
        txt_pb.ClearTxtValuesRequest(name=txt_name(created)), metadata=owner(created)
    )
    assert list(cleared.values) == []
    assert cleared.fqdn == f"{created.subdomain}.{ZONE}."


@pytest.mark.parametrize(
    "value",
    [
        "",
        "too-short",
        "A" * 42,
        "A" * 44,
        "A" * 42 + "=",
        "A" * 42 + " ",
        "A" * 42 + "é",
        "A" * 21 + "\n" + "A" * 21,
    ],
)
async def test_bad_txt_values_are_rejected_and_change_nothing(api: Api, value: str) -> None:
    created = await create(api)
    kept = acme_digest(f"kept-{created.subdomain}")
    await add(api, created, kept)
    error = await rpc_error(add(api, created, value))
    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, errors.INVALID_TXT_VALUE, "value")
    assert await txt_values(api, created) == [kept]


async def test_txt_credentials_are_checked_and_failures_change_nothing(api: Api) -> None:
    mine, theirs = await create(api), await create(api)
    kept = acme_digest(f"kept-{mine.subdomain}")
    await add(api, mine, kept)
    new = acme_digest(f"new-{mine.subdomain}")
    cases: list[tuple[Metadata, str, grpc.StatusCode, str]] = [
        ((), txt_name(mine), grpc.StatusCode.UNAUTHENTICATED, errors.CREDENTIALS_REQUIRED),
        (
            (("x-api-user", mine.username),),
            txt_name(mine),
            grpc.StatusCode.UNAUTHENTICATED,
            errors.CREDENTIALS_REQUIRED,
        ),
        (
            owner(mine, theirs.password),
            txt_name(mine),
            grpc.StatusCode.UNAUTHENTICATED,
            errors.CREDENTIALS_INVALID,
        ),
        (
            (("x-api-user", "00000000-0000-4000-8000-000000000000"), ("x-api-key", "k" * 40)),
            txt_name(mine),
            grpc.StatusCode.UNAUTHENTICATED,
            errors.CREDENTIALS_INVALID,
        ),
        (owner(theirs), txt_name(mine), grpc.StatusCode.PERMISSION_DENIED,
         errors.SUBDOMAIN_MISMATCH),
        (owner(mine), "registrations/unknown-label/txtRecord",
         grpc.StatusCode.PERMISSION_DENIED, errors.SUBDOMAIN_MISMATCH),
        ((("authorization", "Bearer anything"),), txt_name(mine),
         grpc.StatusCode.UNAUTHENTICATED, errors.CREDENTIALS_REQUIRED),
    ]  # fmt: skip
    for metadata, name, code, reason in cases:
        for call in (
            api.txt.AddTxtValue(txt_pb.AddTxtValueRequest(name=name, value=new), metadata=metadata),
            api.txt.ClearTxtValues(txt_pb.ClearTxtValuesRequest(name=name), metadata=metadata),
            api.txt.RemoveTxtValue(
                txt_pb.RemoveTxtValueRequest(name=name, value=kept), metadata=metadata
            ),
            api.txt.GetTxtRecord(txt_pb.GetTxtRecordRequest(name=name), metadata=metadata),
        ):
            assert_error(await rpc_error(call), code, reason)
    assert await txt_values(api, mine) == [kept]
    assert await txt_values(api, theirs) == []


@pytest.mark.parametrize(
    "name",
    ["", "registrations/abc", "registrations/abc/txtrecord", "registrations/a_b/txtRecord",
     "registrations//txtRecord", "registrations/abc/txtRecord/x", "txtRecord"],
)  # fmt: skip
async def test_malformed_txt_record_names_are_invalid_name(api: Api, name: str) -> None:
    created = await create(api)
    error = await rpc_error(
        api.txt.AddTxtValue(
            txt_pb.AddTxtValueRequest(name=name, value=acme_digest(name)), metadata=owner(created)
        )
    )
    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, errors.INVALID_NAME, "name")


async def test_allowed_cidrs_use_the_peer_and_ignore_spoofed_forwarded_for(api: Api) -> None:
    elsewhere = await create(api, allowed_cidrs=["192.0.2.0/24"])
    value = acme_digest(f"cidr-{elsewhere.subdomain}")
    for extra in [(), (("x-forwarded-for", "192.0.2.9"),)]:
        error = await rpc_error(
            api.txt.AddTxtValue(
                txt_pb.AddTxtValueRequest(name=txt_name(elsewhere), value=value),
                metadata=(*owner(elsewhere), *extra),
            )
        )
        assert_error(error, grpc.StatusCode.PERMISSION_DENIED, errors.SOURCE_ADDRESS_NOT_ALLOWED)
    error = await rpc_error(txt_values(api, elsewhere))  # reading is guarded the same way
    assert_error(error, grpc.StatusCode.PERMISSION_DENIED, errors.SOURCE_ADDRESS_NOT_ALLOWED)

    local = await create(api, allowed_cidrs=["10.0.0.0/8", "127.0.0.0/8"])
    record = await add(api, local, value)
    assert [v.value for v in record.values] == [value]


async def test_forwarded_for_is_honoured_from_trusted_proxies(proxied_api: Api) -> None:
    v4 = await create(proxied_api, allowed_cidrs=["192.0.2.0/24"])
    v6 = await create(proxied_api, allowed_cidrs=["2001:db8::/32"])
    value = acme_digest("proxied")

    async def add_from(registration: reg_pb.Registration, *forwarded: str) -> Any:
        return await proxied_api.txt.AddTxtValue(
            txt_pb.AddTxtValueRequest(name=txt_name(registration), value=value),
            metadata=(*owner(registration), *(("x-forwarded-for", f) for f in forwarded)),
        )

    for registration, forwarded in [
        (v4, ()),
        (v4, ("198.51.100.1",)),
        (v4, ("192.0.2.1, 198.51.100.1",)),  # the right-most untrusted hop is the client
        (v6, ("192.0.2.1",)),
    ]:
        error = await rpc_error(add_from(registration, *forwarded))
        assert_error(error, grpc.StatusCode.PERMISSION_DENIED, errors.SOURCE_ADDRESS_NOT_ALLOWED)
    unchanged = await proxied_api.txt.GetTxtRecord(
        txt_pb.GetTxtRecordRequest(name=txt_name(v4)),
        metadata=(*owner(v4), ("x-forwarded-for", "192.0.2.44")),
    )
    assert list(unchanged.values) == []

    assert [v.value for v in (await add_from(v4, "192.0.2.44")).values] == [value]
    assert [v.value for v in (await add_from(v4, "203.0.113.5, 192.0.2.44, 127.0.0.1")).values]
    assert [v.value for v in (await add_from(v6, "2001:db8::5")).values] == [value]


# -- RecordFeedService ----------------------------------------------------------------------


async def test_feed_status(api: Api) -> None:
    before = await api.feed.GetFeedStatus(feed_pb.GetFeedStatusRequest())
    assert before.feed_id
    assert before.zone.rstrip(".") == ZONE
    registration = await create(api)
    created = await api.feed.GetFeedStatus(feed_pb.GetFeedStatusRequest())
    await add(api, registration, acme_digest("status"))
    after = await api.feed.GetFeedStatus(feed_pb.GetFeedStatusRequest())
    # Each change is one revision, in the same transaction as the change; nothing is compacted
    # by a write, and the feed keeps its identity.
    assert after.revision == created.revision + 1
    assert after.feed_id == before.feed_id
    assert after.compacted_revision == before.compacted_revision
    assert 0 <= after.compacted_revision < after.revision


async def test_watch_sends_snapshot_then_live_changes_then_bookmarks(tmp_path: Any) -> None:
    metrics = CollectorRegistry()
    async with (
        running_registry(tmp_path, metrics, feed_bookmark_interval_seconds=0.2) as app,
        connect(app) as fresh,
    ):
        created = await create(fresh)
        first, second = acme_digest("w1"), acme_digest("w2")
        await add(fresh, created, first)
        fqdn = f"{created.fulldomain}."
        status = await fresh.feed.GetFeedStatus(feed_pb.GetFeedStatusRequest())

        call = fresh.feed.WatchRecords(feed_pb.WatchRecordsRequest(start_revision=0))
        message = await next_message(call)
        assert message.WhichOneof("event") == "snapshot"
        snapshot = message.snapshot
        assert (snapshot.revision, snapshot.last, snapshot.feed_id) == (
            status.revision,
            True,
            status.feed_id,
        )
        assert snapshot.zone.rstrip(".") == ZONE
        assert [(s.fqdn, s.type, list(s.txt_values)) for s in snapshot.record_sets] == [
            (fqdn, feed_pb.RECORD_TYPE_TXT, [first])
        ]

        await add(fresh, created, second)
        message = await next_message(call)
        while message.WhichOneof("event") == "bookmark":
            message = await next_message(call)
        [change] = message.changes.changes
        assert change.revision == status.revision + 1
        assert change.type == feed_pb.CHANGE_TYPE_PUT
        assert (change.record_set.fqdn, list(change.record_set.txt_values)) == (
            fqdn,
            [second, first],
        )
        assert change.commit_time.seconds > 0

        await fresh.registrations.DeleteRegistration(
            reg_pb.DeleteRegistrationRequest(name=created.name)
        )
        message = await next_message(call)
        while message.WhichOneof("event") == "bookmark":
            message = await next_message(call)
        [change] = message.changes.changes
        assert change.type == feed_pb.CHANGE_TYPE_DELETE
        assert (change.record_set.fqdn, list(change.record_set.txt_values)) == (fqdn, [])

        message = await next_message(call, seconds=5)
        assert message.WhichOneof("event") == "bookmark"
        assert (message.bookmark.revision, message.bookmark.feed_id) == (
            change.revision,
            status.feed_id,
        )
        assert message.bookmark.time.seconds > 0
        call.cancel()

        resumed = fresh.feed.WatchRecords(
            feed_pb.WatchRecordsRequest(start_revision=change.revision, feed_id=status.feed_id)
        )
        message = await next_message(resumed)
        assert [c.type for c in message.changes.changes] == [feed_pb.CHANGE_TYPE_DELETE]
        assert metrics.get_sample_value("acmezone_registry_feed_watchers") == 1
        resumed.cancel()
        # A cancelled watch releases the feed at once.
        for _ in range(100):
            if metrics.get_sample_value("acmezone_registry_feed_watchers") == 0:
                break
            await asyncio.sleep(0.02)
        assert metrics.get_sample_value("acmezone_registry_feed_watchers") == 0


@pytest.mark.parametrize(
    ("start_revision", "feed_id", "code", "reason"),
    [
        (-1, "", grpc.StatusCode.INVALID_ARGUMENT, errors.INVALID_START_REVISION),
        (-(2**63), "", grpc.StatusCode.INVALID_ARGUMENT, errors.INVALID_START_REVISION),
        (1, "another-feed", grpc.StatusCode.OUT_OF_RANGE, errors.FEED_ID_MISMATCH),
        (2**62, "", grpc.StatusCode.OUT_OF_RANGE, errors.REVISION_IN_FUTURE),
    ],
)
async def test_watch_rejects_bad_start_positions(
    api: Api, start_revision: int, feed_id: str, code: grpc.StatusCode, reason: str
) -> None:
    call = api.feed.WatchRecords(
        feed_pb.WatchRecordsRequest(start_revision=start_revision, feed_id=feed_id)
    )
    error = await rpc_error(call.read())
    assert_error(error, code, reason)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        assert field_violations(error) == ["start_revision"]


async def test_a_persistent_value_is_accepted_in_strict_mode_and_kept(api: Api) -> None:
    created = await create(api)
    persist = "ca.example; accounturi=https://ca.example/acct/1"
    # Not a digest: refused as a challenge value, accepted as a persistent one.
    error = await rpc_error(add(api, created, persist))
    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, errors.INVALID_TXT_VALUE, "value")
    record = await api.txt.AddTxtValue(
        txt_pb.AddTxtValueRequest(name=txt_name(created), value=persist, persistent=True),
        metadata=owner(created),
    )
    assert [(v.value, v.persistent) for v in record.values] == [(persist, True)]
    error = await rpc_error(
        api.txt.AddTxtValue(
            txt_pb.AddTxtValueRequest(
                name=txt_name(created), value="no-semicolon", persistent=True
            ),
            metadata=owner(created),
        )
    )
    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, errors.INVALID_TXT_VALUE, "value")
    for i in range(3):
        record = await add(api, created, acme_digest(f"{created.subdomain}-{i}"))
    assert [v.persistent for v in record.values] == [False, False, True]
