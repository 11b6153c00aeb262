"""The dns service as real processes next to a real registry process, checked with dig: the
`acmezone-dns` command, uvloop, a registry crash and restart, and SIGTERM."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
from pathlib import Path

import grpc
import pytest

from acmezone.registry.v1 import registration_service_pb2 as reg_pb
from acmezone.registry.v1 import registration_service_pb2_grpc as reg_grpc
from acmezone.registry.v1 import txt_record_service_pb2 as txt_pb
from acmezone.registry.v1 import txt_record_service_pb2_grpc as txt_grpc
from acmezone_common.testing import ServiceProcess, free_port
from tests.registry.values import acme_digest

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


async def dig(port: int, *args: str) -> str:
    """dig's short output for a query against 127.0.0.1:port."""
    process = await asyncio.create_subprocess_exec(
        "dig", "@127.0.0.1", "-p", str(port), "+short", "+tries=1", "+time=2", *args,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await process.communicate()
    return out.decode().strip()


async def dig_until(port: int, expected: str, *args: str, within: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while (got := await dig(port, *args)) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"dig {args}: {got!r}"
        await asyncio.sleep(0.05)


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig (bind9-dnsutils) is not installed")
async def test_dns_process_follows_a_registry_process_through_a_crash(tmp_path: Path) -> None:
    registry_grpc = f"127.0.0.1:{free_port()}"
    registry = ServiceProcess(
        [str(BIN / "acmezone-registry")],
        {
            "ACMEZONE_REGISTRY_GRPC_ADDRESS": registry_grpc,
            "ACMEZONE_REGISTRY_HTTP_ADDRESS": f"127.0.0.1:{free_port()}",
            "ACMEZONE_REGISTRY_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
            "ACMEZONE_REGISTRY_DATA_DIR": str(tmp_path / "registry"),
        },
        str(tmp_path / "registry.log"),
    )
    dns_port = free_port(kind=2)
    dns_grpc = f"127.0.0.1:{free_port()}"
    dns = ServiceProcess(
        [str(BIN / "acmezone-dns")],
        {
            "ACMEZONE_DNS_DNS_ADDRESSES": f"127.0.0.1:{dns_port}",
            "ACMEZONE_DNS_GRPC_ADDRESS": dns_grpc,
            "ACMEZONE_DNS_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
            "ACMEZONE_DNS_REGISTRY_TARGET": registry_grpc,
            "ACMEZONE_DNS_STATIC_RECORDS": '["@ CAA 0 issue \\"letsencrypt.org\\""]',
            "ACMEZONE_DNS_LOG_FORMAT": "json",
        },
        str(tmp_path / "dns.log"),
    )
    try:
        await registry.start()
        await registry.wait_for_serving(registry_grpc)
        await dns.start()
        await dns.wait_for_serving(dns_grpc)
        assert await dig(dns_port, "acme.example.test", "CAA") == '0 issue "letsencrypt.org"'
        async with grpc.aio.insecure_channel(registry_grpc) as channel:
            created = await reg_grpc.RegistrationServiceStub(channel).CreateRegistration(
                reg_pb.CreateRegistrationRequest(registration_id="proc")
            )
            credentials = (("x-api-user", created.username), ("x-api-key", created.password))
            await txt_grpc.TxtRecordServiceStub(channel).AddTxtValue(
                txt_pb.AddTxtValueRequest(
                    name="registrations/proc/txtRecord", value=acme_digest(1)
                ),
                metadata=credentials,
            )
        name = "proc.acme.example.test"
        await dig_until(dns_port, f'"{acme_digest(1)}"', name, "TXT")
        await registry.kill()  # a crash: the stream just breaks
        assert await dig(dns_port, "+tcp", name, "TXT") == f'"{acme_digest(1)}"'
        await registry.start()
        await registry.wait_for_serving(registry_grpc)
        async with grpc.aio.insecure_channel(registry_grpc) as channel:
            await txt_grpc.TxtRecordServiceStub(channel).AddTxtValue(
                txt_pb.AddTxtValueRequest(
                    name="registrations/proc/txtRecord", value=acme_digest(2)
                ),
                metadata=credentials,
            )
        expected = "\n".join(sorted(f'"{acme_digest(i)}"' for i in (1, 2)))
        deadline = asyncio.get_running_loop().time() + 15
        while "\n".join(sorted((await dig(dns_port, name, "TXT")).splitlines())) != expected:
            assert asyncio.get_running_loop().time() < deadline, dns.log()
            await asyncio.sleep(0.05)
        assert await dns.stop() == 0
        assert '"first feed snapshot applied, serving"' in dns.log()
    finally:
        await dns.stop()
        await registry.stop()


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig (bind9-dnsutils) is not installed")
async def test_sighup_reloads_the_zone_files_of_a_running_process(tmp_path: Path) -> None:
    """The command wires SIGHUP to a reload (polling is off here): the edited zone file is
    served by the same process, no restart."""
    zone_file = tmp_path / "example.test.zone"
    zone = "$ORIGIN example.test.\n$TTL 60\n@ SOA ns1 hostmaster 1 2 3 4 5\n@ NS ns1\n"
    zone_file.write_text(zone + "www A 192.0.2.1\n")
    dns_port = free_port(kind=2)
    dns = ServiceProcess(
        [str(BIN / "acmezone-dns")],
        {
            "ACMEZONE_DNS_DNS_ADDRESSES": f"127.0.0.1:{dns_port}",
            "ACMEZONE_DNS_GRPC_ADDRESS": f"127.0.0.1:{free_port()}",
            "ACMEZONE_DNS_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
            "ACMEZONE_DNS_REGISTRY_TARGET": f"127.0.0.1:{free_port()}",
            "ACMEZONE_DNS_ZONE_FILES": str(zone_file),
            "ACMEZONE_DNS_ZONE_RELOAD_INTERVAL_SECONDS": "0",
            "ACMEZONE_DNS_LOG_FORMAT": "json",
        },
        str(tmp_path / "dns.log"),
    )
    try:
        await dns.start()
        await dig_until(dns_port, "192.0.2.1", "www.example.test", "A")
        zone_file.write_text(zone + "www A 192.0.2.2\n")
        dns.send_signal(signal.SIGHUP)
        await dig_until(dns_port, "192.0.2.2", "www.example.test", "A")
        assert dns.running
        assert '"zone files reloaded"' in dns.log()
    finally:
        await dns.stop()
