"""The dns service under abuse, on loopback, bounded in count and time; prints each figure beside
its target and never fails on one (exit 1 only when something could not run).

1. fuzz: N packets (1,000,000 by default) of mutated queries and random bytes over UDP, in
   windows so the socket buffers are not what is measured; prints the replies by rcode, the
   packets that got none, the RSS before and after, and that a plain query is still answered.
2. TCP idle flood: 1,000 idle connections from 127.0.0.2 held open, then 127.0.0.1 connects
   and asks, 20 times: connect-to-answer p50 and max (target: each within 100 ms, RFC 7766
   section 6.2.3 eviction and the per-source cap make the room).
3. kill -9 during a burst: registry updates (each one acknowledged) while UDP queries flow, the
   dns service killed with SIGKILL in the middle and started again; prints how long it took to
   answer again and how many acknowledged values the restarted replica does not serve (must
   be 0).

    .venv/bin/python bench/dns_robustness.py [--packets 1000000] [--tcp-connections 1000]
        [--updates 300]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

import dns.message
import dns.rcode
import grpc

from acmezone.registry.v1 import registration_service_pb2 as reg_pb
from acmezone.registry.v1 import registration_service_pb2_grpc as reg_grpc
from acmezone.registry.v1 import txt_record_service_pb2 as txt_pb
from acmezone.registry.v1 import txt_record_service_pb2_grpc as txt_grpc
from acmezone_common.testing import free_port, wait_for_serving

sys.path.insert(0, str(Path(__file__).parent))
from dns_bench import digest, process

ZONE = "acme.example.test"
BIN = Path(sys.executable).parent
WINDOW = 256  # fuzz packets in flight at most
FLOOD_SOURCE, CLIENT_SOURCE = "127.0.0.2", "127.0.0.1"
PROBES = 20
TCP_TARGET_MS = 100.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def answered(port: int, name: str, timeout: float = 1.0) -> dns.message.Message | None:
    query = dns.message.make_query(name, "TXT", use_edns=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(query.to_wire(), ("127.0.0.1", port))
        try:
            return dns.message.from_wire(sock.recv(65535))
        except (TimeoutError, OSError):
            return None


def wait_answering(port: int, name: str, seconds: float = 60) -> float:
    """Seconds until `name` gets an answer with records; RuntimeError past `seconds`."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        reply = answered(port, name, 0.2)
        if reply is not None and reply.answer:
            return time.monotonic() - start
        time.sleep(0.01)
    raise RuntimeError(f"nothing answers {name} on port {port}")


# -- 1. fuzz ----------------------------------------------------------------------------------


def templates() -> list[bytes]:
    """Well-formed queries of many shapes, the seeds of the mutations."""
    shapes = []
    for name in (f"n0.{ZONE}", f"nobody.{ZONE}", ZONE, "elsewhere.test", f"x.y.z.{ZONE}"):
        for rdtype in ("TXT", "A", "SOA", "NS", "ANY", "AXFR", "HTTPS", "CAA"):
            for edns in (None, 0, 1):
                query = dns.message.make_query(
                    name,
                    rdtype,
                    use_edns=edns if edns is not None else False,
                    payload=1232,
                    options=[dns.edns.GenericOption(10, b"cookie!!")] if edns == 0 else None,
                )
                shapes.append(query.to_wire())
    return shapes


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    how = rng.randrange(6)
    if how == 0:
        return rng.randbytes(rng.randrange(1, 600))
    wire = bytearray(rng.choice(seeds))
    if how == 1:
        return bytes(wire[: rng.randrange(len(wire))])
    if how == 2:
        for _ in range(rng.randint(1, 6)):
            wire[rng.randrange(len(wire))] = rng.randrange(256)
    elif how == 3:
        wire[2], wire[3] = rng.randrange(256), rng.randrange(256)
    elif how == 4:
        wire[4:12] = rng.randbytes(8)  # section counts
    else:
        wire += rng.randbytes(rng.randrange(1, 64))
    return bytes(wire)


def fuzz(port: int, packets: int, seed: int) -> tuple[collections.Counter[str], int, float]:
    """Send `packets` fuzzed datagrams, at most WINDOW unanswered at a time (an unanswered one
    is given up after 10 ms); replies by rcode name, the number with no reply, seconds."""
    rng = random.Random(seed)
    seeds = templates()
    rcodes: collections.Counter[str] = collections.Counter()
    silent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        start = time.monotonic()
        sent = 0
        while sent < packets:
            burst = min(WINDOW, packets - sent)
            for _ in range(burst):
                sock.send(mutate(rng, seeds))
            sent += burst
            got = 0
            sock.settimeout(0.01)
            while got < burst:
                try:
                    reply = sock.recv(65535)
                except TimeoutError:
                    break
                got += 1
                if len(reply) >= 4:
                    rcodes[dns.rcode.to_text(dns.rcode.Rcode.make(reply[3] & 0xF))] += 1
                else:
                    rcodes["runt"] += 1
            silent += burst - got
        return rcodes, silent, time.monotonic() - start


# -- 2. TCP idle flood ------------------------------------------------------------------------


async def tcp_flood(port: int, connections: int) -> tuple[list[float], int]:
    """Hold `connections` idle sockets from FLOOD_SOURCE, then time PROBES TCP queries from
    CLIENT_SOURCE (connect to answer, ms); also how many flood sockets the server closed."""
    flood = []
    for _ in range(connections):
        with contextlib.suppress(OSError):
            flood.append(
                await asyncio.open_connection("127.0.0.1", port, local_addr=(FLOOD_SOURCE, 0))
            )
    query = dns.message.make_query(f"n0.{ZONE}", "TXT").to_wire()
    framed = len(query).to_bytes(2, "big") + query
    timings = []
    try:
        for _ in range(PROBES):
            start = time.perf_counter()
            try:
                async with asyncio.timeout(5):
                    reader, writer = await asyncio.open_connection(
                        "127.0.0.1", port, local_addr=(CLIENT_SOURCE, 0)
                    )
                    writer.write(framed)
                    size = int.from_bytes(await reader.readexactly(2), "big")
                    await reader.readexactly(size)
                timings.append((time.perf_counter() - start) * 1000)
                writer.close()
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                timings.append(float("inf"))
        closed = 0
        for reader, _ in flood:
            if reader.at_eof():
                closed += 1
        return timings, closed
    finally:
        for _, writer in flood:
            writer.close()


# -- 3. kill -9 during a burst ----------------------------------------------------------------


async def registration(target: str) -> tuple[str, str, str]:
    async with grpc.aio.insecure_channel(target) as channel:
        reg = await reg_grpc.RegistrationServiceStub(channel).CreateRegistration(
            reg_pb.CreateRegistrationRequest(
                registration_id="burst", registration=reg_pb.Registration(max_txt_values=10)
            )
        )
        return "burst", reg.username, reg.password


async def burst(target: str, creds: tuple[str, str, str], updates: int, kill_at: int,
                kill: object) -> list[str]:  # fmt: skip
    """`updates` acknowledged AddTxtValue calls, one by one; `kill()` after `kill_at` of
    them. Returns the acknowledged values, newest last."""
    label, user, password = creds
    acknowledged = []
    async with grpc.aio.insecure_channel(target) as channel:
        txt = txt_grpc.TxtRecordServiceStub(channel)
        for i in range(updates):
            value = digest(("burst", i))
            await txt.AddTxtValue(
                txt_pb.AddTxtValueRequest(name=f"registrations/{label}/txtRecord", value=value),
                metadata=(("x-api-user", user), ("x-api-key", password)),
            )
            acknowledged.append(value)
            if i == kill_at:
                kill()  # type: ignore[operator]
    return acknowledged


def served_values(port: int, name: str) -> set[str]:
    reply = answered(port, name)
    if reply is None:
        return set()
    return {b"".join(rd.strings).decode() for rrset in reply.answer for rd in rrset}


def start_dns(env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "acmezone-dns")], env={**os.environ, **env}, stdout=log, stderr=log
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--tcp-connections", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=300)
    args = parser.parse_args()
    if not 1 <= args.packets <= 5_000_000 or not 1 <= args.tcp_connections <= 5000:
        print("--packets at most 5,000,000 and --tcp-connections at most 5,000", file=sys.stderr)
        return 1
    run(args)
    return 0


def run(args: argparse.Namespace) -> None:
    """The three probes with `args.packets`, `args.tcp_connections` and `args.updates`
    (bench/robustness.py calls this for its DNS part)."""
    workdir = Path(tempfile.mkdtemp(prefix="dns-robustness-"))
    registry_grpc = f"127.0.0.1:{free_port()}"
    dns_port = free_port()
    registry_env = {
        "ACMEZONE_REGISTRY_GRPC_ADDRESS": registry_grpc,
        "ACMEZONE_REGISTRY_HTTP_ADDRESS": f"127.0.0.1:{free_port()}",
        "ACMEZONE_REGISTRY_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        "ACMEZONE_REGISTRY_DATA_DIR": str(workdir / "registry"),
        "ACMEZONE_REGISTRY_DEFAULT_MAX_TXT_VALUES": "10",
        "ACMEZONE_REGISTRY_LOG_LEVEL": "WARNING",
    }
    dns_env = {
        "ACMEZONE_DNS_DNS_ADDRESSES": f"127.0.0.1:{dns_port}",
        "ACMEZONE_DNS_GRPC_ADDRESS": f"127.0.0.1:{free_port()}",
        "ACMEZONE_DNS_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        "ACMEZONE_DNS_REGISTRY_TARGET": registry_grpc,
        "ACMEZONE_DNS_LOG_LEVEL": "WARNING",
        "ACMEZONE_DNS_TXT_TTL": "0",
    }
    print(f"dns robustness, loopback only, workdir {workdir}")
    with process([str(BIN / "acmezone-registry")], registry_env, workdir / "registry.log"):
        asyncio.run(wait_for_serving(registry_grpc, within=60))
        creds = asyncio.run(registration(registry_grpc))
        name = f"{creds[0]}.{ZONE}"
        asyncio.run(burst(registry_grpc, creds, 1, -1, lambda: None))
        with process([str(BIN / "acmezone-dns")], dns_env, workdir / "dns.log") as dns_proc:
            asyncio.run(wait_for_serving(dns_env["ACMEZONE_DNS_GRPC_ADDRESS"], within=60))
            wait_answering(dns_port, name)

            before = rss_kib(dns_proc.pid)
            rcodes, silent, seconds = fuzz(dns_port, args.packets, seed=13)
            after = rss_kib(dns_proc.pid)
            alive = dns_proc.poll() is None and bool(served_values(dns_port, name))
            print(f"\n1. fuzz: {args.packets:,} packets in {seconds:.1f} s")
            for rcode, count in rcodes.most_common():
                print(f"  {rcode:<10} {count:>10,}")
            print(f"  no reply   {silent:>10,}   (responses, runts, UPDATEs left unanswered)")
            print(
                f"  RSS {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after "
                f"({(after - before) / 1024:+.1f} MiB)   (target: no growth past a few MiB)"
            )
            print(f"  still answering afterwards: {'yes' if alive else 'NO'}   (target: yes)")

            timings, closed = asyncio.run(tcp_flood(dns_port, args.tcp_connections))
            finite = [t for t in timings if t != float("inf")]
            print(
                f"\n2. TCP: {args.tcp_connections:,} idle connections from {FLOOD_SOURCE}, "
                f"{PROBES} queries from {CLIENT_SOURCE}"
            )
            if finite:
                print(
                    f"  connect-to-answer p50 {statistics.median(finite):.2f} ms, "
                    f"max {max(timings):.2f} ms   (target each <= {TCP_TARGET_MS:.0f} ms)"
                )
            print(
                f"  answered {len(finite)}/{PROBES}; flood sockets closed by the server: {closed:,}"
            )

        # 3. kill -9 of dns during a burst of acknowledged updates
        procs: list[subprocess.Popen[bytes]] = []
        log = (workdir / "dns-burst.log").open("ab")
        try:
            procs.append(start_dns(dns_env, log))
            asyncio.run(wait_for_serving(dns_env["ACMEZONE_DNS_GRPC_ADDRESS"], within=60))
            killed_at: list[float] = []

            def kill() -> None:
                procs[-1].send_signal(signal.SIGKILL)
                procs[-1].wait()
                killed_at.append(time.monotonic())

            acknowledged = asyncio.run(
                burst(registry_grpc, creds, args.updates, args.updates // 2, kill)
            )
            procs.append(start_dns(dns_env, log))
            asyncio.run(wait_for_serving(dns_env["ACMEZONE_DNS_GRPC_ADDRESS"], within=60))
            back = time.monotonic() - killed_at[0]
            # The registry keeps the newest 10 values (max_txt_values): those must be served.
            kept = set(acknowledged[-10:])
            served = served_values(dns_port, name)
            lost = len(kept - served)
            print(f"\n3. kill -9 of dns after {args.updates // 2} of {args.updates} updates")
            print(f"  answering again {back:.2f} s after the kill (restart included)")
            print(f"  acknowledged values kept by the registry and not served: {lost}   (target 0)")
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(10)
            log.close()
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
