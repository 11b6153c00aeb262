"""The revision log: every registry transaction, and the record changes a write appends to the feed.

Each record-changing transaction (1) locks the feed_state row, (2) makes its change, (3) appends
the resulting record sets to `record_changes` under the next revision, and (4) on PostgreSQL
queues a NOTIFY that is delivered at commit. So a change and its feed entry are one atomic fact,
and revisions commit strictly in order. This process's commit listeners hear of a revision right
after it commits.

The hot write (`write_fast`, the `/update` path) is group-committed (`grouping`): writes that
arrive while a transaction is running share the next one, so one BEGIN, feed lock, revision
counter update, change insert and COMMIT (and one thread hop on SQLite) serve all of them. Each
write still gets a revision of its own, in arrival order, and its caller hears back only after
the transaction holding it committed: nothing acknowledged is lost to a crash. The hot read
(the credential lookup of every authenticated request) is grouped the same way.

Database failures (connection refused, timeouts) become `UnavailableError(STORAGE_UNAVAILABLE)`;
integrity conflicts pass through, for the repositories to turn into domain errors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import bindparam, delete, insert, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Executable

from acmezone_common.errors import UnavailableError
from acmezone_registry import errors
from acmezone_registry.model import ChangeType, FeedStatus, RecordChange, RecordSet
from acmezone_registry.storage.database import Database
from acmezone_registry.storage.grouping import Grouped
from acmezone_registry.storage.tables import FeedStateRow, RecordChangeRow

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "acmezone_feed"
FEED_STATE_ID = 1

T = TypeVar("T")
CommitListener = Callable[[int, tuple[RecordChange, ...]], None]


class _Hot:
    """The log's statements on the hot path, built once: constructing a statement and its cache
    key costs more than executing it on SQLite."""

    lock_feed = (
        select(FeedStateRow.revision).where(FeedStateRow.id == FEED_STATE_ID).with_for_update()
    )
    set_revision = (
        update(FeedStateRow)
        .where(FeedStateRow.id == FEED_STATE_ID)
        .values(revision=bindparam("new_revision"))
    )
    add_changes = insert(RecordChangeRow)
    notify = text("SELECT pg_notify(:channel, :payload)")


@dataclass(kw_only=True)
class _Changes:
    """What a write transaction will append to the feed, and under which revision."""

    now: datetime
    # The feed's revision when this write began; nobody else can move it until we commit.
    base_revision: int
    changes: list[tuple[ChangeType, RecordSet]] = field(default_factory=list)
    revision: int = 0

    @property
    def resulting_revision(self) -> int:
        """The revision the feed will be at once this write commits."""
        return self.base_revision + (1 if self.changes else 0)

    def committed(self) -> tuple[RecordChange, ...]:
        """The changes as the feed serves them."""
        return tuple(
            RecordChange(self.revision, change_type, record_set, self.now)
            for change_type, record_set in self.changes
        )


@dataclass(kw_only=True)
class AsyncWrite(_Changes):
    """An open write transaction on an ORM session (`RevisionLog.writing`)."""

    session: AsyncSession


@dataclass(kw_only=True)
class SyncWrite(_Changes):
    """One write of a group commit, run synchronously on its connection (`write_fast`)."""

    conn: Connection


class RevisionLog:
    """Transactions over one database, the feed's revision counter and its change history."""

    def __init__(self, database: Database, zone: str) -> None:
        self._db = database
        self._zone = zone.rstrip(".").lower()
        self._commit_listeners: list[CommitListener] = []
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if database.is_sqlite else None
        self._writes = Grouped[SyncWrite](self._commit_group, name="group-commit")
        self._reads = Grouped[Connection](self._read_group, name="group-read")

    @property
    def database(self) -> Database:
        """The database this log is kept in."""
        return self._db

    def add_commit_listener(self, listener: CommitListener) -> None:
        """Call `listener(revision, changes)` right after this process commits a new revision."""
        self._commit_listeners.append(listener)

    # -- transactions -------------------------------------------------------------------------

    @asynccontextmanager
    async def reading(self, *, consistent: bool = False) -> AsyncIterator[AsyncSession]:
        """A read transaction; `consistent` makes every statement in it see the same snapshot
        on PostgreSQL too (REPEATABLE READ; a SQLite read transaction always does)."""
        try:
            async with self._db.reader_session() as session, session.begin():
                if consistent and not self._db.is_sqlite:
                    await session.connection(
                        execution_options={"isolation_level": "REPEATABLE READ"}
                    )
                yield session
        except IntegrityError:
            raise
        except (OperationalError, DBAPIError) as exc:
            raise unavailable(exc) from exc

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncWrite]:
        """A transaction holding the feed lock; its record changes get the next revision."""
        tx: AsyncWrite | None = None
        try:
            async with self._write_turn(), self._db.writer_session() as session, session.begin():
                base_revision = (await session.execute(_Hot.lock_feed)).scalar_one()
                tx = AsyncWrite(session=session, now=datetime.now(UTC), base_revision=base_revision)
                yield tx
                if tx.changes:
                    await session.flush()  # ORM changes of the body go first
                    tx.revision = tx.resulting_revision
                    for statement, parameters in self._append_statements([tx]):
                        await session.execute(statement, parameters)
        except IntegrityError:
            raise
        except (OperationalError, DBAPIError) as exc:
            raise unavailable(exc) from exc
        if tx is not None:
            self._announce(tx)

    @asynccontextmanager
    async def writing_plain(self) -> AsyncIterator[AsyncSession]:
        """A write transaction for changes that publish no record (credentials, TSIG keys,
        replay guard, compaction): no feed lock, so it never waits behind record writers on
        PostgreSQL; on SQLite it queues on the same in-process lock as every writer."""
        try:
            async with self._write_turn(), self._db.writer_session() as session, session.begin():
                yield session
        except IntegrityError:
            raise
        except (OperationalError, DBAPIError) as exc:
            raise unavailable(exc) from exc

    async def read_fast(self, body: Callable[[Connection], T]) -> T:
        """`reading` for hot paths: `body` runs synchronously, inside one read transaction with
        the other hot reads queued meanwhile (see `grouping`)."""
        return await self._reads.run(body)

    async def write_fast(self, body: Callable[[SyncWrite], T]) -> T:
        """`writing` for hot paths: `body` runs synchronously inside the next group commit (see
        the module docstring) and its result comes back once that transaction committed. A body
        that raises must not rely on its own statements being undone by anything but the
        rollback of the whole group."""
        return await self._writes.run(body)

    async def _read_group(self, bodies: Sequence[Callable[[Connection], object]]) -> list[object]:
        def run(conn: Connection) -> list[object]:
            return [body(conn) for body in bodies]

        try:
            return await self._db.run_transaction(run, write=False)
        except IntegrityError:
            raise
        except (OperationalError, DBAPIError) as exc:
            raise unavailable(exc) from exc

    async def _commit_group(self, bodies: Sequence[Callable[[SyncWrite], object]]) -> list[object]:
        def run(conn: Connection) -> list[tuple[SyncWrite, object]]:
            head = int(conn.execute(_Hot.lock_feed).scalar_one())
            now = datetime.now(UTC)
            done: list[tuple[SyncWrite, object]] = []
            for body in bodies:
                tx = SyncWrite(conn=conn, now=now, base_revision=head)
                result = body(tx)
                if tx.changes:
                    tx.revision = head = tx.resulting_revision
                done.append((tx, result))
            for statement, parameters in self._append_statements([tx for tx, _ in done]):
                conn.execute(statement, parameters)
            return done

        try:
            async with self._write_turn():
                done = await self._db.run_transaction(run, write=True)
        except IntegrityError:
            raise
        except (OperationalError, DBAPIError) as exc:
            raise unavailable(exc) from exc
        for tx, _ in done:
            self._announce(tx)
        return [result for _, result in done]

    @asynccontextmanager
    async def _write_turn(self) -> AsyncIterator[None]:
        """SQLite has one writer at a time: queue this process's writers on an asyncio lock in
        front of BEGIN IMMEDIATE, so they wait in order instead of spinning on SQLITE_BUSY (and
        failing with `database is locked` past the busy timeout). PostgreSQL needs no turn."""
        if self._write_lock is None:
            yield
            return
        async with self._write_lock:
            yield

    def _append_statements(
        self, writes: Sequence[_Changes]
    ) -> list[tuple[Executable, dict[str, object] | list[dict[str, object]]]]:
        """What records the writes' changes under their revisions: the counter, the change
        rows, and on PostgreSQL the NOTIFY delivered at commit. Nothing when none changed."""
        changed = [tx for tx in writes if tx.changes]
        if not changed:
            return []
        head = changed[-1].revision
        statements: list[tuple[Executable, dict[str, object] | list[dict[str, object]]]] = [
            (_Hot.set_revision, {"new_revision": head}),
            (
                _Hot.add_changes,
                [
                    {
                        "revision": tx.revision,
                        "seq": seq,
                        "change_type": change_type.value,
                        "fqdn": record_set.fqdn,
                        "txt_values": list(record_set.txt_values),
                        "commit_time": tx.now,
                    }
                    for tx in changed
                    for seq, (change_type, record_set) in enumerate(tx.changes)
                ],
            ),
        ]
        if not self._db.is_sqlite:
            statements.append((_Hot.notify, {"channel": NOTIFY_CHANNEL, "payload": str(head)}))
        return statements

    def _announce(self, tx: _Changes) -> None:
        """Tell this process's listeners about a committed revision."""
        if not tx.revision:
            return
        committed = tx.committed()
        for listener in self._commit_listeners:
            listener(tx.revision, committed)

    # -- the feed's history -------------------------------------------------------------------

    async def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            async with self.reading() as session:
                await session.execute(text("SELECT 1"))
        except UnavailableError:
            return False
        return True

    @staticmethod
    async def current_revision(session: AsyncSession) -> int:
        """The feed's head as this transaction sees it."""
        revision = await session.scalar(
            select(FeedStateRow.revision).where(FeedStateRow.id == FEED_STATE_ID)
        )
        return int(revision or 0)

    async def feed_status(self) -> FeedStatus:
        """The feed's identity and current revision bounds."""
        async with self.reading() as session:
            state = (
                await session.execute(select(FeedStateRow).where(FeedStateRow.id == FEED_STATE_ID))
            ).scalar_one()
            return FeedStatus(
                state.feed_id, state.revision, state.compacted_revision, self._zone + "."
            )

    async def changes_since(self, start_revision: int, max_revisions: int) -> list[RecordChange]:
        """The changes of revisions start_revision .. start_revision + max_revisions - 1.

        The rows are read before the compaction mark: if compaction has reached start_revision
        by then, rows may be missing, so the caller must re-list (OUT_OF_RANGE).
        """
        async with self.reading() as session:
            rows = list(
                await session.scalars(
                    select(RecordChangeRow)
                    .where(
                        RecordChangeRow.revision >= start_revision,
                        RecordChangeRow.revision < start_revision + max_revisions,
                    )
                    .order_by(RecordChangeRow.revision, RecordChangeRow.seq)
                )
            )
            compacted = await session.scalar(
                select(FeedStateRow.compacted_revision).where(FeedStateRow.id == FEED_STATE_ID)
            )
        if compacted is not None and start_revision <= compacted:
            raise errors.revision_compacted(start_revision, compacted)
        return [
            RecordChange(
                revision=row.revision,
                type=ChangeType(row.change_type),
                record_set=RecordSet(row.fqdn, tuple(row.txt_values)),
                commit_time=row.commit_time,
            )
            for row in rows
        ]

    async def compact(self, keep_revisions: int) -> int:
        """Drop feed history older than the latest `keep_revisions`; returns the new mark."""
        # Compaction publishes nothing: a read decides whether there is work at all, and the
        # write takes no feed lock. The deleted rows and the new mark commit together, so a
        # reader sees both or neither.
        async with self.reading() as session:
            revision, compacted = (
                await session.execute(
                    select(FeedStateRow.revision, FeedStateRow.compacted_revision).where(
                        FeedStateRow.id == FEED_STATE_ID
                    )
                )
            ).one()
        mark = revision - keep_revisions
        if mark <= compacted:
            return int(compacted)
        async with self.writing_plain() as session:
            await session.execute(delete(RecordChangeRow).where(RecordChangeRow.revision <= mark))
            await session.execute(
                update(FeedStateRow)
                .where(FeedStateRow.id == FEED_STATE_ID, FeedStateRow.compacted_revision < mark)
                .values(compacted_revision=mark)
            )
        return int(mark)


def unavailable(exc: Exception) -> UnavailableError:
    """The error a caller sees for a database failure (logged once, first line only)."""
    logger.warning("database unavailable", extra={"error": str(exc).splitlines()[0]})
    return UnavailableError(errors.STORAGE_UNAVAILABLE, "the registry database is unavailable")
