"""The `acmezone` CLI against the running system: request and follow a wildcard certificate
through the CNAME table, then list, show, export, check, status, and registrations."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

from cryptography import x509
from prometheus_client import CollectorRegistry

from acmezone.issuer.v1 import certificate_service_pb2 as pb
from acmezone_clients.cli.commands import run
from tests.e2e.conftest import Ports, System, running_system
from tests.issuer.conftest import CA, OPERATOR_TOKEN


async def acmezone(system: System, *argv: str) -> tuple[int, str]:
    """Run one CLI command in this process against the system; (exit status, stdout)."""
    assert system.dns is not None
    out = io.StringIO()
    code = await run(
        [
            "--issuer",
            system.issuer.grpc_address,
            "--registry",
            str(system.registry.grpc_address),
            "--dns",
            str(system.dns.grpc_address),
            "--token",
            OPERATOR_TOKEN,
            *argv,
        ],
        out,
    )
    return code, out.getvalue()


async def test_cli_request_follow_and_manage(
    tmp_path: Path, e2e_ca: CA, ports: Ports, metrics_registry: CollectorRegistry
) -> None:
    async with running_system(tmp_path, e2e_ca, ports, metrics_registry) as system:
        code, out = await acmezone(system, "account", "create", "--id", "ops", "--agree-tos")
        assert code == 0, out
        assert "accounts/ops" in out

        request = asyncio.create_task(
            acmezone(
                system,
                "cert",
                "request",
                "*.cli.example.test",
                "cli.example.test",
                "--account",
                "ops",
                "--id",
                "cli",
                "--timeout",
                "60",
            )
        )
        for _ in range(200):
            if await system.issuer.store.find_certificate("cli") is not None:
                break
            await asyncio.sleep(0.05)
        waiting = await system.client.wait_for(
            "certificates/cli", lambda c: c.state == pb.STATE_WAITING_FOR_DELEGATION
        )
        target = waiting.delegations[0].cname_target
        await system.add_cname("cli.example.test", target)
        code, out = await request
        assert code == 0, out
        assert "Add these records at your DNS provider:" in out
        assert f"_acme-challenge.cli.example.test.  CNAME  {target}." in out
        assert "[waiting_for_delegation]" in out
        assert "[issuing] ordering" in out or "[issuing] validating" in out
        assert "state:       issued" in out

        code, out = await acmezone(system, "--json", "cert", "list")
        listed = json.loads(out)
        assert [(c["name"], c["state"]) for c in listed] == [("certificates/cli", "STATE_ISSUED")]
        code, out = await acmezone(system, "cert", "show", "cli")
        assert "renews:" in out
        assert "condition:   Ready=True" in out

        code, out = await acmezone(
            system, "cert", "export", "cli", "--out-dir", str(tmp_path / "out")
        )
        assert code == 0
        leaf = x509.load_pem_x509_certificates((tmp_path / "out" / "fullchain.pem").read_bytes())[0]
        assert leaf.subject.rfc4514_string() == "CN=*.cli.example.test"
        assert (tmp_path / "out" / "privkey.pem").stat().st_mode & 0o777 == 0o600

        code, out = await acmezone(system, "delegation", "check", "cli.example.test")
        assert code == 0
        assert "status: in place" in out
        code, out = await acmezone(system, "delegation", "check", "other.example.test")
        assert code == 2
        assert "_acme-challenge.other.example.test. CNAME" in out

        code, out = await acmezone(system, "--json", "status")
        status = json.loads(out)
        assert code == 0, out
        assert {s["service"]: s["status"] for s in status["services"]} == {
            "registry": "SERVING",
            "dns": "SERVING",
            "issuer": "SERVING",
        }

        code, out = await acmezone(system, "registration", "list")
        assert code == 0
        assert target in out

        code, out = await acmezone(system, "cert", "request", "bad name", "--account", "ops")
        assert code == 1

        code, out = await acmezone(system, "cert", "revoke", "cli", "--reason", "superseded")
        assert code == 0
        assert "state:       revoked" in out
