"""DNS-01 through a DNSSEC-signed challenge zone, end to end: Pebble resolves through Unbound,
a validating resolver that trusts only the challenge zone's DS record, as a CA must since
ballot SC-085v2; the issuer delegates through the usual CNAME in the (unsigned) parent."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.flags
import pytest
from prometheus_client import CollectorRegistry

from acmezone.issuer.v1 import certificate_service_pb2 as pb
from acmezone_clients.devpebble import LocalPebble
from acmezone_common.testing import free_port
from acmezone_dns.dnssec.keys import ZoneKey
from tests.dns.dnssec_support import make_keys
from tests.dns.unbound_support import Unbound, ds_anchor, unbound_or_skip
from tests.e2e.conftest import CHALLENGE_ZONE, Ports, System, running_system
from tests.issuer.conftest import AUTH, CA

pytestmark = pytest.mark.slow


@pytest.fixture
def signing_keys(tmp_path: Path) -> tuple[Path, ZoneKey]:
    directory = tmp_path / "dnssec-keys"
    (key,) = make_keys(directory, [CHALLENGE_ZONE])
    return directory, key


@contextmanager
def validating_ca(
    tmp_path: Path, e2e_ca: CA, ports: Ports, anchor: ZoneKey
) -> Iterator[tuple[LocalPebble, Unbound]]:
    """A Pebble whose resolver is an Unbound trusting `anchor`'s DS for the challenge zone."""
    resolver = Unbound(
        tmp_path / "unbound",
        {CHALLENGE_ZONE: ports.dns, "example.test": ports.dns},
        [ds_anchor(anchor)],
    ).start()
    pebble = LocalPebble(
        tmp_path / "pebble",
        dns_server=f"127.0.0.1:{resolver.port}",
        http01_port=free_port(),
        tls_dir=e2e_ca.pebble.tls_dir,
    )
    pebble.start()
    try:
        yield pebble, resolver
    finally:
        pebble.stop()
        resolver.stop()


async def _delegate(system: System, domain: str) -> None:
    delegation = await system.client.certificates.CheckDelegation(
        pb.CheckDelegationRequest(domain=domain), metadata=AUTH
    )
    await system.add_cname(delegation.domain, delegation.cname_target)


async def test_pebble_issues_a_wildcard_through_the_signed_zone(
    tmp_path: Path,
    e2e_ca: CA,
    ports: Ports,
    metrics_registry: CollectorRegistry,
    signing_keys: tuple[Path, ZoneKey],
) -> None:
    unbound_or_skip()
    directory, key = signing_keys
    with validating_ca(tmp_path, e2e_ca, ports, key) as (pebble, resolver):
        async with running_system(
            tmp_path, e2e_ca, ports, metrics_registry, dns_extra={"dnssec_key_dir": directory}
        ) as system:
            await _delegate(system, "*.signed.example.test")
            client = system.client
            account = await client.create_account(directory_url=pebble.directory_url)
            cert = await client.create_certificate(
                "signed",
                dns_names=["*.signed.example.test", "signed.example.test"],
                account=account.name,
            )
            issued = await client.wait_for(
                cert.name, lambda c: c.state in (pb.STATE_ISSUED, pb.STATE_FAILED)
            )
            assert issued.state == pb.STATE_ISSUED, issued.last_failure
            # What the CA's resolver saw of the zone was secure.
            dnskey = await resolver.query(CHALLENGE_ZONE, "DNSKEY")
            assert dnskey.flags & dns.flags.AD
            assert "validation failure" not in resolver.log.read_text()


async def test_a_zone_the_resolver_cannot_validate_gets_no_certificate(
    tmp_path: Path,
    e2e_ca: CA,
    ports: Ports,
    metrics_registry: CollectorRegistry,
    signing_keys: tuple[Path, ZoneKey],
) -> None:
    """The resolver trusts another key: the TXT answer is bogus, the CA sees SERVFAIL, and
    no certificate is issued (a DNSSEC failure is never permission to issue)."""
    unbound_or_skip()
    directory, _ = signing_keys
    (stranger,) = make_keys(tmp_path / "other-keys", [CHALLENGE_ZONE])
    with validating_ca(tmp_path, e2e_ca, ports, stranger) as (pebble, resolver):
        async with running_system(
            tmp_path, e2e_ca, ports, metrics_registry, dns_extra={"dnssec_key_dir": directory}
        ) as system:
            await _delegate(system, "bogus.example.test")
            client = system.client
            account = await client.create_account(directory_url=pebble.directory_url)
            cert = await client.create_certificate(
                "bogus", dns_names=["bogus.example.test"], account=account.name
            )
            failed = await client.wait_for(
                cert.name, lambda c: c.state in (pb.STATE_ISSUED, pb.STATE_FAILED)
            )
            assert failed.state == pb.STATE_FAILED
            assert failed.last_failure.reason == "VALIDATION_FAILED"
            assert "validation failure" in resolver.log.read_text()
