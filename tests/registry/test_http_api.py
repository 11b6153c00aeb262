"""The acme-dns compatible HTTP API over real HTTP to a whole registry running in this process.

Status codes, headers and bodies are compared byte for byte with what acme-dns sends, since
lego, cert-manager, certbot's hook, acme.sh and Traefik parse them. Every rejected request is
also checked for having changed nothing in storage.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from acmezone_common.addresses import HostPort
from acmezone_common.testing import free_port
from acmezone_registry.access import ClientAddressResolver
from acmezone_registry.app import RegistryApp
from acmezone_registry.http_api import HttpApi
from acmezone_registry.metrics import RegistryMetrics
from acmezone_registry.registrations import RegistrationPolicy, Registrations
from acmezone_registry.storage.database import Database
from acmezone_registry.storage.stores import Stores
from tests.registry.conftest import CREDENTIAL_KEY, SEALER, ZONE, running_registry
from tests.registry.values import acme_digest

pytestmark = pytest.mark.asyncio(loop_scope="module")

OPERATOR_TOKEN = "operator-token-for-tests"
MAX_BODY = 65536  # the registry's default http_max_body_bytes
JSON_HEADERS = {"Content-Type": "application/json"}
FORBIDDEN = b'{"error": "forbidden"}'
BAD_TXT = b'{"error": "bad_txt"}'
BAD_SUBDOMAIN = b'{"error": "bad_subdomain"}'
MALFORMED = b'{"error": "malformed_json_payload"}'
INVALID_CIDR = b'{"error": "invalid_allowfrom_cidr"}'
TOO_LARGE = b'{"error": "payload_too_large"}'


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str | None
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Client:
    """An HTTP client bound to one registry."""

    app: RegistryApp
    session: aiohttp.ClientSession

    @property
    def base(self) -> str:
        return f"http://{self.app.http_address}"

    async def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Reply:
        async with self.session.request(
            method, self.base + path, data=body, headers=headers
        ) as response:
            return Reply(
                response.status,
                response.headers.get("Content-Type"),
                await response.read(),
                dict(response.headers),
            )

    async def register(self, body: Any = None, headers: dict[str, str] | None = None) -> Reply:
        return await self.request("POST", "/register", body, {**JSON_HEADERS, **(headers or {})})

    async def account(self, allowfrom: list[str] | None = None, **headers: str) -> dict[str, Any]:
        body = None if allowfrom is None else json.dumps({"allowfrom": allowfrom})
        reply = await self.register(body, headers)
        assert reply.status == 201, reply.body
        account: dict[str, Any] = reply.json()
        return account

    async def update(
        self, account: dict[str, Any], body: Any, headers: dict[str, str] | None = None
    ) -> Reply:
        auth = {"X-Api-User": account["username"], "X-Api-Key": account["password"]}
        return await self.request("POST", "/update", body, {**auth, **(headers or {})})

    async def set_txt(self, account: dict[str, Any], txt: str, **headers: str) -> Reply:
        body = json.dumps({"subdomain": account["subdomain"], "txt": txt})
        return await self.update(account, body, headers)

    async def values(self, account: dict[str, Any]) -> list[str]:
        record = await self.app.stores.txt_values.get_txt_record(account["subdomain"])
        return [value.value for value in record.values]

    async def registrations(self) -> int:
        return await self.app.stores.registrations.count_registrations()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def open_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RegistryApp]:
    """acme-dns defaults: open registration, no trusted proxies."""
    async with running_registry(tmp_path_factory.mktemp("open")) as app:
        yield app


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def guarded_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RegistryApp]:
    async with running_registry(
        tmp_path_factory.mktemp("guarded"), operator_token=OPERATOR_TOKEN
    ) as app:
        yield app


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def proxied_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RegistryApp]:
    async with running_registry(
        tmp_path_factory.mktemp("proxied"), trusted_proxies=["127.0.0.0/8"]
    ) as app:
        yield app


@pytest_asyncio.fixture(loop_scope="module")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


@pytest.fixture
def client(open_app: RegistryApp, session: aiohttp.ClientSession) -> Client:
    return Client(open_app, session)


@pytest.fixture
def guarded(guarded_app: RegistryApp, session: aiohttp.ClientSession) -> Client:
    return Client(guarded_app, session)


@pytest.fixture
def proxied(proxied_app: RegistryApp, session: aiohttp.ClientSession) -> Client:
    return Client(proxied_app, session)


# -- /register ------------------------------------------------------------------------------


async def test_register_answers_201_with_one_line_of_acme_dns_json(client: Client) -> None:
    reply = await client.register()
    assert (reply.status, reply.content_type) == (201, "application/json")
    account = reply.json()
    assert list(account) == ["username", "password", "fulldomain", "subdomain", "allowfrom"]
    assert reply.body == json.dumps(account, separators=(",", ":")).encode()
    assert b"\n" not in reply.body
    assert len(account["username"]) == 36
    assert len(account["password"]) == 40
    assert account["fulldomain"] == f"{account['subdomain']}.{ZONE}"
    assert account["allowfrom"] == []

    stored = await client.app.stores.registrations.get_registration(account["subdomain"])
    assert stored is not None
    assert stored.registration.username == account["username"]
    assert account["password"] not in stored.password_hash


@pytest.mark.parametrize(
    ("body", "allowfrom"),
    [
        (b"", []),
        (b"null", []),
        (b"{}", []),
        (b'{"allowfrom": null}', []),
        (b'{"allowfrom": []}', []),
        (b'{"allowfrom": ["192.0.2.0/24", "2001:db8::/32"]}', ["192.0.2.0/24", "2001:db8::/32"]),
        (b'{"AllowFrom": ["192.0.2.0/24"]}', ["192.0.2.0/24"]),
        (b'{"ALLOWFROM": ["192.0.2.0/24"], "unknown": 1}', ["192.0.2.0/24"]),
        (b'{"allowfrom": ["192.0.2.7"], "allowFrom": ["10.0.0.0/8"]}', ["10.0.0.0/8"]),
        (b' {"allowfrom": [" 192.0.2.0/24 "]}\n', ["192.0.2.0/24"]),
    ],
)
async def test_register_reads_allowfrom_like_acme_dns(
    client: Client, body: bytes, allowfrom: list[str]
) -> None:
    reply = await client.register(body)
    assert reply.status == 201, reply.body
    assert reply.json()["allowfrom"] == allowfrom
    stored = await client.app.stores.registrations.get_registration(reply.json()["subdomain"])
    assert stored is not None
    assert list(stored.registration.allowed_cidrs) == allowfrom


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{", MALFORMED),
        (b"   ", MALFORMED),
        (b"[]", MALFORMED),
        (b'"allowfrom"', MALFORMED),
        (b"5", MALFORMED),
        (b'{"allowfrom": "192.0.2.0/24"}', MALFORMED),
        (b'{"allowfrom": [5]}', MALFORMED),
        (b'{"allowfrom": ["192.0.2.0/24", null]}', MALFORMED),
        (b'{"allowfrom": {"192.0.2.0/24": true}}', MALFORMED),
        (b'{"allowfrom": []} {}', MALFORMED),
        (b'{"allowfrom": NaN}', MALFORMED),
        (b'{"allowfrom": ["\xff"]}', MALFORMED),
        (b"[" * 100_000 + b"]" * 100_000, TOO_LARGE),
        (b'{"allowfrom": ["192.0.2.0/33"]}', INVALID_CIDR),
        (b'{"allowfrom": ["192.0.2.0/24", "not-a-network"]}', INVALID_CIDR),
        (b'{"allowfrom": ["2001:db8::/129"]}', INVALID_CIDR),
        (b'{"allowfrom": [""]}', INVALID_CIDR),
        (
            json.dumps({"allowfrom": [f"10.0.{i}.0/24" for i in range(65)]}).encode(),
            b'{"error": "too_many_allowfrom_cidrs"}',
        ),
    ],
)
async def test_register_rejects_bad_bodies_and_creates_nothing(
    client: Client, body: bytes, error: bytes
) -> None:
    before = await client.registrations()
    reply = await client.register(body)
    status = 413 if error == TOO_LARGE else 400
    assert (reply.status, reply.content_type, reply.body) == (status, "application/json", error)
    assert await client.registrations() == before


async def test_register_accepts_a_body_of_exactly_the_limit(client: Client) -> None:
    body = b'{"allowfrom": ["192.0.2.0/24"]}'
    reply = await client.register(body + b" " * (MAX_BODY - len(body)))
    assert reply.status == 201
    reply = await client.register(body + b" " * (MAX_BODY + 1 - len(body)))
    assert (reply.status, reply.body) == (413, TOO_LARGE)


async def test_oversized_bodies_without_a_length_are_rejected_too(client: Client) -> None:
    before = await client.registrations()

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"allowfrom": ['
        for _ in range(20):
            yield b'"192.0.2.0/24",' * 400

    reply = await client.register(chunks())
    assert (reply.status, reply.body) == (413, TOO_LARGE)
    assert await client.registrations() == before


async def test_open_registry_ignores_authorization(client: Client) -> None:
    reply = await client.register(headers={"Authorization": "Bearer whatever"})
    assert reply.status == 201


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong-token", f"Basic {OPERATOR_TOKEN}", OPERATOR_TOKEN],
)
async def test_operator_token_guards_register(guarded: Client, authorization: str | None) -> None:
    before = await guarded.registrations()
    headers = {} if authorization is None else {"Authorization": authorization}
    reply = await guarded.register(b'{"allowfrom": ["192.0.2.0/33"]}', headers)
    assert (reply.status, reply.content_type, reply.body) == (401, "application/json", FORBIDDEN)
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert await guarded.registrations() == before


async def test_operator_token_lets_register_through_and_update_needs_none(
    guarded: Client,
) -> None:
    account = await guarded.account(["127.0.0.0/8"], Authorization=f"Bearer {OPERATOR_TOKEN}")
    value = acme_digest("guarded")
    reply = await guarded.set_txt(account, value)
    assert (reply.status, reply.body) == (200, f'{{"txt": "{value}"}}'.encode())
    reply = await guarded.register(
        b'{"allowfrom": ["bad"]}', {"Authorization": f"bearer {OPERATOR_TOKEN}"}
    )
    assert (reply.status, reply.body) == (400, INVALID_CIDR)


# -- /update --------------------------------------------------------------------------------


async def test_update_publishes_the_value_like_acme_dns(client: Client) -> None:
    account = await client.account()
    first, second, third = (acme_digest(f"{account['subdomain']}-{i}") for i in range(3))
    reply = await client.set_txt(account, first)
    assert (reply.status, reply.content_type) == (200, "application/json")
    assert reply.body == f'{{"txt": "{first}"}}'.encode()
    assert await client.values(account) == [first]

    # lego's spelling of the keys
    reply = await client.update(
        account, json.dumps({"SubDomain": account["subdomain"], "Txt": second})
    )
    assert reply.body == f'{{"txt": "{second}"}}'.encode()
    reply = await client.update(
        account, json.dumps({"SUBDOMAIN": account["subdomain"], "TXT": third})
    )
    assert reply.status == 200
    assert await client.values(account) == [third, second]

    reply = await client.set_txt(account, third)  # the same value again is idempotent
    assert reply.status == 200
    assert await client.values(account) == [third, second]


async def test_update_accepts_an_upper_case_subdomain(client: Client) -> None:
    account = await client.account()
    value = acme_digest(f"upper-{account['subdomain']}")
    body = json.dumps({"subdomain": account["subdomain"].upper(), "txt": value})
    reply = await client.update(account, body)
    assert (reply.status, reply.body) == (200, f'{{"txt": "{value}"}}'.encode())


async def test_update_refuses_wrong_credentials_with_forbidden(client: Client) -> None:
    mine, theirs = await client.account(), await client.account()
    kept = acme_digest(f"kept-{mine['subdomain']}")
    assert (await client.set_txt(mine, kept)).status == 200
    new = acme_digest(f"new-{mine['subdomain']}")
    body = json.dumps({"subdomain": mine["subdomain"], "txt": new})
    cases: list[dict[str, str]] = [
        {},
        {"X-Api-User": mine["username"]},
        {"X-Api-Key": mine["password"]},
        {"X-Api-User": mine["username"], "X-Api-Key": theirs["password"]},
        {"X-Api-User": mine["username"], "X-Api-Key": mine["password"][:-1]},
        {"X-Api-User": "not-a-uuid", "X-Api-Key": mine["password"]},
        {"X-Api-User": "00000000-0000-4000-8000-000000000000", "X-Api-Key": mine["password"]},
        {"X-Api-User": theirs["username"], "X-Api-Key": theirs["password"]},
        {"Authorization": f"Bearer {OPERATOR_TOKEN}"},
    ]
    for headers in cases:
        reply = await client.request("POST", "/update", body, headers)
        assert (reply.status, reply.content_type, reply.body) == (
            401,
            "application/json",
            FORBIDDEN,
        ), headers
    # wrong credentials are refused before the value is looked at, as acme-dns does
    reply = await client.update(theirs, json.dumps({"subdomain": mine["subdomain"], "txt": "x"}))
    assert (reply.status, reply.body) == (401, FORBIDDEN)
    # a subdomain that is not the credentials' own: unknown or someone else's
    for subdomain in ["unknown-subdomain", theirs["subdomain"]]:
        reply = await client.update(mine, json.dumps({"subdomain": subdomain, "txt": new}))
        assert (reply.status, reply.body) == (401, FORBIDDEN)
    assert await client.values(mine) == [kept]
    assert await client.values(theirs) == []


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"txt": "too-short"}, BAD_TXT),
        ({"txt": "A" * 42}, BAD_TXT),
        ({"txt": "A" * 44}, BAD_TXT),
        ({"txt": "A" * 42 + "="}, BAD_TXT),
        ({"txt": "A" * 42 + " "}, BAD_TXT),
        ({"txt": "A" * 42 + "\u00e9"}, BAD_TXT),
        ({"txt": ""}, BAD_TXT),
        ({"txt": None}, BAD_TXT),
        ({"txt": 5}, BAD_TXT),
        ({"txt": ["A" * 43]}, BAD_TXT),
        ({}, BAD_TXT),
        ({"subdomain": "bad_subdomain!"}, BAD_SUBDOMAIN),
        ({"subdomain": "-leading"}, BAD_SUBDOMAIN),
        ({"subdomain": ""}, BAD_SUBDOMAIN),
        ({"subdomain": 5}, BAD_SUBDOMAIN),
        ({"subdomain": None}, BAD_SUBDOMAIN),
    ],
)
async def test_update_rejects_bad_values_and_changes_nothing(
    client: Client, fields: dict[str, Any], error: bytes
) -> None:
    account = await client.account()
    kept = acme_digest(f"kept-{account['subdomain']}")
    assert (await client.set_txt(account, kept)).status == 200
    body: dict[str, Any] = {"subdomain": account["subdomain"]}
    body.update(fields)
    reply = await client.update(account, json.dumps(body))
    assert (reply.status, reply.content_type, reply.body) == (400, "application/json", error)
    assert await client.values(account) == [kept]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", MALFORMED),
        (b"{", MALFORMED),
        (b"null", MALFORMED),
        (b"[]", MALFORMED),
        (b'"txt"', MALFORMED),
        (b'{"subdomain": "a", "txt": "b"} trailing', MALFORMED),
        (b'{"subdomain": "\xff"}', MALFORMED),
        (b'{"txt": Infinity}', MALFORMED),
        (b'{"txt": "' + b"A" * MAX_BODY + b'"}', TOO_LARGE),
    ],
)
async def test_update_rejects_malformed_bodies_and_changes_nothing(
    client: Client, body: bytes, error: bytes
) -> None:
    account = await client.account()
    kept = acme_digest(f"kept-{account['subdomain']}")
    assert (await client.set_txt(account, kept)).status == 200
    reply = await client.update(account, body)
    status = 413 if error == TOO_LARGE else 400
    assert (reply.status, reply.content_type, reply.body) == (status, "application/json", error)
    assert await client.values(account) == [kept]


async def test_allowfrom_uses_the_socket_peer_and_ignores_spoofed_forwarded_for(
    client: Client,
) -> None:
    elsewhere = await client.account(["192.0.2.0/24"])
    value = acme_digest(f"cidr-{elsewhere['subdomain']}")
    for headers in [
        {},
        {"X-Forwarded-For": "192.0.2.9"},
        {"X-Forwarded-For": "127.0.0.1, 192.0.2.9"},
    ]:
        reply = await client.set_txt(elsewhere, value, **headers)
        assert (reply.status, reply.body) == (401, FORBIDDEN), headers
    assert await client.values(elsewhere) == []

    local = await client.account(["192.0.2.0/24", "127.0.0.1/32"])
    reply = await client.set_txt(local, value)
    assert reply.status == 200
    assert await client.values(local) == [value]


async def test_allowfrom_honours_forwarded_for_from_trusted_proxies(proxied: Client) -> None:
    account = await proxied.account(["192.0.2.0/24", "2001:db8::/32"])
    value = acme_digest("proxied-http")
    for forwarded in [None, "198.51.100.1", "192.0.2.1, 198.51.100.1"]:
        headers = {} if forwarded is None else {"X-Forwarded-For": forwarded}
        reply = await proxied.set_txt(account, value, **headers)
        assert (reply.status, reply.body) == (401, FORBIDDEN), forwarded
    assert await proxied.values(account) == []

    for forwarded in ["192.0.2.7", "198.51.100.1, 192.0.2.7, 127.0.0.1", "2001:db8::1"]:
        reply = await proxied.set_txt(account, value, **{"X-Forwarded-For": forwarded})
        assert reply.status == 200, forwarded
    assert await proxied.values(account) == [value]


async def test_allowfrom_matches_ipv6_peers(
    open_app: RegistryApp, session: aiohttp.ClientSession
) -> None:
    async def healthy() -> bool:
        return True

    api = HttpApi(
        open_app.registrations,
        ClientAddressResolver([]),
        RegistryMetrics(CollectorRegistry()),
        max_body_bytes=MAX_BODY,
        storage_ok=healthy,
    )
    try:
        address = await api.start(HostPort("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    try:
        client = Client(open_app, session)
        v6_only = await client.account(["::1/128"])
        v4_only = await client.account(["127.0.0.1/32"])
        for account, status in [(v6_only, 200), (v4_only, 401)]:
            body = json.dumps({"subdomain": account["subdomain"], "txt": acme_digest("v6")})
            headers = {"X-Api-User": account["username"], "X-Api-Key": account["password"]}
            async with session.post(f"http://{address}/update", data=body, headers=headers) as r:
                assert r.status == status
    finally:
        await api.stop()
    assert await client.values(v6_only) == [acme_digest("v6")]
    assert await client.values(v4_only) == []


# -- /health, unknown routes, metrics -------------------------------------------------------


async def test_health_is_200_with_an_empty_body(client: Client) -> None:
    reply = await client.request("GET", "/health")
    assert (reply.status, reply.body) == (200, b"")


async def _serve_health(
    app: RegistryApp, storage_ok: Callable[[], Awaitable[bool]]
) -> tuple[HttpApi, HostPort]:
    api = HttpApi(
        app.registrations,
        ClientAddressResolver([]),
        RegistryMetrics(CollectorRegistry()),
        max_body_bytes=MAX_BODY,
        storage_ok=storage_ok,
    )
    return api, await api.start(HostPort("127.0.0.1", 0))


async def test_health_is_503_json_when_storage_is_down(
    open_app: RegistryApp, session: aiohttp.ClientSession
) -> None:
    async def down() -> bool:
        return False

    async def broken() -> bool:
        raise ConnectionRefusedError("database is gone")

    for storage_ok in (down, broken):
        api, address = await _serve_health(open_app, storage_ok)
        try:
            async with session.get(f"http://{address}/health") as response:
                assert response.status == 503
                assert response.headers["Content-Type"] == "application/json"
                assert await response.read() == b'{"error": "storage_unavailable"}'
        finally:
            await api.stop()


async def test_a_crash_is_a_logged_500_with_a_json_body(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    async def healthy() -> bool:
        return True

    broken = HttpApi(
        cast(Registrations, object()),  # every use case call fails with AttributeError
        ClientAddressResolver([]),
        RegistryMetrics(CollectorRegistry()),
        max_body_bytes=MAX_BODY,
        storage_ok=healthy,
    )
    address = await broken.start(HostPort("127.0.0.1", 0))
    try:
        async with session.post(f"http://{address}/register") as response:
            assert response.status == 500
            assert response.headers["Content-Type"] == "application/json"
            assert await response.read() == b'{"error": "internal_error"}'
    finally:
        await broken.stop()
    assert any(r.exc_info and r.levelname == "ERROR" for r in caplog.records)


@pytest.mark.parametrize(
    ("method", "path", "status", "body"),
    [
        ("GET", "/", 404, b'{"error": "not_found"}'),
        ("POST", "/delete", 404, b'{"error": "not_found"}'),
        ("GET", "/register/extra", 404, b'{"error": "not_found"}'),
        ("GET", "/register", 405, b'{"error": "method_not_allowed"}'),
        ("PUT", "/update", 405, b'{"error": "method_not_allowed"}'),
        ("POST", "/health", 405, b'{"error": "method_not_allowed"}'),
    ],
)
async def test_unknown_routes_and_methods_answer_json(
    client: Client, method: str, path: str, status: int, body: bytes
) -> None:
    reply = await client.request(method, path)
    assert (reply.status, reply.content_type, reply.body) == (status, "application/json", body)
    if status == 405:
        assert reply.headers["Allow"]


async def test_requests_are_counted_by_bounded_route_and_status(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    metrics = CollectorRegistry()
    async with running_registry(tmp_path, metrics) as app:
        client = Client(app, session)
        account = await client.account()
        await client.set_txt(account, acme_digest("m"))
        await client.set_txt(account, "bad")
        await client.request("POST", "/update", b"{}")
        await client.request("GET", "/health")
        for i in range(3):
            await client.request("GET", f"/random/{i}")

        def requests(route: str, status: str) -> float | None:
            return metrics.get_sample_value(
                "acmezone_registry_http_requests_total", {"route": route, "status": status}
            )

        assert requests("/register", "201") == 1
        assert requests("/update", "200") == 1
        assert requests("/update", "400") == 2
        assert requests("/health", "200") == 1
        assert requests("other", "404") == 3
        assert (
            metrics.get_sample_value(
                "acmezone_registry_http_request_duration_seconds_count", {"route": "/update"}
            )
            == 3
        )
        paths = {
            sample.labels.get("route")
            for family in metrics.collect()
            if family.name.startswith("acmezone_registry_http")
            for sample in family.samples
        }
        assert paths <= {"/register", "/update", "/health", "other", None}


async def test_concurrent_updates_from_many_accounts_all_land(client: Client) -> None:
    accounts = [await client.account() for _ in range(10)]
    replies = await asyncio.gather(
        *(client.set_txt(a, acme_digest(f"many-{a['subdomain']}")) for a in accounts)
    )
    assert [r.status for r in replies] == [200] * len(accounts)
    for account in accounts:
        assert await client.values(account) == [acme_digest(f"many-{account['subdomain']}")]


async def test_a_database_that_is_down_is_a_503_with_retry_after(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A real registry domain over a PostgreSQL URL whose port nobody listens on."""
    dead = Database(f"postgresql://postgres@127.0.0.1:{free_port()}/test?connect_timeout=2")
    stores = Stores.open(dead, ZONE, SEALER)
    registrations = Registrations(
        stores.registrations,
        stores.txt_values,
        RegistrationPolicy(
            zone=ZONE,
            operator_token=None,
            reserved_subdomains=(),
            default_max_txt_values=2,
            strict_txt_values=True,
            txt_value_lifetime=None,
            credential_key=CREDENTIAL_KEY,
        ),
        RegistryMetrics(CollectorRegistry()),
    )
    api = HttpApi(
        registrations,
        ClientAddressResolver([]),
        RegistryMetrics(CollectorRegistry()),
        max_body_bytes=MAX_BODY,
        storage_ok=stores.log.ping,
    )
    address = await api.start(HostPort("127.0.0.1", 0))
    try:
        async with session.post(f"http://{address}/register") as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "2"
            assert await response.read() == b'{"error": "db_error"}'
        headers = {"X-Api-User": str(uuid.uuid4()), "X-Api-Key": "x" * 40}
        body = json.dumps({"subdomain": str(uuid.uuid4()), "txt": acme_digest(1)})
        async with session.post(f"http://{address}/update", data=body, headers=headers) as r:
            assert r.status == 503
            assert r.headers["Retry-After"] == "2"
        async with session.get(f"http://{address}/health") as response:
            assert response.status == 503
    finally:
        await api.stop()
        await dead.dispose()
