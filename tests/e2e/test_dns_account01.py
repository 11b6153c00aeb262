"""dns-account-01 end to end: each ACME account validates at its own label, so two issuer
accounts and a plain dns-01 client (lego) obtain certificates for the same wildcard at once.

A current upstream Pebble (ACMEZONE_TEST_PEBBLE) offers dns-account-01 and validates through our
dns service: it asks `_<label>._acme-challenge.shared.example.test` for each issuer account and
`_acme-challenge.shared.example.test` for lego, and each owner name is a CNAME into a
registration of its own. Debian's Pebble offers no dns-account-01: the order then fails naming
what the CA offered.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from prometheus_client import CollectorRegistry

from acmezone.issuer.v1 import certificate_service_pb2 as pb
from acmezone.registry.v1 import registration_service_pb2 as reg_pb2
from acmezone.registry.v1 import registration_service_pb2_grpc as reg_grpc
from acmezone.registry.v1 import tsig_key_service_pb2 as key_pb2
from acmezone.registry.v1 import tsig_key_service_pb2_grpc as key_grpc
from acmezone_issuer.challenges import dns_account_label
from tests.e2e.conftest import Ports, running_system
from tests.e2e.test_lego import issued_names, lego
from tests.issuer.conftest import AUTH, CA

pytestmark = pytest.mark.slow

DOMAIN = "shared.example.test"
NAMES = [f"*.{DOMAIN}", DOMAIN]


def _sans(chain_pem: str) -> list[str]:
    leaf = x509.load_pem_x509_certificates(chain_pem.encode())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sorted(san.get_values_for_type(x509.DNSName))


async def test_two_accounts_and_lego_validate_one_wildcard_at_the_same_time(
    tmp_path: Path, e2e_upstream_ca: CA, ports: Ports, metrics_registry: CollectorRegistry
) -> None:
    async with running_system(tmp_path, e2e_upstream_ca, ports, metrics_registry) as system:
        client = system.client
        accounts = [await client.create_account(), await client.create_account()]
        certs = [
            await client.create_certificate(
                f"acct{i}",
                dns_names=NAMES,
                account=account.name,
                challenge_type=pb.CHALLENGE_TYPE_DNS_ACCOUNT_01,
            )
            for i, account in enumerate(accounts)
        ]
        cnames: dict[str, str] = {}
        for account, cert in zip(accounts, certs, strict=True):
            assert account.dns_account_label == dns_account_label(account.account_url)
            waiting = await client.wait_for(
                cert.name, lambda c: c.state == pb.STATE_WAITING_FOR_DELEGATION
            )
            owner = f"{account.dns_account_label}._acme-challenge.{DOMAIN}"
            assert [(d.cname_name, d.challenge_type, d.ready) for d in waiting.delegations] == [
                (owner, pb.CHALLENGE_TYPE_DNS_ACCOUNT_01, False)
            ]
            cnames[owner] = waiting.delegations[0].cname_target
            # CheckDelegation names the same owner for that account.
            checked = await client.certificates.CheckDelegation(
                pb.CheckDelegationRequest(
                    domain=f"*.{DOMAIN}",
                    challenge_type=pb.CHALLENGE_TYPE_DNS_ACCOUNT_01,
                    account=account.name,
                ),
                metadata=AUTH,
            )
            assert (checked.cname_name, checked.cname_target) == (owner, cnames[owner])
        assert len(set(cnames.values())) == 2, "each account has a registration of its own"
        assert not await system.issuer.repository.orders_of("acct0")

        # lego's own registration (RFC 2136 with a TSIG key) at the plain _acme-challenge name.
        async with grpc.aio.insecure_channel(str(system.registry.grpc_address)) as channel:
            registration = await reg_grpc.RegistrationServiceStub(channel).CreateRegistration(
                reg_pb2.CreateRegistrationRequest()
            )
            key = await key_grpc.TsigKeyServiceStub(channel).CreateTsigKey(
                key_pb2.CreateTsigKeyRequest(
                    parent=registration.name,
                    tsig_key=key_pb2.TsigKey(algorithm=key_pb2.TSIG_ALGORITHM_HMAC_SHA256),
                )
            )
        await system.add_cnames({**cnames, DOMAIN: registration.fulldomain})
        dns_address = f"127.0.0.1:{ports.dns}"
        lego_run = asyncio.create_task(
            lego(
                e2e_upstream_ca,
                tmp_path,
                {
                    "RFC2136_NAMESERVER": dns_address,
                    "RFC2136_TSIG_KEY": key.key_name,
                    "RFC2136_TSIG_SECRET": key.secret,
                    "RFC2136_TSIG_ALGORITHM": "hmac-sha256.",
                    "RFC2136_SEQUENCE_INTERVAL": "1",
                    "RFC2136_PROPAGATION_TIMEOUT": "30",
                    "RFC2136_POLLING_INTERVAL": "1",
                    "RFC2136_TTL": "1",
                },
                "--dns",
                "rfc2136",
                "--dns.resolvers",
                dns_address,
                "--dns.disable-cp",
                "--domains",
                f"*.{DOMAIN}",
                "--domains",
                DOMAIN,
                "run",
            )
        )
        issued = await asyncio.gather(
            *(client.wait_for(c.name, lambda c: c.state == pb.STATE_ISSUED, 90) for c in certs)
        )
        code, output = await lego_run
        assert code == 0, output
        assert issued_names(tmp_path, f"_.{DOMAIN}") == set(NAMES)
        for cert in issued:
            assert all(d.ready for d in cert.delegations)
            bundle = await client.certificates.ExportCertificate(
                pb.ExportCertificateRequest(name=cert.name), metadata=AUTH
            )
            assert _sans(bundle.certificate_chain_pem) == sorted(NAMES)
            assert len(await system.issuer.repository.orders_of(cert.name.split("/")[1])) == 1


async def test_auto_takes_dns01_where_only_acme_challenge_is_delegated(
    tmp_path: Path, e2e_upstream_ca: CA, ports: Ports, metrics_registry: CollectorRegistry
) -> None:
    async with running_system(tmp_path, e2e_upstream_ca, ports, metrics_registry) as system:
        client = system.client
        account = await client.create_account()
        cert = await client.create_certificate(
            "auto",
            dns_names=["*.auto.example.test", "example.test"],
            account=account.name,
            challenge_type=pb.CHALLENGE_TYPE_AUTO,
        )
        waiting = await client.wait_for(
            cert.name, lambda c: c.state == pb.STATE_WAITING_FOR_DELEGATION
        )
        by_owner = {d.cname_name: d for d in waiting.delegations}
        label = account.dns_account_label
        assert set(by_owner) == {
            "_acme-challenge.auto.example.test",
            f"{label}._acme-challenge.auto.example.test",
            "_acme-challenge.example.test",
            f"{label}._acme-challenge.example.test",
        }
        # Only the wildcard's domain needs a CNAME: the apex can fall back to HTTP-01.
        ready = {c.type: c for c in waiting.conditions}["DelegationReady"]
        assert ready.message == (
            f"missing: {label}._acme-challenge.auto.example.test, _acme-challenge.auto.example.test"
        )
        await system.add_cname(
            "auto.example.test", by_owner["_acme-challenge.auto.example.test"].cname_target
        )
        issued = await client.wait_for(cert.name, lambda c: c.state == pb.STATE_ISSUED, 90)
        assert {c.type: c for c in issued.conditions}["DelegationReady"].status == (
            pb.CONDITION_STATUS_TRUE
        )


async def test_a_ca_without_dns_account01_fails_naming_what_it_offers(
    tmp_path: Path, e2e_ca: CA, ports: Ports, metrics_registry: CollectorRegistry
) -> None:
    async with running_system(tmp_path, e2e_ca, ports, metrics_registry) as system:
        client = system.client
        account = await client.create_account()
        cert = await client.create_certificate(
            "old",
            dns_names=["*.old.example.test"],
            account=account.name,
            challenge_type=pb.CHALLENGE_TYPE_DNS_ACCOUNT_01,
        )
        waiting = await client.wait_for(
            cert.name, lambda c: c.state == pb.STATE_WAITING_FOR_DELEGATION
        )
        delegation = waiting.delegations[0]
        await system.add_cname(delegation.cname_name, delegation.cname_target)
        failed = await client.wait_for(cert.name, lambda c: c.state == pb.STATE_FAILED)
        assert failed.last_failure.stage == pb.STAGE_PRESENTING
        message = failed.last_failure.message
        assert "*.old.example.test" in message
        assert "allowed: dns-account-01; offered: dns-01" in message
