"""Scale benchmark: the dns service and the registry with up to a million registrations, beside
NSD and Knot loading the very same records, and acme-dns at 1k names.

What it does, all on loopback, each figure printed beside its target (issue "A million
delegations"):
1. fills a registry (SQLite) with N registrations holding one TXT value each, through the bulk
   path an operator would use: `acmezone-registry import-acme-dns` from a database in
   acme-dns's schema;
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
import itertools
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import aiohttp
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
from dns_bench import (
    CLIENT_CORE,
    SERVER_CORE,
    digest,
    dnsperf,
    nsd_config,
    percentile,
    pinned,
    qps_of,
    wait_answering,
)
from import_bench import create_acme_dns_schema
from robustness import acme_dns, acme_dns_binary

ZONE = "acme.example.test"
BIN = Path(sys.executable).parent
OPERATOR_TOKEN = "scale-bench-operator-token-0123456789abcdef"  # noqa: S105 (a bench's own)
SMALL = 1000
FEED_AUTH = (("authorization", f"Bearer {OPERATOR_TOKEN}"),)
_MAX_IN_FLIGHT = 32
PROBE_EVERY = 25  # replica-test updates probed; the probes' own queries load the machine too


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
        "ACMEZONE_REGISTRY_LOG_LEVEL": "WARNING",
        **extra,
    }


def dns_env(registry_grpc: str, **extra: str) -> dict[str, str]:
    return {
        "ACMEZONE_DNS_DNS_ADDRESSES": f"127.0.0.1:{free_port()}",
        "ACMEZONE_DNS_GRPC_ADDRESS": f"127.0.0.1:{free_port()}",
        "ACMEZONE_DNS_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        "ACMEZONE_DNS_REGISTRY_TARGET": registry_grpc,
        "ACMEZONE_DNS_REGISTRY_TOKEN": OPERATOR_TOKEN,
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


def write_acme_dns_source(path: Path, names: int) -> None:
    """An acme-dns database (its own schema) with N registrations of one value each: the
    bulk path an operator moving from acme-dns takes, and a fast way to fill a registry.
    The password hashes have bcrypt's form but no password: nothing logs in with them."""
    with sqlite3.connect(path) as db:
        create_acme_dns_schema(db)
        for start in range(0, names, 50_000):
            rows = range(start, min(names, start + 50_000))
            db.executemany(
                "INSERT INTO records VALUES (?, ?, ?, '[]')",
                (
                    (str(uuid.UUID(int=i)), f"$2a$04${digest(('pw', i))[:53]:.<53}", label(i))
                    for i in rows
                ),
            )
            db.executemany(
                "INSERT INTO txt VALUES (?, ?, ?)",
                ((label(i), digest(i), 1_700_000_000) for i in rows),
            )


def fill(workdir: Path, env: dict[str, str], names: int) -> float:
    """Fill the registry's database (before it starts) with `import-acme-dns`; seconds."""
    source = workdir / f"acme-dns-{names}.db"
    if not source.exists():
        write_acme_dns_source(source, names)
    started = time.perf_counter()
    subprocess.run(
        [str(BIN / "acmezone-registry"), "import-acme-dns", "--from", f"sqlite:///{source}"],
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        timeout=1800,
    )
    return time.perf_counter() - started


# -- probes ------------------------------------------------------------------------------------


def udp_query(name: str, qid: int) -> bytes:
    message = dns.message.make_query(name, "TXT", use_edns=False)
    message.id = qid
    return message.to_wire()


PROBE_SENDS: list[float] = []
"""When (monotonic) the last gap_probe sent each query: a gap in the answers with no gap in
the sends is the server's; one in both is this process not being scheduled."""


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
        PROBE_SENDS.clear()
        while not stop.is_set():
            PROBE_SENDS.append(time.monotonic())
            transport.sendto(udp_query(name, i % 65536))
            i += 1
            next_send += interval
            await asyncio.sleep(max(0.0, next_send - time.monotonic()))
    finally:
        transport.close()
    return arrivals


def longest_gap(arrivals: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(arrivals)), default=0.0)


def longest_gap_end(arrivals: list[float]) -> float:
    """When (monotonic) the longest gap between arrivals ended."""
    pairs = list(itertools.pairwise(arrivals))
    return max(pairs, key=lambda p: p[1] - p[0])[1] if pairs else 0.0


async def watch_snapshot(target: str) -> int:
    """One raw watcher reading a whole snapshot; the record sets it read."""
    count = 0
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    ) as channel:
        stub = feed_grpc.RecordFeedServiceStub(channel)
        call = stub.WatchRecords(feed_pb.WatchRecordsRequest(start_revision=0), metadata=FEED_AUTH)
        async for message in call:
            if message.WhichOneof("event") == "snapshot":
                count += len(message.snapshot.record_sets)
                if message.snapshot.last:
                    call.cancel()
                    break
    return count


async def update_latency(
    registry: str,
    port: int,
    mine: tuple[str, str, str],
    updates: int,
    background_rate: float,
    background: list[tuple[str, str, str]],
) -> list[float]:
    """Seconds from AddTxtValue returning to the value answered over UDP, one update at a
    time, while `background_rate` updates a second go to the `background` labels."""
    delays: list[float] = []
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect(("127.0.0.1", port))
    sub = mine[0]
    metadata = (("x-api-user", mine[1]), ("x-api-key", mine[2]))
    stop = asyncio.Event()
    async with grpc.aio.insecure_channel(registry) as channel:
        txt = txt_grpc.TxtRecordServiceStub(channel)

        in_flight: set[asyncio.Future[object]] = set()
        done = [0]

        async def churn() -> None:
            n = 0
            next_at = time.monotonic()
            while not stop.is_set():
                if len(in_flight) >= _MAX_IN_FLIGHT:
                    # The registry is not keeping up: wait instead of piling up requests.
                    await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    next_at = time.monotonic()
                target, user, password = background[n % len(background)]
                n += 1
                call = asyncio.ensure_future(
                    txt.AddTxtValue(
                        txt_pb.AddTxtValueRequest(
                            name=f"registrations/{target}/txtRecord", value=digest(("bg", n))
                        ),
                        metadata=(("x-api-user", user), ("x-api-key", password)),
                    )
                )
                in_flight.add(call)
                call.add_done_callback(in_flight.discard)
                call.add_done_callback(lambda _: done.__setitem__(0, done[0] + 1))
                next_at += 1 / background_rate
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

        churner = asyncio.ensure_future(churn()) if background_rate else None
        began = time.monotonic()
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
                if in_flight:
                    await asyncio.wait(in_flight)
            sock.close()
    rate = done[0] / (time.monotonic() - began)
    if background_rate:
        print(f"    (background updates achieved: {rate:,.0f}/s of {background_rate:,.0f}/s asked)")
    return delays


# -- phases ------------------------------------------------------------------------------------


class Children:
    """The bench's child processes: started and stopped at will, all stopped at the end."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self._workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=log, stderr=log)
        log.close()
        self._running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(ValueError):
            self._running.remove(proc)

    def close(self) -> None:
        for proc in list(self._running):
            self.stop(proc)


def start_registry(children: Children, name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = children.start(name, pinned(CLIENT_CORE, [str(BIN / "acmezone-registry")]), env)
    asyncio.run(wait_for_serving(env["ACMEZONE_REGISTRY_GRPC_ADDRESS"], within=120))
    return proc


def start_dns(
    children: Children, name: str, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], float]:
    """A dns replica and its seconds from start to SERVING (first snapshot applied)."""
    started = time.perf_counter()
    proc = children.start(name, pinned(SERVER_CORE, [str(BIN / "acmezone-dns")]), env)
    asyncio.run(wait_for_serving(env["ACMEZONE_DNS_GRPC_ADDRESS"], within=600))
    return proc, time.perf_counter() - started


def relist_while_probed(
    children: Children, registry: subprocess.Popen[bytes], env: dict[str, str], port: int
) -> tuple[subprocess.Popen[bytes], float, float, float, int]:
    """Stop the registry, give its feed a new identity (as a database restored from a backup
    has) and one new value, start it again: the replica's resume fails with OUT_OF_RANGE and
    it re-lists, while a 1,000 QPS probe asks it a question whose answer never changes.
    Returns the new registry process, the re-list's seconds (registry up -> new value
    answered), the longest gap between answers from the registry's stop on, the longest gap
    in the quiet seconds before it (this host's own noise, the same probe), and how many
    answers the probe got."""
    database = Path(env["ACMEZONE_REGISTRY_DATA_DIR"]) / "registry.db"
    marker = digest("after-relist")

    async def probed() -> tuple[subprocess.Popen[bytes], float, float, float, int]:
        stop = asyncio.Event()
        probe = asyncio.ensure_future(gap_probe(port, f"{label(1)}.{ZONE}", stop))
        await asyncio.sleep(3)
        quiet_until = time.monotonic()
        stopping = time.monotonic()
        await asyncio.to_thread(children.stop, registry)
        with sqlite3.connect(database) as db:
            db.execute("UPDATE feed_state SET feed_id = ?", (str(uuid.uuid4()),))
            db.execute("UPDATE txt_values SET value = ? WHERE subdomain = ?", (marker, label(2)))
        restarted = children.start(
            "registry", pinned(CLIENT_CORE, [str(BIN / "acmezone-registry")]), env
        )
        await wait_for_serving(env["ACMEZONE_REGISTRY_GRPC_ADDRESS"], within=120)
        serving = time.monotonic()
        started = time.perf_counter()
        query = udp_query(f"{label(2)}.{ZONE}", 7)
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect(("127.0.0.1", port))
            while True:
                await loop.sock_sendall(sock, query)
                with contextlib.suppress(TimeoutError):
                    if marker.encode() in await asyncio.wait_for(loop.sock_recv(sock, 4096), 1):
                        break
                if time.perf_counter() - started > 300:
                    raise RuntimeError("the re-list did not finish in 300 s")
                await asyncio.sleep(0.05)
        took = time.perf_counter() - started
        relisted = time.monotonic()
        await asyncio.sleep(1)
        stop.set()
        arrivals = await probe
        quiet = [t for t in arrivals if t <= quiet_until]
        busy = [t for t in arrivals if t >= quiet_until]
        # Where the longest gap fell: during the registry's stop and start (this process and
        # the registry share a core then), or during the replica's re-list itself.
        end = longest_gap_end(busy)
        after = longest_gap([t for t in busy if t >= serving]) * 1e3
        sends = longest_gap([t for t in PROBE_SENDS if t >= serving]) * 1e3
        print(
            f"    (longest gap ended {end - stopping:.2f} s after the registry's stop; it"
            f" served again at {serving - stopping:.2f} s and the re-list was answered at"
            f" {relisted - stopping:.2f} s; longest gap after it served again: {after:.1f} ms,"
            f" in this probe's own sends: {sends:.1f} ms)"
        )
        return restarted, took, longest_gap(busy), longest_gap(quiet[100:]), len(arrivals)

    return asyncio.run(probed())


async def registry_latencies(
    grpc_target: str, http_address: str, made: list[tuple[str, str, str]], rounds: int
) -> dict[str, float]:
    """p99 seconds of GetRegistration, ListRegistrations (first page and pages further on)
    and the acme-dns /update, each `rounds` times, one at a time."""
    metadata = (("authorization", f"Bearer {OPERATOR_TOKEN}"),)
    results: dict[str, list[float]] = {"Get": [], "List": [], "/update": []}
    async with grpc.aio.insecure_channel(grpc_target) as channel:
        stub = reg_grpc.RegistrationServiceStub(channel)
        token = ""
        for i in range(rounds):
            sub = made[i % len(made)][0]
            started = time.perf_counter()
            await stub.GetRegistration(
                reg_pb.GetRegistrationRequest(name=f"registrations/{sub}"), metadata=metadata
            )
            results["Get"].append(time.perf_counter() - started)
            started = time.perf_counter()
            page = await stub.ListRegistrations(
                reg_pb.ListRegistrationsRequest(page_size=100, page_token=token), metadata=metadata
            )
            results["List"].append(time.perf_counter() - started)
            token = page.next_page_token
    host, port = http_address.rsplit(":", 1)
    for i in range(rounds):
        sub, user, password = made[i % len(made)]
        body = json.dumps({"subdomain": sub, "txt": digest(("http", i))}).encode()
        request = (
            f"POST /update HTTP/1.1\r\nHost: {host}\r\nX-Api-User: {user}\r\n"
            f"X-Api-Key: {password}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request)
        status_line = await reader.readline()
        await reader.read()
        writer.close()
        results["/update"].append(time.perf_counter() - started)
        if b" 200 " not in status_line:
            raise RuntimeError(f"/update answered {status_line!r}")
    return {name: percentile(values, 0.99) for name, values in results.items()}


async def http_update_latency(
    base: str, dns_port: int, updates: int, token: str | None = None
) -> list[float]:
    """Seconds from an acme-dns `/update` answer to its value answered over UDP, one update at
    a time, for a registration made with `/register` (acme-dns's API, ours or acme-dns's).
    The round trips of the `/update` requests themselves go into `UPDATE_ROUND_TRIPS`."""
    loop = asyncio.get_running_loop()
    delays: list[float] = []
    round_trips = UPDATE_ROUND_TRIPS.setdefault(base, [])
    async with aiohttp.ClientSession() as http:
        register = {"Authorization": f"Bearer {token}"} if token else {}
        async with http.post(f"{base}/register", headers=register) as reply:
            account = await reply.json()
            if reply.status != 201:
                raise RuntimeError(f"{base}/register answered {reply.status}: {account}")
        headers = {"X-Api-User": account["username"], "X-Api-Key": account["password"]}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect(("127.0.0.1", dns_port))
            for i in range(updates):
                value = digest(("http-update", i, base))
                body = {"subdomain": account["subdomain"], "txt": value}
                sent = time.perf_counter()
                async with http.post(f"{base}/update", json=body, headers=headers) as reply:
                    if reply.status != 200:
                        raise RuntimeError(f"{base}/update answered {reply.status}")
                started = time.perf_counter()
                round_trips.append(started - sent)
                while True:
                    await loop.sock_sendall(sock, udp_query(account["fulldomain"], i % 65536))
                    answer = await asyncio.wait_for(loop.sock_recv(sock, 4096), 2)
                    if value.encode() in answer:
                        break
                    if time.perf_counter() - started > 10:
                        raise RuntimeError(f"update {i} not answered after 10 s")
                delays.append(time.perf_counter() - started)
    return delays


UPDATE_ROUND_TRIPS: dict[str, list[float]] = {}
"""`/update` request round trips by API base URL (http_update_latency fills it)."""


async def replica_count(target: str) -> int:
    """How many dns replicas report to a registry."""
    async with grpc.aio.insecure_channel(target) as channel:
        status = await feed_grpc.RecordFeedServiceStub(channel).GetFeedStatus(
            feed_pb.GetFeedStatusRequest(), metadata=FEED_AUTH
        )
    return sum(1 for r in status.replicas if r.connected)


async def acme_dns_update_latency(workdir: Path, updates: int) -> list[float] | None:
    """The same for the real acme-dns (None when its binary is not here)."""
    binary = acme_dns_binary()
    if binary is None:
        return None
    (workdir / "acme-dns").mkdir(exist_ok=True)
    async with acme_dns(binary, workdir / "acme-dns") as server:
        return await http_update_latency(server.base, server.dns_port, updates)


def zone_file_lines(names: int) -> Iterator[str]:
    yield f"$ORIGIN {ZONE}."
    yield "$TTL 60"
    yield f"@ 60 IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 60"
    yield f"@ 3600 IN NS ns1.{ZONE}."
    yield "ns1 3600 IN A 127.0.0.1"
    for i in range(names):
        yield f'{label(i)} 1 IN TXT "{digest(i)}"'


def pids_of(root: int) -> list[int]:
    """A process and its descendants (NSD forks its server processes)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found = [root]
    for pid in parents:
        p = pid
        while p > 1:
            p = parents.get(p, 0)
            if p == root:
                found.append(pid)
                break
    return found


def load_anchor(
    children: Children, name: str, argv: list[str], port: int, probe: str
) -> tuple[subprocess.Popen[bytes], float, float]:
    """Start NSD or Knot on a zone file; seconds until it answers `probe`, and the resident
    memory of its processes then."""
    started = time.perf_counter()
    proc = children.start(name, pinned(SERVER_CORE, argv), {})
    wait_answering(port, probe, seconds=600)
    took = time.perf_counter() - started
    time.sleep(1)
    return proc, took, sum(rss_mib(pid) for pid in pids_of(proc.pid))


def knot_config(workdir: Path, port: int) -> Path:
    (workdir / "knot").mkdir(exist_ok=True)
    conf = workdir / "knot.conf"
    conf.write_text(
        f"""server:
    listen: 127.0.0.1@{port}
    rundir: "{workdir}/knot"
    background-workers: 1
    udp-workers: 1
    tcp-workers: 1
database:
    storage: "{workdir}/knot"
log:
  - target: stderr
    any: error
acl:
  - id: local_update
    address: 127.0.0.1
    action: update
zone:
  - domain: {ZONE}
    storage: "{workdir}"
    file: "zone"
    acl: local_update
    zonefile-sync: -1
    journal-content: none
"""
    )
    return conf


def knot_update_latency(port: int, updates: int) -> list[float]:
    """Seconds from sending an RFC 2136 UPDATE to Knot to its new value being answered."""
    delays = []
    for i in range(updates):
        value = digest(("knot", i))
        update = dns.update.UpdateMessage(f"{ZONE}.")
        update.replace(label(3), 1, "TXT", f'"{value}"')
        started = time.perf_counter()
        reply = dns.query.udp(update, "127.0.0.1", port=port, timeout=10)
        if reply.rcode() != dns.rcode.NOERROR:
            raise RuntimeError(f"Knot refused the update: {dns.rcode.to_text(reply.rcode())}")
        while True:
            answer = dns.query.udp(
                dns.message.make_query(f"{label(3)}.{ZONE}", "TXT"), "127.0.0.1", port=port
            )
            if value.encode() in answer.to_wire():
                break
            if time.perf_counter() - started > 10:
                raise RuntimeError("Knot's update was not answered in 10 s")
        delays.append(time.perf_counter() - started)
    return delays


def qps_comparison(
    big_port: int, big_pid: int, small_port: int, small_pid: int, workdir: Path, names: int,
    seconds: float, runs: int,
) -> tuple[list[float], list[float]]:  # fmt: skip
    """dnsperf QPS over every name of the big zone and over a 1k-name zone, alternating."""
    rng = random.Random(2)
    big_queries = workdir / "queries-big"
    order = list(range(names))
    rng.shuffle(order)
    big_queries.write_text("".join(f"{label(i)}.{ZONE} TXT\n" for i in order))
    small_queries = workdir / "queries-small"
    small_queries.write_text("".join(f"{label(i)}.{ZONE} TXT\n" for i in range(SMALL)))
    big, small = [], []
    for _ in range(runs):
        big.append(qps_of(dnsperf(big_port, big_queries, seconds, big_pid)[0]))
        small.append(qps_of(dnsperf(small_port, small_queries, seconds, small_pid)[0]))
    return big, small


async def snapshot_of(target: str) -> dict[str, tuple[str, ...]]:
    """The registry's whole state now, read as a watcher reads it: fqdn -> values."""
    state: dict[str, tuple[str, ...]] = {}
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    ) as channel:
        call = feed_grpc.RecordFeedServiceStub(channel).WatchRecords(
            feed_pb.WatchRecordsRequest(start_revision=0), metadata=FEED_AUTH
        )
        async for message in call:
            for record_set in message.snapshot.record_sets:
                state[record_set.fqdn] = tuple(record_set.txt_values)
            if message.snapshot.last:
                call.cancel()
                break
    return state


def served_values(port: int, names: list[str]) -> dict[str, tuple[str, ...] | None]:
    """What one replica answers for each name's TXT over UDP (None: NXDOMAIN), 256 queries in
    flight at a time, read from the raw replies: a million names in seconds, where dnspython
    making and parsing each message took minutes. A reply this reader does not take (TC set,
    another rcode) is asked again over TCP with dnspython."""
    served: dict[str, tuple[str, ...] | None] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("127.0.0.1", port))
        sock.settimeout(2)
        for start in range(0, len(names), 256):
            pending = {
                i: (name, raw_txt_query(name, i))
                for i, name in enumerate(names[start : start + 256])
            }
            for _, query in pending.values():
                sock.send(query)
            resends = 0
            while pending:
                try:
                    reply = sock.recv(65535)
                except TimeoutError:
                    resends += 1
                    if resends > 3:
                        raise RuntimeError(
                            f"port {port}: {len(pending)} queries unanswered"
                        ) from None
                    for _, query in pending.values():
                        sock.send(query)
                    continue
                entry = pending.get(int.from_bytes(reply[:2], "big"))
                if entry is None or reply[12 : len(entry[1])].lower() != entry[1][12:].lower():
                    continue  # the answer to a resent query, already taken
                name, query = entry
                del pending[int.from_bytes(reply[:2], "big")]
                values = txt_values_of(reply, len(query))
                if values is False:
                    answer = dns.query.tcp(
                        dns.message.make_query(name, "TXT"), "127.0.0.1", port=port, timeout=5
                    )
                    values = (
                        None
                        if answer.rcode() == dns.rcode.NXDOMAIN
                        else tuple(
                            sorted(
                                b"".join(rd.strings).decode()
                                for rrset in answer.answer
                                for rd in rrset
                            )
                        )
                    )
                served[name] = values
    return served


def raw_txt_query(name: str, qid: int) -> bytes:
    """A TXT query for `name` (ASCII labels), ID `qid`, RD off, no EDNS, made by hand."""
    labels = b"".join(
        bytes((len(label),)) + label.encode() for label in name.rstrip(".").split(".")
    )
    return (
        qid.to_bytes(2, "big")
        + b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"
        + labels
        + b"\x00\x00\x10\x00\x01"
    )


def txt_values_of(reply: bytes, question_end: int) -> tuple[str, ...] | Literal[False] | None:
    """The sorted TXT values of a NOERROR reply, None for NXDOMAIN, False for anything else
    (truncated, another rcode: ask again over TCP)."""
    rcode = reply[3] & 0x0F
    if reply[2] & 0x02 or rcode not in (0, 3):
        return False
    if rcode == 3:
        return None
    values = []
    pos = question_end
    for _ in range(int.from_bytes(reply[6:8], "big")):
        if reply[pos] & 0xC0 == 0xC0:
            pos += 2
        else:
            while reply[pos]:
                pos += reply[pos] + 1
            pos += 1
        rtype = int.from_bytes(reply[pos : pos + 2], "big")
        length = int.from_bytes(reply[pos + 8 : pos + 10], "big")
        rdata = reply[pos + 10 : pos + 10 + length]
        pos += 10 + length
        if rtype == 16:
            strings, at = [], 0
            while at < len(rdata):
                strings.append(rdata[at + 1 : at + 1 + rdata[at]])
                at += rdata[at] + 1
            values.append(b"".join(strings).decode())
    return tuple(sorted(values))


async def replicas_under_load(
    registry: str, ports: list[int], made: list[tuple[str, str, str]], rate: float, seconds: float
) -> tuple[dict[int, list[float]], int, float]:
    """`rate` updates a second for `seconds`; one update in PROBE_EVERY is probed on every
    replica (a query a millisecond until it answers the new value). Returns each replica's lag
    samples (seconds from the update's acknowledgement to the value answered), the updates
    made and the rate achieved."""
    loop = asyncio.get_running_loop()
    lags: dict[int, list[float]] = {port: [] for port in ports}
    in_flight: set[asyncio.Future[None]] = set()
    done = [0]

    async def probe(port: int, name: str, value: bytes, acked: float) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect(("127.0.0.1", port))
            query = udp_query(name, port % 65536)
            while time.perf_counter() - acked < 5:
                await loop.sock_sendall(sock, query)
                with contextlib.suppress(TimeoutError):
                    if value in await asyncio.wait_for(loop.sock_recv(sock, 4096), 0.5):
                        lags[port].append(time.perf_counter() - acked)
                        return
                await asyncio.sleep(0.001)
        lags[port].append(float("inf"))

    async with grpc.aio.insecure_channel(registry) as channel:
        txt = txt_grpc.TxtRecordServiceStub(channel)

        async def update(n: int) -> None:
            sub, user, password = made[n % len(made)]
            value = digest(("replicas", n))
            await txt.AddTxtValue(
                txt_pb.AddTxtValueRequest(name=f"registrations/{sub}/txtRecord", value=value),
                metadata=(("x-api-user", user), ("x-api-key", password)),
            )
            acked = time.perf_counter()
            done[0] += 1
            if n % PROBE_EVERY == 0:
                await asyncio.gather(
                    *(probe(port, f"{sub}.{ZONE}", value.encode(), acked) for port in ports)
                )

        began = time.monotonic()
        next_at = began
        n = 0
        while time.monotonic() - began < seconds:
            if len(in_flight) >= 4 * _MAX_IN_FLIGHT:
                await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                next_at = time.monotonic()
            task = asyncio.ensure_future(update(n))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            n += 1
            next_at += 1 / rate
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if in_flight:
            await asyncio.wait(in_flight)
        achieved = done[0] / (time.monotonic() - began)
    return lags, done[0], achieved


def replicas(args: argparse.Namespace, workdir: Path, children: Children) -> int:
    """The four-replica test: lag under sustained updates, then every replica's records."""
    env = registry_env(workdir, "registry")
    fill(workdir, env, args.names)
    start_registry(children, "registry", env)
    target = env["ACMEZONE_REGISTRY_GRPC_ADDRESS"]
    made = asyncio.run(create_registrations(target, 200))
    ports = []
    for i in range(args.replicas):
        replica = dns_env(target)
        children.start(f"dns-{i}", [str(BIN / "acmezone-dns")], replica)
        asyncio.run(wait_for_serving(replica["ACMEZONE_DNS_GRPC_ADDRESS"], within=600))
        ports.append(dns_port(replica))
    print(f"\n{args.replicas} dns replicas, {args.names:,} names, {args.rate:,.0f} updates/s asked")
    lags, count, achieved = asyncio.run(
        replicas_under_load(target, ports, made, args.rate, args.duration)
    )
    print(f"  {count:,} updates in {args.duration:.0f} s: {achieved:,.0f}/s achieved")
    for i, port in enumerate(ports):
        samples = lags[port]
        p50, p99 = percentile(samples, 0.5) * 1e3, percentile(samples, 0.99) * 1e3
        figure = f"replica {i}: update -> answered (p50 / p99, {len(samples)} probes)"
        status(figure, f"{p50:.1f} / {p99:.1f} ms", "p99 <= 50 ms", p99 <= 50)
    time.sleep(2)
    state = asyncio.run(snapshot_of(target))
    names = sorted(state)
    expected = {name: tuple(sorted(values)) for name, values in state.items()}
    for i, port in enumerate(ports):
        served = served_values(port, names)
        wrong = sum(1 for name in names if served.get(name) != expected[name])
        status(f"replica {i}: names differing from the registry", f"{wrong:,} of {len(names):,}",
               "0", wrong == 0)  # fmt: skip
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=1_000_000)
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10, help="length of each dnsperf run")
    parser.add_argument("--runs", type=int, default=3, help="dnsperf runs per zone")
    parser.add_argument(
        "--skip", default="", help="comma-separated phases to skip: relist,qps,registry,nsd,knot"
    )
    parser.add_argument(
        "--replicas", type=int, default=0, help="run the N-replica lag test instead (4)"
    )
    parser.add_argument("--rate", type=float, default=500, help="updates/s of the replica test")
    parser.add_argument("--duration", type=float, default=60, help="seconds of the replica test")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    for tool in ("taskset", *(() if "qps" in skip else ("dnsperf",))):
        if shutil.which(tool) is None:
            print(f"{tool} is missing: `make bench-deps` installs it", file=sys.stderr)
            return 1
    workdir = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    children = Children(workdir)
    print(f"scale bench: {args.names:,} registrations with one TXT value each, workdir {workdir}")
    try:
        if args.replicas:
            return replicas(args, workdir, children)
        return run(args, skip, workdir, children)
    finally:
        children.close()


def run(args: argparse.Namespace, skip: set[str], workdir: Path, children: Children) -> int:
    names = args.names
    big = registry_env(workdir, "registry")
    filled = fill(workdir, big, names)
    print(f"  registry filled in {filled:.1f} s")
    registry = start_registry(children, "registry", big)
    registry_grpc = big["ACMEZONE_REGISTRY_GRPC_ADDRESS"]
    made = asyncio.run(create_registrations(registry_grpc, 30))
    print(f"\nat {names:,} names")
    env = dns_env(registry_grpc)
    port = dns_port(env)
    dns_proc, serving = start_dns(children, "dns", env)
    status("dns cold start -> SERVING", f"{serving:.1f} s", "<= 10 s", serving <= 10)
    wait_answering(port, f"{label(names - 1)}.{ZONE}")
    time.sleep(1)
    rss = rss_mib(dns_proc.pid)
    status("dns resident memory", f"{rss:,.0f} MiB", "<= 1024 MiB", rss <= 1024)
    status("  per name", f"{rss * 1024 * 1024 / names:,.0f} B", "about 1 KiB", None)

    async def four_watchers() -> list[int]:
        return list(await asyncio.gather(*(watch_snapshot(registry_grpc) for _ in range(4))))

    idle = rss_mib(registry.pid)
    started = time.perf_counter()
    counts = asyncio.run(four_watchers())
    took = time.perf_counter() - started
    peak = rss_mib(registry.pid, "VmHWM")
    ok = peak <= 512
    status("registry peak memory, snapshot to 4 watchers", f"{peak:,.0f} MiB", "<= 512 MiB", ok)
    print(f"    (idle before: {idle:,.0f} MiB; 4 x {counts[0]:,} record sets in {took:.1f} s)")
    delays = asyncio.run(update_latency(registry_grpc, port, made[0], args.updates, 200, made[1:]))
    p50, p99 = percentile(delays, 0.5) * 1e3, percentile(delays, 0.99) * 1e3
    figure = "update -> answered, 200 updates/s behind (p50 / p99)"
    status(figure, f"{p50:.2f} / {p99:.2f} ms", "p99 <= 10 ms", p99 <= 10)
    if "relist" not in skip:
        registry, took, gap, quiet, answered = relist_while_probed(children, registry, big, port)
        status("re-list after OUT_OF_RANGE", f"{took:.1f} s", "<= 10 s", took <= 10)
        figure = "  longest gap between answers, 1,000 QPS probe"
        status(figure, f"{gap * 1e3:.1f} ms", "<= 50 ms", gap <= 0.05)
        status("  the same probe before (host noise)", f"{quiet * 1e3:.1f} ms", "-", None)
        peak_dns, now_dns = rss_mib(dns_proc.pid, "VmHWM"), rss_mib(dns_proc.pid)
        print(f"    ({answered:,} probe answers; dns peak {peak_dns:,.0f} MiB, now {now_dns:,.0f})")
    big_latencies: dict[str, float] = {}
    if "registry" not in skip:
        http = big["ACMEZONE_REGISTRY_HTTP_ADDRESS"]
        big_latencies = asyncio.run(registry_latencies(registry_grpc, http, made, 200))

    small = registry_env(workdir, "registry-small")
    fill(workdir, small, SMALL)
    small_grpc = small["ACMEZONE_REGISTRY_GRPC_ADDRESS"]
    small_registry = start_registry(children, "registry-small", small)
    small_made = asyncio.run(create_registrations(small_grpc, 30))
    small_env = dns_env(small_grpc)
    small_dns, _ = start_dns(children, "dns-small", small_env)
    wait_answering(dns_port(small_env), f"{label(SMALL - 1)}.{ZONE}")
    print(f"\nat {names:,} names against {SMALL:,} names (same run)")
    if big_latencies:
        http = small["ACMEZONE_REGISTRY_HTTP_ADDRESS"]
        small_latencies = asyncio.run(registry_latencies(small_grpc, http, small_made, 200))
        for what, p99_big in big_latencies.items():
            p99_small = small_latencies[what]
            figure = f"registry {what} p99 at {names:,} / at {SMALL:,}"
            value = f"{p99_big * 1e3:.2f} / {p99_small * 1e3:.2f} ms"
            status(figure, value, "<= 2x", p99_big <= 2 * p99_small)
    small_http = f"http://{small['ACMEZONE_REGISTRY_HTTP_ADDRESS']}"
    ours = asyncio.run(
        http_update_latency(small_http, dns_port(small_env), args.updates, OPERATOR_TOKEN)
    )
    acks = UPDATE_ROUND_TRIPS.pop(small_http, [])
    theirs = asyncio.run(acme_dns_update_latency(workdir, args.updates))
    ours_p99 = percentile(ours, 0.99) * 1e3
    value = f"{percentile(ours, 0.5) * 1e3:.2f} / {ours_p99:.2f} ms"
    if theirs is None:
        status("/update -> answered (p50 / p99)", value, "<= acme-dns's", None)
        print("    (acme-dns not run: set ACMEZONE_TEST_ACME_DNS or add ../shared/bin/acme-dns)")
    else:
        theirs_p99 = percentile(theirs, 0.99) * 1e3
        ok = ours_p99 <= theirs_p99
        status("/update -> answered (p50 / p99)", value, "<= acme-dns's", ok)
        value = f"{percentile(theirs, 0.5) * 1e3:.2f} / {theirs_p99:.2f} ms"
        status("  acme-dns, same run", value, "-", None)
    # The /update round trip itself (held until the replica serves the value, by default).
    value = f"{percentile(acks, 0.5) * 1e3:.2f} / {percentile(acks, 0.99) * 1e3:.2f} ms"
    status("  /update round trip (p50 / p99)", value, "-", None)
    # The same with the registry answering at once, before the replicas serve the value.
    children.stop(small_registry)
    at_once = {**small, "ACMEZONE_REGISTRY_WAIT_FOR_REPLICAS_SECONDS": "0"}
    small_registry = start_registry(children, "registry-small", at_once)
    for _ in range(200):  # the replica reconnects and reports again
        if asyncio.run(replica_count(small_grpc)):
            break
        time.sleep(0.05)
    unheld = asyncio.run(
        http_update_latency(small_http, dns_port(small_env), args.updates, OPERATOR_TOKEN)
    )
    value = f"{percentile(unheld, 0.5) * 1e3:.2f} / {percentile(unheld, 0.99) * 1e3:.2f} ms"
    status("  with WAIT_FOR_REPLICAS_SECONDS=0", value, "-", None)
    time.sleep(2)
    idle_small = rss_mib(small_registry.pid)
    figure = f"registry idle memory at {SMALL:,}"
    status(figure, f"{idle_small:,.0f} MiB", "<= 120 MiB", idle_small <= 120)
    if "qps" not in skip:
        small_port = dns_port(small_env)
        big_qps, small_qps = qps_comparison(
            port, dns_proc.pid, small_port, small_dns.pid, workdir, names, args.seconds, args.runs
        )
        ratio = statistics.median(big_qps) / statistics.median(small_qps)
        figure = f"UDP QPS at {names:,} / at {SMALL:,} (dnsperf -c 10)"
        value = f"{statistics.median(big_qps):,.0f} / {statistics.median(small_qps):,.0f}"
        status(figure, value, ">= 0.9x", ratio >= 0.9)
        runs = [", ".join(f"{q:,.0f}" for q in qps) for qps in (big_qps, small_qps)]
        print(f"    (ratio {ratio:.2f}; runs {runs[0]} / {runs[1]})")
    children.stop(small_dns)
    children.stop(small_registry)

    anchors = [a for a in ("nsd", "knotd") if a.rstrip("d") not in skip and shutil.which(a)]
    if not anchors:
        return 0
    children.stop(dns_proc)
    children.stop(registry)
    print(f"\nanchors loading the same {names:,} records from a zone file")
    probe = f"{label(names - 1)}.{ZONE}"
    nsd_port, knot_port = free_port(), free_port()
    nsd_conf = nsd_config(workdir, nsd_port, {})  # its header-only zone is replaced below
    with (workdir / "zone").open("w") as out:
        out.writelines(line + "\n" for line in zone_file_lines(names))
    if "nsd" in anchors:
        argv = ["nsd", "-d", "-c", str(nsd_conf)]
        proc, took, memory = load_anchor(children, "nsd", argv, nsd_port, probe)
        status("NSD: load -> answering, memory", f"{took:.1f} s, {memory:,.0f} MiB", "-", None)
        children.stop(proc)
    if "knotd" in anchors:
        argv = ["knotd", "-c", str(knot_config(workdir, knot_port))]
        proc, took, memory = load_anchor(children, "knot", argv, knot_port, probe)
        status("Knot: load -> answering, memory", f"{took:.1f} s, {memory:,.0f} MiB", "-", None)
        knot = knot_update_latency(knot_port, 20)
        value = f"{percentile(knot, 0.5) * 1e3:.0f} / {percentile(knot, 0.99) * 1e3:.0f} ms"
        status("Knot: RFC 2136 update -> answered (p50 / p99)", value, "-", None)
        children.stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
