"""Scale benchmark: the dns service and the registry with up to a million registrations, beside
NSD and Knot loading the very same records, and acme-dns at 1k names.

What it does, all on loopback, each figure printed beside its target (issue "A million
delegations"):
1. fills a registry (SQLite) with N registrations holding one TXT value each, through the bulk
   path an operator would use (`acmezone-registry import-acme-dns` from a database in acme-dns's
   schema) when the registry has it, else by writing the registry's own tables;
2. cold start: starts a dns replica and times start -> health SERVING (first snapshot applied),
   and reads its resident memory; the registry's peak memory while it streams the snapshot to
   four watchers at once;
3. re-list: makes the registry's feed unresumable (a new feed_id, as a restored database is),
   so the replica re-lists, and a steady 1,000 QPS UDP probe measures the longest gap between
   answers while it does;
4. update -> answered over UDP (p50/p99) while 200 updates/s run in the background;
5. UDP QPS (dnsperf) with queries over all N names against the same over a 1k-name zone;
6. registry Get, List and /update p99 against the same at 1k;
7. NSD and Knot loading a zone file of the same records: load time, memory, Knot's own RFC 2136
   update latency.
`--replicas` runs the four-replica lag test instead (500 updates/s for 60 s), and `--acme-dns`
the 1k update -> answered comparison with acme-dns (`../shared/bin/acme-dns` or
ACMEZONE_TEST_ACME_DNS). It never fails on a figure; it exits non-zero only when something
could not run.

    .venv/bin/python bench/scale_bench.py [--names 1000000] [--skip knot,nsd,...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.tsigkeyring
import dns.update
import grpc

from acmezone.registry.v1 import record_feed_service_pb2 as feed_pb
from acmezone.registry.v1 import record_feed_service_pb2_grpc as feed_grpc
from acmezone.registry.v1 import registration_service_pb2 as reg_pb
from acmezone.registry.v1 import registration_service_pb2_grpc as reg_grpc
from acmezone.registry.v1 import txt_record_service_pb2 as txt_pb
from acmezone.registry.v1 import txt_record_service_pb2_grpc as txt_grpc
from acmezone_common.testing import free_port, wait_for_serving

sys.path.insert(0, str(Path(__file__).parent))
from dns_bench import (  # noqa: E402
    CLIENT_CORE,
    SERVER_CORE,
    digest,
    dnsperf,
    nsd_config,
    percentile,
    pinned,
    process,
    qps_of,
    wait_answering,
)

ZONE = "acme.example.test"
BIN = Path(sys.executable).parent
OPERATOR_TOKEN = "scale-bench-operator-token-0123456789abcdef"  # noqa: S105 (a bench's own)
SMALL = 1000


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory (or its peak with VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def label(i: int) -> str:
    """The registration label of name i: a UUID, as registrations really are."""
    return str(uuid.UUID(int=random.Random(i).getrandbits(128), version=4))


def status(figure: str, value: str, target: str, ok: bool | None) -> None:
    mark = "" if ok is None else ("  ok" if ok else "  MISSED")
    print(f"  {figure:<58} {value:>16}   target {target}{mark}")


# -- filling -----------------------------------------------------------------------------------


def registry_env(workdir: Path, name: str, **extra: str) -> dict[str, str]:
    grpc_address = f"127.0.0.1:{free_port()}"
    return {
        "ACMEZONE_REGISTRY_GRPC_ADDRESS": grpc_address,
        "ACMEZONE_REGISTRY_HTTP_ADDRESS": f"127.0.0.1:{free_port()}",
        "ACMEZONE_REGISTRY_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        "ACMEZONE_REGISTRY_DATA_DIR": str(workdir / name),
        "ACMEZONE_REGISTRY_ZONE": ZONE,
        "ACMEZONE_REGISTRY_OPERATOR_TOKEN": OPERATOR_TOKEN,
        "ACMEZONE_REGISTRY_PASSWORD_SCRYPT_N": "1024",
        "ACMEZONE_REGISTRY_LOG_LEVEL": "WARNING",
        **extra,
    }


def dns_env(registry_grpc: str, **extra: str) -> dict[str, str]:
    return {
        "ACMEZONE_DNS_DNS_ADDRESSES": f"127.0.0.1:{free_port()}",
        "ACMEZONE_DNS_GRPC_ADDRESS": f"127.0.0.1:{free_port()}",
        "ACMEZONE_DNS_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        "ACMEZONE_DNS_REGISTRY_TARGET": registry_grpc,
        "ACMEZONE_DNS_ZONE": ZONE,
        "ACMEZONE_DNS_LOG_LEVEL": "WARNING",
        **extra,
    }


def dns_port(env: dict[str, str]) -> int:
    return int(env["ACMEZONE_DNS_DNS_ADDRESSES"].rsplit(":", 1)[1])


async def create_registrations(target: str, count: int) -> list[tuple[str, str, str]]:
    """Registrations made through the API (the ones whose credentials the bench uses)."""
    made = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = reg_grpc.RegistrationServiceStub(channel)
        for i in range(count):
            reg = await stub.CreateRegistration(
                reg_pb.CreateRegistrationRequest(registration_id=f"bench{i}"),
                metadata=(("authorization", f"Bearer {OPERATOR_TOKEN}"),),
            )
            made.append((f"bench{i}", reg.username, reg.password))
    return made


def write_registry_tables(database: Path, names: int) -> None:
    """N registrations with one value each, written straight into a migrated registry database
    (the fallback when the registry has no bulk import)."""
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
    with sqlite3.connect(database) as db:
        db.execute("PRAGMA synchronous=OFF")
        hash_of_nothing = "scrypt$1024$8$1$AAAA$AAAA"  # no password verifies against it
        for start in range(0, names, 50_000):
            rows = range(start, min(names, start + 50_000))
            db.executemany(
                "INSERT INTO registrations (subdomain, username, password_hash, allowed_cidrs,"
                " description, max_txt_values, create_time, update_time)"
                " VALUES (?, ?, ?, '[]', '', 2, ?, ?)",
                ((label(i), f"user-{i}", hash_of_nothing, now, now) for i in rows),
            )
            db.executemany(
                "INSERT INTO txt_values (subdomain, owner, value, create_time)"
                " VALUES (?, '', ?, ?)",
                ((label(i), digest(i), now) for i in rows),
            )
        db.execute("UPDATE feed_state SET revision = revision + 1")


def fill(workdir: Path, env: dict[str, str], names: int) -> float:
    """Fill the registry's database while it is stopped; seconds taken."""
    data = Path(env["ACMEZONE_REGISTRY_DATA_DIR"])
    started = time.perf_counter()
    subprocess.run(
        [str(BIN / "acmezone-registry"), "migrate"],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        timeout=120,
    )
    write_registry_tables(data / "registry.db", names)
    return time.perf_counter() - started


# -- probes ------------------------------------------------------------------------------------


def udp_query(name: str, qid: int) -> bytes:
    message = dns.message.make_query(name, "TXT", use_edns=False)
    message.id = qid
    return message.to_wire()


async def gap_probe(port: int, name: str, stop: asyncio.Event, qps: int = 1000) -> list[float]:
    """Send `qps` queries a second until `stop`; the times answers arrived (monotonic)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect(("127.0.0.1", port))
    arrivals: list[float] = []

    class Receiver(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            arrivals.append(time.monotonic())

    transport, _ = await loop.create_datagram_endpoint(Receiver, sock=sock)
    try:
        interval = 1 / qps
        next_send = time.monotonic()
        i = 0
        while not stop.is_set():
            transport.sendto(udp_query(name, i % 65536))
            i += 1
            next_send += interval
            await asyncio.sleep(max(0.0, next_send - time.monotonic()))
    finally:
        transport.close()
    return arrivals


def longest_gap(arrivals: list[float]) -> float:
    return max((b - a for a, b in zip(arrivals, arrivals[1:], strict=False)), default=0.0)


async def watch_snapshot(target: str) -> int:
    """One raw watcher reading a whole snapshot; the record sets it read."""
    count = 0
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    ) as channel:
        stub = feed_grpc.RecordFeedServiceStub(channel)
        call = stub.WatchRecords(feed_pb.WatchRecordsRequest(start_revision=0))
        async for message in call:
            if message.WhichOneof("event") == "snapshot":
                count += len(message.snapshot.record_sets)
                if message.snapshot.last:
                    call.cancel()
                    break
    return count


async def update_latency(
    registry: str, port: int, sub: str, updates: int, background_rate: float, background: list[str]
) -> list[float]:
    """Seconds from AddTxtValue returning to the value answered over UDP, one update at a
    time, while `background_rate` updates a second go to the `background` labels."""
    delays: list[float] = []
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect(("127.0.0.1", port))
    metadata = (("authorization", f"Bearer {OPERATOR_TOKEN}"),)
    stop = asyncio.Event()
    async with grpc.aio.insecure_channel(registry) as channel:
        txt = txt_grpc.TxtRecordServiceStub(channel)

        async def churn() -> None:
            n = 0
            next_at = time.monotonic()
            while not stop.is_set():
                target = background[n % len(background)]
                n += 1
                asyncio.ensure_future(
                    txt.AddTxtValue(
                        txt_pb.AddTxtValueRequest(
                            name=f"registrations/{target}/txtRecord", value=digest(("bg", n))
                        ),
                        metadata=metadata,
                    )
                )
                next_at += 1 / background_rate
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

        churner = asyncio.ensure_future(churn()) if background_rate else None
        try:
            for i in range(updates):
                value = digest(("update", i, sub)).encode()
                await txt.AddTxtValue(
                    txt_pb.AddTxtValueRequest(
                        name=f"registrations/{sub}/txtRecord", value=value.decode()
                    ),
                    metadata=metadata,
                )
                start = time.perf_counter()
                while True:
                    await loop.sock_sendall(sock, udp_query(f"{sub}.{ZONE}", i % 65536))
                    reply = await asyncio.wait_for(loop.sock_recv(sock, 65535), 2)
                    if value in reply:
                        break
                    if time.perf_counter() - start > 10:
                        raise RuntimeError(f"update {i} not visible after 10 s")
                delays.append(time.perf_counter() - start)
        finally:
            stop.set()
            if churner is not None:
                await churner
            sock.close()
    return delays


# -- phases ------------------------------------------------------------------------------------


@contextlib.contextmanager
def registry_process(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with process(pinned(CLIENT_CORE, [str(BIN / "acmezone-registry")]), env, log) as proc:
        asyncio.run(wait_for_serving(env["ACMEZONE_REGISTRY_GRPC_ADDRESS"], within=120))
        yield proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=1_000_000)
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10, help="length of each dnsperf run")
    parser.add_argument(
        "--skip", default="", help="comma-separated phases to skip: qps,registry,nsd,knot"
    )
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    workdir = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    print(f"scale bench: {args.names:,} registrations with one TXT value each, workdir {workdir}")
    big = registry_env(workdir, "registry")
    filled = fill(workdir, big, args.names)
    print(f"  registry filled in {filled:.1f} s")
    with contextlib.ExitStack() as stack:
        registry = stack.enter_context(registry_process(big, workdir / "registry.log"))
        registry_grpc = big["ACMEZONE_REGISTRY_GRPC_ADDRESS"]
        made = asyncio.run(create_registrations(registry_grpc, 30))
        print(f"\nat {args.names:,} names")
        env = dns_env(registry_grpc)
        started = time.perf_counter()
        dns_proc = stack.enter_context(
            process(pinned(SERVER_CORE, [str(BIN / "acmezone-dns")]), env, workdir / "dns.log")
        )
        asyncio.run(wait_for_serving(env["ACMEZONE_DNS_GRPC_ADDRESS"], within=600))
        serving = time.perf_counter() - started
        status("dns cold start -> SERVING", f"{serving:.1f} s", "<= 10 s", serving <= 10)
        time.sleep(1)
        rss = rss_mib(dns_proc.pid)
        status("dns resident memory", f"{rss:,.0f} MiB", "<= 1024 MiB", rss <= 1024)
        status("  per name", f"{rss * 1024 * 1024 / args.names:,.0f} B", "about 1 KiB", None)
        wait_answering(dns_port(env), f"{label(args.names - 1)}.{ZONE}")

        async def four_watchers() -> list[int]:
            return list(await asyncio.gather(*(watch_snapshot(registry_grpc) for _ in range(4))))

        before = rss_mib(registry.pid)
        started = time.perf_counter()
        counts = asyncio.run(four_watchers())
        took = time.perf_counter() - started
        peak = rss_mib(registry.pid, "VmHWM")
        status(
            "registry peak memory, snapshot to 4 watchers",
            f"{peak:,.0f} MiB",
            "<= 512 MiB",
            peak <= 512,
        )
        print(f"    (idle before: {before:,.0f} MiB; 4 x {counts[0]:,} record sets in {took:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
