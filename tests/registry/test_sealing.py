"""TSIG secrets sealed at rest: the sealer, the stored rows, the migration sealing old rows."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from acmezone_common.sealing import SecretSealer, is_sealed
from acmezone_registry.access import Caller, parse_address
from acmezone_registry.storage import migrate
from acmezone_registry.storage.database import Database
from tests.registry.conftest import SEALER, ZONE, Stack

SECRET = "c2VhbGVkLXRzaWctc2VjcmV0LWZvci10ZXN0cw"


def test_a_sealed_secret_opens_only_with_its_key_and_context() -> None:
    sealed = SEALER.seal(SECRET, "k1.example.")
    assert is_sealed(sealed)
    assert SECRET not in sealed
    assert SEALER.seal(SECRET, "k1.example.") != sealed, "a fresh nonce every time"
    assert SEALER.open(sealed, "k1.example.") == SECRET
    with pytest.raises(ValueError, match="does not open"):
        SEALER.open(sealed, "k2.example.")
    with pytest.raises(ValueError, match="does not open"):
        SecretSealer(bytes(32)).open(sealed, "k1.example.")
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(ValueError, match="does not open"):
        SEALER.open(tampered, "k1.example.")
    assert SEALER.open("plain-before-sealing", "k1.example.") == "plain-before-sealing"


async def test_stored_tsig_secrets_are_sealed_and_open_for_verification(stack: Stack) -> None:
    issued = await stack.registrations.create(Caller(address=parse_address("127.0.0.1")))
    subdomain = issued.registration.subdomain
    info = await stack.stores.tsig_keys.create_tsig_key(
        subdomain, "k1", "hmac-sha256", SECRET, max_keys=5
    )
    async with stack.database.reader_session() as session:
        stored = await session.scalar(
            sa.text("SELECT secret FROM tsig_keys WHERE key_name = :n"), {"n": info.key_name}
        )
    assert isinstance(stored, str)
    assert is_sealed(stored)
    assert SECRET not in stored
    found = await stack.stores.tsig_keys.find_tsig_key(info.key_name)
    assert found is not None
    assert found[0].secret == SECRET


async def test_the_migration_seals_existing_secrets_and_needs_the_key(
    database_url: str, tmp_path: Path
) -> None:
    database = Database(database_url)
    try:
        await asyncio.to_thread(migrate.upgrade, database, revision="0002")
        engine = database.create_sync_engine()
        now = datetime.now(UTC).replace(tzinfo=None)
        name = f"k1.sub.{ZONE}."
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO registrations (subdomain, username, password_hash, "
                    "allowed_cidrs, description, max_txt_values, create_time, update_time) "
                    "VALUES ('sub', 'u', 'h', '[]', '', 2, :t, :t)"
                ),
                {"t": now},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO tsig_keys (subdomain, key_id, key_name, algorithm, secret, "
                    "create_time) VALUES ('sub', 'k1', :n, 'hmac-sha256', :s, :t)"
                ),
                {"n": name, "s": SECRET, "t": now},
            )

        def stored() -> str:
            with engine.connect() as conn:
                return str(conn.execute(sa.text("SELECT secret FROM tsig_keys")).scalar_one())

        with pytest.raises(RuntimeError, match="needs the registry's encryption key"):
            await asyncio.to_thread(migrate.upgrade, database)
        assert stored() == SECRET, "a refused migration changes nothing"
        await asyncio.to_thread(migrate.upgrade, database, SEALER)
        assert is_sealed(stored())
        assert SEALER.open(stored(), name) == SECRET
        await asyncio.to_thread(migrate.downgrade, database, "0002", SEALER)
        assert stored() == SECRET
        engine.dispose()
    finally:
        await database.dispose()
