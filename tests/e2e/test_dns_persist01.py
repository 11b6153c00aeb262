"""dns-persist-01 end to end against a current upstream Pebble (ACMEZONE_TEST_PEBBLE): one
permanent `_validation-persist.<domain>` record, and no DNS write per order.

Delegated: the domain owner adds one CNAME from `_validation-persist.<domain>` into the challenge
zone; the issuer publishes the record there once, as a persistent registry value, and a renewal
then changes nothing at the registry. Published by the operator: the record (with a
`persistUntil`) sits in the dev zone itself; the issuer only reads it, shows `persistUntil` and
exports it as a metric.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from acmezone.issuer.v1 import certificate_service_pb2 as pb
from tests.e2e.conftest import Ports, running_system
from tests.issuer.conftest import AUTH, CA

pytestmark = pytest.mark.slow

PEBBLE_ISSUER = "pebble.letsencrypt.org"


async def test_wildcard_through_a_delegated_persistent_record_and_a_renewal_without_writes(
    tmp_path: Path, e2e_upstream_ca: CA, ports: Ports, metrics_registry: CollectorRegistry
) -> None:
    async with running_system(tmp_path, e2e_upstream_ca, ports, metrics_registry) as system:
        client = system.client
        account = await client.create_account()
        cert = await client.create_certificate(
            "persist",
            dns_names=["*.persist.example.test", "persist.example.test"],
            account=account.name,
            challenge_type=pb.CHALLENGE_TYPE_DNS_PERSIST_01,
        )
        waiting = await client.wait_for(
            cert.name, lambda c: c.state == pb.STATE_WAITING_FOR_DELEGATION
        )
        [delegation] = waiting.delegations
        assert delegation.cname_name == "_validation-persist.persist.example.test"
        assert delegation.challenge_type == pb.CHALLENGE_TYPE_DNS_PERSIST_01
        assert delegation.txt_value == (
            f"{PEBBLE_ISSUER}; accounturi={account.account_url}; policy=wildcard"
        )
        assert not delegation.ready
        assert not await system.issuer.repository.orders_of("persist")

        await system.add_cname(delegation.cname_name, delegation.cname_target)
        issued = await client.wait_for(cert.name, lambda c: c.state == pb.STATE_ISSUED, 90)
        subdomain = delegation.cname_target.split(".")[0]
        record = await system.registry.stores.txt_values.get_txt_record(subdomain)
        assert [(v.value, v.persistent, v.expire_time) for v in record.values] == [
            (delegation.txt_value, True, None)
        ]

        # A renewal: the record is found in place, so the registry sees no change at all.
        before = (await system.registry.stores.log.feed_status()).revision
        await client.certificates.RenewCertificate(
            pb.RenewCertificateRequest(name=cert.name), metadata=AUTH
        )
        renewed = await client.wait_for(
            cert.name,
            lambda c: c.state == pb.STATE_ISSUED and c.serial_number != issued.serial_number,
            90,
        )
        assert len(await system.issuer.repository.orders_of("persist")) == 2
        assert (await system.registry.stores.log.feed_status()).revision == before
        assert renewed.delegations[0].ready


async def test_a_record_the_operator_publishes_is_used_as_is_and_its_end_shown(
    tmp_path: Path, e2e_upstream_ca: CA, ports: Ports, metrics_registry: CollectorRegistry
) -> None:
    async with running_system(tmp_path, e2e_upstream_ca, ports, metrics_registry) as system:
        client = system.client
        account = await client.create_account()
        until = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
        await system.add_record(
            f'_validation-persist.direct TXT "{PEBBLE_ISSUER}; '
            f'accounturi={account.account_url}; persistUntil={int(until.timestamp())}"'
        )
        cert = await client.create_certificate(
            "direct",
            dns_names=["direct.example.test"],
            account=account.name,
            challenge_type=pb.CHALLENGE_TYPE_DNS_PERSIST_01,
        )
        issued = await client.wait_for(cert.name, lambda c: c.state == pb.STATE_ISSUED, 90)
        [delegation] = issued.delegations
        assert delegation.ready
        assert delegation.persist_until_time.ToDatetime(UTC) == until
        assert (
            metrics_registry.get_sample_value(
                "acmezone_issuer_dns_persist_until_timestamp_seconds",
                {"certificate": "certificates/direct"},
            )
            == until.timestamp()
        )
        # Nothing was written at the registration the issuer holds for the CNAME option.
        subdomain = delegation.cname_target.split(".")[0]
        assert (await system.registry.stores.txt_values.get_txt_record(subdomain)).values == ()


async def test_a_record_for_another_account_is_not_taken(
    tmp_path: Path, e2e_upstream_ca: CA, ports: Ports, metrics_registry: CollectorRegistry
) -> None:
    async with running_system(tmp_path, e2e_upstream_ca, ports, metrics_registry) as system:
        client = system.client
        account = await client.create_account()
        await system.add_record(
            f'_validation-persist.other TXT "{PEBBLE_ISSUER}; '
            'accounturi=https://127.0.0.1/my-account/999"'
        )
        cert = await client.create_certificate(
            "other",
            dns_names=["*.other.example.test"],
            account=account.name,
            challenge_type=pb.CHALLENGE_TYPE_DNS_PERSIST_01,
        )
        waiting = await client.wait_for(
            cert.name, lambda c: c.state == pb.STATE_WAITING_FOR_DELEGATION
        )
        [delegation] = waiting.delegations
        assert not delegation.ready
        assert "no TXT record for pebble.letsencrypt.org and this account" in delegation.detail
        assert account.account_url in delegation.txt_value
        assert not await system.issuer.repository.orders_of("other")
