"""Benchmark online DNSSEC signing beside the unsigned service and Knot DNS's onlinesign, one run.

What it does, all on loopback:
1. starts a registry (SQLite) and fills it with N registrations holding one TXT value each;
2. starts two dns services following that registry, one unsigned and one signing with a fresh
   ECDSA P-256 CSK, and Knot DNS (Debian's knotd, `mod-onlinesign`, its own P-256 key) serving
   the very same records from a zone file; all three pinned to core 0, each idle while the others
   are measured;
3. throughput: dnsperf (10 clients, core 1) asks the N existing TXT names, alternating runs: the
   unsigned service without DO, the signed service with DO=1 (`dnsperf -D`: the figure the issue
   sets, target >= 0.8 x unsigned), the signed service without DO (signing on must not slow
   plain answers), and Knot with DO=1; QPS is the median of the runs, beside the server's CPU
   per query;
4. signed NXDOMAIN latency: a light probe (dnsperf -c 1 -Q 1000 -v -D) asks random names that do
   not exist (each a fresh proof to sign) while a second dnsperf holds the server at half its
   signed QPS with existing names; p50/p99 for the signed service and Knot;
5. a random-subdomain flood: dnsperf at full rate, DO=1, every name fresh, for the flood time:
   the signatures made per second (from the service's metrics), denials signed and refused
   (the budget, ACMEZONE_DNS_DNSSEC_DENIAL_SIGNATURES_PER_SECOND, default 2000/s), the answers
   per second, and the RSS before and after (proofs are cached up to
   ACMEZONE_DNS_DNSSEC_DENIAL_CACHE); Knot under the same flood beside it.

It prints figures and never fails on them; it exits non-zero only when something could not run.
`--quick` is a short run (fewer names, 2 s runs, one of each) to check that it works.

    .venv/bin/python bench/dnssec_bench.py [--names 1000] [--seconds 5] [--runs 3]
        [--flood-seconds 5] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import dns.name
from dns_bench import (
    BIN,
    CLIENT_CORE,
    SERVER_CORE,
    ZONE,
    bench_registry_env,
    cpu_seconds,
    fill_registry,
    latencies_of,
    lost_of,
    percentile,
    pinned,
    process,
    qps_of,
    wait_answering,
    zone_file_lines,
)

from acmezone_common.testing import free_port, wait_for_serving
from acmezone_dns.dnssec.keys import ECDSAP256SHA256, Role, State, generate, write_key

NX_PROBE_QPS = 1000


def knot_config(workdir: Path, port: int, records: dict[str, tuple[str, str, str]]) -> Path:
    """The records the dns services serve as a zone file, and a knot.conf signing it online
    (one UDP worker: the services answer on one core too)."""
    zone = zone_file_lines(records)
    knot = workdir / "knot"
    (knot / "db").mkdir(parents=True)
    (knot / "zone").write_text("\n".join(zone) + "\n")
    conf = knot / "knot.conf"
    conf.write_text(
        f"""server:
    rundir: "{knot}"
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{knot}/db"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "{knot}"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: {ZONE}
    file: "{knot}/zone"
    module: mod-onlinesign
"""
    )
    return conf


def names_file(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def random_names(path: Path, count: int, seed: int) -> Path:
    """`count` names that do not exist, each once (a flood's random subdomains)."""
    rng = random.Random(seed)
    return names_file(path, [f"r{rng.getrandbits(64):016x}.{ZONE} TXT" for _ in range(count)])


def run_dnsperf(
    port: int, queries: Path, seconds: float, server_pid: int, extra: tuple[str, ...] = ()
) -> tuple[str, float]:
    """dnsperf (-c 10) for `seconds`: its report and the server's CPU µs per completed query."""
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-c", "10"]
    argv += ["-l", str(seconds), *extra]
    before = cpu_seconds(server_pid)
    done = subprocess.run(
        pinned(CLIENT_CORE, argv), capture_output=True, text=True, check=True, timeout=seconds + 60
    )
    used = cpu_seconds(server_pid) - before
    match = re.search(r"Queries completed:\s+(\d+)", done.stdout)
    completed = int(match.group(1)) if match else 0
    return done.stdout, used * 1e6 / max(completed, 1)


def warm(port: int, queries: Path) -> None:
    """Each query once, DO=1: a service fed by a snapshot signs a name on its first DO query."""
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-n", "1", "-D"]
    subprocess.run(argv, capture_output=True, check=True, timeout=120)


def nx_latency(
    port: int, load_file: Path, probe_file: Path, seconds: float, load_qps: float
) -> list[float]:
    """Latencies of DO=1 queries for fresh random names (a probe at NX_PROBE_QPS) while a
    second dnsperf holds the server at `load_qps` with existing names."""
    load = [
        "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(load_file), "-c", "10",
        "-l", str(seconds + 1), "-Q", str(int(load_qps)), "-D",
    ]  # fmt: skip
    probe = [
        "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(probe_file), "-c", "1",
        "-l", str(seconds), "-Q", str(NX_PROBE_QPS), "-v", "-D",
    ]  # fmt: skip
    background = subprocess.Popen(pinned(CLIENT_CORE, load), stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        done = subprocess.run(
            pinned(CLIENT_CORE, probe),
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        )
    finally:
        background.wait(seconds + 60)
    return latencies_of(done.stdout)


def metric(port: int, name: str, labels: str = "") -> float:
    """One sample of the dns service's /metrics (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.split(" ")[0] == name + labels:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--flood-seconds", type=float, default=5)
    parser.add_argument("--quick", action="store_true", help="a short run: does it all work")
    args = parser.parse_args()
    if args.quick:
        args.names, args.seconds, args.runs, args.flood_seconds = 200, 2, 1, 2
    for tool in ("dnsperf", "knotd", "taskset"):
        if shutil.which(tool) is None:
            print(
                f"{tool} is missing: `make bench-deps` installs dnsperf and knot", file=sys.stderr
            )
            return 1
    workdir = Path(tempfile.mkdtemp(prefix="dnssec-bench-"))
    keys = workdir / "keys"
    keys.mkdir(mode=0o700)
    write_key(
        generate(dns.name.from_text(ZONE), ECDSAP256SHA256, Role.CSK, State.ACTIVE), keys, None
    )
    registry_env = bench_registry_env(workdir / "registry")
    registry_grpc = registry_env["ACMEZONE_REGISTRY_GRPC_ADDRESS"]
    ports = {"plain": free_port(), "signed": free_port(), "knot": free_port()}
    metrics_ports = {"plain": free_port(), "signed": free_port()}

    def dns_env(which: str) -> dict[str, str]:
        env = {
            "ACMEZONE_DNS_DNS_ADDRESSES": f"127.0.0.1:{ports[which]}",
            "ACMEZONE_DNS_GRPC_ADDRESS": f"127.0.0.1:{free_port()}",
            "ACMEZONE_DNS_METRICS_ADDRESS": f"127.0.0.1:{metrics_ports[which]}",
            "ACMEZONE_DNS_REGISTRY_TARGET": registry_grpc,
            "ACMEZONE_DNS_LOG_LEVEL": "WARNING",
        }
        if which == "signed":
            env["ACMEZONE_DNS_DNSSEC_KEY_DIR"] = str(keys)
        return env

    print(f"dnssec bench: {args.names} TXT names, dnsperf -c 10 on core {CLIENT_CORE}, servers")
    print(f"  on core {SERVER_CORE} one at a time, {args.seconds:g} s x {args.runs} runs, "
          f"workdir {workdir}")  # fmt: skip
    with process(
        pinned(CLIENT_CORE, [str(BIN / "acmezone-registry")]), registry_env, workdir / "reg.log"
    ):
        asyncio.run(wait_for_serving(registry_grpc, within=120))
        records = asyncio.run(fill_registry(registry_grpc, args.names))
        existing = names_file(workdir / "existing", [f"{label}.{ZONE} TXT" for label in records])
        knot_conf = knot_config(workdir, ports["knot"], records)
        envs = {which: dns_env(which) for which in ("plain", "signed")}
        with (
            process(pinned(SERVER_CORE, [str(BIN / "acmezone-dns")]), envs["plain"],
                    workdir / "plain.log") as plain,
            process(pinned(SERVER_CORE, [str(BIN / "acmezone-dns")]), envs["signed"],
                    workdir / "signed.log") as signed,
            process(pinned(SERVER_CORE, ["knotd", "-c", str(knot_conf)]), {},
                    workdir / "knot.log") as knot,
        ):  # fmt: skip
            for which in ("plain", "signed"):
                asyncio.run(wait_for_serving(envs[which]["ACMEZONE_DNS_GRPC_ADDRESS"], within=60))
            first = f"{next(iter(records))}.{ZONE}"
            for port in ports.values():
                wait_answering(port, first)
            warm(ports["signed"], existing)
            warm(ports["knot"], existing)
            pids = {"plain": plain.pid, "signed": signed.pid, "knot": knot.pid}
            cases = [
                ("unsigned service, DO=0", "plain", ()),
                ("signed service, DO=1", "signed", ("-D",)),
                ("signed service, DO=0", "signed", ()),
                ("Knot onlinesign, DO=1", "knot", ("-D",)),
            ]
            qps: dict[str, list[float]] = {label: [] for label, _, _ in cases}
            cpu: dict[str, list[float]] = {label: [] for label, _, _ in cases}
            lost: dict[str, str] = {}
            for run in range(args.runs):
                order = cases[run % len(cases) :] + cases[: run % len(cases)]
                for label, which, extra in order:
                    out, us = run_dnsperf(ports[which], existing, args.seconds, pids[which], extra)
                    qps[label].append(qps_of(out))
                    cpu[label].append(us)
                    lost[label] = lost_of(out)
            median = {label: statistics.median(v) for label, v in qps.items()}
            print("\nthroughput, existing TXT names (dnsperf -c 10, median of runs)")
            for label, _, _ in cases:
                print(
                    f"  {label:<24} {median[label]:>10,.0f} QPS  "
                    f"{statistics.median(cpu[label]):>6.1f} µs CPU/query  lost {lost[label]}"
                )
            plain_qps = median["unsigned service, DO=0"]
            signed_qps = median["signed service, DO=1"]
            print(f"  signed DO=1 / unsigned     {signed_qps / plain_qps:>9.1%}  (target >= 80%)")
            plain_ratio = median["signed service, DO=0"] / plain_qps
            knot_ratio = signed_qps / median["Knot onlinesign, DO=1"]
            print(f"  signed DO=0 / unsigned     {plain_ratio:>9.1%}  (target ~100%)")
            print(f"  signed DO=1 / Knot DO=1    {knot_ratio:>9.1%}  (anchor)")

            print(
                f"\nsigned NXDOMAIN latency: probe dnsperf -c 1 -Q {NX_PROBE_QPS} -D, fresh "
                "random names, beside a load of half the server's DO=1 QPS (existing names)"
            )
            for label, which, full in (
                ("signed service", "signed", signed_qps),
                ("Knot onlinesign", "knot", median["Knot onlinesign, DO=1"]),
            ):
                probe = random_names(
                    workdir / f"nx-{which}", int(NX_PROBE_QPS * (args.seconds + 2)), 1
                )
                values = nx_latency(ports[which], existing, probe, args.seconds, full / 2)
                if not values:
                    print(f"  {label:<18} no answers")
                    continue
                print(
                    f"  {label:<18} p50 {percentile(values, 0.5) * 1e3:6.2f} ms  "
                    f"p99 {percentile(values, 0.99) * 1e3:6.2f} ms  ({len(values)} answers)"
                )

            print(
                f"\nrandom-subdomain flood: dnsperf -c 10 -D at full rate, every name fresh, "
                f"{args.flood_seconds:g} s"
            )
            flood = random_names(workdir / "flood", 400_000 if not args.quick else 100_000, 2)
            mport = metrics_ports["signed"]
            family = "acmezone_dns_dnssec_denials_total"
            before = (
                metric(mport, "acmezone_dns_dnssec_signatures_total"),
                metric(mport, family, '{result="signed"}'),
                metric(mport, family, '{result="refused"}'),
                rss_mb(signed.pid),
            )
            out, us = run_dnsperf(ports["signed"], flood, args.flood_seconds, signed.pid, ("-D",))
            after = (
                metric(mport, "acmezone_dns_dnssec_signatures_total"),
                metric(mport, family, '{result="signed"}'),
                metric(mport, family, '{result="refused"}'),
                rss_mb(signed.pid),
            )
            seconds = args.flood_seconds
            print(
                f"  signed service   {qps_of(out):>10,.0f} answers/s  {us:6.1f} µs CPU/query  "
                f"lost {lost_of(out)}"
            )
            print(
                f"    signatures     {(after[0] - before[0]) / seconds:>10,.0f} /s  "
                "(budget 2000 denials/s, one signature each with one key)"
            )
            print(
                f"    denials        {after[1] - before[1]:>10,.0f} signed, "
                f"{after[2] - before[2]:,.0f} refused (TC: retry over TCP)"
            )
            print(f"    RSS            {before[3]:>10.1f} MB before, {after[3]:.1f} MB after")
            knot_rss = rss_mb(knot.pid)
            out, us = run_dnsperf(ports["knot"], flood, args.flood_seconds, knot.pid, ("-D",))
            print(
                f"  Knot onlinesign  {qps_of(out):>10,.0f} answers/s  {us:6.1f} µs CPU/query  "
                f"lost {lost_of(out)}  RSS {knot_rss:.1f} -> {rss_mb(knot.pid):.1f} MB "
                "(signs every answer, no budget)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
