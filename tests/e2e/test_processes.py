"""The three services as real processes: an issuer killed mid-order resumes the same order.

The registry is paused (SIGSTOP) after the order is placed, so the issuer is provably stuck
between placing the order and publishing the TXT values when it is killed (SIGKILL: no cleanup,
no graceful anything). After the restart it must finish that same order: one order in all.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from acmezone.issuer.v1 import account_service_pb2 as apb
from acmezone.issuer.v1 import account_service_pb2_grpc, certificate_service_pb2_grpc
from acmezone.issuer.v1 import certificate_service_pb2 as pb
from acmezone_common.testing import free_port, wait_for_serving
from tests.e2e.conftest import CHALLENGE_ZONE, Ports, zone_text
from tests.issuer.conftest import AUTH, CA, ENCRYPTION_KEY, OPERATOR_TOKEN

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


class Processes:
    """Child processes with logs; all killed at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [str(BIN / command)],
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.children[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop_all(self) -> None:
        for process in self.children.values():
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
                process.wait(timeout=10)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    running = Processes(tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


async def test_issuer_killed_mid_order_resumes_the_same_order(
    tmp_path: Path, e2e_ca: CA, ports: Ports, processes: Processes
) -> None:
    registry_grpc = f"127.0.0.1:{free_port()}"
    issuer_grpc = f"127.0.0.1:{free_port()}"
    zone_file = tmp_path / "example.test.zone"
    zone_file.write_text(zone_text({}))
    registry_env = {
        "ACMEZONE_REGISTRY_GRPC_ADDRESS": registry_grpc,
        "ACMEZONE_REGISTRY_HTTP_ADDRESS": "127.0.0.1:0",
        "ACMEZONE_REGISTRY_METRICS_ADDRESS": "127.0.0.1:0",
        "ACMEZONE_REGISTRY_DATABASE_URL": f"sqlite:///{tmp_path}/registry.db",
        "ACMEZONE_REGISTRY_ZONE": CHALLENGE_ZONE,
    }
    dns_env = {
        "ACMEZONE_DNS_GRPC_ADDRESS": f"127.0.0.1:{free_port()}",
        "ACMEZONE_DNS_METRICS_ADDRESS": "127.0.0.1:0",
        "ACMEZONE_DNS_DNS_ADDRESSES": f"127.0.0.1:{ports.dns}",
        "ACMEZONE_DNS_REGISTRY_TARGET": registry_grpc,
        "ACMEZONE_DNS_ZONE": CHALLENGE_ZONE,
        "ACMEZONE_DNS_ZONE_FILES": str(zone_file),
        "ACMEZONE_DNS_TXT_TTL": "0",
        "ACMEZONE_DNS_SOA_MINIMUM": "0",
    }
    issuer_env = {
        "ACMEZONE_ISSUER_GRPC_ADDRESS": issuer_grpc,
        "ACMEZONE_ISSUER_METRICS_ADDRESS": "127.0.0.1:0",
        "ACMEZONE_ISSUER_HTTP01_ADDRESS": f"127.0.0.1:{ports.http01}",
        "ACMEZONE_ISSUER_DATA_DIR": str(tmp_path / "issuer"),
        "ACMEZONE_ISSUER_ENCRYPTION_KEY": ENCRYPTION_KEY,
        "ACMEZONE_ISSUER_OPERATOR_TOKEN": OPERATOR_TOKEN,
        "ACMEZONE_ISSUER_DEFAULT_DIRECTORY_URL": e2e_ca.directory_url,
        "ACMEZONE_ISSUER_ACME_CA_BUNDLE": str(e2e_ca.ca_bundle),
        "ACMEZONE_ISSUER_REGISTRY_TARGET": registry_grpc,
        "ACMEZONE_ISSUER_DNS_RESOLVER": f"127.0.0.1:{ports.dns}",
        "ACMEZONE_ISSUER_RECONCILE_INTERVAL_SECONDS": "0.5",
        "ACMEZONE_ISSUER_DELEGATION_RECHECK_SECONDS": "0.3",
        # The default lease: the restarted issuer must not wait for the dead one's to expire.
        "ACMEZONE_ISSUER_LEASE_SECONDS": "60",
    }
    registry = processes.start("registry", "acmezone-registry", registry_env)
    await wait_for_serving(registry_grpc)
    dns_process = processes.start("dns", "acmezone-dns", dns_env)
    await wait_for_serving(dns_env["ACMEZONE_DNS_GRPC_ADDRESS"])
    issuer = processes.start("issuer", "acmezone-issuer", issuer_env)
    await wait_for_serving(issuer_grpc)

    async with grpc.aio.insecure_channel(issuer_grpc) as channel:
        accounts = account_service_pb2_grpc.AccountServiceStub(channel)
        certificates = certificate_service_pb2_grpc.CertificateServiceStub(channel)
        account = await accounts.CreateAccount(
            apb.CreateAccountRequest(account=apb.Account(terms_of_service_agreed=True)),
            metadata=AUTH,
        )
        delegation = await certificates.CheckDelegation(
            pb.CheckDelegationRequest(domain="crash.example.test"), metadata=AUTH
        )
        # The domain owner adds the CNAME: the dns service restarts with the new zone file.
        zone_file.write_text(zone_text({"crash.example.test": delegation.cname_target}))
        dns_process.terminate()
        dns_process.wait(timeout=10)
        processes.start("dns", "acmezone-dns", dns_env)
        await wait_for_serving(dns_env["ACMEZONE_DNS_GRPC_ADDRESS"])

        os.kill(registry.pid, signal.SIGSTOP)
        await certificates.CreateCertificate(
            pb.CreateCertificateRequest(
                certificate_id="crash",
                certificate=pb.Certificate(
                    dns_names=["crash.example.test", "*.crash.example.test"],
                    account=account.name,
                ),
            ),
            metadata=AUTH,
        )
        stream = certificates.WatchCertificate(
            pb.WatchCertificateRequest(name="certificates/crash"), metadata=AUTH
        )
        before_kill = None
        async for message in stream:
            cert = message.certificate
            if cert.order_url and cert.stage == pb.STAGE_PRESENTING:
                before_kill = cert
                break
        stream.cancel()
    assert before_kill is not None
    issuer.kill()
    issuer.wait(timeout=10)
    os.kill(registry.pid, signal.SIGCONT)
    assert before_kill.state == pb.STATE_ISSUING

    restarted = processes.start("issuer", "acmezone-issuer", issuer_env)
    await wait_for_serving(issuer_grpc)
    async with grpc.aio.insecure_channel(issuer_grpc) as channel:
        certificates = certificate_service_pb2_grpc.CertificateServiceStub(channel)
        issued = None
        # Well inside the 60 s lease the killed process held: the same replica identity (kept
        # in the data dir) takes its own lease over at once.
        for _ in range(300):
            cert = await certificates.GetCertificate(
                pb.GetCertificateRequest(name="certificates/crash"), metadata=AUTH
            )
            if cert.state in (pb.STATE_ISSUED, pb.STATE_FAILED):
                issued = cert
                break
            await asyncio.sleep(0.1)
        assert issued is not None, processes.log("issuer")
        assert issued.state == pb.STATE_ISSUED, issued.last_failure
        assert issued.failed_attempts == 0

    with sqlite3.connect(tmp_path / "issuer" / "issuer.db") as db:
        orders = [row[0] for row in db.execute("SELECT order_url FROM orders")]
    assert orders == [before_kill.order_url]

    # SIGTERM: health NOT_SERVING, drain, exit 0.
    restarted.terminate()
    assert restarted.wait(timeout=15) == 0, processes.log("issuer")
