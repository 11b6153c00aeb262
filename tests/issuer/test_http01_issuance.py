"""Issuance end to end against a real Pebble with HTTP-01 served by the issuer itself."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from prometheus_client import CollectorRegistry

from acmezone.issuer.v1 import account_service_pb2 as apb
from acmezone.issuer.v1 import certificate_service_pb2 as pb
from acmezone_clients.devpebble import LocalPebble
from acmezone_common.testing import error_info_reason, free_port
from acmezone_issuer.storage.tables import CertificateRow
from tests.issuer.conftest import AUTH, CA, FakeDns, running_issuer, state_name
from tests.issuer.test_repository import certificate as repository_certificate


def _verify_chain(chain_pem: str, root_pem: str) -> list[x509.Certificate]:
    chain = x509.load_pem_x509_certificates(chain_pem.encode())
    root = x509.load_pem_x509_certificate(root_pem.encode())
    for child, parent in zip(chain, [*chain[1:], root], strict=True):
        child.verify_directly_issued_by(parent)
    return chain


async def test_http01_certificate_is_issued_renewed_and_revoked(
    tmp_path: Path, ca: CA, metrics_registry: CollectorRegistry
) -> None:
    async with running_issuer(tmp_path, ca, metrics_registry) as client:
        account = await client.create_account(contact_emails=["ops@example.com"])
        assert account.account_url.startswith("https://127.0.0.1")
        created = await client.create_certificate(
            "web",
            dns_names=["www.http01.example.test"],
            account=account.name,
            challenge_type=pb.CHALLENGE_TYPE_HTTP_01,
        )
        assert created.name == "certificates/web"
        assert state_name(created) == "STATE_PENDING"

        issued = await client.wait_for(created.name, lambda c: c.state == pb.STATE_ISSUED)
        assert issued.serial_number
        assert issued.failed_attempts == 0
        assert issued.renewal_time_source == "lifetime"
        lifetime = issued.not_after_time.ToDatetime() - issued.not_before_time.ToDatetime()
        two_thirds = issued.not_before_time.ToDatetime() + lifetime * 2 / 3
        assert abs((issued.renewal_time.ToDatetime() - two_thirds).total_seconds()) <= (
            lifetime.total_seconds() * 0.051
        )
        ready = {c.type: c for c in issued.conditions}["Ready"]
        assert ready.status == pb.CONDITION_STATUS_TRUE

        bundle = await client.certificates.ExportCertificate(
            pb.ExportCertificateRequest(name=created.name), metadata=AUTH
        )
        chain = _verify_chain(bundle.certificate_chain_pem, ca.pebble.root_pem())
        leaf = chain[0]
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["www.http01.example.test"]
        key = load_pem_private_key(bundle.private_key_pem.encode(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.public_key() == leaf.public_key()

        # Export without the token is refused.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.certificates.ExportCertificate(
                pb.ExportCertificateRequest(name=created.name)
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # Forced renewal: a new serial and a new key.
        await client.certificates.RenewCertificate(
            pb.RenewCertificateRequest(name=created.name), metadata=AUTH
        )
        renewed = await client.wait_for(
            created.name,
            lambda c: c.state == pb.STATE_ISSUED and c.serial_number != issued.serial_number,
        )
        bundle2 = await client.certificates.ExportCertificate(
            pb.ExportCertificateRequest(name=created.name), metadata=AUTH
        )
        assert bundle2.private_key_pem != bundle.private_key_pem
        assert len(await client.app.repository.orders_of("web")) == 2

        # Revocation: the CA reports it revoked and the issuer stops renewing.
        revoked = await client.certificates.RevokeCertificate(
            pb.RevokeCertificateRequest(
                name=created.name, reason=pb.REVOCATION_REASON_CESSATION_OF_OPERATION
            ),
            metadata=AUTH,
        )
        assert revoked.state == pb.STATE_REVOKED
        assert not revoked.HasField("next_attempt_time")
        assert ca.pebble.cert_status(renewed.serial_number)["Status"] == "Revoked"
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await client.certificates.RevokeCertificate(
                pb.RevokeCertificateRequest(
                    name=created.name, reason=pb.REVOCATION_REASON_SUPERSEDED
                ),
                metadata=AUTH,
            )
        assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info_reason(again.value) == "ALREADY_REVOKED"

        def sample(name: str, labels: dict[str, str] | None = None) -> float:
            value = metrics_registry.get_sample_value(name, labels or {})
            return value or 0.0

        assert sample("acmezone_issuer_issuance_attempts_total") == 2
        assert (
            sample("acmezone_issuer_acme_requests_total", {"endpoint": "newOrder", "status": "201"})
            == 2
        )
        assert sample("acmezone_issuer_issuance_duration_seconds_count") == 2
        assert sample(
            "acmezone_issuer_certificate_expiration_timestamp_seconds",
            {"certificate": "certificates/web"},
        ) == pytest.approx(renewed.not_after_time.ToDatetime().timestamp(), abs=1)


async def test_account_forgotten_by_a_restarted_ca_is_registered_again(
    tmp_path: Path, ca: CA, fake_dns: FakeDns
) -> None:
    port = free_port()
    pebble = LocalPebble(
        tmp_path / "pebble",
        dns_server=fake_dns.address,
        http01_port=port,
        tls_dir=ca.pebble.tls_dir,
    )
    pebble.start()
    try:
        own = CA(pebble, port)
        async with running_issuer(tmp_path / "issuer", own) as client:
            account = await client.create_account()
            cert = await client.create_certificate(
                "again",
                dns_names=["again.example.test"],
                account=account.name,
                challenge_type=pb.CHALLENGE_TYPE_HTTP_01,
            )
            issued = await client.wait_for(cert.name, lambda c: c.state == pb.STATE_ISSUED)
            pebble.stop()
            pebble.start()  # same ports, no memory of any account
            await client.certificates.RenewCertificate(
                pb.RenewCertificateRequest(name=cert.name), metadata=AUTH
            )
            renewed = await client.wait_for(
                cert.name,
                lambda c: c.state == pb.STATE_ISSUED and c.serial_number != issued.serial_number,
            )
            assert renewed.failed_attempts == 0
            again = await client.accounts.GetAccount(
                apb.GetAccountRequest(name=account.name), metadata=AUTH
            )
            assert again.account_url != account.account_url
    finally:
        pebble.stop()


async def test_order_placed_just_before_an_interruption_is_adopted(tmp_path: Path, ca: CA) -> None:
    async with running_issuer(tmp_path, ca) as client:
        account = await client.create_account()
        account_row = await client.app.repository.get_account(account.name.split("/")[1])
        acme = client.app.accounts.client_for(account_row)
        # A run asked the CA for an order and stopped before recording it.
        lost = await acme.new_order(["adopt.example.test"], "")
        now = datetime.now(UTC)
        row = certificate_row("adopt", account_row.id, ["adopt.example.test"], now)
        row.state, row.stage = "issuing", "ordering"
        await client.app.repository.insert_certificate(row)
        client.app.reconciler.wake()

        issued = await client.wait_for("certificates/adopt", lambda c: c.state == pb.STATE_ISSUED)
        assert issued.failed_attempts == 0
        assert [o.order_url for o in await client.app.repository.orders_of("adopt")] == [lost.url]
        orders = await acme.account_orders()
        assert orders is not None
        mine = [
            u for u in orders if (await acme.get_order(u)).identifiers == ("adopt.example.test",)
        ]
        assert mine == [lost.url]


def certificate_row(
    certificate_id: str, account_id: str, names: list[str], now: datetime
) -> CertificateRow:
    """A stored certificate for HTTP-01, due now."""
    row = repository_certificate(certificate_id, account_id)
    row.dns_names = names
    row.challenge_type = "http-01"
    row.next_attempt_time = now
    return row
