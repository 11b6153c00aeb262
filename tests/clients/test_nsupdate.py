"""BIND's `nsupdate` (Debian bind9-dnsutils) with a TSIG key file against a real dns service fed
by a real registry: add and delete challenge TXT records, checked with `dig` against the same
server: hmac-sha256 over UDP with the zone named in the script, and hmac-md5 (certbot-dns-rfc2136's
and cert-manager's default) over TCP, where nsupdate finds the zone itself with an SOA query
signed with the key (and accepts only a signed answer, which the registry signs).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from acmezone.registry.v1 import registration_service_pb2 as reg_pb2
from acmezone.registry.v1 import registration_service_pb2_grpc as reg_grpc
from acmezone.registry.v1 import tsig_key_service_pb2 as key_pb2
from acmezone.registry.v1 import tsig_key_service_pb2_grpc as key_grpc
from acmezone_common.addresses import HostPort
from acmezone_common.testing import wait_for_serving
from tests.dns.conftest import running_dns
from tests.registry.conftest import running_registry
from tests.registry.values import acme_digest

BIND_ALGORITHMS = {
    key_pb2.TSIG_ALGORITHM_HMAC_SHA256: "hmac-sha256",
    key_pb2.TSIG_ALGORITHM_HMAC_MD5: "hmac-md5",
}


async def run(*command: str, stdin: str = "") -> tuple[int, str]:
    binary = shutil.which(command[0])
    assert binary, f"{command[0]} missing: run `make system-deps` (bind9-dnsutils)"
    process = await asyncio.create_subprocess_exec(
        binary,
        *command[1:],
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(stdin.encode()), 30)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def dig_txt(server: HostPort, name: str) -> list[str]:
    code, output = await run(
        "dig", f"@{server.host}", "-p", str(server.port), "+short", "+norecurse", name, "TXT"
    )
    assert code == 0, output
    return [line.strip('"') for line in output.split()]


@dataclass
class Setup:
    dns: HostPort
    channel: grpc.aio.Channel
    registry_target: str


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with (
        running_registry(tmp_path) as registry,
        running_dns(
            tmp_path,
            registry_target=str(registry.grpc_address),
            dns_addresses=["127.0.0.1:0"],
            txt_ttl=0,
        ) as dns_app,
        grpc.aio.insecure_channel(str(registry.grpc_address)) as channel,
    ):
        await wait_for_serving(str(dns_app.grpc_address))
        yield Setup(dns_app.dns_addresses[0], channel, str(registry.grpc_address))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("algorithm", "tcp"),
    [(key_pb2.TSIG_ALGORITHM_HMAC_SHA256, False), (key_pb2.TSIG_ALGORITHM_HMAC_MD5, True)],
    ids=["hmac-sha256-udp", "hmac-md5-tcp"],
)
async def test_nsupdate_adds_and_deletes_with_a_key_file(
    setup: Setup, tmp_path: Path, algorithm: int, tcp: bool
) -> None:
    registration = await reg_grpc.RegistrationServiceStub(setup.channel).CreateRegistration(
        reg_pb2.CreateRegistrationRequest()
    )
    key = await key_grpc.TsigKeyServiceStub(setup.channel).CreateTsigKey(
        key_pb2.CreateTsigKeyRequest(
            parent=registration.name, tsig_key=key_pb2.TsigKey(algorithm=algorithm)
        )
    )
    key_file = tmp_path / "tsig.key"
    key_file.write_text(
        f'key "{key.key_name}" {{\n'
        f"\talgorithm {BIND_ALGORITHMS[algorithm]};\n"
        f'\tsecret "{key.secret}";\n'
        "};\n"
    )
    name = f"_acme-challenge.{registration.fulldomain}."
    first, second = acme_digest("first"), acme_digest("second")
    server = f"server {setup.dns.host} {setup.dns.port}\n"
    zone = "" if tcp else "zone acme.example.test.\n"
    flags = ["-k", str(key_file)] + (["-v"] if tcp else [])

    code, output = await run(
        "nsupdate",
        *flags,
        stdin=server
        + zone
        + f'update add {name} 60 TXT "{first}"\nupdate add {name} 60 TXT "{second}"\nsend\n',
    )
    assert code == 0, output
    assert sorted(await dig_txt(setup.dns, name)) == sorted([first, second])

    code, output = await run(
        "nsupdate", *flags, stdin=server + zone + f'update delete {name} TXT "{first}"\nsend\n'
    )
    assert code == 0, output
    assert await dig_txt(setup.dns, name) == [second]

    code, output = await run(
        "nsupdate", *flags, stdin=server + zone + f"update delete {name} TXT\nsend\n"
    )
    assert code == 0, output
    assert await dig_txt(setup.dns, name) == []

    # A name outside the key's two names: nsupdate reports REFUSED and exits non-zero.
    code, output = await run(
        "nsupdate",
        *flags,
        stdin=server + zone + f'update add other.acme.example.test. 60 TXT "{first}"\nsend\n',
    )
    assert code != 0
    assert "REFUSED" in output
    assert await dig_txt(setup.dns, "other.acme.example.test.") == []


README = Path(__file__).parents[2] / "README.md"


README_ZONE = "challenges.test"  # the challenge zone of `make run` (tools/run_local.py)


@pytest.fixture
async def readme_setup(tmp_path: Path) -> AsyncIterator[Setup]:
    """Registry and dns with the challenge zone `make run` uses, as the README's examples."""
    async with (
        running_registry(tmp_path, zone=README_ZONE) as registry,
        running_dns(
            tmp_path,
            registry_target=str(registry.grpc_address),
            dns_addresses=["127.0.0.1:0"],
            zone=README_ZONE,
            ns_names=[f"ns1.{README_ZONE}"],
            txt_ttl=0,
        ) as dns_app,
        grpc.aio.insecure_channel(str(registry.grpc_address)) as channel,
    ):
        await wait_for_serving(str(dns_app.grpc_address))
        yield Setup(dns_app.dns_addresses[0], channel, str(registry.grpc_address))


@pytest.mark.slow
async def test_the_readme_nsupdate_example_works_as_printed(
    readme_setup: Setup, tmp_path: Path
) -> None:
    """The README's nsupdate block, run as printed (only the port is this test's), with the
    registration and key its `acmezone registration create --id shop` and `tsig-key create shop
    --id k1` lines make, under `make run`'s challenge zone."""
    setup = readme_setup
    text = README.read_text()
    block = re.search(r"nsupdate -k k1\.key <<'END'\n(.*?)\nEND\n(dig [^\n]*)\n", text, re.S)
    assert block, "the README's nsupdate example is gone"
    script, dig_line = block.group(1), block.group(2)
    registration = await reg_grpc.RegistrationServiceStub(setup.channel).CreateRegistration(
        reg_pb2.CreateRegistrationRequest(registration_id="shop")
    )
    key = await key_grpc.TsigKeyServiceStub(setup.channel).CreateTsigKey(
        key_pb2.CreateTsigKeyRequest(
            parent=registration.name,
            tsig_key_id="k1",
            tsig_key=key_pb2.TsigKey(algorithm=key_pb2.TSIG_ALGORITHM_HMAC_SHA256),
        )
    )
    (tmp_path / "k1.key").write_text(
        f'key "{key.key_name}" {{ algorithm hmac-sha256; secret "{key.secret}"; }};\n'
    )
    script = script.replace("server 127.0.0.1 5353", f"server 127.0.0.1 {setup.dns.port}")
    code, output = await run("nsupdate", "-k", str(tmp_path / "k1.key"), stdin=script + "\n")
    assert code == 0, output
    added = re.search(r'update add (\S+) \d+ TXT "([^"]+)"', script)
    assert added
    name, value = added.groups()
    assert dig_line.endswith(name)
    assert await dig_txt(setup.dns, name) == [value]
