"""`acmezone registration create --for-domain D --cert-manager`: the printed Secret is
cert-manager's documented acme-dns format (the `/register` answer keyed by domain, under the key
`acmedns.json`), the Issuer solver points at it, and the credentials in it drive the registry's
acme-dns API as cert-manager's goacmedns client does, answered by the dns service."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

from acmezone_clients.cli.commands import run as cli_run
from tests.clients.test_acme_dns_clients import Api, api, eventually_txt
from tests.registry.values import acme_digest

__all__ = ["api"]

REGISTER_KEYS = {"username", "password", "fulldomain", "subdomain", "allowfrom"}


def documents(text: str) -> list[dict[str, Any]]:
    """The manifests of the output: `---`-separated documents (JSON, which is YAML too)."""
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    return [json.loads(part) for part in body.split("\n---\n")]


async def test_cert_manager_secret_and_issuer_work_as_printed(api: Api, tmp_path: Path) -> None:
    registry_grpc = api.grpc
    out = io.StringIO()
    code = await cli_run(
        [
            "--registry",
            registry_grpc,
            "registration",
            "create",
            "--for-domain",
            "shop.example.test",
            "--cert-manager",
            "--acme-dns-url",
            api.base_url,
            "--namespace",
            "web",
        ],
        out,
    )
    text = out.getvalue()
    assert code == 0, text
    secret, issuer = documents(text)
    assert (secret["apiVersion"], secret["kind"]) == ("v1", "Secret")
    assert secret["metadata"] == {"name": "acmezone-acme-dns", "namespace": "web"}
    accounts = json.loads(secret["stringData"]["acmedns.json"])
    assert set(accounts) == {"shop.example.test"}
    account = accounts["shop.example.test"]
    assert set(account) == REGISTER_KEYS
    assert (issuer["apiVersion"], issuer["kind"]) == ("cert-manager.io/v1", "Issuer")
    (solver,) = issuer["spec"]["acme"]["solvers"]
    assert solver["dns01"]["acmeDNS"] == {
        "host": api.base_url,
        "accountSecretRef": {"name": "acmezone-acme-dns", "key": "acmedns.json"},
    }
    cname = re.search(r"_acme-challenge\.shop\.example\.test\. CNAME (\S+)\.", text)
    assert cname
    assert cname.group(1) == account["fulldomain"]
    # What cert-manager's goacmedns client then does with the Secret.
    value = acme_digest("cert-manager")
    status, body = await api.post(
        "/update",
        json.dumps({"subdomain": account["subdomain"], "txt": value}).encode(),
        {
            "Content-Type": "application/json",
            "X-Api-User": account["username"],
            "X-Api-Key": account["password"],
        },
    )
    assert status == 200, body
    await eventually_txt(api, account["fulldomain"], value)
