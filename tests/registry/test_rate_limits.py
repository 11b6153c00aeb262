"""Abuse limits: token buckets, and the 429s the HTTP API answers when they run out."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from acmezone_registry.rate_limits import TokenBuckets, source_network
from tests.registry.conftest import running_registry
from tests.registry.values import acme_digest


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_refills_at_its_rate() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=0.5, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(2.0)
    assert buckets.wait("a") == pytest.approx(2.0)
    assert buckets.take("b") == 0.0, "keys are independent"
    clock.now += 1.0
    assert buckets.wait("a") == pytest.approx(1.0)
    clock.now += 1.0
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    clock.now += 3600
    assert [buckets.take("a") for _ in range(4)][:3] == [0.0, 0.0, 0.0], "refills to the burst"


def test_memory_is_bounded_and_eviction_only_forgives() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=0.001, burst=1, max_keys=2, clock=clock)
    for key in ("a", "b", "c"):
        assert buckets.take(key) == 0.0
    assert buckets.take("c") > 0
    assert buckets.take("a") == 0.0, "the oldest bucket was forgotten: full again"
    assert len(buckets._buckets) == 2


def test_a_zero_rate_is_no_limit() -> None:
    buckets = TokenBuckets(rate=0, burst=1)
    assert not buckets.enabled
    assert all(buckets.take("a") == 0.0 for _ in range(1000))


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("192.0.2.77", "192.0.2.0/24"),
        ("::ffff:192.0.2.77", "192.0.2.0/24"),
        ("2001:db8:aa:bb11::1", "2001:db8:aa:bb00::/56"),
    ],
)
def test_sources_are_grouped_by_network(address: str, network: str) -> None:
    assert source_network(ipaddress.ip_address(address)) == network
    assert source_network(None) == "unknown"


async def _post(
    session: aiohttp.ClientSession, url: str, body: Any = None, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    async with session.post(url, data=body, headers=headers) as reply:
        return reply.status, dict(reply.headers), await reply.read()


def _limited(registry: Any, limit: str) -> float:
    value = registry.metrics.rate_limited.labels(limit)._value.get()
    return float(value)


async def test_wrong_passwords_from_one_network_get_429_with_retry_after(tmp_path: Path) -> None:
    async with (
        running_registry(
            tmp_path, auth_failures_per_minute_per_source=5, auth_failures_per_minute_per_username=0
        ) as app,
        aiohttp.ClientSession() as session,
    ):
        base = f"http://{app.http_address}"
        _, _, body = await _post(session, f"{base}/register")
        account = json.loads(body)
        update = json.dumps({"subdomain": account["subdomain"], "txt": acme_digest(1)})
        wrong = {"X-Api-User": account["username"], "X-Api-Key": "w" * 40}
        statuses = [(await _post(session, f"{base}/update", update, **wrong))[0] for _ in range(5)]
        assert statuses == [401] * 5
        status, headers, body = await _post(session, f"{base}/update", update, **wrong)
        assert status == 429
        assert body == b'{"error": "rate_limited"}'
        assert 1 <= int(headers["Retry-After"]) <= 12
        # The whole network is held back, right credentials included, until tokens return.
        right = {"X-Api-User": account["username"], "X-Api-Key": account["password"]}
        assert (await _post(session, f"{base}/update", update, **right))[0] == 429
        assert _limited(app, "auth_source") == 2


async def test_a_flood_on_one_username_does_not_lock_its_owner_out(tmp_path: Path) -> None:
    async with (
        running_registry(
            tmp_path, auth_failures_per_minute_per_source=0, auth_failures_per_minute_per_username=3
        ) as app,
        aiohttp.ClientSession() as session,
    ):
        base = f"http://{app.http_address}"
        account = json.loads((await _post(session, f"{base}/register"))[2])
        update = json.dumps({"subdomain": account["subdomain"], "txt": acme_digest(2)})
        wrong = {"X-Api-User": account["username"], "X-Api-Key": "w" * 40}
        statuses = [(await _post(session, f"{base}/update", update, **wrong))[0] for _ in range(5)]
        assert statuses == [401, 401, 401, 429, 429]
        right = {"X-Api-User": account["username"], "X-Api-Key": account["password"]}
        assert (await _post(session, f"{base}/update", update, **right))[0] == 200
        assert _limited(app, "auth_username") == 2


async def test_open_registration_has_a_quota_per_network_and_in_all(tmp_path: Path) -> None:
    async with (
        running_registry(
            tmp_path / "a", open_registrations_per_hour_per_source=3, open_registrations_per_hour=0
        ) as app,
        aiohttp.ClientSession() as session,
    ):
        url = f"http://{app.http_address}/register"
        statuses = [(await _post(session, url))[0] for _ in range(4)]
        assert statuses == [201, 201, 201, 429]
        status, headers, body = await _post(session, url)
        assert (status, body) == (429, b'{"error": "rate_limited"}')
        assert int(headers["Retry-After"]) > 600  # an hour's quota refills slowly
        assert await app.stores.registrations.count_registrations() == 3
        assert _limited(app, "registration_source") == 2
    async with (
        running_registry(
            tmp_path / "b", open_registrations_per_hour_per_source=0, open_registrations_per_hour=2
        ) as app,
        aiohttp.ClientSession() as session,
    ):
        url = f"http://{app.http_address}/register"
        assert [(await _post(session, url))[0] for _ in range(3)] == [201, 201, 429]
        assert _limited(app, "registration_global") == 1
