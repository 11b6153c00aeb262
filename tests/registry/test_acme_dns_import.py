"""`import-acme-dns`: an acme-dns database (real, or written in its exact schema) taken over.

The real acme-dns (`ACMEZONE_TEST_ACME_DNS`, see ../shared/bin/README) makes the database through
its own HTTP API; without it, a database written with acme-dns's DDL (db.go) stands in.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import bcrypt
import psycopg
import pytest

from acmezone_common.errors import OutOfRangeError
from acmezone_common.testing import free_port
from acmezone_registry import credentials
from acmezone_registry.acme_dns_import import SourceError, import_acme_dns
from acmezone_registry.storage import migrate
from acmezone_registry.storage.bulk_import import BulkImporter
from acmezone_registry.storage.database import Database
from acmezone_registry.storage.stores import Stores
from tests.dns.conftest import running_dns
from tests.dns.test_feed_client import eventually
from tests.registry.conftest import SEALER, ZONE, running_registry
from tests.registry.snapshots import full_snapshot
from tests.registry.values import acme_digest

REGISTRY_BIN = str(Path(sys.executable).parent / "acmezone-registry")

# acme-dns's tables exactly as its db.go creates them (SQLite, and PostgreSQL's txt variant).
ACME_DNS_SQLITE_DDL = (
    "CREATE TABLE IF NOT EXISTS acmedns(Name TEXT, Value TEXT)",
    """CREATE TABLE IF NOT EXISTS records(
        Username TEXT UNIQUE NOT NULL PRIMARY KEY,
        Password TEXT UNIQUE NOT NULL,
        Subdomain TEXT UNIQUE NOT NULL,
        AllowFrom TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS txt(
        Subdomain TEXT NOT NULL,
        Value   TEXT NOT NULL DEFAULT '',
        LastUpdate INT
    )""",
)
ACME_DNS_POSTGRES_DDL = (
    ACME_DNS_SQLITE_DDL[0],
    ACME_DNS_SQLITE_DDL[1],
    """CREATE TABLE IF NOT EXISTS txt(
        rowid SERIAL,
        Subdomain TEXT NOT NULL,
        Value   TEXT NOT NULL DEFAULT '',
        LastUpdate INT
    )""",
)


@dataclass(frozen=True)
class Account:
    """An acme-dns registration as its client stored it, and the values acme-dns holds."""

    username: str
    password: str
    subdomain: str
    allowfrom: list[str]
    values: list[str]  # newest first


def _account(allowfrom: list[str], values: list[str]) -> Account:
    return Account(
        str(uuid.uuid4()), credentials.new_password(), str(uuid.uuid4()), allowfrom, values
    )


def _rows(account: Account) -> tuple[tuple[object, ...], list[tuple[str, str, int]]]:
    """The rows acme-dns writes: a bcrypt []byte hash, and always two txt slots."""
    hashed = bcrypt.hashpw(account.password.encode(), bcrypt.gensalt(rounds=4, prefix=b"2a"))
    record = (account.username, hashed, account.subdomain, json.dumps(account.allowfrom))
    slots = [(account.subdomain, v, 1_700_000_000 - i) for i, v in enumerate(account.values)]
    slots += [(account.subdomain, "", 0)] * (2 - len(slots))
    return record, slots


def write_sqlite_acme_dns(path: Path, accounts: list[Account]) -> str:
    with sqlite3.connect(path) as conn:
        for statement in ACME_DNS_SQLITE_DDL:
            conn.execute(statement)
        for account in accounts:
            record, slots = _rows(account)
            conn.execute("INSERT INTO records VALUES (?, ?, ?, ?)", record)
            conn.executemany(
                "INSERT INTO txt (Subdomain, Value, LastUpdate) VALUES (?, ?, ?)", slots
            )
    conn.close()
    return f"sqlite:///{path}"


def write_postgres_acme_dns(url: str, accounts: list[Account]) -> None:
    with psycopg.connect(url) as conn:
        for statement in ACME_DNS_POSTGRES_DDL:
            conn.execute(statement)
        for account in accounts:
            record, slots = _rows(account)
            conn.execute(
                "INSERT INTO records VALUES (%s, %s, %s, %s)",
                (record[0], bytes(record[1]).decode(), record[2], record[3]),  # type: ignore[arg-type]
            )
            conn.cursor().executemany(
                "INSERT INTO txt (Subdomain, Value, LastUpdate) VALUES (%s, %s, %s)", slots
            )


ACCOUNTS = [
    _account([], [acme_digest("a1"), acme_digest("a2")]),
    _account(["127.0.0.0/8", "::1/128"], [acme_digest("b1")]),
    _account(["10.0.0.0/8"], []),
]


async def _migrated(url: str) -> tuple[Database, Stores]:
    database = Database(url)
    await asyncio.to_thread(migrate.upgrade, database)
    return database, Stores.open(database, ZONE, SEALER)


@pytest.fixture
async def target(database_url: str) -> AsyncIterator[tuple[Database, Stores]]:
    database, stores = await _migrated(database_url)
    try:
        yield database, stores
    finally:
        await database.dispose()


async def _check_imported(stores: Stores, accounts: list[Account], *, ordered: bool = True) -> None:
    for account in accounts:
        stored = await stores.registrations.get_registration(account.subdomain)
        assert stored is not None, account.subdomain
        assert stored.registration.username == account.username
        assert stored.password_hash.startswith("$2a$")
        assert list(stored.registration.allowed_cidrs) == account.allowfrom
        assert stored.registration.max_txt_values == 2
        record = await stores.txt_values.get_txt_record(account.subdomain)
        held = [v.value for v in record.values]
        assert held == account.values if ordered else sorted(held) == sorted(account.values)


async def test_import_takes_every_registration_with_its_values(
    target: tuple[Database, Stores], tmp_path: Path
) -> None:
    database, stores = target
    source = write_sqlite_acme_dns(tmp_path / "acme-dns.db", ACCOUNTS)
    before = (await stores.log.feed_status()).revision

    report = await asyncio.to_thread(import_acme_dns, source, database, ZONE)

    assert report.committed
    assert (report.imported, report.already_present, report.txt_values) == (3, 0, 3)
    assert report.revision == before + 1
    await _check_imported(stores, ACCOUNTS)
    # One revision carries every new name with its values, as any change would.
    changes = await stores.log.changes_since(before + 1, 10)
    assert {c.revision for c in changes} == {before + 1}
    assert {c.record_set.fqdn: list(c.record_set.txt_values) for c in changes} == {
        f"{a.subdomain}.{ZONE}.": a.values for a in ACCOUNTS
    }


async def test_rerunning_an_import_changes_nothing(
    target: tuple[Database, Stores], tmp_path: Path
) -> None:
    database, stores = target
    source = write_sqlite_acme_dns(tmp_path / "acme-dns.db", ACCOUNTS)
    first = await asyncio.to_thread(import_acme_dns, source, database, ZONE)
    again = await asyncio.to_thread(import_acme_dns, source, database, ZONE)
    assert again.committed is False
    assert (again.imported, again.already_present, again.refusal_count) == (0, 3, 0)
    assert again.revision == first.revision
    assert (await stores.log.feed_status()).revision == first.revision
    assert await stores.registrations.count_registrations() == 3


async def test_a_conflict_imports_nothing_and_says_which(
    target: tuple[Database, Stores], tmp_path: Path
) -> None:
    database, stores = target
    taken = ACCOUNTS[1]
    other = Account(str(uuid.uuid4()), "x", taken.subdomain, [], [])
    await asyncio.to_thread(
        import_acme_dns, write_sqlite_acme_dns(tmp_path / "other.db", [other]), database, ZONE
    )
    revision = (await stores.log.feed_status()).revision

    source = write_sqlite_acme_dns(tmp_path / "acme-dns.db", ACCOUNTS)
    report = await asyncio.to_thread(import_acme_dns, source, database, ZONE)

    assert not report.committed
    assert report.refusal_count == 1
    assert report.refusals == [
        f"subdomain {taken.subdomain} already exists here with other credentials "
        f"(username {other.username})"
    ]
    assert await stores.registrations.count_registrations() == 1
    assert await stores.registrations.get_registration(ACCOUNTS[0].subdomain) is None
    assert (await stores.log.feed_status()).revision == revision


async def test_unusable_rows_are_refused_before_anything_lands(
    target: tuple[Database, Stores], tmp_path: Path
) -> None:
    database, stores = target
    path = tmp_path / "acme-dns.db"
    write_sqlite_acme_dns(path, ACCOUNTS)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO records VALUES (?, ?, ?, ?)",
            (str(uuid.uuid4()), b"plaintext", "bad-allowfrom", '["300.1.1.1/8"]'),
        )
        conn.execute(
            "INSERT INTO records VALUES (?, ?, ?, ?)",
            ("not-a-uuid", b"$2a$04$x", str(uuid.uuid4()), "[]"),
        )
    conn.close()
    report = await asyncio.to_thread(import_acme_dns, f"sqlite:///{path}", database, ZONE)
    assert not report.committed
    assert report.refusal_count == 2
    assert any("'bad-allowfrom'" in r and "bcrypt" in r for r in report.refusals)
    assert any("username is not a UUID" in r for r in report.refusals)
    assert await stores.registrations.count_registrations() == 0


async def test_a_large_import_compacts_the_feed_so_watchers_relist(
    target: tuple[Database, Stores], tmp_path: Path
) -> None:
    database, stores = target
    accounts = [_account([], [acme_digest(i)]) for i in range(30)]
    source = write_sqlite_acme_dns(tmp_path / "acme-dns.db", accounts)
    before = (await stores.log.feed_status()).revision
    from acmezone_registry.acme_dns_import import read_acme_dns

    report = await asyncio.to_thread(
        BulkImporter(database, ZONE, change_rows_limit=10).run,
        read_acme_dns(source, chunk_rows=7),
    )
    assert (report.imported, report.txt_values) == (30, 30)
    status = await stores.log.feed_status()
    assert status.revision == status.compacted_revision == before + 1
    with pytest.raises(OutOfRangeError):
        await stores.log.changes_since(before + 1, 10)
    revision, record_sets = await full_snapshot(stores.record_sets)
    assert revision == before + 1
    assert {r.fqdn: list(r.txt_values) for r in record_sets} == {
        f"{a.subdomain}.{ZONE}.": a.values for a in accounts
    }


@pytest.mark.postgres
async def test_a_postgresql_acme_dns_is_read_too(postgres_schema_url: str, tmp_path: Path) -> None:
    write_postgres_acme_dns(postgres_schema_url, ACCOUNTS)
    database, stores = await _migrated(f"sqlite:///{tmp_path}/registry.db")
    try:
        report = await asyncio.to_thread(import_acme_dns, postgres_schema_url, database, ZONE)
        assert report.committed
        await _check_imported(stores, ACCOUNTS)
    finally:
        await database.dispose()


async def test_sources_that_are_not_acme_dns_are_clear_errors(tmp_path: Path) -> None:
    database, _ = await _migrated(f"sqlite:///{tmp_path}/registry.db")
    try:
        missing = tmp_path / "missing.db"
        with pytest.raises(SourceError, match="no acme-dns SQLite database"):
            import_acme_dns(f"sqlite:///{missing}", database, ZONE)
        assert not missing.exists()
        with pytest.raises(SourceError, match="not an acme-dns database"):
            import_acme_dns(f"sqlite:///{tmp_path}/registry.db", database, ZONE)
        with pytest.raises(SourceError, match="unsupported source database"):
            import_acme_dns("mysql://127.0.0.1/acmedns", database, ZONE)
    finally:
        await database.dispose()


def _run_cli(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ACMEZONE_REGISTRY_DATABASE_URL": f"sqlite:///{tmp_path}/registry.db",
        "ACMEZONE_REGISTRY_DATA_DIR": str(tmp_path / "data"),
        "ACMEZONE_REGISTRY_ZONE": ZONE,
    }
    return subprocess.run(
        [REGISTRY_BIN, "import-acme-dns", "--from", source],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_command_reports_what_it_did_and_refuses_conflicts(tmp_path: Path) -> None:
    source = write_sqlite_acme_dns(tmp_path / "acme-dns.db", ACCOUNTS)
    done = _run_cli(tmp_path, source)
    assert done.returncode == 0, done.stderr
    assert "imported 3 registration(s) with 3 TXT value(s); 0 already present" in done.stdout
    again = _run_cli(tmp_path, source)
    assert again.returncode == 0, again.stderr
    assert "imported 0 registration(s)" in again.stdout
    assert "3 already present" in again.stdout

    clash = Account(str(uuid.uuid4()), "x", ACCOUNTS[0].subdomain, [], [])
    refused = _run_cli(tmp_path, write_sqlite_acme_dns(tmp_path / "clash.db", [clash]))
    assert refused.returncode == 1
    assert "nothing imported: 1 record(s) refused" in refused.stderr
    assert ACCOUNTS[0].subdomain in refused.stderr
    missing = _run_cli(tmp_path, f"sqlite:///{tmp_path}/nope.db")
    assert missing.returncode == 2
    assert "no acme-dns SQLite database" in missing.stderr
    for secret in (a.password for a in ACCOUNTS):
        assert secret not in done.stdout + done.stderr


# -- with the real acme-dns --------------------------------------------------------------------


def _acme_dns_binary() -> str:
    path = os.environ.get("ACMEZONE_TEST_ACME_DNS")
    if not path:
        pytest.skip("ACMEZONE_TEST_ACME_DNS is not set (path to an acme-dns binary)")
    return path


@pytest.fixture
def acme_dns(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real acme-dns on loopback ports with its SQLite database in tmp_path."""
    binary = _acme_dns_binary()
    api_port, dns_port = free_port(), free_port()
    database = tmp_path / "acme-dns.db"
    config = tmp_path / "config.cfg"
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
connection = "{database}"

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
    log = (tmp_path / "acme-dns.log").open("w")
    process = subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=log, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", api_port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"acme-dns did not start: {(tmp_path / 'acme-dns.log').read_text()}"
                    )
                time.sleep(0.05)  # polling a port that has no readiness event of its own
        yield f"http://127.0.0.1:{api_port}", database
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.mark.slow
async def test_accounts_made_by_real_acme_dns_keep_working_here(
    acme_dns: tuple[str, Path], tmp_path: Path
) -> None:
    api, acme_dns_db = acme_dns
    accounts: list[Account] = []
    async with aiohttp.ClientSession() as session:
        for allowfrom, values in ((["127.0.0.0/8"], ["x1", "x2", "x3"]), ([], ["y1"]), ([], [])):
            async with session.post(f"{api}/register", json={"allowfrom": allowfrom}) as reply:
                assert reply.status == 201
                made = await reply.json()
            for value in values:
                async with session.post(
                    f"{api}/update",
                    headers={"X-Api-User": made["username"], "X-Api-Key": made["password"]},
                    json={"subdomain": made["subdomain"], "txt": acme_digest(value)},
                ) as reply:
                    assert reply.status == 200, await reply.text()
            accounts.append(
                Account(made["username"], made["password"], made["subdomain"], allowfrom, [])
            )
    # What acme-dns kept (two slots, the older overwritten; updates within one second tie),
    # newest first as it would be imported.
    with sqlite3.connect(acme_dns_db) as conn:
        kept = conn.execute(
            "SELECT Subdomain, Value FROM txt WHERE Value <> '' ORDER BY LastUpdate DESC, rowid"
        ).fetchall()
    conn.close()
    accounts = [
        Account(
            a.username,
            a.password,
            a.subdomain,
            a.allowfrom,
            [v for s, v in kept if s == a.subdomain],
        )
        for a in accounts
    ]
    assert [len(a.values) for a in accounts] == [2, 1, 0]

    data_dir = tmp_path / "registry"
    database, stores = await _migrated(f"sqlite:///{data_dir}/registry.db")
    try:
        report = await asyncio.to_thread(
            import_acme_dns, f"sqlite:///{acme_dns_db}", database, ZONE
        )
        assert (report.imported, report.txt_values) == (3, 3)
        await _check_imported(stores, accounts, ordered=False)
    finally:
        await database.dispose()

    (tmp_path / "dns").mkdir()
    async with (
        running_registry(data_dir) as app,
        running_dns(tmp_path / "dns", registry_target=str(app.grpc_address)) as replica,
        aiohttp.ClientSession() as session,
    ):
        base = f"http://{app.http_address}"
        for account in accounts:
            # What acme-dns answered is what our dns answers, from the first snapshot on.
            await eventually(replica, f"{account.subdomain}.{ZONE}.", set(account.values))
        for account in accounts:
            new_value = acme_digest(f"{account.subdomain}-after")
            async with session.post(
                f"{base}/update",
                headers={"X-Api-User": account.username, "X-Api-Key": account.password},
                data=json.dumps({"subdomain": account.subdomain, "txt": new_value}),
            ) as reply:
                assert reply.status == 200, await reply.text()
                assert (await reply.json()) == {"txt": new_value}
            record = await app.stores.txt_values.get_txt_record(account.subdomain)
            held = [v.value for v in record.values]
            assert held[0] == new_value
            assert held[1:] == [] if not account.values else held[1] in account.values
            stored = await app.stores.registrations.get_registration(account.subdomain)
            assert stored is not None
            assert credentials.is_fast_hash(stored.password_hash)
            await eventually(replica, f"{account.subdomain}.{ZONE}.", set(held))
        wrong = accounts[0]
        async with session.post(
            f"{base}/update",
            headers={"X-Api-User": wrong.username, "X-Api-Key": accounts[1].password},
            data=json.dumps({"subdomain": wrong.subdomain, "txt": acme_digest("no")}),
        ) as reply:
            assert reply.status == 401
