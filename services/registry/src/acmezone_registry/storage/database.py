"""Database engines for SQLite and PostgreSQL, with the transaction behaviour the feed needs.

Writers are serialised: every record-changing transaction locks the single `feed_state` row
(PostgreSQL `SELECT ... FOR UPDATE`; SQLite `BEGIN IMMEDIATE`), so revisions commit in the order
they are handed out and a watcher reading `revision > n` can never skip one.

SQLite gets two engines: writers open with `BEGIN IMMEDIATE` (taking the write lock up front
instead of failing with SQLITE_BUSY when a reader upgrades), readers with plain `BEGIN`. WAL mode
lets readers proceed while a writer commits.

Hot paths (the `/update` write and the credential lookup) run as one synchronous function per
transaction (`run_transaction`): on SQLite in a worker thread with the plain sqlite3 driver, one
thread hop per transaction instead of one per driver call through aiosqlite (about sixty for an
update); on PostgreSQL on the async connection through `run_sync`, which needs no thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import URL, event, make_url
from sqlalchemy.engine import Connection, Engine, create_engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from acmezone_common.keyfiles import private_dir
from acmezone_common.sql import async_url, sync_url

logger = logging.getLogger(__name__)

_SQLITE_BUSY_TIMEOUT_MS = 15_000

T = TypeVar("T")


class Database:
    """Opens the engines for one database URL and hands out sessions."""

    def __init__(self, url: str) -> None:
        """`url` in any spelling `acmezone_common.sql.async_url` accepts."""
        parsed = make_url(async_url(url))
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {self.dialect!r}: use sqlite or postgresql")
        self.url = parsed
        # aiosqlite logs every call with its arguments (bound SQL parameters: password hashes,
        # TSIG secrets) at DEBUG; SQLAlchemy's engines are told to hide parameters as well.
        logging.getLogger("aiosqlite").setLevel(max(logging.INFO, logging.getLogger().level))
        if self.is_sqlite:
            database = parsed.database or ""
            if not database or database == ":memory:":
                raise ValueError("SQLite needs a file path: the feed is shared through the file")
            _private_database_file(Path(database))
            self._writer = self._sqlite_engine(begin="BEGIN IMMEDIATE")
            self._reader = self._sqlite_engine(begin="BEGIN")
            self._sync_writer: Engine | None = self._sqlite_sync_engine(begin="BEGIN IMMEDIATE")
            self._sync_reader: Engine | None = self._sqlite_sync_engine(begin="BEGIN")
            # SQLite has one writer at a time anyway: its transactions get a thread of their
            # own, so a write never queues behind reads for a worker thread.
            self._write_thread: ThreadPoolExecutor | None = ThreadPoolExecutor(
                1, thread_name_prefix="sqlite-writer"
            )
        else:
            engine = create_async_engine(
                parsed,
                pool_pre_ping=True,
                pool_size=10,
                max_overflow=10,
                hide_parameters=True,
            )
            self._writer = self._reader = engine
            self._sync_writer = self._sync_reader = None
            self._write_thread = None
        self.writer = async_sessionmaker(self._writer, expire_on_commit=False)
        self.reader = async_sessionmaker(self._reader, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        """True for SQLite, False for PostgreSQL."""
        return self.dialect == "sqlite"

    def _sqlite_engine(self, *, begin: str) -> AsyncEngine:
        engine = create_async_engine(self.url, hide_parameters=True)

        event.listen(engine.sync_engine, "connect", _sqlite_connection_setup)

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(connection: Any) -> None:
            connection.exec_driver_sql(begin)

        return engine

    def _sqlite_sync_engine(self, *, begin: str) -> Engine:
        engine = create_engine(self.url.set(drivername="sqlite+pysqlite"), hide_parameters=True)
        event.listen(engine, "connect", _sqlite_connection_setup)

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            connection.exec_driver_sql(begin)

        return engine

    async def run_transaction(self, body: Callable[[Connection], T], *, write: bool) -> T:
        """Run `body` inside one transaction (committed when it returns, rolled back when it
        raises) and return its result. On SQLite the writer transaction is BEGIN IMMEDIATE; the
        caller serialises writers (see Repository)."""
        if self._sync_writer is not None and self._sync_reader is not None:
            engine = self._sync_writer if write else self._sync_reader

            def run() -> T:
                with engine.begin() as connection:
                    return body(connection)

            if write and self._write_thread is not None:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._write_thread, run)
            return await asyncio.to_thread(run)
        async with self._writer.begin() as connection:
            return await connection.run_sync(body)

    def sync_url(self) -> URL:
        """The URL for synchronous tools (Alembic)."""
        return make_url(sync_url(self.url.render_as_string(hide_password=False)))

    def libpq_conninfo(self) -> str:
        """A libpq connection string for the LISTEN connection (PostgreSQL only)."""
        return self.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def create_sync_engine(self) -> Engine:
        """A short-lived synchronous engine, for migrations."""
        return create_engine(self.sync_url(), hide_parameters=True)

    def writer_session(self) -> AsyncSession:
        """A session whose transactions take the write lock (SQLite) up front."""
        return self.writer()

    def reader_session(self) -> AsyncSession:
        """A session for reads."""
        return self.reader()

    async def dispose(self, within: float = 5.0) -> None:
        """Close every pooled connection, giving up after `within` seconds per engine.

        A driver close that never returns (seen rarely with aiosqlite after an RPC was
        cancelled mid-query) must not hang a shutdown: Kubernetes would SIGKILL us anyway.
        """
        engines = [self._writer] if self._reader is self._writer else [self._writer, self._reader]
        if self._write_thread is not None:
            self._write_thread.shutdown(wait=False)
        for sync_engine in (self._sync_writer, self._sync_reader):
            if sync_engine is not None:
                await asyncio.to_thread(sync_engine.dispose)
        for engine in engines:
            try:
                await asyncio.wait_for(engine.dispose(), within)
            except TimeoutError:
                logger.warning("database connections did not close in time; abandoning them")


def _private_database_file(path: Path) -> None:
    """The database's directory readable only by us (0700 when we create it), and the file
    created 0600 before SQLite opens it: SQLite gives its -wal and -shm files the same mode."""
    private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _sqlite_connection_setup(dbapi_connection: Any, _record: Any) -> None:
    """Every SQLite connection: transaction control ours (BEGIN is chosen per engine), WAL, a
    busy timeout for other processes' writers, foreign keys enforced."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
