"""lego (Debian package `lego`, 4.9) issues a wildcard + apex certificate from a real Pebble that
validates through our dns service, with its rfc2136 provider: TSIG-signed UPDATEs to our dns
service, forwarded to the registry. lego follows the `_acme-challenge` CNAME of the dev zone
`example.test` to the registration's name, finds the zone by asking our dns for SOA records, and
solves the two authorizations (same TXT name) one after the other.

lego's acme-dns provider (goacmedns) is run for real too, against the registry's HTTPS API.

`--dns.disable-cp`: lego 4.9's propagation check also asks every authoritative server of the zone
by NS name on port 53, which a loopback test on a free port cannot offer. lego still waits until
`--dns.resolvers` (our dns) answers, and Pebble then validates against our dns.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import dns.rcode
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
from tests.dns.conftest import query_udp
from tests.e2e.conftest import CHALLENGE_ZONE, REGISTRY_GRACE, Ports, zone_text
from tests.issuer.conftest import CA

pytestmark = pytest.mark.slow


class Stack:
    """Registry and dns (on the port Pebble resolves through) with the dev zone file."""

    def __init__(self, workdir: Path, ports: Ports, **registry_settings: Any) -> None:
        self.workdir = workdir
        self.ports = ports
        self.cnames: dict[str, str] = {}
        self.registry = RegistryApp(
            RegistrySettings(
                grpc_address="127.0.0.1:0",
                http_address="127.0.0.1:0",
                metrics_address="127.0.0.1:0",
                database_url=f"sqlite:///{workdir}/registry.db",
                zone=CHALLENGE_ZONE,
                **registry_settings,
            ),
            CollectorRegistry(),
        )
        self.dns: DnsApp | None = None

    @property
    def dns_address(self) -> str:
        return f"127.0.0.1:{self.ports.dns}"

    async def start_dns(self) -> None:
        zone_file = self.workdir / "example.test.zone"
        zone_file.write_text(zone_text(self.cnames))
        self.dns = DnsApp(
            DnsSettings(
                grpc_address="127.0.0.1:0",
                metrics_address="127.0.0.1:0",
                dns_addresses=[self.dns_address],
                registry_target=str(self.registry.grpc_address),
                zone=CHALLENGE_ZONE,
                zone_files=[str(zone_file)],
                txt_ttl=0,
                soa_minimum=0,
            ),
            CollectorRegistry(),
        )
        await self.dns.start()
        await wait_for_serving(str(self.dns.grpc_address))

    async def set_cname(self, name: str, target: str) -> None:
        """The domain owner adds `_acme-challenge.<name> CNAME <target>` (the zone file is
        rewritten and the dns service restarted, as in tests/e2e/conftest.py)."""
        self.cnames[name] = target
        if self.dns is not None:
            await self.dns.stop(grace=0)
        await self.start_dns()


@asynccontextmanager
async def running_stack(
    workdir: Path, ports: Ports, **registry_settings: Any
) -> AsyncIterator[Stack]:
    opened = Stack(workdir, ports, **registry_settings)
    await opened.registry.start()
    try:
        await opened.start_dns()
        yield opened
    finally:
        if opened.dns is not None:
            await opened.dns.stop(grace=0)
        await opened.registry.stop(grace=REGISTRY_GRACE)


@pytest.fixture
async def stack(tmp_path: Path, ports: Ports) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path, ports) as opened:
        yield opened


async def lego(ca: CA, workdir: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run lego with its state under `workdir`, trusting Pebble's TLS CA."""
    binary = shutil.which("lego")
    assert binary, "lego missing: run `make system-deps` (Debian package lego)"
    process = await asyncio.create_subprocess_exec(
        binary,
        "--server",
        ca.directory_url,
        "--accept-tos",
        "--email",
        "lego@example.test",
        "--path",
        str(workdir / "lego"),
        "--key-type",
        "ec256",
        *args,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(workdir),
            "LEGO_CA_CERTIFICATES": str(ca.ca_bundle),
            **env,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


def issued_names(workdir: Path, domain: str) -> set[str]:
    pem = (workdir / "lego" / "certificates" / f"{domain}.crt").read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return set(san.value.get_values_for_type(x509.DNSName))


async def test_lego_rfc2136_issues_wildcard_and_apex_following_the_cname(
    stack: Stack, e2e_ca: CA, tmp_path: Path
) -> None:
    domain = "lego-rfc.example.test"
    async with grpc.aio.insecure_channel(str(stack.registry.grpc_address)) as channel:
        registration = await reg_grpc.RegistrationServiceStub(channel).CreateRegistration(
            reg_pb2.CreateRegistrationRequest()
        )
        key = await key_grpc.TsigKeyServiceStub(channel).CreateTsigKey(
            key_pb2.CreateTsigKeyRequest(
                parent=registration.name,
                tsig_key=key_pb2.TsigKey(algorithm=key_pb2.TSIG_ALGORITHM_HMAC_SHA256),
            )
        )
    await stack.set_cname(domain, registration.fulldomain)
    code, output = await lego(
        e2e_ca,
        tmp_path,
        {
            "RFC2136_NAMESERVER": stack.dns_address,
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
        stack.dns_address,
        "--dns.disable-cp",
        "--domains",
        f"*.{domain}",
        "--domains",
        domain,
        "run",
    )
    assert code == 0, output
    assert issued_names(tmp_path, f"_.{domain}") == {domain, f"*.{domain}"}
    assert stack.dns is not None
    assert stack.dns.update_stats.counts[0] >= 4  # 2 presents + 2 clean-ups, NOERROR over UDP
    # lego cleaned up: the registration's name holds no challenge any more.
    reply = await query_udp(stack.dns.dns_addresses[0], f"{registration.fulldomain}.")
    assert reply.rcode() == dns.rcode.NOERROR
    assert not reply.answer


async def test_lego_acme_dns_over_https_registers_then_issues(
    tmp_path: Path, ports: Ports, e2e_ca: CA
) -> None:
    """lego's acme-dns provider (goacmedns inside) against the registry's HTTPS API, trusting
    a local CA through SSL_CERT_FILE (Go's roots; LEGO_CA_CERTIFICATES is for the ACME server
    only). As lego documents it: the first run registers an account, stores it and stops,
    asking for the CNAME; once the domain owner adds it, the next run updates the TXT over
    HTTPS and Pebble validates through our dns."""
    ca = LocalCa(tmp_path / "api-ca")
    api = ca.issue("api")
    domain = "lego-acmedns.example.test"
    storage = tmp_path / "acme-dns-accounts.json"
    async with running_stack(
        tmp_path,
        ports,
        http_tls_cert_file=api.cert_file,
        http_tls_key_file=api.key_file,
        # The update is answered once the dns replica serves it: lego's check is disabled.
        wait_for_replicas_seconds=5.0,
    ) as stack:
        base = f"https://localhost:{stack.registry.http_address.port}"
        env = {"ACME_DNS_API_BASE": base, "ACME_DNS_STORAGE_PATH": str(storage)}
        args = ("--dns", "acme-dns", "--dns.disable-cp", "--domains", f"*.{domain}")
        args += ("--domains", domain, "run")

        # Without the local CA, Go's system roots refuse the API's certificate.
        code, output = await lego(e2e_ca, tmp_path, env, *args)
        if "unrecognized DNS provider: acme-dns" in output:
            pytest.skip(
                "this lego is built without the acme-dns provider (Debian's 4.9: goacmedns is "
                "not packaged); tests/clients/test_acme_dns_clients.py replays its requests"
            )
        assert code != 0
        assert "x509" in output, output
        assert "unknown authority" in output, output
        assert not storage.exists()

        trusted = {**env, "SSL_CERT_FILE": str(ca.cert_file)}
        code, output = await lego(e2e_ca, tmp_path, trusted, *args)
        assert code != 0  # the CNAME is not there yet: lego says which one to add
        accounts = json.loads(storage.read_text())
        account = accounts[domain]
        assert account["server_url"] == base
        assert f"_acme-challenge.{domain}" in output, output
        assert account["fulldomain"] in output, output
        assert await stack.registry.stores.registrations.get_registration(account["subdomain"])

        await stack.set_cname(domain, account["fulldomain"])
        code, output = await lego(e2e_ca, tmp_path, trusted, *args)
        assert code == 0, output
    assert issued_names(tmp_path, f"_.{domain}") == {domain, f"*.{domain}"}
    assert json.loads(storage.read_text()) == accounts  # the stored account was reused
