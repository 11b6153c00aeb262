"""Every dns replica answers before the CA is asked: with three replicas following the
registry and one of them frozen (SIGSTOP, a hung process still holding its connections), the
issuer does not answer the challenge, says which replica is behind, and carries on once it
catches up (SIGCONT)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from acmezone.issuer.v1 import certificate_service_pb2 as pb
from acmezone_common.testing import ServiceProcess, free_port
from tests.e2e.conftest import CHALLENGE_ZONE, Ports, running_system
from tests.issuer.conftest import AUTH, CA

BIN = Path(sys.executable).parent


def replica(tmp_path: Path, name: str, registry: str) -> tuple[ServiceProcess, str]:
    grpc_address = f"127.0.0.1:{free_port()}"
    env = {
        "ACMEZONE_DNS_GRPC_ADDRESS": grpc_address,
        "ACMEZONE_DNS_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        "ACMEZONE_DNS_DNS_ADDRESSES": f'["127.0.0.1:{free_port()}"]',
        "ACMEZONE_DNS_REGISTRY_TARGET": registry,
        "ACMEZONE_DNS_ZONE": CHALLENGE_ZONE,
        "ACMEZONE_DNS_REPLICA_NAME": name,
        "ACMEZONE_DNS_FEED_BACKOFF_INITIAL_SECONDS": "0.05",
        "ACMEZONE_DNS_FEED_BACKOFF_MAX_SECONDS": "0.5",
    }
    return ServiceProcess([str(BIN / "acmezone-dns")], env, str(tmp_path / f"{name}.log")), (
        grpc_address
    )


async def test_a_frozen_replica_holds_the_challenge_until_it_catches_up(
    tmp_path: Path, e2e_ca: CA, ports: Ports, metrics_registry: CollectorRegistry
) -> None:
    async with running_system(
        tmp_path,
        e2e_ca,
        ports,
        metrics_registry,
        propagation_timeout_seconds=1.0,
        retry_base_seconds=0.5,
        retry_max_seconds=1.0,
    ) as system:
        registry = str(system.registry.grpc_address)
        steady, steady_grpc = replica(tmp_path, "steady", registry)
        frozen, frozen_grpc = replica(tmp_path, "frozen", registry)
        try:
            for process, address in ((steady, steady_grpc), (frozen, frozen_grpc)):
                await process.start()
                await process.wait_for_serving(address)
            for _ in range(200):
                if len(system.registry.feed.replicas.live()) == 3:
                    break
                await asyncio.sleep(0.05)
            assert {r.replica for r in system.registry.feed.replicas.live()} >= {
                "steady",
                "frozen",
            }
            client = system.client
            delegation = await client.certificates.CheckDelegation(
                pb.CheckDelegationRequest(domain="frozen.example.test"), metadata=AUTH
            )
            await system.add_cname("frozen.example.test", delegation.cname_target)
            account = await client.create_account()

            frozen.send_signal(signal.SIGSTOP)
            cert = await client.create_certificate(
                "frozen", dns_names=["*.frozen.example.test"], account=account.name
            )
            failed = await client.wait_for(
                cert.name, lambda c: c.state == pb.STATE_FAILED and c.last_failure.message
            )
            assert failed.last_failure.stage == pb.STAGE_PROPAGATING
            assert "frozen at revision" in failed.last_failure.message
            assert "steady" not in failed.last_failure.message
            # Pebble was never told to look: no challenge was answered.
            assert not metrics_registry.get_sample_value(
                "acmezone_issuer_acme_requests_total", {"endpoint": "challenge", "status": "200"}
            )

            frozen.send_signal(signal.SIGCONT)
            issued = await client.wait_for(cert.name, lambda c: c.state == pb.STATE_ISSUED)
            assert issued.serial_number
            assert metrics_registry.get_sample_value(
                "acmezone_issuer_acme_requests_total", {"endpoint": "challenge", "status": "200"}
            )
        finally:
            frozen.send_signal(signal.SIGCONT)
            for process in (steady, frozen):
                await process.stop()
