"""The registration count that the registrations gauge reads: kept by creates and deletes in
the feed_state row, and counted once by the migration that adds it."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from acmezone_registry.access import Caller, parse_address
from acmezone_registry.storage import migrate
from acmezone_registry.storage.database import Database
from tests.registry.conftest import Stack, open_stack

ANYONE = Caller(parse_address("127.0.0.1"))


async def test_creates_and_deletes_keep_the_count(stack: Stack) -> None:
    made = [await stack.registrations.create(ANYONE) for _ in range(3)]
    assert await stack.stores.registrations.count_registrations() == 3
    await stack.registrations.delete(ANYONE, made[1].registration.subdomain)
    assert await stack.stores.registrations.count_registrations() == 2


async def test_the_migration_counts_existing_registrations(
    database_url: str, tmp_path: Path
) -> None:
    database = Database(database_url)
    config = Config()
    config.set_main_option("script_location", str(Path(migrate.__file__).parent / "migrations"))
    engine = database.create_sync_engine()
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0004")
            for i in range(4):
                connection.execute(
                    sa.text(
                        "INSERT INTO registrations (subdomain, username, password_hash,"
                        " allowed_cidrs, description, max_txt_values, create_time, update_time)"
                        " VALUES (:s, :u, 'x', '[]', '', 2, :t, :t)"
                    ),
                    {"s": f"old{i}", "u": f"user{i}", "t": "2026-01-01 00:00:00"},
                )
    finally:
        engine.dispose()
        await database.dispose()
    opened = await open_stack(database_url)
    try:
        assert await opened.stores.registrations.count_registrations() == 4
    finally:
        await opened.database.dispose()
