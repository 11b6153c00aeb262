"""Every probe of issue 13 against the real services, beside acme-dns, on loopback only.

Runs the real `acmezone-registry`, `acmezone-dns` and `acmezone-issuer` commands (SQLite, INFO
logging), Pebble for the issuer, and, when it is available (`ACMEZONE_TEST_ACME_DNS` or
../shared/bin/acme-dns), the real acme-dns, and measures

1. sustained `/update` with correct credentials from N concurrent clients (requests/s, p50,
   p99) for both, and the ratio; then paced at 300/s, with update -> answered by a dns replica;
2. the credential flood: legitimate `/update` p99 while N connections flood wrong passwords,
   against its unloaded p99;
3. the HTTP connection flood (slowloris): M sockets sending one header byte at a time; how long
   until the server closed them, and whether a normal client was answered meanwhile;
4. kill -9 of the registry during a burst of `/update`: acknowledged writes lost;
5. the DNS probes of bench/dns_robustness.py (called, not copied): a fuzz run (1M packets by
   default) with rcode counts and RSS before/after, the DNS-over-TCP idle connection flood, and
   kill -9 of the dns service during a burst: acknowledged values not served;
6. kill -9 of the issuer while its orders are in flight (placed, challenges being presented):
   on restart the same replica identity takes its leases back at once; acknowledged
   certificates lost (not issued), extra orders, and how long after the restart they issued
   (against the 60 s lease a new identity would wait out).

Every load is bounded in count and time. Prints each figure beside its target; never fails on a
figure, exits non-zero only when something could not run. `--quick` runs every probe reduced
(a few seconds each, 20,000 fuzz packets) to check the whole script works.

    .venv/bin/python bench/robustness.py [--quick] [--only PROBE] [--clients 50] [--seconds 15]
        [--slowloris 1000] [--packets 1000000] [--tcp-connections 1000] [--certificates 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import dns.message
import grpc

from acmezone.issuer.v1 import account_service_pb2 as account_pb
from acmezone.issuer.v1 import account_service_pb2_grpc as account_grpc
from acmezone.issuer.v1 import certificate_service_pb2 as cert_pb
from acmezone.issuer.v1 import certificate_service_pb2_grpc as cert_grpc
from acmezone.registry.v1 import txt_record_service_pb2 as txt_pb
from acmezone.registry.v1 import txt_record_service_pb2_grpc as txt_grpc
from acmezone_clients.devpebble import LocalPebble
from acmezone_common.testing import wait_for_serving

sys.path.insert(0, str(Path(__file__).parent))
import dns_robustness  # a sibling script, importable once its folder is on the path

ROOT = Path(__file__).resolve().parent.parent
REGISTRY_BIN = str(Path(sys.executable).parent / "acmezone-registry")
DNS_BIN = str(Path(sys.executable).parent / "acmezone-dns")
ISSUER_BIN = str(Path(sys.executable).parent / "acmezone-issuer")
UPDATE_RPS_TARGET = 300.0
UPDATE_P99_TARGET = 0.100
ACME_DNS_RATIO_AIM = 20.0
FLOOD_P99_FACTOR_TARGET = 2.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def digest(seed: object) -> str:
    import base64
    import hashlib

    raw = hashlib.sha256(str(seed).encode()).digest()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def wait_http(url: str, process: subprocess.Popen[bytes], within: float = 30.0) -> None:
    """Until `url` answers (the process has no readiness signal of its own besides its port)."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"{process.args} exited with {process.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as reply:
                    if reply.status < 500:
                        return
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not answer within {within} s")
            await asyncio.sleep(0.05)


@dataclass
class Server:
    name: str
    base: str
    process: subprocess.Popen[bytes]
    dns_port: int = 0  # where it answers DNS (acme-dns), 0 when not known here
    grpc_target: str = ""  # acmezone's registry gRPC address


@contextlib.contextmanager
def _process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=out)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.asynccontextmanager
async def acmezone(workdir: Path, **settings: str) -> AsyncIterator[Server]:
    http = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "ACMEZONE_REGISTRY_DATA_DIR": str(workdir),
        "ACMEZONE_REGISTRY_GRPC_ADDRESS": f"127.0.0.1:{free_port()}",
        "ACMEZONE_REGISTRY_HTTP_ADDRESS": http,
        "ACMEZONE_REGISTRY_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        "ACMEZONE_REGISTRY_LOG_LEVEL": "INFO",
        **{f"ACMEZONE_REGISTRY_{k.upper()}": v for k, v in settings.items()},
    }
    grpc_target = env["ACMEZONE_REGISTRY_GRPC_ADDRESS"]
    argv = [REGISTRY_BIN, "serve"]
    if os.environ.get("ROBUSTNESS_PROFILE"):
        argv = [sys.executable, "-m", "cProfile", "-o", os.environ["ROBUSTNESS_PROFILE"], *argv]
    with _process(argv, env, workdir / "registry.log") as process:
        await wait_http(f"http://{http}/health", process)
        yield Server("acmezone", f"http://{http}", process, grpc_target=grpc_target)


@contextlib.asynccontextmanager
async def dns_replica(workdir: Path, registry: str) -> AsyncIterator[int]:
    """A dns service following `registry`; yields its DNS port once it serves the feed."""
    os.makedirs(workdir, exist_ok=True)
    port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "ACMEZONE_DNS_DNS_ADDRESSES": f'["127.0.0.1:{port}"]',
        "ACMEZONE_DNS_GRPC_ADDRESS": f"127.0.0.1:{grpc_port}",
        "ACMEZONE_DNS_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        "ACMEZONE_DNS_REGISTRY_TARGET": registry,
        "ACMEZONE_DNS_LOG_LEVEL": "WARNING",
    }
    with _process([DNS_BIN], env, workdir / "dns.log"):
        await wait_for_serving(f"127.0.0.1:{grpc_port}", within=60)
        yield port


def acme_dns_binary() -> str | None:
    configured = os.environ.get("ACMEZONE_TEST_ACME_DNS")
    if configured:
        return configured
    shipped = ROOT.parent / "shared" / "bin" / "acme-dns"
    return str(shipped) if shipped.exists() else None


@contextlib.asynccontextmanager
async def acme_dns(binary: str, workdir: Path) -> AsyncIterator[Server]:
    api_port, dns_port = free_port(), free_port()
    config = workdir / "acme-dns.cfg"
    config.write_text(
        f"""[general]
listen = "127.0.0.1:{dns_port}"
protocol = "both4"
domain = "auth.example.org"
nsname = "auth.example.org"
nsadmin = "admin.example.org"
records = ["auth.example.org. A 127.0.0.1", "auth.example.org. NS auth.example.org."]
debug = false
[database]
engine = "sqlite3"
connection = "{workdir / "acme-dns.db"}"
[api]
ip = "127.0.0.1"
disable_registration = false
port = "{api_port}"
tls = "none"
corsorigins = ["*"]
use_header = false
header_name = "X-Forwarded-For"
[logconfig]
loglevel = "warning"
logtype = "stdout"
logformat = "text"
"""
    )
    with _process([binary, "-c", str(config)], dict(os.environ), workdir / "acme-dns.log") as p:
        await wait_http(f"http://127.0.0.1:{api_port}/health", p)
        yield Server("acme-dns", f"http://127.0.0.1:{api_port}", p, dns_port)


async def register(session: aiohttp.ClientSession, server: Server, count: int) -> list[Any]:
    accounts = []
    for _ in range(count):
        async with session.post(f"{server.base}/register") as reply:
            if reply.status != 201:
                raise SystemExit(f"{server.name} /register answered {reply.status}")
            accounts.append(json.loads(await reply.read()))
    return accounts


@dataclass
class Load:
    count: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def quantile(self, q: float) -> float:
        if len(self.latencies) < 2:
            return self.latencies[0] if self.latencies else float("nan")
        return statistics.quantiles(self.latencies, n=1000)[int(q * 1000) - 1]


async def sustained_updates(
    server: Server, accounts: list[Any], seconds: float, limit: int = 200_000
) -> Load:
    """Each account's client posts /update back to back until time (or the count) runs out."""
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=len(accounts))

    async def client(session: aiohttp.ClientSession, account: Any) -> None:
        nonlocal errors
        headers = {"X-Api-User": account["username"], "X-Api-Key": account["password"]}
        n = 0
        while time.monotonic() < deadline and len(latencies) < limit:
            body = json.dumps({"subdomain": account["subdomain"], "txt": digest((account, n))})
            n += 1
            started = time.perf_counter()
            try:
                async with session.post(f"{server.base}/update", data=body, headers=headers) as r:
                    await r.read()
                    ok = r.status == 200
            except aiohttp.ClientError:
                ok = False
            latencies.append(time.perf_counter() - started)
            errors += not ok

    started = time.monotonic()
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session, account) for account in accounts))
    return Load(len(latencies), errors, time.monotonic() - started, latencies)


async def answered_after(port: int, name: str, value: str, since: float) -> float:
    """Seconds from `since` until the dns service at `port` answers `value` at `name`."""
    loop = asyncio.get_running_loop()
    query = dns.message.make_query(name, "TXT", use_edns=False).to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(("127.0.0.1", port))
        while time.monotonic() - since < 10:
            await loop.sock_sendall(sock, query)
            with contextlib.suppress(TimeoutError):
                if value.encode() in await asyncio.wait_for(loop.sock_recv(sock, 4096), 1):
                    return time.monotonic() - since
            await asyncio.sleep(0.001)
    return float("inf")


async def paced_updates(
    server: Server,
    accounts: list[Any],
    rate: float,
    seconds: float,
    dns_port: int = 0,
    answered: list[float] | None = None,
) -> Load:
    """Open loop: the clients together send `rate` requests/s on a fixed schedule; latency is
    counted from when a request was due, so a server that falls behind cannot hide it. With a
    `dns_port`, one update in 30 is also timed from its answer to the dns service answering
    its value (into `answered`)."""
    latencies: list[float] = []
    probes: list[asyncio.Task[float]] = []
    errors = 0
    interval = len(accounts) / rate
    begin = time.monotonic() + 0.2

    async def client(session: aiohttp.ClientSession, index: int, account: Any) -> None:
        nonlocal errors
        headers = {"X-Api-User": account["username"], "X-Api-Key": account["password"]}
        due = begin + interval * index / len(accounts)
        n = 0
        while due < begin + seconds:
            await asyncio.sleep(max(0.0, due - time.monotonic()))  # the schedule, not a sync
            body = json.dumps({"subdomain": account["subdomain"], "txt": digest((index, n))})
            try:
                async with session.post(f"{server.base}/update", data=body, headers=headers) as r:
                    await r.read()
                    errors += r.status != 200
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.monotonic() - due)
            if dns_port and len(latencies) % 30 == 0:
                probes.append(
                    asyncio.ensure_future(
                        answered_after(
                            dns_port, account["fulldomain"], digest((index, n)), time.monotonic()
                        )
                    )
                )
            n += 1
            due += interval

    connector = aiohttp.TCPConnector(limit=len(accounts))
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session, i, a) for i, a in enumerate(accounts)))
    if answered is not None:
        answered.extend(await asyncio.gather(*probes))
    return Load(len(latencies), errors, seconds, latencies)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its threads so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def show_load(name: str, load: Load) -> None:
    print(
        f"  {name:<9} {load.rps:7.1f} req/s (target >= {UPDATE_RPS_TARGET:.0f}), "
        f"p50 {load.quantile(0.5) * 1000:7.1f} ms, p99 {load.quantile(0.99) * 1000:7.1f} ms "
        f"(target <= {UPDATE_P99_TARGET * 1000:.0f} ms), {load.count} requests, "
        f"{load.errors} errors"
    )


async def probe_sustained(args: argparse.Namespace, workdir: Path) -> None:
    print(f"sustained /update, {args.clients} clients, {args.seconds:.0f} s, SQLite")
    async with acmezone(workdir / "acmezone") as server, aiohttp.ClientSession() as session:
        accounts = await register(session, server, args.clients)
        cpu = cpu_seconds(server.process.pid)
        ours = await sustained_updates(server, accounts, args.seconds)
        cpu = cpu_seconds(server.process.pid) - cpu
        answered: list[float] = []
        async with dns_replica(workdir / "dns", server.grpc_target) as dns_port:
            paced = await paced_updates(
                server, accounts, UPDATE_RPS_TARGET, args.seconds, dns_port, answered
            )
            # Every answer now waits until the replica serves the value (the default).
            held = await sustained_updates(server, accounts, args.seconds)
    show_load("acmezone", ours)
    print(f"            server CPU {cpu / max(ours.count, 1) * 1e6:.0f} us per request")
    show_load("  held", held)
    print("            (one dns replica following; each /update answered once it serves the value)")
    print(
        f"  paced at {UPDATE_RPS_TARGET:.0f} req/s offered: "
        f"p50 {paced.quantile(0.5) * 1000:.1f} ms, "
        f"p99 {paced.quantile(0.99) * 1000:.1f} ms (target <= {UPDATE_P99_TARGET * 1000:.0f} ms), "
        f"{paced.count} requests, {paced.errors} errors"
    )
    if answered:
        ordered = sorted(answered)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        print(
            f"  update -> answered by dns at that rate: p50 {ordered[len(ordered) // 2] * 1000:.1f}"
            f" ms, p99 {p99 * 1000:.1f} ms (target <= 50 ms), {len(ordered)} updates timed"
        )
    binary = acme_dns_binary()
    if binary is None:
        print("  acme-dns  skipped: set ACMEZONE_TEST_ACME_DNS (no ../shared/bin/acme-dns)")
        return
    async with acme_dns(binary, workdir / "acme-dns") as server, aiohttp.ClientSession() as s:
        accounts = await register(s, server, args.clients)
        theirs = await sustained_updates(server, accounts, args.seconds)
    show_load("acme-dns", theirs)
    ratio = ours.rps / theirs.rps if theirs.rps else float("inf")
    print(f"  ratio     {ratio:7.1f}x acme-dns's requests/s (aim >= {ACME_DNS_RATIO_AIM:.0f}x)")


async def wrong_password_flood(
    server: Server, victims: list[Any], connections: int, stop: asyncio.Event, source: str
) -> int:
    """`connections` clients posting wrong passwords back to back until `stop`; how many."""
    sent = 0
    connector = aiohttp.TCPConnector(limit=connections, local_addr=(source, 0))

    async def flooder(session: aiohttp.ClientSession, index: int) -> None:
        nonlocal sent
        victim = victims[index % len(victims)]
        headers = {"X-Api-User": victim["username"], "X-Api-Key": "w" * 40}
        body = json.dumps({"subdomain": victim["subdomain"], "txt": digest(index)})
        while not stop.is_set():
            with contextlib.suppress(aiohttp.ClientError):
                async with session.post(f"{server.base}/update", data=body, headers=headers) as r:
                    await r.read()
            sent += 1

    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(flooder(session, i) for i in range(connections)))
    return sent


async def probe_flood(args: argparse.Namespace, workdir: Path) -> None:
    print(f"legitimate /update while {args.clients} connections flood wrong passwords")
    async with acmezone(workdir / "flood") as server, aiohttp.ClientSession() as session:
        accounts = await register(session, server, 10)
        victims = await register(session, server, 5)
        rate = 20.0  # legitimate requests/s, well under capacity
        quiet = await paced_updates(server, accounts, rate, args.seconds / 2)
        stop = asyncio.Event()
        # The flood comes from another network (127.0.1.0/24), as an attacker's would.
        flood = asyncio.create_task(
            wrong_password_flood(server, victims, args.clients, stop, "127.0.1.2")
        )
        cpu = cpu_seconds(server.process.pid)
        loaded = await paced_updates(server, accounts, rate, args.seconds)
        cpu = cpu_seconds(server.process.pid) - cpu
        stop.set()
        sent = await flood
    factor = loaded.quantile(0.99) / quiet.quantile(0.99)
    print(
        f"  unloaded p99 {quiet.quantile(0.99) * 1000:.1f} ms; under flood p99 "
        f"{loaded.quantile(0.99) * 1000:.1f} ms = {factor:.2f}x "
        f"(target <= {FLOOD_P99_FACTOR_TARGET:.0f}x), {loaded.errors} errors; flood "
        f"{sent / args.seconds:.0f} req/s, server CPU {cpu / args.seconds * 100:.0f}% of a core"
    )


async def probe_slowloris(args: argparse.Namespace, workdir: Path) -> None:
    header_timeout = 5.0
    count = args.slowloris
    print(f"slowloris: {count} sockets sending one header byte per second")
    async with acmezone(
        workdir / "slowloris",
        http_header_timeout_seconds=str(header_timeout),
        # One connection per loopback address: the per-address cap is not what is measured.
        http_max_connections=str(count + 100),
    ) as server:
        host, port = server.base.removeprefix("http://").split(":")
        closed_after: list[float] = []
        started = time.monotonic()

        async def slow_client(index: int) -> None:
            source = f"127.0.{1 + index // 250}.{1 + index % 250}"
            try:
                reader, writer = await asyncio.open_connection(
                    host, int(port), local_addr=(source, 0)
                )
            except OSError:
                closed_after.append(0.0)
                return
            opened = time.monotonic()
            request = b"POST /update HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
            try:
                for byte in request:
                    writer.write(bytes([byte]))
                    with contextlib.suppress(TimeoutError):
                        if await asyncio.wait_for(reader.read(1024), 1.0) == b"":
                            break
                    if reader.at_eof():
                        break
                    if time.monotonic() - opened > header_timeout * 4:
                        break
            except (ConnectionError, OSError):
                pass
            closed_after.append(time.monotonic() - opened)
            writer.close()

        tasks = [asyncio.create_task(slow_client(i)) for i in range(count)]
        await asyncio.sleep(1.0)  # let the sockets connect before the normal client asks
        answered = None
        async with aiohttp.ClientSession() as session:
            asked = time.monotonic()
            async with session.get(f"{server.base}/health") as reply:
                await reply.read()
                answered = (reply.status, time.monotonic() - asked)
        await asyncio.gather(*tasks)
        total = time.monotonic() - started
    within = sum(1 for t in closed_after if 0 < t <= header_timeout + 1.5)
    print(
        f"  {within}/{count} closed within the header timeout of {header_timeout:.0f} s "
        f"(+1.5 s slack; target: all), slowest {max(closed_after):.1f} s, run {total:.0f} s; "
        f"a normal client meanwhile: status {answered[0]} in {answered[1] * 1000:.0f} ms"
    )


async def acknowledged_burst(
    server: Server, accounts: list[Any], stop: asyncio.Event
) -> dict[str, str]:
    """Every account's client sends `/update`s back to back until `stop` or an error; the
    value each last had acknowledged (200), by subdomain."""
    acknowledged: dict[str, str] = {}

    async def client(session: aiohttp.ClientSession, index: int, account: Any) -> None:
        headers = {"X-Api-User": account["username"], "X-Api-Key": account["password"]}
        n = 0
        while not stop.is_set():
            value = digest(("kill", index, n))
            body = json.dumps({"subdomain": account["subdomain"], "txt": value})
            try:
                async with session.post(f"{server.base}/update", data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        return
            except (aiohttp.ClientError, OSError):
                return
            acknowledged[account["subdomain"]] = value
            n += 1

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session, i, a) for i, a in enumerate(accounts)))
    return acknowledged


async def probe_kill(args: argparse.Namespace, workdir: Path) -> None:
    """kill -9 of the registry in the middle of a burst of updates; every update it had
    acknowledged must be there when it comes back."""
    print("kill -9 of the registry during a burst of /update (SQLite)")
    data = workdir / "kill"
    async with acmezone(data) as server, aiohttp.ClientSession() as session:
        accounts = await register(session, server, 20)
        stop = asyncio.Event()
        burst = asyncio.ensure_future(acknowledged_burst(server, accounts, stop))
        await asyncio.sleep(2.0)
        server.process.kill()  # SIGKILL: no chance to flush anything
        server.process.wait()
        acknowledged = await burst
    lost = 0
    async with acmezone(data) as server, grpc.aio.insecure_channel(server.grpc_target) as channel:
        txt = txt_grpc.TxtRecordServiceStub(channel)
        for account in accounts:
            value = acknowledged.get(account["subdomain"])
            if value is None:
                continue
            record = await txt.GetTxtRecord(
                txt_pb.GetTxtRecordRequest(name=f"registrations/{account['subdomain']}/txtRecord"),
                metadata=(
                    ("x-api-user", account["username"]),
                    ("x-api-key", account["password"]),
                ),
            )
            lost += value not in {v.value for v in record.values}
    print(
        f"  acknowledged updates lost: {lost} of the {len(acknowledged)} accounts' last"
        " acknowledged values (target 0)"
    )


async def probe_dns(args: argparse.Namespace, workdir: Path) -> None:
    """bench/dns_robustness.py's fuzz, TCP flood and dns kill -9, in a thread (it runs its own
    event loops)."""
    print(
        f"dns service: fuzz {args.packets:,} packets, {args.tcp_connections:,} idle TCP "
        f"connections, kill -9 during {args.updates} updates (bench/dns_robustness.py)"
    )
    await asyncio.to_thread(dns_robustness.run, args)


ISSUER_TOKEN = "robustness-issuer-token"  # noqa: S105 - a throwaway loopback token
ISSUER_AUTH = (("authorization", f"Bearer {ISSUER_TOKEN}"),)
CHALLENGE_ZONE = "acme.example.test"
LEASE_SECONDS = 60.0


def zone_text(cnames: dict[str, str]) -> str:
    """The customer zone `example.test` with one `_acme-challenge` CNAME per name."""
    lines = [
        "$ORIGIN example.test.",
        "$TTL 60",
        "@ SOA ns1.acme.example.test. hostmaster.example.test. 1 3600 600 86400 1",
        "@ NS ns1.acme.example.test.",
    ]
    for name, target in sorted(cnames.items()):
        lines.append(f"_acme-challenge.{name.removesuffix('.example.test')} CNAME {target}.")
    return "\n".join(lines) + "\n"


def pebble_binary() -> str:
    configured = os.environ.get("ACMEZONE_TEST_PEBBLE")
    if configured:
        return configured
    shipped = ROOT.parent / "shared" / "bin" / "pebble"
    return str(shipped) if shipped.exists() else "pebble"


def popen(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, env={**os.environ, **env}, stdout=out, stderr=out)


async def probe_issuer_kill(args: argparse.Namespace, workdir: Path) -> None:
    """kill -9 of the issuer while `args.certificates` acknowledged certificates each have an
    order in flight. The registry is paused (SIGSTOP) once the orders are placed, so every
    attempt is provably between placing its order and answering its challenges when the issuer
    dies; then the registry resumes and the issuer restarts with the same data dir."""
    count = args.certificates
    print(
        f"kill -9 of the issuer with {count} orders in flight (Pebble, lease {LEASE_SECONDS:.0f} s)"
    )
    dns_port, http01_port = free_port(), free_port()
    registry_grpc, issuer_grpc = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    dns_grpc = f"127.0.0.1:{free_port()}"
    zone_file = workdir / "example.test.zone"
    zone_file.write_text(zone_text({}))
    registry_env = {
        "ACMEZONE_REGISTRY_GRPC_ADDRESS": registry_grpc,
        "ACMEZONE_REGISTRY_HTTP_ADDRESS": f"127.0.0.1:{free_port()}",
        "ACMEZONE_REGISTRY_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        "ACMEZONE_REGISTRY_DATA_DIR": str(workdir / "registry"),
        "ACMEZONE_REGISTRY_ZONE": CHALLENGE_ZONE,
        "ACMEZONE_REGISTRY_LOG_LEVEL": "WARNING",
    }
    dns_env = {
        "ACMEZONE_DNS_GRPC_ADDRESS": dns_grpc,
        "ACMEZONE_DNS_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        "ACMEZONE_DNS_DNS_ADDRESSES": f"127.0.0.1:{dns_port}",
        "ACMEZONE_DNS_REGISTRY_TARGET": registry_grpc,
        "ACMEZONE_DNS_ZONE": CHALLENGE_ZONE,
        "ACMEZONE_DNS_ZONE_FILES": str(zone_file),
        "ACMEZONE_DNS_TXT_TTL": "0",
        "ACMEZONE_DNS_SOA_MINIMUM": "0",
        "ACMEZONE_DNS_LOG_LEVEL": "WARNING",
    }
    pebble = LocalPebble(
        workdir / "pebble",
        dns_server=f"127.0.0.1:{dns_port}",
        http01_port=http01_port,
        binary=pebble_binary(),
    )
    issuer_env = {
        "ACMEZONE_ISSUER_GRPC_ADDRESS": issuer_grpc,
        "ACMEZONE_ISSUER_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        "ACMEZONE_ISSUER_HTTP01_ADDRESS": f"127.0.0.1:{http01_port}",
        "ACMEZONE_ISSUER_DATA_DIR": str(workdir / "issuer"),
        "ACMEZONE_ISSUER_OPERATOR_TOKEN": ISSUER_TOKEN,
        "ACMEZONE_ISSUER_DEFAULT_DIRECTORY_URL": pebble.directory_url,
        "ACMEZONE_ISSUER_ACME_CA_BUNDLE": str(pebble.ca_bundle),
        "ACMEZONE_ISSUER_REGISTRY_ADDRESS": registry_grpc,
        "ACMEZONE_ISSUER_DNS_RESOLVER": f"127.0.0.1:{dns_port}",
        "ACMEZONE_ISSUER_RECONCILE_INTERVAL_SECONDS": "0.5",
        "ACMEZONE_ISSUER_DELEGATION_RECHECK_SECONDS": "0.3",
        "ACMEZONE_ISSUER_LEASE_SECONDS": str(LEASE_SECONDS),
        "ACMEZONE_ISSUER_LOG_LEVEL": "WARNING",
    }
    children: list[subprocess.Popen[bytes]] = []
    try:
        pebble.start()
        registry = popen([REGISTRY_BIN, "serve"], registry_env, workdir / "registry.log")
        children.append(registry)
        await wait_for_serving(registry_grpc, within=60)
        children.append(popen([DNS_BIN], dns_env, workdir / "dns.log"))
        await wait_for_serving(dns_grpc, within=60)
        issuer = popen([ISSUER_BIN], issuer_env, workdir / "issuer.log")
        children.append(issuer)
        await wait_for_serving(issuer_grpc, within=60)
        names = [f"kill{i}.example.test" for i in range(count)]
        async with grpc.aio.insecure_channel(issuer_grpc) as channel:
            accounts = account_grpc.AccountServiceStub(channel)
            certificates = cert_grpc.CertificateServiceStub(channel)
            account = await accounts.CreateAccount(
                account_pb.CreateAccountRequest(
                    account=account_pb.Account(terms_of_service_agreed=True)
                ),
                metadata=ISSUER_AUTH,
            )
            cnames = {}
            for name in names:
                delegation = await certificates.CheckDelegation(
                    cert_pb.CheckDelegationRequest(domain=name), metadata=ISSUER_AUTH
                )
                cnames[name] = delegation.cname_target
            # The domain owner adds the CNAMEs; the dns service reloads its zone on SIGHUP.
            zone_file.write_text(zone_text(cnames))
            children[1].send_signal(signal.SIGHUP)
            await asyncio.sleep(0.5)
            os.kill(registry.pid, signal.SIGSTOP)
            acknowledged = []
            for i, name in enumerate(names):
                await certificates.CreateCertificate(
                    cert_pb.CreateCertificateRequest(
                        certificate_id=f"kill-{i}",
                        certificate=cert_pb.Certificate(dns_names=[name], account=account.name),
                    ),
                    metadata=ISSUER_AUTH,
                )
                acknowledged.append(f"certificates/kill-{i}")
            in_flight: set[str] = set()
            deadline = time.monotonic() + 20
            while len(in_flight) < count and time.monotonic() < deadline:
                for cert_name in acknowledged:
                    cert = await certificates.GetCertificate(
                        cert_pb.GetCertificateRequest(name=cert_name), metadata=ISSUER_AUTH
                    )
                    if cert.order_url and cert.stage == cert_pb.STAGE_PRESENTING:
                        in_flight.add(cert_name)
                await asyncio.sleep(0.05)
        issuer.kill()  # SIGKILL: no lease released, nothing flushed
        issuer.wait()
        os.kill(registry.pid, signal.SIGCONT)
        restarted_at = time.monotonic()
        children.append(popen([ISSUER_BIN], issuer_env, workdir / "issuer.log"))
        await wait_for_serving(issuer_grpc, within=60)
        issued_after: dict[str, float] = {}
        failed = 0
        async with grpc.aio.insecure_channel(issuer_grpc) as channel:
            certificates = cert_grpc.CertificateServiceStub(channel)
            bound = time.monotonic() + LEASE_SECONDS / 2  # well inside the dead one's lease
            while len(issued_after) + failed < count and time.monotonic() < bound:
                failed = 0
                for cert_name in acknowledged:
                    if cert_name in issued_after:
                        continue
                    cert = await certificates.GetCertificate(
                        cert_pb.GetCertificateRequest(name=cert_name), metadata=ISSUER_AUTH
                    )
                    if cert.state == cert_pb.STATE_ISSUED:
                        issued_after[cert_name] = time.monotonic() - restarted_at
                    failed += cert.state == cert_pb.STATE_FAILED
                await asyncio.sleep(0.1)
        with sqlite3.connect(workdir / "issuer" / "issuer.db") as db:
            orders = db.execute("SELECT count(*) FROM orders").fetchone()[0]
    finally:
        for child in reversed(children):
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGCONT)
                child.terminate()
                try:
                    child.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        pebble.stop()
    lost = count - len(issued_after)
    slowest = max(issued_after.values()) if issued_after else float("inf")
    print(f"  {len(in_flight)}/{count} orders in flight (challenges being presented) at the kill")
    print(
        f"  acknowledged certificates lost (not issued within {LEASE_SECONDS / 2:.0f} s of the "
        f"restart): {lost} of {count} (target 0); failed {failed}; orders placed {orders} "
        f"for {count} certificates (target {count}: each resumed its own order)"
    )
    print(
        f"  all issued {slowest:.1f} s after the restart, process start included (target: at "
        f"once, well inside the {LEASE_SECONDS:.0f} s lease a new identity would wait out)"
    )


QUICK = {
    "clients": 10,
    "seconds": 3.0,
    "slowloris": 200,
    "packets": 20_000,
    "tcp_connections": 200,
    "updates": 60,
    "certificates": 2,
}
PROBES = ("sustained", "flood", "slowloris", "kill", "dns", "issuer-kill")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--slowloris", type=int, default=1000)
    parser.add_argument("--packets", type=int, default=1_000_000, help="DNS fuzz packets")
    parser.add_argument("--tcp-connections", type=int, default=1000, help="idle DNS TCP")
    parser.add_argument("--updates", type=int, default=300, help="updates around dns kill -9")
    parser.add_argument("--certificates", type=int, default=3, help="orders in flight at kill")
    parser.add_argument("--quick", action="store_true", help="every probe, reduced")
    parser.add_argument("--only", choices=PROBES, action="append", default=None)
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    limits = (
        1 <= args.clients <= 500,
        0 < args.seconds <= 120,
        1 <= args.slowloris <= 5000,
        1 <= args.packets <= 5_000_000,
        1 <= args.tcp_connections <= 5000,
        1 <= args.updates <= 10_000,
        1 <= args.certificates <= 20,
    )
    if not all(limits):
        print(
            "bounded: --clients <= 500, --seconds <= 120, --slowloris and --tcp-connections "
            "<= 5000, --packets <= 5,000,000, --updates <= 10,000, --certificates <= 20",
            file=sys.stderr,
        )
        return 1
    chosen = args.only or list(PROBES)
    probes = {
        "sustained": probe_sustained,
        "flood": probe_flood,
        "slowloris": probe_slowloris,
        "kill": probe_kill,
        "dns": probe_dns,
        "issuer-kill": probe_issuer_kill,
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="acmezone-robustness-") as tmp:
        workdir = Path(tmp)
        for name in ("acmezone", "acme-dns", "flood", "slowloris", "kill", "issuer-kill"):
            (workdir / name).mkdir()
        for name in chosen:
            probe_started = time.monotonic()
            await probes[name](args, workdir / name if name == "issuer-kill" else workdir)
            print(f"  [{name}: {time.monotonic() - probe_started:.0f} s]\n", flush=True)
    print(f"all probes done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
