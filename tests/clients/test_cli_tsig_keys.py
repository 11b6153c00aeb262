"""`acmezone tsig-key create/list/delete` against a real registry and dns service: the key file
the create command prints works with nsupdate as printed, list shows the key without its secret,
and after delete nsupdate is refused."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from acmezone_clients.cli.commands import run as cli_run
from tests.clients.test_nsupdate import Setup, dig_txt, run, setup
from tests.registry.values import acme_digest

__all__ = ["setup"]


async def acmezone(setup: Setup, registry: str, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = await cli_run(["--registry", registry, *argv], out)
    return code, out.getvalue()


@pytest.mark.slow
async def test_tsig_key_commands_drive_nsupdate(setup: Setup, tmp_path: Path) -> None:
    registry = setup.registry_target
    code, out = await acmezone(setup, registry, "registration", "create", "--id", "cli-tsig")
    assert code == 0, out
    code, out = await acmezone(
        setup,
        registry,
        "tsig-key",
        "create",
        "cli-tsig",
        "--id",
        "k1",
        "--algorithm",
        "hmac-md5",
        "--nameserver",
        str(setup.dns),
    )
    assert code == 0, out
    assert "registrations/cli-tsig/tsigKeys/k1" in out
    assert f"RFC2136_NAMESERVER={setup.dns}" in out
    assert "RFC2136_TSIG_ALGORITHM=hmac-md5.sig-alg.reg.int." in out
    assert "dns_rfc2136_algorithm = HMAC-MD5.SIG-ALG.REG.INT" in out
    # Which CNAME target each client needs: acme.sh's --challenge-alias adds _acme-challenge.
    assert "_acme-challenge.<domain>. CNAME cli-tsig.acme.example.test." in out
    assert (
        "acme.sh --challenge-alias cli-tsig.acme.example.test: "
        "_acme-challenge.<domain>. CNAME _acme-challenge.cli-tsig.acme.example.test." in out
    )
    key_file = re.search(r'^key "[^"]+" \{\n.*?^\};$', out, re.MULTILINE | re.DOTALL)
    assert key_file is not None, out
    path = tmp_path / "cli.key"
    path.write_text(key_file.group(0) + "\n")
    name = "_acme-challenge.cli-tsig.acme.example.test."
    script = (
        f"server {setup.dns.host} {setup.dns.port}\nzone acme.example.test.\n"
        f'update add {name} 60 TXT "{acme_digest("cli")}"\nsend\n'
    )
    code, output = await run("nsupdate", "-k", str(path), stdin=script)
    assert code == 0, output
    assert await dig_txt(setup.dns, name) == [acme_digest("cli")]

    code, out = await acmezone(setup, registry, "--json", "tsig-key", "list", "cli-tsig")
    assert code == 0, out
    (listed,) = json.loads(out)
    assert listed["name"] == "registrations/cli-tsig/tsigKeys/k1"
    assert listed["keyName"] == "k1.cli-tsig.acme.example.test."
    assert "secret" not in listed
    code, out = await acmezone(setup, registry, "tsig-key", "list", "cli-tsig")
    assert "k1.cli-tsig.acme.example.test." in out
    assert "hmac-md5" in out

    code, out = await acmezone(setup, registry, "tsig-key", "delete", "cli-tsig", "k1")
    assert code == 0, out
    code, output = await run("nsupdate", "-k", str(path), stdin=script.replace("cli", "gone"))
    assert code != 0
    assert "BADKEY" in output or "NOTAUTH" in output, output
    code, out = await acmezone(setup, registry, "tsig-key", "delete", "cli-tsig", "k1")
    assert code == 1
