"""Applying the Alembic migrations, at start or from `acmezone-registry migrate`.

Replicas starting together on one PostgreSQL take a transaction-scoped advisory lock first, so
exactly one applies the migrations and the others find them done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from acmezone_common.sealing import SecretSealer
from acmezone_registry.storage.database import Database

logger = logging.getLogger(__name__)

_MIGRATIONS = Path(__file__).parent / "migrations"
_ADVISORY_LOCK_KEY = 0x61636D657A6F6E  # "acmezon"


def upgrade(
    database: Database, sealer: SecretSealer | None = None, *, revision: str = "head"
) -> None:
    """Bring the schema to `revision`, the newest by default (blocking; call via
    asyncio.to_thread).

    `sealer` is needed only when stored TSIG secrets are still to be sealed (migration 0003).
    """
    _run(database, sealer, lambda config: command.upgrade(config, revision))


def downgrade(database: Database, revision: str, sealer: SecretSealer | None = None) -> None:
    """Take the schema back to `revision` (operators rolling back; tests of migrations)."""
    _run(database, sealer, lambda config: command.downgrade(config, revision))


def _run(database: Database, sealer: SecretSealer | None, step: Callable[[Config], None]) -> None:
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one summary line below is enough
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    engine = database.create_sync_engine()
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY}
                )
            config.attributes["connection"] = connection
            config.attributes["sealer"] = sealer
            step(config)
    finally:
        engine.dispose()
    logger.info("database schema is current", extra={"dialect": database.dialect})
