"""Benchmark issuance: how long the issuer takes from CreateCertificate to ISSUED.

Everything runs on loopback in this process except Pebble (Debian package, its validation sleeps
off): a registry on SQLite, the dns service with a zone whose `_acme-challenge` CNAMEs are in
place beforehand, and one issuer. It times

1. sequential DNS-01 issuances of `*.bN.example.test` + `bN.example.test` (one at a time), and
2. a burst of concurrent DNS-01 issuances, for throughput and queueing,

and prints p50/p95/max and the burst's certificates per second. It prints figures and never fails
on them; it exits non-zero only when something could not run.

    .venv/bin/python bench/issuer_bench.py [--sequential 5] [--burst 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry

from acmezone.issuer.v1 import (
    account_service_pb2,
    account_service_pb2_grpc,
    certificate_service_pb2,
    certificate_service_pb2_grpc,
)
from acmezone_clients.devpebble import LocalPebble
from acmezone_common.testing import free_port
from acmezone_dns.app import DnsApp
from acmezone_dns.settings import DnsSettings
from acmezone_issuer.app import IssuerApp
from acmezone_issuer.settings import IssuerSettings
from acmezone_registry.app import RegistryApp
from acmezone_registry.settings import RegistrySettings

ZONE = "acme.example.test"


def zone_file(names: list[str]) -> str:
    lines = [
        "$ORIGIN example.test.",
        "$TTL 60",
        "@ SOA ns1.acme.example.test. hostmaster.example.test. 1 3600 600 86400 1",
        "@ NS ns1.acme.example.test.",
    ]
    for name in names:
        label = name.removesuffix(".example.test")
        lines.append(f"_acme-challenge.{label} CNAME {name.replace('.', '-')}.{ZONE}.")
    return "\n".join(lines) + "\n"


async def issue(
    certificates: certificate_service_pb2_grpc.CertificateServiceAsyncStub,
    account: str,
    name: str,
) -> float:
    """Create a certificate and follow it; seconds until ISSUED."""
    start = time.perf_counter()
    created = await certificates.CreateCertificate(
        certificate_service_pb2.CreateCertificateRequest(
            certificate=certificate_service_pb2.Certificate(
                dns_names=[f"*.{name}", name], account=account
            )
        )
    )
    stream = certificates.WatchCertificate(
        certificate_service_pb2.WatchCertificateRequest(name=created.name)
    )
    async for message in stream:
        state = message.certificate.state
        if state == certificate_service_pb2.STATE_ISSUED:
            stream.cancel()
            return time.perf_counter() - start
        if state == certificate_service_pb2.STATE_FAILED:
            stream.cancel()
            raise RuntimeError(f"{name}: {message.certificate.last_failure.message}")
    raise RuntimeError(f"{name}: watch ended")


def summary(label: str, seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"{label:<28} n={len(ordered):<3} p50 {statistics.median(ordered) * 1000:7.0f} ms   "
        f"p95 {p95 * 1000:7.0f} ms   max {ordered[-1] * 1000:7.0f} ms"
    )


async def run(sequential: int, burst: int, workdir: Path) -> None:
    names = [f"b{i}.example.test" for i in range(sequential + burst)]
    dns_port, http01_port = free_port(), free_port()
    (workdir / "example.test.zone").write_text(zone_file(names))
    pebble = LocalPebble(
        workdir / "pebble", dns_server=f"127.0.0.1:{dns_port}", http01_port=http01_port
    )
    await pebble.astart()
    registry = RegistryApp(
        RegistrySettings(
            grpc_address="127.0.0.1:0",
            http_address="127.0.0.1:0",
            metrics_address="127.0.0.1:0",
            database_url=f"sqlite:///{workdir}/registry.db",
            zone=ZONE,
        ),
        CollectorRegistry(),
    )
    await registry.start()
    dns = DnsApp(
        DnsSettings(
            grpc_address="127.0.0.1:0",
            metrics_address="127.0.0.1:0",
            dns_addresses=[f"127.0.0.1:{dns_port}"],
            registry_target=str(registry.grpc_address),
            zone=ZONE,
            zone_files=[str(workdir / "example.test.zone")],
            txt_ttl=0,
            soa_minimum=0,
        ),
        CollectorRegistry(),
    )
    await dns.start()
    issuer = IssuerApp(
        IssuerSettings(
            grpc_address="127.0.0.1:0",
            metrics_address="127.0.0.1:0",
            http01_address=f"127.0.0.1:{http01_port}",
            data_dir=workdir / "issuer",
            default_directory_url=pebble.directory_url,
            acme_ca_bundle=pebble.ca_bundle,
            registry_target=str(registry.grpc_address),
            dns_resolver=f"127.0.0.1:{dns_port}",
            registration_id_from_domain=True,
            reconcile_interval_seconds=0.2,
        ),
        metrics_registry=CollectorRegistry(),
    )
    await issuer.start()
    try:
        async with grpc.aio.insecure_channel(issuer.grpc_address) as channel:
            accounts = account_service_pb2_grpc.AccountServiceStub(channel)
            certificates = certificate_service_pb2_grpc.CertificateServiceStub(channel)
            account = await accounts.CreateAccount(
                account_service_pb2.CreateAccountRequest(
                    account=account_service_pb2.Account(terms_of_service_agreed=True)
                )
            )
            one_by_one = [
                await issue(certificates, account.name, name) for name in names[:sequential]
            ]
            start = time.perf_counter()
            together = await asyncio.gather(
                *(issue(certificates, account.name, name) for name in names[sequential:])
            )
            wall = time.perf_counter() - start
        print("issuance against Pebble (DNS-01, wildcard + apex, validation sleeps off)")
        print(summary("one at a time", one_by_one))
        print(summary(f"burst of {burst}", list(together)))
        print(f"{'burst throughput':<28} {burst / wall:.2f} certificates/s ({wall:.1f} s wall)")
    finally:
        await issuer.stop(grace=0)
        await dns.stop(grace=0)
        await registry.stop(grace=1)
        pebble.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=5)
    parser.add_argument("--burst", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="issuer-bench-") as workdir:
        try:
            asyncio.run(run(args.sequential, args.burst, Path(workdir)))
        except (RuntimeError, OSError, TimeoutError) as exc:
            print(f"issuer bench could not run: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
