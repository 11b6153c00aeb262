"""certbot 2.1 with its dns-rfc2136 plugin (Debian `python3-certbot-dns-rfc2136`) gets a wildcard
and apex certificate from a real Pebble through delegation: the plugin never follows the
`_acme-challenge` CNAME; it finds the customer zone `example.test` (a static zone of our dns) with
a signed SOA query and sends its UPDATE there, and with the registry's `UPDATE_FOLLOW_CNAMES` on
the change lands on the CNAME's target in the challenge zone, where Pebble finds it. The CNAME is
added to the zone file while the dns service runs (live zones, no restart)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

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
from tests.common.local_ca import LocalCa
from tests.e2e.conftest import CHALLENGE_ZONE, REGISTRY_GRACE, Ports, zone_text
from tests.issuer.conftest import CA

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("certbot") is None, reason="certbot is not installed"),
]


@asynccontextmanager
async def running_stack(
    tmp_path: Path, ports: Ports, **registry_settings: Any
) -> AsyncIterator[tuple[RegistryApp, DnsApp]]:
    """The registry (settings overridable) and dns on the port Pebble resolves through,
    serving the dev zone file."""
    registry = RegistryApp(
        RegistrySettings(
            grpc_address="127.0.0.1:0",
            http_address="127.0.0.1:0",
            metrics_address="127.0.0.1:0",
            database_url=f"sqlite:///{tmp_path}/registry.db",
            zone=CHALLENGE_ZONE,
            password_scrypt_n=1024,
            **registry_settings,
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


@pytest.fixture
async def stack(tmp_path: Path, ports: Ports) -> AsyncIterator[tuple[RegistryApp, DnsApp]]:
    async with running_stack(tmp_path, ports, update_follow_cnames=True) as running:
        yield running


async def certbot(tmp_path: Path, ca: CA, env: dict[str, str], *args: str) -> tuple[int, str]:
    """certbot certonly against `ca` with its state under `tmp_path`; exit code and output
    (its log's tail included)."""
    process = await asyncio.create_subprocess_exec(
        "certbot",
        "certonly",
        "--non-interactive",
        "--agree-tos",
        "--email",
        "certbot@example.test",
        "--no-eff-email",
        "--server",
        ca.directory_url,
        "--config-dir",
        str(tmp_path / "config"),
        "--work-dir",
        str(tmp_path / "work"),
        "--logs-dir",
        str(tmp_path / "logs"),
        *args,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "REQUESTS_CA_BUNDLE": str(ca.ca_bundle),
            **env,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    log_file = tmp_path / "logs" / "letsencrypt.log"
    log = log_file.read_text(errors="replace")[-4000:] if log_file.exists() else ""
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace") + log


def issued_names(tmp_path: Path, cert_name: str) -> set[str]:
    pem = (tmp_path / "config" / "live" / cert_name / "fullchain.pem").read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return set(san.value.get_values_for_type(x509.DNSName))


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
    code, output = await certbot(
        tmp_path,
        e2e_ca,
        {},
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
    )
    assert code == 0, output
    assert issued_names(tmp_path, "delegated") == {domain, f"*.{domain}"}
    # The UPDATEs named the customer zone (found by certbot's own SOA search) and were applied:
    # two presents and two clean-ups, NOERROR over TCP.
    assert dns_app.update_stats.counts[len(dns_app.update_stats.counts) // 2] >= 4


HOOK = Path(__file__).with_name("acme_dns_auth_hook.py")


async def test_certbot_acme_dns_hook_over_https(tmp_path: Path, ports: Ports, e2e_ca: CA) -> None:
    """certbot's manual mode with an acme-dns auth hook (acme_dns_auth_hook.py, python-requests)
    against the registry's HTTPS API with a certificate from a local CA, as certbot users run
    acme-dns: the first run registers and prints the CNAME to add (and fails: it is not there
    yet), the next one updates over HTTPS and Pebble validates through our dns."""
    ca = LocalCa(tmp_path / "api-ca")
    api = ca.issue("api")
    domain = "hook.example.test"
    storage = tmp_path / "acmedns.json"
    # requests reads one bundle: Pebble's CA (for certbot) and the API's, as an operator whose
    # acme-dns has a private CA would configure it.
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(e2e_ca.ca_bundle.read_bytes() + ca.cert_file.read_bytes())
    async with running_stack(
        tmp_path,
        ports,
        http_tls_cert_file=api.cert_file,
        http_tls_key_file=api.key_file,
        # /update is answered once the dns replica serves the value: certbot's manual mode
        # asks for validation as soon as the hook returns.
        wait_for_replicas_seconds=5.0,
    ) as (registry, dns_app):
        url = f"https://localhost:{registry.http_address.port}"
        hook_env = {"ACMEDNS_URL": url, "STORAGE_PATH": str(storage)}
        args = ("--manual", "--preferred-challenges", "dns", "--cert-name", "hook")
        args += ("--manual-auth-hook", f"/usr/bin/python3 {HOOK}", "-d", f"*.{domain}")
        args += ("-d", domain)

        # Trusting only Pebble's CA, the hook's HTTPS request is refused: nothing registered.
        code, output = await certbot(tmp_path, e2e_ca, hook_env, *args)
        assert code != 0
        assert "CERTIFICATE_VERIFY_FAILED" in output, output
        assert not storage.exists()

        trusted = {**hook_env, "REQUESTS_CA_BUNDLE": str(bundle)}
        code, output = await certbot(tmp_path, e2e_ca, trusted, *args)
        assert code != 0  # no CNAME yet
        account = json.loads(storage.read_text())[domain]
        assert f"_acme-challenge.{domain} CNAME {account['fulldomain']}." in output, output
        assert (
            await registry.stores.registrations.get_registration(account["subdomain"]) is not None
        )

        zone_file = tmp_path / "example.test.zone"
        zone_file.write_text(zone_text({domain: account["fulldomain"]}))
        assert await dns_app.reloader.reload()
        code, output = await certbot(tmp_path, e2e_ca, trusted, *args)
        assert code == 0, output
    assert issued_names(tmp_path, "hook") == {domain, f"*.{domain}"}
    assert list(json.loads(storage.read_text())) == [domain]  # one account, reused
