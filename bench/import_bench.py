"""Benchmark `acmezone-registry import-acme-dns`: seconds and peak memory per source size.

For each size it writes an acme-dns database (SQLite, acme-dns's exact tables, every
registration with its two txt slots, half of them holding a value) into a temporary directory,
then runs the real command into a fresh SQLite registry and reports wall time, rows per second
and the command's peak RSS. The password column holds unique bcrypt-shaped strings: bcrypt
itself would take an hour to make a million (the import copies hashes, it never computes one).

    .venv/bin/python bench/import_bench.py [--sizes 100000 1000000]

Prints figures beside their targets; never fails on a figure, exits non-zero only when the
command itself failed.
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REGISTRY_BIN = str(Path(sys.executable).parent / "acmezone-registry")
BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
TARGET_SECONDS_PER_MILLION = 60.0
TARGET_RSS_MB = 300.0


def create_acme_dns_schema(conn: sqlite3.Connection) -> None:
    """The tables acme-dns (db.go) creates in a SQLite database."""
    conn.execute("CREATE TABLE acmedns(Name TEXT, Value TEXT)")
    conn.execute(
        "CREATE TABLE records(Username TEXT UNIQUE NOT NULL PRIMARY KEY, "
        "Password TEXT UNIQUE NOT NULL, Subdomain TEXT UNIQUE NOT NULL, AllowFrom TEXT)"
    )
    conn.execute(
        "CREATE TABLE txt(Subdomain TEXT NOT NULL, Value TEXT NOT NULL DEFAULT '', LastUpdate INT)"
    )


def write_source(path: Path, size: int) -> None:
    conn = sqlite3.connect(path)
    create_acme_dns_schema(conn)
    batch = 50_000
    for start in range(0, size, batch):
        records = []
        txt = []
        for i in range(start, min(size, start + batch)):
            subdomain = str(uuid.uuid4())
            salt = "".join(secrets.choice(BCRYPT_ALPHABET) for _ in range(53))
            records.append((str(uuid.uuid4()), f"$2a$10${salt}".encode(), subdomain, "[]"))
            value = secrets.token_urlsafe(32)[:43] if i % 2 == 0 else ""
            txt.append((subdomain, value, 1_700_000_000 + i if value else 0))
            txt.append((subdomain, "", 0))
        conn.executemany("INSERT INTO records VALUES (?, ?, ?, ?)", records)
        conn.executemany("INSERT INTO txt VALUES (?, ?, ?)", txt)
        conn.commit()
    conn.close()


def run_import(workdir: Path, source: Path) -> tuple[float, float, str]:
    env = {
        **os.environ,
        "ACMEZONE_REGISTRY_DATABASE_URL": f"sqlite:///{workdir}/registry.db",
        "ACMEZONE_REGISTRY_DATA_DIR": str(workdir / "data"),
        "ACMEZONE_REGISTRY_LOG_LEVEL": "WARNING",
    }
    started = time.monotonic()
    done = subprocess.run(
        [REGISTRY_BIN, "import-acme-dns", "--from", f"sqlite:///{source}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        raise SystemExit(f"import failed with exit status {done.returncode}")
    # ru_maxrss of all waited-for children: this command is the only (and largest) one.
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return elapsed, rss_mb, done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    print("import-acme-dns into SQLite (one transaction, one feed revision)")
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="acmezone-import-") as tmp:
            workdir = Path(tmp)
            source = workdir / "acme-dns.db"
            made = time.monotonic()
            write_source(source, size)
            made = time.monotonic() - made
            elapsed, rss_mb, output = run_import(workdir, source)
            target = TARGET_SECONDS_PER_MILLION * size / 1_000_000
            print(
                f"  {size:>9,} records: {elapsed:6.1f} s (target <= {target:.0f} s), "
                f"{size / elapsed:9,.0f} records/s, peak RSS {rss_mb:5.0f} MB "
                f"(target <= {TARGET_RSS_MB:.0f} MB); source written in {made:.0f} s"
            )
            print(f"    {output}")


if __name__ == "__main__":
    main()
