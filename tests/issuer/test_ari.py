"""ACME Renewal Information with Debian's Pebble: the issuer re-asks when the CA's short
`Retry-After` says, and follows the CA when it moves the window, by itself.

Debian's Pebble (2.4) has no ARI endpoint, so this test puts a small HTTPS front in front of its
directory that adds `renewalInfo` and serves windows (and a one-second `Retry-After`) the test
chooses; every other ACME request goes to Pebble itself. Renewal inside a real CA's window, and
renewal when the real CA moves it, are tested against a current Pebble in test_profiles_ari.py;
the front stays only for what a real CA never does in a test's time: ask again within a second.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from acmezone.issuer.v1 import certificate_service_pb2 as pb
from tests.issuer.conftest import CA, running_issuer


@dataclass
class AriFront:
    """Serves Pebble's directory plus `renewalInfo`, and the windows the test sets."""

    ca: CA
    start: datetime
    end: datetime
    retry_after: int = 1
    requests: list[str] = field(default_factory=list)
    url: str = ""

    async def directory(self, request: web.Request) -> web.Response:
        context = ssl.create_default_context(cafile=str(self.ca.ca_bundle))

        def fetch() -> dict[str, object]:
            with urllib.request.urlopen(self.ca.directory_url, context=context) as response:  # noqa: S310
                result: dict[str, object] = json.loads(response.read())
                return result

        directory = await asyncio.to_thread(fetch)
        directory["renewalInfo"] = f"{self.url}/ari"
        # No keep-alive: the issuer's HTTP pool must not hold a connection past the test.
        return web.json_response(directory, headers={"Connection": "close"})

    async def renewal_info(self, request: web.Request) -> web.Response:
        certid = request.match_info["certid"]
        self.requests.append(certid)
        start, end = self.start, self.end
        if certid != self.requests[0]:
            # Like a real CA: a new certificate gets a window of its own, well ahead.
            start, end = start + timedelta(days=60), end + timedelta(days=60)
        window = {
            "suggestedWindow": {
                "start": start.isoformat().replace("+00:00", "Z"),
                "end": end.isoformat().replace("+00:00", "Z"),
            }
        }
        return web.json_response(
            window, headers={"Retry-After": str(self.retry_after), "Connection": "close"}
        )


@pytest.fixture
async def ari(ca: CA) -> AsyncIterator[AriFront]:
    now = datetime.now(UTC)
    front = AriFront(ca, start=now + timedelta(days=20), end=now + timedelta(days=21))
    app = web.Application()
    app.router.add_get("/dir", front.directory)
    app.router.add_get("/ari/{certid}", front.renewal_info)
    runner = web.AppRunner(app)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls = ca.pebble.tls_dir
    context.load_cert_chain(tls / "cert.pem", tls / "key.pem")
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    front.url = f"https://127.0.0.1:{port}"
    try:
        yield front
    finally:
        await runner.cleanup()


async def test_renewal_follows_the_cas_window(
    tmp_path: Path, ca: CA, ari: AriFront, metrics_registry: CollectorRegistry
) -> None:
    async with running_issuer(tmp_path, ca, metrics_registry) as client:
        account = await client.create_account(directory_url=f"{ari.url}/dir")
        cert = await client.create_certificate(
            "ari",
            dns_names=["ari.example.test"],
            account=account.name,
            challenge_type=pb.CHALLENGE_TYPE_HTTP_01,
        )
        issued = await client.wait_for(cert.name, lambda c: c.state == pb.STATE_ISSUED)
        assert issued.renewal_time_source == "ari"
        renewal = issued.renewal_time.ToDatetime(UTC)
        assert ari.start <= renewal <= ari.end
        # The issuer asks again when Retry-After (1 s here) says; the window still lies ahead,
        # so it only reschedules.
        rechecked = await client.wait_for(cert.name, lambda c: c.revision > issued.revision)
        assert len(ari.requests) >= 2
        assert rechecked.state == pb.STATE_ISSUED
        assert rechecked.serial_number == issued.serial_number
        assert ari.start <= rechecked.renewal_time.ToDatetime(UTC) <= ari.end
        assert len(await client.app.repository.orders_of("ari")) == 1
        # The CA wants it renewed now (say, ahead of a mass revocation): the issuer renews by
        # itself, without being asked.
        ari.start = datetime.now(UTC) - timedelta(minutes=2)
        ari.end = datetime.now(UTC) - timedelta(minutes=1)
        renewed = await client.wait_for(
            cert.name,
            lambda c: c.state == pb.STATE_ISSUED and c.serial_number != issued.serial_number,
        )
        assert renewed.renewal_time_source == "ari"
        assert renewed.renewal_time.ToDatetime(UTC) > datetime.now(UTC) + timedelta(days=30)
        assert len(await client.app.repository.orders_of("ari")) == 2
        assert metrics_registry.get_sample_value(
            "acmezone_issuer_acme_requests_total", {"endpoint": "renewalInfo", "status": "200"}
        )
