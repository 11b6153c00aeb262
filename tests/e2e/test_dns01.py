"""DNS-01 through delegation, end to end: Pebble validates through our dns service, which the
registry feeds with the TXT values the issuer sets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rdatatype
from cryptography import x509
from prometheus_client import CollectorRegistry

from acmezone.issuer.v1 import certificate_service_pb2 as pb
from tests.e2e.conftest import Ports, running_system
from tests.issuer.conftest import AUTH, CA, FakeDns


async def _txt(port: int, name: str) -> list[str]:
    query = dns.message.make_query(name, dns.rdatatype.TXT)
    response = await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=2)
    return [
        b"".join(rdata.strings).decode()
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.TXT
        for rdata in rrset
    ]


async def test_wildcard_and_apex_wait_for_cname_then_issue(
    tmp_path: Path, e2e_ca: CA, ports: Ports, metrics_registry: CollectorRegistry
) -> None:
    async with running_system(tmp_path, e2e_ca, ports, metrics_registry) as system:
        client = system.client
        account = await client.create_account()
        cert = await client.create_certificate(
            "wild", dns_names=["*.wild.example.test", "wild.example.test"], account=account.name
        )

        waiting = await client.wait_for(
            cert.name, lambda c: c.state == pb.STATE_WAITING_FOR_DELEGATION
        )
        assert [(d.domain, d.cname_name, d.ready) for d in waiting.delegations] == [
            ("wild.example.test", "_acme-challenge.wild.example.test", False)
        ]
        target = waiting.delegations[0].cname_target
        assert target.endswith(".acme.example.test")
        assert waiting.delegations[0].detail
        conditions = {c.type: c for c in waiting.conditions}
        assert conditions["DelegationReady"].status == pb.CONDITION_STATUS_FALSE
        assert "_acme-challenge.wild.example.test" in conditions["DelegationReady"].message
        # No order is placed while the CNAME is missing, however often it is checked.
        await client.wait_for(cert.name, lambda c: c.revision >= waiting.revision + 4)
        assert await system.issuer.repository.orders_of("wild") == []
        assert not metrics_registry.get_sample_value(
            "acmezone_issuer_acme_requests_total", {"endpoint": "newOrder", "status": "201"}
        )

        await system.add_cname("wild.example.test", target)
        issued = await client.wait_for(cert.name, lambda c: c.state == pb.STATE_ISSUED)
        assert len(await system.issuer.repository.orders_of("wild")) == 1
        assert all(d.ready for d in issued.delegations)

        bundle = await client.certificates.ExportCertificate(
            pb.ExportCertificateRequest(name=cert.name), metadata=AUTH
        )
        chain = x509.load_pem_x509_certificates(bundle.certificate_chain_pem.encode())
        root = x509.load_pem_x509_certificate(e2e_ca.pebble.root_pem().encode())
        for child, parent in zip(chain, [*chain[1:], root], strict=True):
            child.verify_directly_issued_by(parent)
        san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sorted(san.get_values_for_type(x509.DNSName)) == [
            "*.wild.example.test",
            "wild.example.test",
        ]
        # The TXT values are withdrawn once the certificate is stored.
        for _ in range(100):
            if await _txt(ports.dns, target) == []:
                break
            await asyncio.sleep(0.05)
        assert await _txt(ports.dns, target) == []

        # The same registration (and CNAME) serves the renewal.
        await client.certificates.RenewCertificate(
            pb.RenewCertificateRequest(name=cert.name), metadata=AUTH
        )
        renewed = await client.wait_for(
            cert.name,
            lambda c: c.state == pb.STATE_ISSUED and c.serial_number != issued.serial_number,
        )
        assert renewed.delegations[0].cname_target == target
        assert len(await system.issuer.repository.orders_of("wild")) == 2


async def test_wrong_txt_value_fails_with_the_cas_error(
    tmp_path: Path,
    e2e_ca: CA,
    split_view_ca: CA,
    fake_dns: FakeDns,
    ports: Ports,
    metrics_registry: CollectorRegistry,
) -> None:
    async with running_system(tmp_path, e2e_ca, ports, metrics_registry) as system:
        client = system.client
        # CheckDelegation creates the registration and names the CNAME before any certificate.
        delegation = await client.certificates.CheckDelegation(
            pb.CheckDelegationRequest(domain="*.bad.example.test"), metadata=AUTH
        )
        assert (delegation.domain, delegation.cname_name, delegation.ready) == (
            "bad.example.test",
            "_acme-challenge.bad.example.test",
            False,
        )
        await system.add_cname("bad.example.test", delegation.cname_target)
        again = await client.certificates.CheckDelegation(
            pb.CheckDelegationRequest(domain="bad.example.test"), metadata=AUTH
        )
        assert again.ready
        assert again.cname_target == delegation.cname_target

        # The CA's resolver sees a wrong value; ours sees the right one.
        fake_dns.set_txt("_acme-challenge.bad.example.test.", "W" * 43)
        account = await client.create_account(directory_url=split_view_ca.directory_url)
        cert = await client.create_certificate(
            "bad", dns_names=["bad.example.test"], account=account.name
        )
        failed = await client.wait_for(cert.name, lambda c: c.state == pb.STATE_FAILED)
        failure = failed.last_failure
        assert failure.reason == "VALIDATION_FAILED"
        assert failure.acme_problem_type == "urn:ietf:params:acme:error:unauthorized"
        assert "Correct value not found for DNS challenge" in failure.message
        assert failure.stage == pb.STAGE_VALIDATING
        assert failed.failed_attempts == 1
        assert failed.order_url == ""
        assert failed.next_attempt_time.ToDatetime() > failed.update_time.ToDatetime()
        ready = {c.type: c for c in failed.conditions}["Ready"]
        assert ready.status == pb.CONDITION_STATUS_FALSE
        assert "Correct value not found" in ready.message
        assert (
            metrics_registry.get_sample_value(
                "acmezone_issuer_issuance_failures_total", {"reason": "VALIDATION_FAILED"}
            )
            == 1
        )


async def test_registry_outage_mid_order_is_retried_and_resumes_the_order(
    tmp_path: Path, e2e_ca: CA, ports: Ports, metrics_registry: CollectorRegistry
) -> None:
    async with running_system(
        tmp_path, e2e_ca, ports, metrics_registry, retry_base_seconds=0.5, retry_max_seconds=1.0
    ) as system:
        client = system.client
        delegation = await client.certificates.CheckDelegation(
            pb.CheckDelegationRequest(domain="outage.example.test"), metadata=AUTH
        )
        await system.add_cname("outage.example.test", delegation.cname_target)
        account = await client.create_account()
        await system.stop_registry()  # the dns service keeps answering from its last state

        cert = await client.create_certificate(
            "outage", dns_names=["outage.example.test"], account=account.name
        )
        failed = await client.wait_for(cert.name, lambda c: c.state == pb.STATE_FAILED)
        assert failed.last_failure.reason == "REGISTRY_ERROR"
        assert "UNAVAILABLE" in failed.last_failure.message
        assert failed.last_failure.stage == pb.STAGE_PRESENTING
        assert failed.order_url  # kept: the retry resumes this order
        order_url = failed.order_url
        # Retries back off and keep failing while the registry is away.
        await client.wait_for(cert.name, lambda c: c.failed_attempts >= 2)

        await system.start_registry()
        issued = await client.wait_for(cert.name, lambda c: c.state == pb.STATE_ISSUED)
        assert issued.failed_attempts == 0
        assert [o.order_url for o in await system.issuer.repository.orders_of("outage")] == [
            order_url
        ]
        assert (
            metrics_registry.get_sample_value(
                "acmezone_issuer_issuance_failures_total", {"reason": "REGISTRY_ERROR"}
            )
            or 0
        ) >= 2
