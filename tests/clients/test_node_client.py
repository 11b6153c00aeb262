"""A gRPC client in another language (Node.js, @grpc/grpc-js loading protos/ directly) drives
a real registry and reads the result back over DNS from a real dns service."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from tests.dns.conftest import running_dns
from tests.registry.conftest import running_registry

ROOT = Path(__file__).resolve().parents[2]
CLIENT_DIR = Path(__file__).resolve().parent / "node"


@pytest.mark.slow
async def test_node_client_registers_updates_resolves_and_follows_the_feed(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node, "node is needed (Debian nodejs)"
    assert (CLIENT_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir(), "run `make install`"
    async with (
        running_registry(tmp_path) as registry,
        running_dns(tmp_path, registry_target=str(registry.grpc_address)) as dns_app,
    ):
        process = await asyncio.create_subprocess_exec(
            node,
            str(CLIENT_DIR / "client.mjs"),
            str(registry.grpc_address),
            str(dns_app.dns_addresses[0]),
            str(ROOT / "protos"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    seen = json.loads(stdout)
    assert seen["name"] == f"registrations/{seen['fulldomain'].split('.')[0]}"
    assert seen["passwordLength"] == 40
    assert seen["dnsAnswer"] == [["nodejs-client-value-0123456789abcdefghijklm"]]
    assert seen["feedChange"]["type"] == "CHANGE_TYPE_PUT"
    assert seen["feedChange"]["fqdn"] == f"{seen['fulldomain']}."
    assert seen["feedChange"]["revision"] == seen["recordRevision"]
