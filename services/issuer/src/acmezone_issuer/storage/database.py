"""The issuer's database: the engine for one URL, the migrations, and the cancellation shield.

SQLite gets a busy timeout so two writers of one file wait for each other instead of failing;
replicas share PostgreSQL, where the migration lock in `migrations/env.py` lets one of several
starting replicas migrate while the others wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from acmezone_common.sql import async_url as _async_url
from acmezone_common.sql import sync_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_SQLITE_BUSY_TIMEOUT_SECONDS = 30

R = TypeVar("R")


def async_url(database_url: str | None, data_dir: Path) -> str:
    """The async SQLAlchemy URL for the issuer's setting: `issuer.db` under `data_dir` when
    the setting is unset."""
    return _async_url(database_url, data_dir / "issuer.db")


def open_engine(async_database_url: str) -> AsyncEngine:
    """An engine for the URL; SQLite gets a busy timeout so concurrent writers wait."""
    connect_args: dict[str, object] = {}
    if async_database_url.startswith("sqlite"):
        connect_args["timeout"] = _SQLITE_BUSY_TIMEOUT_SECONDS
    return create_async_engine(async_database_url, connect_args=connect_args)


def migrate(async_database_url: str) -> None:
    """Apply every Alembic migration (blocking; call through `asyncio.to_thread`)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", sync_url(async_database_url).replace("%", "%%"))
    command.upgrade(config, "head")


class Shield:
    """Runs database operations to their end even when their caller is cancelled.

    A coroutine cancelled in the middle of a query can leave its pooled connection neither
    returned nor closed; shutting the issuer down cancels the reconciler at any point, so every
    repository operation runs as its own task, and `drain` waits for those still running before
    the engine is disposed.
    """

    def __init__(self) -> None:
        self._inflight: set[Awaitable[object]] = set()

    async def run(self, operation: Awaitable[R]) -> R:
        """Await `operation` in a task of its own that a cancelled caller leaves running."""
        task = asyncio.ensure_future(operation)
        self._inflight.add(task)
        task.add_done_callback(self._finished)
        return await asyncio.shield(task)

    def _finished(self, task: asyncio.Future[R]) -> None:
        self._inflight.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the awaiting caller (if still there) re-raises it

    async def drain(self) -> None:
        """Wait for every operation still running (their errors are their callers')."""
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
