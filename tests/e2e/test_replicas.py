"""Two issuer replicas on one PostgreSQL: every certificate is worked by one replica at a time,
so each is issued with exactly one order, and both start together (migrations take turns)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from acmezone.issuer.v1 import certificate_service_pb2 as pb
from acmezone_issuer.app import IssuerApp
from tests.e2e.conftest import Ports, issuer_settings_for, running_system
from tests.issuer.conftest import CA

pytestmark = pytest.mark.postgres


async def test_two_replicas_never_work_one_certificate_at_once(
    tmp_path: Path, e2e_ca: CA, ports: Ports, postgres_schema_url: str
) -> None:
    metrics_a = CollectorRegistry()
    async with running_system(
        tmp_path, e2e_ca, ports, metrics_a, database_url=postgres_schema_url, replica_id="a"
    ) as system:
        metrics_b = CollectorRegistry()
        replica_b = IssuerApp(
            issuer_settings_for(
                tmp_path / "b",
                e2e_ca,
                system.registry,
                ports,
                database_url=postgres_schema_url,
                http01_address="127.0.0.1:0",
                replica_id="b",
            ),
            metrics_registry=metrics_b,
        )
        await replica_b.start()
        try:
            client = system.client
            account = await client.create_account()
            names = [f"r{i}" for i in range(6)]
            # Delegate every domain before the certificates exist, so both replicas find them
            # due at once and race for them.
            for name in names:
                delegation = await client.certificates.CheckDelegation(
                    pb.CheckDelegationRequest(domain=f"{name}.example.test"),
                    metadata=(("authorization", "Bearer issuer-test-token"),),
                )
                system.cnames[f"{name}.example.test"] = delegation.cname_target
            await system.stop_dns()
            await system.start_dns()
            for name in names:
                await client.create_certificate(
                    name,
                    dns_names=[f"{name}.example.test", f"*.{name}.example.test"],
                    account=account.name,
                )
            issued = await asyncio.gather(
                *(
                    client.wait_for(f"certificates/{name}", lambda c: c.state == pb.STATE_ISSUED)
                    for name in names
                )
            )
            assert all(c.failed_attempts == 0 for c in issued)
            for name in names:
                assert len(await system.issuer.repository.orders_of(name)) == 1, name
            attempts = [
                m.get_sample_value("acmezone_issuer_issuance_attempts_total") or 0
                for m in (metrics_a, metrics_b)
            ]
            assert sum(attempts) == len(names), attempts
        finally:
            await replica_b.stop(grace=0)
