"""Benchmark the dns service against NSD in the same run, and time update-to-visible.

What it does, all on loopback:
1. starts a registry (SQLite) and fills it with N registrations holding one TXT value each;
2. starts the dns service following that registry, pinned to core 0;
3. starts NSD (RRL off) serving the very same records from a zone file, pinned to core 0, while
   the dns service is idle (each server gets the core to itself for its runs);
4. runs dnsperf (10 clients) pinned to core 1 against each server in turn, alternating, and prints
   QPS (median of the runs), the server's CPU time per query, the ratio, and the p50/p99 latency
   a light 2000 QPS verbose dnsperf probe sees, alone and while a second dnsperf holds the server
   at the target load (75% of NSD's QPS), each the median of as many alternating runs (this
   host's neighbours move single-run tails by milliseconds, for NSD too);
   Then the same throughput runs with a client COOKIE in every query (dnsperf -E 10:<cookie>):
   acmezone answers each with an RFC 9018 server cookie (in its C loop); NSD 4.6 ignores the
   option (it answers cookies from 4.8 on), so its figure is the cost of the longer packets alone;
5. makes U registry updates one after another and times each from the update RPC returning to the
   new value being answered over UDP, and prints p50/p99.

The query mix is the N TXT names plus 5% names that do not exist (NXDOMAIN). It prints figures
and never fails on them; it exits non-zero only when something could not run.

    .venv/bin/python bench/dns_bench.py [--names 1000] [--seconds 10] [--runs 3] [--updates 1000]
        [--udp-batch-size 64] [--no-udp-native] [--throughput-only]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rdatatype
import grpc

from acmezone.registry.v1 import registration_service_pb2 as reg_pb
from acmezone.registry.v1 import registration_service_pb2_grpc as reg_grpc
from acmezone.registry.v1 import txt_record_service_pb2 as txt_pb
from acmezone.registry.v1 import txt_record_service_pb2_grpc as txt_grpc
from acmezone_common.testing import free_port, wait_for_serving

ZONE = "acme.example.test"
BIN = Path(sys.executable).parent
SERVER_CORE = "0"
CLIENT_CORE = "1"
NXDOMAIN_SHARE = 0.05


def digest(seed: object) -> str:
    """A valid DNS-01 TXT value (43 characters of base64url)."""
    raw = hashlib.sha256(str(seed).encode()).digest()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@contextlib.contextmanager
def process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process with output appended to `log` (a restarted one keeps what it said
    before), stopped with SIGTERM (then SIGKILL) at the end."""
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=out, stderr=out)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def pinned(core: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", core, *argv]


async def fill_registry(target: str, names: int) -> dict[str, tuple[str, str, str]]:
    """Create `names` registrations with one value each; label -> (user, password, value)."""
    created: dict[str, tuple[str, str, str]] = {}
    async with grpc.aio.insecure_channel(target) as channel:
        registrations = reg_grpc.RegistrationServiceStub(channel)
        txt = txt_grpc.TxtRecordServiceStub(channel)

        async def one(i: int) -> None:
            label = f"n{i}"
            reg = await registrations.CreateRegistration(
                reg_pb.CreateRegistrationRequest(registration_id=label)
            )
            value = digest(label)
            await txt.AddTxtValue(
                txt_pb.AddTxtValueRequest(name=f"registrations/{label}/txtRecord", value=value),
                metadata=(("x-api-user", reg.username), ("x-api-key", reg.password)),
            )
            created[label] = (reg.username, reg.password, value)

        for start in range(0, names, 50):
            await asyncio.gather(*(one(i) for i in range(start, min(names, start + 50))))
    return created


def zone_file_lines(records: dict[str, tuple[str, str, str]]) -> list[str]:
    """The records the dns service serves, as zone file lines (for NSD and Knot)."""
    zone = [
        f"$ORIGIN {ZONE}.",
        "$TTL 60",
        f"@ 60 IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 60",
        f"@ 3600 IN NS ns1.{ZONE}.",
        "ns1 3600 IN A 127.0.0.1",
    ]
    return zone + [f'{label} 1 IN TXT "{value}"' for label, (_, _, value) in records.items()]


def nsd_config(workdir: Path, port: int, records: dict[str, tuple[str, str, str]]) -> Path:
    """A zone file with the same records the dns service serves, and an nsd.conf for it."""
    zone = zone_file_lines(records)
    (workdir / "zone").write_text("\n".join(zone) + "\n")
    conf = workdir / "nsd.conf"
    conf.write_text(
        f"""server:
    ip-address: 127.0.0.1@{port}
    port: {port}
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "{workdir}"
    pidfile: "{workdir}/nsd.pid"
    database: ""
    xfrdfile: "{workdir}/xfrd.state"
    xfrdir: "{workdir}"
    zonelistfile: "{workdir}/zone.list"
    logfile: "{workdir}/nsd.log"
    server-count: 1
    tcp-count: 10
    verbosity: 0
    hide-version: yes
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: {ZONE}
    zonefile: "{workdir}/zone"
"""
    )
    return conf


def query_file(workdir: Path, labels: list[str]) -> Path:
    rng = random.Random(1)
    lines = [f"{label}.{ZONE} TXT" for label in labels]
    lines += [f"missing{i}.{ZONE} TXT" for i in range(int(len(labels) * NXDOMAIN_SHARE))]
    rng.shuffle(lines)
    path = workdir / "queries"
    path.write_text("\n".join(lines) + "\n")
    return path


def answers(port: int, name: str, rdtype: str = "TXT") -> dns.message.Message | None:
    query = dns.message.make_query(name, rdtype, use_edns=False)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1)
        sock.sendto(query.to_wire(), ("127.0.0.1", port))
        try:
            return dns.message.from_wire(sock.recv(65535))
        except TimeoutError:
            return None


def wait_answering(port: int, name: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        reply = answers(port, name)
        if reply is not None and reply.answer:
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing answers {name} on port {port}")


def cpu_seconds(root: int) -> float:
    """User + system CPU of a process and all its descendants (NSD forks its server)."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid = int(stat.parent.name)
            parents[pid] = int(fields[1])
            used[pid] = (int(fields[11]) + int(fields[12])) / ticks
    total = 0.0
    for pid, seconds in used.items():
        p = pid
        while p > 1:
            if p == root:
                total += seconds
                break
            p = parents.get(p, 0)
    return total


CLIENT_COOKIE = "2464c4abcf10c957"


def dnsperf(
    port: int, queries: Path, seconds: float, server_pid: int, extra: tuple[str, ...] = ()
) -> tuple[str, float]:
    """dnsperf's report and the server's CPU microseconds per completed query."""
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-c", "10"]
    argv += ["-l", str(seconds), *extra]
    cpu_before = cpu_seconds(server_pid)
    with tempfile.TemporaryFile("w+") as out:
        subprocess.run(
            pinned(CLIENT_CORE, argv), stdout=out, check=True, timeout=seconds + 60, text=True
        )
        out.seek(0)
        report = out.read()
    cpu = cpu_seconds(server_pid) - cpu_before
    match = re.search(r"Queries completed:\s+(\d+)", report)
    completed = int(match.group(1)) if match else 0
    return report, cpu * 1e6 / max(completed, 1)


PROBE_QPS = 2000


def loaded_latency(port: int, queries: Path, seconds: float, load_qps: float) -> list[float]:
    """Per-query latencies seen by a light probe (dnsperf -c 1 -Q 2000 -v) while a second
    dnsperf holds the server at `load_qps`: the latency a resolver sees at that load. (One
    verbose dnsperf at full rate measures its own printing, not the server.)"""
    load = [
        "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-c", "10",
        "-l", str(seconds + 1), "-Q", str(int(load_qps)),
    ]  # fmt: skip
    probe = [
        "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-c", "1",
        "-l", str(seconds), "-Q", str(PROBE_QPS), "-v",
    ]  # fmt: skip
    with tempfile.TemporaryFile("w+") as out:
        background = None
        if load_qps > 0:
            background = subprocess.Popen(pinned(CLIENT_CORE, load), stdout=subprocess.DEVNULL)
            time.sleep(0.5)
        try:
            subprocess.run(
                pinned(CLIENT_CORE, probe), stdout=out, check=True, timeout=seconds + 60, text=True
            )
        finally:
            if background is not None:
                background.wait(seconds + 60)
        out.seek(0)
        return latencies_of(out.read())


def qps_of(output: str) -> float:
    match = re.search(r"Queries per second:\s+([\d.]+)", output)
    if match is None:
        raise RuntimeError(f"no QPS in dnsperf output:\n{output}")
    return float(match.group(1))


def lost_of(output: str) -> str:
    match = re.search(r"Queries lost:\s+(\d+ \([\d.]+%\))", output)
    return match.group(1) if match else "?"


def latencies_of(output: str) -> list[float]:
    """Per-query latencies (seconds) from dnsperf -v lines like `> NOERROR name TXT 0.000123`."""
    values = []
    for line in output.splitlines():
        if line.startswith(">"):
            with contextlib.suppress(ValueError, IndexError):
                values.append(float(line.rsplit(None, 1)[1]))
    return values


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def update_latency(
    registry: str, dns_port: int, credentials: tuple[str, str], label: str, updates: int
) -> list[float]:
    """Seconds from AddTxtValue returning to the value being answered over UDP, per update."""
    delays = []
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect(("127.0.0.1", dns_port))
    name = f"{label}.{ZONE}"
    query = bytearray(dns.message.make_query(name, "TXT", use_edns=True).to_wire())
    try:
        async with grpc.aio.insecure_channel(registry) as channel:
            txt = txt_grpc.TxtRecordServiceStub(channel)
            metadata = (("x-api-user", credentials[0]), ("x-api-key", credentials[1]))
            for i in range(updates):
                value = digest(("update", i)).encode()
                await txt.AddTxtValue(
                    txt_pb.AddTxtValueRequest(
                        name=f"registrations/{label}/txtRecord", value=value.decode()
                    ),
                    metadata=metadata,
                )
                start = time.perf_counter()
                while True:
                    query[0:2] = (i % 65536).to_bytes(2, "big")
                    await loop.sock_sendall(sock, bytes(query))
                    reply = await asyncio.wait_for(loop.sock_recv(sock, 65535), 2)
                    if value in reply:
                        break
                    if time.perf_counter() - start > 10:
                        raise RuntimeError(f"update {i} not visible after 10 s")
                delays.append(time.perf_counter() - start)
    finally:
        sock.close()
    return delays


def bench_registry_env(data_dir: Path) -> dict[str, str]:
    """A registry on free loopback ports keeping its files in `data_dir`, with open
    registration unlimited: a bench registers from one address, faster than the quotas allow."""
    return {
        "ACMEZONE_REGISTRY_GRPC_ADDRESS": f"127.0.0.1:{free_port()}",
        "ACMEZONE_REGISTRY_HTTP_ADDRESS": f"127.0.0.1:{free_port()}",
        "ACMEZONE_REGISTRY_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        "ACMEZONE_REGISTRY_DATA_DIR": str(data_dir),
        "ACMEZONE_REGISTRY_OPEN_REGISTRATIONS_PER_HOUR_PER_SOURCE": "0",
        "ACMEZONE_REGISTRY_OPEN_REGISTRATIONS_PER_HOUR": "0",
        "ACMEZONE_REGISTRY_LOG_LEVEL": "WARNING",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument(
        "--udp-batch-size",
        type=int,
        default=64,
        help="the dns service's UDP_BATCH_SIZE (1: one recvfrom/sendto per query, for A/B runs)",
    )
    parser.add_argument(
        "--no-udp-native",
        action="store_true",
        help="UDP_NATIVE=false: answer every datagram in Python (the same C batches), for A/B runs",
    )
    parser.add_argument(
        "--throughput-only",
        action="store_true",
        help="stop after the throughput runs (plain and COOKIE), for quick A/B runs",
    )
    args = parser.parse_args()
    for tool in ("dnsperf", "nsd", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} is missing: `make bench-deps` installs dnsperf and nsd", file=sys.stderr)
            return 1
    workdir = Path(tempfile.mkdtemp(prefix="dns-bench-"))
    registry_env = bench_registry_env(workdir / "registry")
    registry_grpc = registry_env["ACMEZONE_REGISTRY_GRPC_ADDRESS"]
    dns_port, nsd_port = free_port(), free_port()
    dns_env = {
        "ACMEZONE_DNS_DNS_ADDRESSES": f"127.0.0.1:{dns_port}",
        "ACMEZONE_DNS_GRPC_ADDRESS": f"127.0.0.1:{free_port()}",
        "ACMEZONE_DNS_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        "ACMEZONE_DNS_REGISTRY_TARGET": registry_grpc,
        "ACMEZONE_DNS_LOG_LEVEL": "WARNING",
        "ACMEZONE_DNS_UDP_BATCH_SIZE": str(args.udp_batch_size),
        "ACMEZONE_DNS_UDP_NATIVE": "false" if args.no_udp_native else "true",
    }
    print(f"dns bench: {args.names} TXT names + {NXDOMAIN_SHARE:.0%} NXDOMAIN, dnsperf -c 10, ")
    print(f"  server on core {SERVER_CORE}, dnsperf on core {CLIENT_CORE}, workdir {workdir}")
    native = "off" if args.no_udp_native else "on (if built)"
    print(f"  dns service UDP batch size {args.udp_batch_size}, C accelerator {native}")
    with process(
        pinned(CLIENT_CORE, [str(BIN / "acmezone-registry")]),
        registry_env,
        workdir / "registry.log",
    ):
        asyncio.run(wait_for_serving(registry_grpc, within=60))
        started = time.perf_counter()
        records = asyncio.run(fill_registry(registry_grpc, args.names))
        print(f"  registry filled in {time.perf_counter() - started:.1f} s")
        queries = query_file(workdir, list(records))
        conf = nsd_config(workdir, nsd_port, records)
        with process(
            pinned(SERVER_CORE, [str(BIN / "acmezone-dns")]), dns_env, workdir / "dns.log"
        ) as dns_proc:
            asyncio.run(wait_for_serving(dns_env["ACMEZONE_DNS_GRPC_ADDRESS"], within=60))
            wait_answering(dns_port, f"n0.{ZONE}")
            results: dict[str, list[float]] = {"nsd": [], "dns": []}
            cpu: dict[str, list[float]] = {"nsd": [], "dns": []}
            outputs: dict[str, str] = {}
            for _ in range(args.runs):
                with process(
                    pinned(SERVER_CORE, ["nsd", "-d", "-c", str(conf)]), {}, workdir / "nsd.out"
                ) as nsd:
                    wait_answering(nsd_port, f"n0.{ZONE}")
                    outputs["nsd"], us = dnsperf(nsd_port, queries, args.seconds, nsd.pid)
                    results["nsd"].append(qps_of(outputs["nsd"]))
                    cpu["nsd"].append(us)
                outputs["dns"], us = dnsperf(dns_port, queries, args.seconds, dns_proc.pid)
                results["dns"].append(qps_of(outputs["dns"]))
                cpu["dns"].append(us)
            nsd_qps = statistics.median(results["nsd"])
            dns_qps = statistics.median(results["dns"])
            print("\nthroughput (dnsperf -c 10, median of runs; server CPU per query)")
            for name, key, qps in (("NSD", "nsd", nsd_qps), ("acmezone dns", "dns", dns_qps)):
                runs = ", ".join(f"{q:,.0f}" for q in results[key])
                us = statistics.median(cpu[key])
                print(
                    f"  {name:<13} {qps:>10,.0f} QPS   {us:5.1f} us CPU/query"
                    f"   (runs: {runs}; lost {lost_of(outputs[key])})"
                )
            print(f"  ratio         {dns_qps / nsd_qps:>10.1%} of NSD  (target >= 75%)")
            cookie = ("-E", f"10:{CLIENT_COOKIE}")
            cookie_qps: dict[str, list[float]] = {"nsd": [], "dns": []}
            cookie_cpu: dict[str, list[float]] = {"nsd": [], "dns": []}
            for _ in range(args.runs):
                with process(
                    pinned(SERVER_CORE, ["nsd", "-d", "-c", str(conf)]), {}, workdir / "nsd.out"
                ) as nsd:
                    wait_answering(nsd_port, f"n0.{ZONE}")
                    out, us = dnsperf(nsd_port, queries, args.seconds, nsd.pid, cookie)
                    cookie_qps["nsd"].append(qps_of(out))
                    cookie_cpu["nsd"].append(us)
                out, us = dnsperf(dns_port, queries, args.seconds, dns_proc.pid, cookie)
                cookie_qps["dns"].append(qps_of(out))
                cookie_cpu["dns"].append(us)
            print("\nthroughput with a client COOKIE in every query (dnsperf -E 10:<cookie>)")
            for name, key in (("NSD 4.6", "nsd"), ("acmezone dns", "dns")):
                runs = ", ".join(f"{q:,.0f}" for q in cookie_qps[key])
                print(
                    f"  {name:<13} {statistics.median(cookie_qps[key]):>10,.0f} QPS   "
                    f"{statistics.median(cookie_cpu[key]):5.1f} us CPU/query   (runs: {runs})"
                )
            ratio = statistics.median(cookie_qps["dns"]) / statistics.median(cookie_qps["nsd"])
            print(f"  ratio         {ratio:>10.1%} of NSD  (BIND-based resolvers send cookies)")
            if args.throughput_only:
                shutil.rmtree(workdir, ignore_errors=True)
                return 0
            target = 0.75 * nsd_qps
            for load, title in (
                (0.0, f"latency of a {PROBE_QPS} QPS probe alone"),
                (target, f"latency of a {PROBE_QPS} QPS probe under {target:,.0f} QPS of load "
                 "(75% of NSD)"),
            ):  # fmt: skip
                print(f"\n{title}, {args.runs} x {args.seconds:.0f} s, median of runs")
                latencies: dict[str, list[list[float]]] = {"nsd": [], "dns": []}
                for _ in range(args.runs):
                    with process(
                        pinned(SERVER_CORE, ["nsd", "-d", "-c", str(conf)]), {}, workdir / "nsd.out"
                    ):
                        wait_answering(nsd_port, f"n0.{ZONE}")
                        latencies["nsd"].append(
                            loaded_latency(nsd_port, queries, args.seconds, load)
                        )
                    latencies["dns"].append(loaded_latency(dns_port, queries, args.seconds, load))
                for name, key in (("NSD", "nsd"), ("acmezone dns", "dns")):
                    p50s = [percentile(lat, 0.5) * 1000 for lat in latencies[key]]
                    p99s = [percentile(lat, 0.99) * 1000 for lat in latencies[key]]
                    count = sum(len(lat) for lat in latencies[key])
                    print(
                        f"  {name:<13} p50 {statistics.median(p50s):.3f} ms   "
                        f"p99 {statistics.median(p99s):.3f} ms   "
                        f"(p99 of runs: {', '.join(f'{p:.2f}' for p in p99s)}; "
                        f"{count:,} queries)"
                        + ("   (target p99 < 2 ms)" if name != "NSD" and load else "")
                    )
            user, password, _ = records["n0"]
            delays = asyncio.run(
                update_latency(registry_grpc, dns_port, (user, password), "n0", args.updates)
            )
            print(f"\nupdate to visible over UDP, {len(delays)} registry updates one by one")
            print(
                f"  p50 {percentile(delays, 0.5) * 1000:.2f} ms   "
                f"p99 {percentile(delays, 0.99) * 1000:.2f} ms   "
                f"max {max(delays) * 1000:.2f} ms   (target p99 < 10 ms)"
            )
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
