"""Profiles and ACME Renewal Information against a current upstream Pebble, for real.

The Pebble of ACMEZONE_TEST_PEBBLE lists `default` (90 days) and `shortlived` (6 days) in its
directory's `meta.profiles` and serves `renewalInfo`: a two-day window around two thirds of a
certificate's life, with `Retry-After` six hours. Its management interface can replace that
answer for one certificate (`/set-renewal-info/`), which is how the CA "moves the window" here.
Six hours are not waited for: the test brings the planned ARI check forward in the repository, as
the passing of time would.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from prometheus_client import CollectorRegistry

from acmezone.issuer.v1 import certificate_service_pb2 as pb
from acmezone_common.sql import utcnow
from acmezone_common.testing import error_info_reason
from acmezone_issuer.storage.repository import CertificateUpdate
from tests.issuer.conftest import CA, running_issuer


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ari_cert_id(chain_pem: str) -> str:
    """The ARI CertID of a chain's leaf: base64url(AKI keyIdentifier) "." base64url(serial)."""
    leaf = x509.load_pem_x509_certificates(chain_pem.encode())[0]
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier is not None
    serial = leaf.serial_number
    return (
        f"{_b64(aki.key_identifier)}.{_b64(serial.to_bytes(serial.bit_length() // 8 + 1, 'big'))}"
    )


def _context(ca: CA) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.ca_bundle))


def real_window(ca: CA, chain_pem: str) -> tuple[datetime, datetime, int]:
    """(start, end, Retry-After seconds) as Pebble answers for the chain's leaf."""
    with urllib.request.urlopen(ca.directory_url, context=_context(ca), timeout=5) as response:  # noqa: S310
        base = json.loads(response.read())["renewalInfo"]
    url = f"{base}/{ari_cert_id(chain_pem)}"
    with urllib.request.urlopen(url, context=_context(ca), timeout=5) as response:  # noqa: S310
        window = json.loads(response.read())["suggestedWindow"]
        retry_after = int(response.headers["Retry-After"])

    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)

    return parse(window["start"]), parse(window["end"]), retry_after


def move_window(ca: CA, chain_pem: str, start: datetime, end: datetime) -> None:
    """Make Pebble answer this window for the chain's leaf from now on."""
    leaf_pem = chain_pem.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    window = {
        "suggestedWindow": {
            "start": start.isoformat().replace("+00:00", "Z"),
            "end": end.isoformat().replace("+00:00", "Z"),
        }
    }
    body = json.dumps({"Certificate": leaf_pem, "ARIResponse": json.dumps(window)}).encode()
    request = urllib.request.Request(
        f"https://127.0.0.1:{ca.pebble.management_port}/set-renewal-info/",
        data=body,
        method="POST",
    )
    with urllib.request.urlopen(request, context=_context(ca), timeout=5) as response:  # noqa: S310
        assert response.status == 200


async def test_an_unknown_profile_is_refused_naming_the_offered_ones(
    tmp_path: Path, upstream_ca: CA
) -> None:
    async with running_issuer(tmp_path, upstream_ca) as client:
        account = await client.create_account()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.create_certificate(
                dns_names=["p.example.test"],
                account=account.name,
                profile="tlsserver",
                challenge_type=pb.CHALLENGE_TYPE_HTTP_01,
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info_reason(caught.value) == "INVALID_PROFILE"
        assert "offered: default, shortlived" in (caught.value.details() or "")
        assert not await client.app.repository.orders_of("p")


async def test_shortlived_certificate_renews_inside_the_real_ari_window(
    tmp_path: Path, upstream_ca: CA, metrics_registry: CollectorRegistry
) -> None:
    async with running_issuer(tmp_path, upstream_ca, metrics_registry) as client:
        account = await client.create_account()
        created = await client.create_certificate(
            "short",
            dns_names=["short.example.test"],
            account=account.name,
            profile="shortlived",
            challenge_type=pb.CHALLENGE_TYPE_HTTP_01,
        )
        assert created.profile == "shortlived"
        issued = await client.wait_for(created.name, lambda c: c.state == pb.STATE_ISSUED)
        assert issued.profile == "shortlived"
        not_before = issued.not_before_time.ToDatetime(UTC)
        not_after = issued.not_after_time.ToDatetime(UTC)
        assert abs((not_after - not_before) - timedelta(days=6)) < timedelta(minutes=1)

        row = await client.app.repository.get_certificate("short")
        start, end, retry_after = real_window(upstream_ca, row.chain_pem)
        # Pebble's window: two days around two thirds of the life, i.e. days 3 to 5 of 6.
        assert abs(start - (not_before + timedelta(days=3))) < timedelta(minutes=1)
        assert abs(end - (not_before + timedelta(days=5))) < timedelta(minutes=1)
        assert issued.renewal_time_source == "ari"
        assert start <= issued.renewal_time.ToDatetime(UTC) <= end
        # The next look at ARI is when the CA's Retry-After (six hours) says, well before the
        # window opens.
        assert retry_after == 6 * 3600
        next_check = issued.next_attempt_time.ToDatetime(UTC) - datetime.now(UTC)
        assert timedelta(hours=5, minutes=55) < next_check <= timedelta(hours=6)
        assert len(await client.app.repository.orders_of("short")) == 1

        # The CA wants it replaced now (as before a mass revocation). Six hours on, the issuer
        # asks again, sees the window has opened, and renews by itself.
        now = datetime.now(UTC)
        move_window(
            upstream_ca, row.chain_pem, now - timedelta(minutes=2), now - timedelta(minutes=1)
        )
        await client.app.repository.update_certificate(
            "short", CertificateUpdate(next_attempt_time=utcnow())
        )
        client.app.reconciler.wake()
        renewed = await client.wait_for(
            created.name,
            lambda c: c.state == pb.STATE_ISSUED and c.serial_number != issued.serial_number,
        )
        assert renewed.profile == "shortlived"
        assert renewed.renewal_time_source == "ari"
        new_row = await client.app.repository.get_certificate("short")
        start, end, _ = real_window(upstream_ca, new_row.chain_pem)
        assert start <= renewed.renewal_time.ToDatetime(UTC) <= end
        assert len(await client.app.repository.orders_of("short")) == 2
        assert metrics_registry.get_sample_value(
            "acmezone_issuer_acme_requests_total", {"endpoint": "renewalInfo", "status": "200"}
        )
