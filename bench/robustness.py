"""Benchmark the registry under load and abuse, beside acme-dns, on loopback only.

Runs the real `acmezone-registry` command (SQLite, INFO logging) and, when it is available
(`ACMEZONE_TEST_ACME_DNS` or ../shared/bin/acme-dns), the real acme-dns, and measures

1. sustained `/update` with correct credentials from N concurrent clients (requests/s, p50,
   p99) for both, and the ratio;
2. legitimate `/update` p99 while N connections flood wrong passwords, against its unloaded p99;
3. slowloris: M sockets sending one header byte at a time; how long until the server closed
   them, and whether a normal client was answered meanwhile.

Every load is bounded in count and time. Prints each figure beside its target; never fails on a
figure, exits non-zero only when something could not run.

    .venv/bin/python bench/robustness.py [--clients 50] [--seconds 15] [--slowloris 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
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

ROOT = Path(__file__).resolve().parent.parent
REGISTRY_BIN = str(Path(sys.executable).parent / "acmezone-registry")
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
    argv = [REGISTRY_BIN, "serve"]
    if os.environ.get("ROBUSTNESS_PROFILE"):
        argv = [sys.executable, "-m", "cProfile", "-o", os.environ["ROBUSTNESS_PROFILE"], *argv]
    with _process(argv, env, workdir / "registry.log") as process:
        await wait_http(f"http://{http}/health", process)
        yield Server("acmezone", f"http://{http}", process)


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


async def paced_updates(server: Server, accounts: list[Any], rate: float, seconds: float) -> Load:
    """Open loop: the clients together send `rate` requests/s on a fixed schedule; latency is
    counted from when a request was due, so a server that falls behind cannot hide it."""
    latencies: list[float] = []
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
            n += 1
            due += interval

    connector = aiohttp.TCPConnector(limit=len(accounts))
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session, i, a) for i, a in enumerate(accounts)))
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
        paced = await paced_updates(server, accounts, UPDATE_RPS_TARGET, args.seconds)
    show_load("acmezone", ours)
    print(f"            server CPU {cpu / max(ours.count, 1) * 1e6:.0f} us per request")
    print(
        f"  paced at {UPDATE_RPS_TARGET:.0f} req/s offered: "
        f"p50 {paced.quantile(0.5) * 1000:.1f} ms, "
        f"p99 {paced.quantile(0.99) * 1000:.1f} ms (target <= {UPDATE_P99_TARGET * 1000:.0f} ms), "
        f"{paced.count} requests, {paced.errors} errors"
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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--slowloris", type=int, default=1000)
    parser.add_argument("--only", choices=("sustained", "flood", "slowloris"), default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="acmezone-robustness-") as tmp:
        workdir = Path(tmp)
        for name in ("acmezone", "acme-dns", "flood", "slowloris"):
            (workdir / name).mkdir()
        if args.only in (None, "sustained"):
            await probe_sustained(args, workdir)
        if args.only in (None, "flood"):
            await probe_flood(args, workdir)
        if args.only in (None, "slowloris"):
            await probe_slowloris(args, workdir)


if __name__ == "__main__":
    asyncio.run(main())
