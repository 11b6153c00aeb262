"""The `acmezone` CLI against the running system: request and follow a wildcard certificate
through the CNAME table, then list, show, export, check, status, and registrations."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from cryptography import x509
from prometheus_client import CollectorRegistry

from acmezone.issuer.v1 import certificate_service_pb2 as pb
from acmezone_clients.cli.commands import run
from acmezone_issuer.challenges import dns_account_label
from tests.e2e.conftest import ZONE_EDIT_TOKEN, Ports, System, running_system
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
            if await system.issuer.repository.find_certificate("cli") is not None:
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


async def test_cli_dns_account01_shows_the_accounts_own_owner_name(
    tmp_path: Path, e2e_ca: CA, ports: Ports, metrics_registry: CollectorRegistry
) -> None:
    async with running_system(tmp_path, e2e_ca, ports, metrics_registry) as system:
        code, out = await acmezone(
            system, "--json", "account", "create", "--id", "acct", "--agree-tos"
        )
        assert code == 0, out
        account = json.loads(out)
        assert account["accountUrl"].startswith("https://127.0.0.1")
        label = dns_account_label(account["accountUrl"])
        assert account["dnsAccountLabel"] == label

        code, out = await acmezone(
            system,
            "cert",
            "request",
            "*.mine.example.test",
            "--account",
            "acct",
            "--id",
            "mine",
            "--challenge",
            "dns-account-01",
            "--no-follow",
        )
        assert code == 0, out
        waiting = await system.client.wait_for(
            "certificates/mine", lambda c: c.state == pb.STATE_WAITING_FOR_DELEGATION
        )
        assert waiting.challenge_type == pb.CHALLENGE_TYPE_DNS_ACCOUNT_01
        target = waiting.delegations[0].cname_target
        code, out = await acmezone(system, "cert", "show", "mine")
        assert f"{label}._acme-challenge.mine.example.test.  CNAME  {target}." in out
        code, out = await acmezone(
            system,
            "delegation",
            "check",
            "mine.example.test",
            "--challenge",
            "dns-account-01",
            "--account",
            "acct",
        )
        assert code == 2
        assert f"{label}._acme-challenge.mine.example.test. CNAME {target}." in out
        # --http01 is the shorthand of --challenge http-01: both at once is a usage error.
        with pytest.raises(SystemExit):
            await acmezone(
                system,
                "cert",
                "request",
                "x.example.test",
                "--account",
                "acct",
                "--http01",
                "--challenge",
                "auto",
            )


async def test_cli_dns_persist01_shows_the_record_to_publish_and_its_end(
    tmp_path: Path, e2e_upstream_ca: CA, ports: Ports, metrics_registry: CollectorRegistry
) -> None:
    async with running_system(tmp_path, e2e_upstream_ca, ports, metrics_registry) as system:
        code, out = await acmezone(
            system, "--json", "account", "create", "--id", "keep", "--agree-tos"
        )
        assert code == 0, out
        url = json.loads(out)["accountUrl"]
        code, out = await acmezone(
            system,
            *("cert", "request", "*.wait.example.test", "--account", "keep", "--id", "wait"),
            *("--challenge", "dns-persist-01", "--no-follow"),
        )
        assert code == 0, out
        await system.client.wait_for(
            "certificates/wait", lambda c: c.state == pb.STATE_WAITING_FOR_DELEGATION
        )
        code, out = await acmezone(system, "cert", "show", "wait")
        record = f'"pebble.letsencrypt.org; accounturi={url}; policy=wildcard"'
        assert f"_validation-persist.wait.example.test.  TXT    {record}" in out
        assert "or this, not the CNAME" in out

        await system.add_record(
            f'_validation-persist.kept TXT "pebble.letsencrypt.org; accounturi={url}; '
            'persistUntil=1893456000"'
        )
        code, out = await acmezone(
            system,
            *("cert", "request", "kept.example.test", "--account", "keep", "--id", "kept"),
            *("--challenge", "dns-persist-01", "--profile", "shortlived", "--timeout", "60"),
        )
        assert code == 0, out
        assert "state:       issued" in out
        assert "challenge:   dns-persist-01  profile: shortlived" in out
        assert "ok until 2030-01-01 00:00:00Z" in out


async def test_cert_request_adds_the_missing_cname_to_a_zone_served_here(
    tmp_path: Path, e2e_ca: CA, ports: Ports, metrics_registry: CollectorRegistry
) -> None:
    """`--add-cnames`: the customer zone example.test is a static zone of our dns, so the CLI
    adds the `_acme-challenge` CNAME there itself (live, no restart) and the request goes on
    to issuance without anyone touching the zone file."""
    async with running_system(tmp_path, e2e_ca, ports, metrics_registry) as system:
        code, out = await acmezone(system, "account", "create", "--id", "auto", "--agree-tos")
        assert code == 0, out
        code, out = await acmezone(
            system,
            "--zone-token",
            ZONE_EDIT_TOKEN,
            "cert",
            "request",
            "*.auto.example.test",
            "--account",
            "auto",
            "--id",
            "auto",
            "--add-cnames",
            "--timeout",
            "60",
        )
        assert code == 0, out
        assert "added _acme-challenge.auto.example.test. CNAME" in out
        assert "to the zone example.test." in out
        assert "_acme-challenge.auto.example.test." in system.zone_file.read_text()
