"""certbot 2.1 with its dns-rfc2136 plugin (Debian `python3-certbot-dns-rfc2136`) gets a wildcard
and apex certificate from a real Pebble through delegation: the plugin never follows the
`_acme-challenge` CNAME; it finds the customer zone `example.test` (a static zone of our dns) with
a signed SOA query and sends its UPDATE there, and with the registry's `UPDATE_FOLLOW_CNAMES` on
the change lands on the CNAME's target in the challenge zone, where Pebble finds it. The CNAME is
added to the zone file while the dns service runs (live zones, no restart)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from prometheus_client import CollectorRegistry

from acmezone.registry.v1 import registration_service_pb2 as reg_pb2
from acmezone.registry.v1 import registration_service_pb2_grpc as reg_grpc
from acmezone.registry.v1 import tsig_key_service_pb2 as key_pb2
from acmezone.registry.v1 import tsig_key_service_pb2_grpc as key_grpc
from acmezone_common.testing import wait_for_serving
from acmezone_dns.app import DnsApp
from acmezone_dns.settings import DnsSettings
from acmezone_registry.app import RegistryApp
from acmezone_registry.settings import RegistrySettings
from tests.e2e.conftest import CHALLENGE_ZONE, REGISTRY_GRACE, Ports, zone_text
from tests.issuer.conftest import CA

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("certbot") is None, reason="certbot is not installed"),
]


@pytest.fixture
async def stack(tmp_path: Path, ports: Ports) -> AsyncIterator[tuple[RegistryApp, DnsApp]]:
    registry = RegistryApp(
        RegistrySettings(
            grpc_address="127.0.0.1:0",
            http_address="127.0.0.1:0",
            metrics_address="127.0.0.1:0",
            database_url=f"sqlite:///{tmp_path}/registry.db",
            zone=CHALLENGE_ZONE,
            password_scrypt_n=1024,
            update_follow_cnames=True,
        ),
        CollectorRegistry(),
    )
    await registry.start()
    zone_file = tmp_path / "example.test.zone"
    zone_file.write_text(zone_text({}))
    dns_app = DnsApp(
        DnsSettings(
            grpc_address="127.0.0.1:0",
            metrics_address="127.0.0.1:0",
            dns_addresses=[f"127.0.0.1:{ports.dns}"],
            registry_target=str(registry.grpc_address),
            zone=CHALLENGE_ZONE,
            zone_files=[str(zone_file)],
            zone_reload_interval_seconds=0,
            txt_ttl=0,
            soa_minimum=0,
        ),
        CollectorRegistry(),
    )
    try:
        await dns_app.start()
        await wait_for_serving(str(dns_app.grpc_address))
        yield registry, dns_app
    finally:
        await dns_app.stop(grace=0)
        await registry.stop(grace=REGISTRY_GRACE)


async def test_certbot_dns_rfc2136_issues_a_wildcard_through_delegation(
    stack: tuple[RegistryApp, DnsApp], e2e_ca: CA, tmp_path: Path, ports: Ports
) -> None:
    registry, dns_app = stack
    domain = "certbot.example.test"
    async with grpc.aio.insecure_channel(str(registry.grpc_address)) as channel:
        registration = await reg_grpc.RegistrationServiceStub(channel).CreateRegistration(
            reg_pb2.CreateRegistrationRequest()
        )
        key = await key_grpc.TsigKeyServiceStub(channel).CreateTsigKey(
            key_pb2.CreateTsigKeyRequest(
                parent=registration.name,
                tsig_key=key_pb2.TsigKey(algorithm=key_pb2.TSIG_ALGORITHM_HMAC_SHA256),
            )
        )
    zone_file = tmp_path / "example.test.zone"
    zone_file.write_text(zone_text({domain: registration.fulldomain.rstrip(".")}))
    assert await dns_app.reloader.reload()  # what the poll or SIGHUP would do
    credentials = tmp_path / "rfc2136.ini"
    credentials.write_text(
        "dns_rfc2136_server = 127.0.0.1\n"
        f"dns_rfc2136_port = {ports.dns}\n"
        f"dns_rfc2136_name = {key.key_name}\n"
        f"dns_rfc2136_secret = {key.secret}\n"
        "dns_rfc2136_algorithm = HMAC-SHA256\n"
    )
    credentials.chmod(0o600)
    process = await asyncio.create_subprocess_exec(
        "certbot",
        "certonly",
        "--non-interactive",
        "--agree-tos",
        "--email",
        "certbot@example.test",
        "--no-eff-email",
        "--server",
        e2e_ca.directory_url,
        "--config-dir",
        str(tmp_path / "config"),
        "--work-dir",
        str(tmp_path / "work"),
        "--logs-dir",
        str(tmp_path / "logs"),
        "--authenticator",
        "dns-rfc2136",
        "--dns-rfc2136-credentials",
        str(credentials),
        "--dns-rfc2136-propagation-seconds",
        "1",
        "--cert-name",
        "delegated",
        "-d",
        f"*.{domain}",
        "-d",
        domain,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "REQUESTS_CA_BUNDLE": str(e2e_ca.ca_bundle),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    log = (tmp_path / "logs" / "letsencrypt.log").read_text(errors="replace")
    assert process.returncode == 0, output.decode(errors="replace") + log[-4000:]
    pem = (tmp_path / "config" / "live" / "delegated" / "fullchain.pem").read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert set(san.value.get_values_for_type(x509.DNSName)) == {domain, f"*.{domain}"}
    # The UPDATEs named the customer zone (found by certbot's own SOA search) and were applied:
    # two presents and two clean-ups, NOERROR over TCP.
    assert dns_app.update_stats.counts[len(dns_app.update_stats.counts) // 2] >= 4
