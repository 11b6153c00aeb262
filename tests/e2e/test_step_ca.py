"""A private CA: Smallstep's step-ca (ACMEZONE_TEST_STEP_CA, 0.19) issues a wildcard through the
delegation, as in the step-ca lab acme-dns users follow.

`step-ca-init` (beside the binary) writes a throwaway PKI and an ACME provisioner; step-ca then
validates dns-01 through our dns service (`--resolver`), following the `_acme-challenge` CNAME of
the dev zone into the challenge zone. The issuer reaches it with an account whose directory URL is
step-ca's and a CA bundle that trusts its root.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from prometheus_client import CollectorRegistry

from acmezone.issuer.v1 import certificate_service_pb2 as pb
from acmezone_common.testing import free_port
from tests.e2e.conftest import Ports, running_system
from tests.issuer.conftest import AUTH, CA

pytestmark = pytest.mark.slow


@dataclass
class StepCa:
    """A running step-ca and what an issuer needs to use it."""

    directory_url: str
    root: Path
    log: Path


def _step_ca_binary() -> Path:
    binary = os.environ.get("ACMEZONE_TEST_STEP_CA", "")
    if not binary:
        pytest.skip(
            "ACMEZONE_TEST_STEP_CA is unset: this test needs Smallstep's step-ca 0.19 and its "
            "step-ca-init; .ci/run sets it to ../shared/bin/step-ca"
        )
    path = Path(binary).resolve()
    if not path.is_file() or not (path.parent / "step-ca-init").is_file():
        pytest.fail(f"ACMEZONE_TEST_STEP_CA={binary}: step-ca or step-ca-init beside it missing")
    return path


@pytest.fixture(scope="session")
def step_ca(tmp_path_factory: pytest.TempPathFactory, ports: Ports) -> Iterator[StepCa]:
    binary = _step_ca_binary()
    workdir = tmp_path_factory.mktemp("step-ca")
    address = f"127.0.0.1:{free_port()}"
    subprocess.run(
        [str(binary.parent / "step-ca-init"), str(workdir / "ca"), address],
        check=True,
        capture_output=True,
        timeout=60,
    )
    log = workdir / "step-ca.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                str(binary),
                str(workdir / "ca" / "config" / "ca.json"),
                "--resolver",
                f"127.0.0.1:{ports.dns}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    ca = StepCa(
        f"https://{address}/acme/acme/directory", workdir / "ca" / "certs" / "root_ca.crt", log
    )
    try:
        context = ssl.create_default_context(cafile=str(ca.root))
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                pytest.fail(f"step-ca exited: {log.read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(ca.directory_url, context=context, timeout=1):  # noqa: S310
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"step-ca not ready: {log.read_text(errors='replace')}")
                time.sleep(0.1)
        yield ca
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def test_step_ca_issues_a_wildcard_through_the_delegation(
    tmp_path: Path, e2e_ca: CA, step_ca: StepCa, ports: Ports, metrics_registry: CollectorRegistry
) -> None:
    bundle_file = tmp_path / "trust.pem"
    bundle_file.write_text(step_ca.root.read_text() + e2e_ca.ca_bundle.read_text())
    async with running_system(
        tmp_path, e2e_ca, ports, metrics_registry, acme_ca_bundle=bundle_file
    ) as system:
        client = system.client
        account = await client.create_account(directory_url=step_ca.directory_url)
        assert account.account_url.startswith(step_ca.directory_url.removesuffix("directory"))
        cert = await client.create_certificate(
            "step", dns_names=["*.step.example.test", "step.example.test"], account=account.name
        )
        waiting = await client.wait_for(
            cert.name, lambda c: c.state == pb.STATE_WAITING_FOR_DELEGATION
        )
        await system.add_cname("step.example.test", waiting.delegations[0].cname_target)
        issued = await client.wait_for(cert.name, lambda c: c.state == pb.STATE_ISSUED, 90)
        assert len(await system.issuer.repository.orders_of("step")) == 1
        # step-ca has no ARI: renewal at two thirds of its 24-hour certificates (5% jitter).
        assert issued.renewal_time_source == "lifetime"
        not_before = issued.not_before_time.ToDatetime()
        lifetime = issued.not_after_time.ToDatetime() - not_before
        assert abs(lifetime.total_seconds() - 86400) < 120
        offset = issued.renewal_time.ToDatetime() - (not_before + lifetime * 2 / 3)
        assert abs(offset.total_seconds()) <= lifetime.total_seconds() * 0.051
        exported = await client.certificates.ExportCertificate(
            pb.ExportCertificateRequest(name=cert.name), metadata=AUTH
        )
        chain = x509.load_pem_x509_certificates(exported.certificate_chain_pem.encode())
        root = x509.load_pem_x509_certificate(step_ca.root.read_bytes())
        for child, parent in zip(chain, [*chain[1:], root], strict=True):
            child.verify_directly_issued_by(parent)
        san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sorted(san.get_values_for_type(x509.DNSName)) == [
            "*.step.example.test",
            "step.example.test",
        ]
