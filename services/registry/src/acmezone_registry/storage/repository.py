"""The registry's storage API: every query the domain needs, named for its purpose.

Each record-changing method runs in one transaction that (1) locks the feed_state row,
(2) makes its change, (3) writes the resulting record sets to `record_changes` under the next
revision, and (4) on PostgreSQL queues a NOTIFY that is delivered at commit. So a change and its
feed entry are one atomic fact, and revisions commit strictly in order.

Database failures (connection refused, timeouts) become `UnavailableError(STORAGE_UNAVAILABLE)`;
integrity conflicts become domain errors; nothing half-writes.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import bindparam, delete, func, insert, select, text, tuple_, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from acmezone_common.errors import (
    AlreadyExistsError,
    ResourceExhaustedError,
    UnavailableError,
)
from acmezone_common.sealing import SecretSealer
from acmezone_registry import errors
from acmezone_registry.model import (
    ALIAS_OWNER,
    ChangeType,
    FeedStatus,
    Prerequisite,
    PrerequisiteFailure,
    PrerequisiteKind,
    RecordChange,
    RecordSet,
    Registration,
    RegistrationChanges,
    TsigKeyInfo,
    TsigKeyWithSecret,
    TxtRecord,
    TxtValue,
    UpdateKind,
    UpdateOperation,
    UpdateOutcome,
)
from acmezone_registry.storage.database import Database
from acmezone_registry.storage.tables import (
    FeedStateRow,
    RecordChangeRow,
    RegistrationRow,
    TsigKeyRow,
    TsigReplayGuardRow,
    TxtValueRow,
)

logger = logging.getLogger(__name__)

NOTIFY_CHANNEL = "acmezone_feed"
_FEED_STATE_ID = 1
_SNAPSHOT_ROWS_PER_READ = 2000


class _Hot:
    """The statements of the hot paths, built once: constructing a statement and its cache key
    costs more than executing it on SQLite."""

    lock_feed = (
        select(FeedStateRow.revision).where(FeedStateRow.id == _FEED_STATE_ID).with_for_update()
    )
    set_revision = (
        update(FeedStateRow)
        .where(FeedStateRow.id == _FEED_STATE_ID)
        .values(revision=bindparam("new_revision"))
    )
    add_changes = insert(RecordChangeRow)
    count_registrations = (
        update(FeedStateRow)
        .where(FeedStateRow.id == _FEED_STATE_ID)
        .values(registration_count=FeedStateRow.registration_count + bindparam("delta"))
    )
    registration_by_username = select(RegistrationRow.__table__).where(
        RegistrationRow.username == bindparam("username")
    )
    max_txt_values = select(RegistrationRow.max_txt_values).where(
        RegistrationRow.subdomain == bindparam("subdomain")
    )
    values = (
        select(
            TxtValueRow.id,
            TxtValueRow.value,
            TxtValueRow.create_time,
            TxtValueRow.expire_time,
            TxtValueRow.persistent,
        )
        .where(TxtValueRow.subdomain == bindparam("subdomain"), TxtValueRow.owner == "")
        .order_by(TxtValueRow.create_time.desc(), TxtValueRow.id.desc())
    )
    add_value = insert(TxtValueRow)
    set_expiry = (
        update(TxtValueRow)
        .where(TxtValueRow.id == bindparam("value_id"))
        .values(expire_time=bindparam("new_expire_time"), persistent=bindparam("new_persistent"))
    )
    drop_values = delete(TxtValueRow).where(
        TxtValueRow.id.in_(bindparam("value_ids", expanding=True))
    )


@dataclass(frozen=True)
class NewRegistration:
    """What the domain decided for a new registration; `subdomain` None means a random UUID."""

    subdomain: str | None
    username: str
    password_hash: str
    allowed_cidrs: tuple[str, ...]
    description: str
    max_txt_values: int


@dataclass(frozen=True)
class StoredRegistration:
    """A registration together with its password hash, for authentication only."""

    registration: Registration
    password_hash: str


@dataclass
class _WriteTransaction:
    """An open write transaction and the feed changes it will commit."""

    session: AsyncSession
    now: datetime
    # The feed's revision when the lock was taken; nobody else can move it until we commit.
    base_revision: int
    changes: list[tuple[ChangeType, RecordSet]] = field(default_factory=list)
    revision: int = 0

    @property
    def resulting_revision(self) -> int:
        """The revision the feed will be at once this transaction commits."""
        return self.base_revision + (1 if self.changes else 0)


@dataclass
class _SyncWrite:
    """`_WriteTransaction` for a synchronous transaction body (see `_write_fast`)."""

    conn: Connection
    now: datetime
    base_revision: int
    changes: list[tuple[ChangeType, RecordSet]] = field(default_factory=list)
    revision: int = 0

    @property
    def resulting_revision(self) -> int:
        """The revision the feed will be at once this transaction commits."""
        return self.base_revision + (1 if self.changes else 0)


CommitListener = Callable[[int, tuple[RecordChange, ...]], None]
T = TypeVar("T")


class Repository:
    """All registry reads and writes."""

    def __init__(self, database: Database, zone: str, sealer: SecretSealer) -> None:
        self._db = database
        self._sealer = sealer
        self._zone = zone.rstrip(".").lower()
        self._commit_listeners: list[CommitListener] = []
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if database.is_sqlite else None

    @property
    def database(self) -> Database:
        """The database this repository talks to."""
        return self._db

    def fqdn(self, subdomain: str, owner: str = "") -> str:
        """The owner name of a registration's records: `[<owner>.]<subdomain>.<zone>.`."""
        prefix = f"{owner}." if owner else ""
        return f"{prefix}{subdomain}.{self._zone}."

    def add_commit_listener(self, listener: CommitListener) -> None:
        """Call `listener(revision, changes)` right after this process commits a new revision."""
        self._commit_listeners.append(listener)

    # -- plumbing -----------------------------------------------------------------------------

    @asynccontextmanager
    async def _reading(self, *, consistent: bool = False) -> AsyncIterator[AsyncSession]:
        """A read transaction; `consistent` makes every statement in it see the same snapshot
        on PostgreSQL too (REPEATABLE READ; a SQLite read transaction always does)."""
        try:
            async with self._db.reader_session() as session, session.begin():
                if consistent and not self._db.is_sqlite:
                    await session.connection(
                        execution_options={"isolation_level": "REPEATABLE READ"}
                    )
                yield session
        except (OperationalError, DBAPIError) as exc:
            if isinstance(exc, IntegrityError):
                raise
            raise _unavailable(exc) from exc

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[_WriteTransaction]:
        """A transaction holding the feed lock; its record changes get the next revision."""
        tx: _WriteTransaction | None = None
        try:
            async with self._write_turn(), self._db.writer_session() as session, session.begin():
                # Core statements, not ORM objects: this runs for every write in the system.
                base_revision = (
                    await session.execute(
                        select(FeedStateRow.revision)
                        .where(FeedStateRow.id == _FEED_STATE_ID)
                        .with_for_update()
                    )
                ).scalar_one()
                tx = _WriteTransaction(
                    session=session, now=datetime.now(UTC), base_revision=base_revision
                )
                yield tx
                if tx.changes:
                    await session.flush()  # ORM changes of the body go first
                    tx.revision = tx.resulting_revision
                    for statement, parameters in self._feed_statements(tx):
                        await session.execute(statement, parameters)
        except IntegrityError:
            raise
        except (OperationalError, DBAPIError) as exc:
            raise _unavailable(exc) from exc
        if tx is not None:
            self._announce(tx)

    def _feed_statements(self, tx: _WriteTransaction | _SyncWrite) -> list[tuple[Any, Any]]:
        """What records a transaction's changes under its revision: the counter, the change
        rows, and on PostgreSQL the NOTIFY delivered at commit."""
        statements: list[tuple[Any, Any]] = [
            (_Hot.set_revision, {"new_revision": tx.revision}),
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
                    for seq, (change_type, record_set) in enumerate(tx.changes)
                ],
            ),
        ]
        if not self._db.is_sqlite:
            statements.append(
                (
                    text("SELECT pg_notify(:channel, :payload)"),
                    {"channel": NOTIFY_CHANNEL, "payload": str(tx.revision)},
                )
            )
        return statements

    def _announce(self, tx: _WriteTransaction | _SyncWrite) -> None:
        """Tell this process's listeners about a committed revision."""
        if not tx.revision:
            return
        committed = tuple(
            RecordChange(tx.revision, change_type, record_set, tx.now)
            for change_type, record_set in tx.changes
        )
        for listener in self._commit_listeners:
            listener(tx.revision, committed)

    async def _write_fast(self, body: Callable[[_SyncWrite], T]) -> T:
        """`_writing` for hot paths: the whole transaction, feed lock and bookkeeping included,
        is one synchronous function (see `Database.run_transaction`)."""
        started: list[_SyncWrite] = []

        def run(conn: Connection) -> T:
            base_revision = conn.execute(_Hot.lock_feed).scalar_one()
            tx = _SyncWrite(conn, datetime.now(UTC), int(base_revision))
            started.append(tx)
            result = body(tx)
            if tx.changes:
                tx.revision = tx.resulting_revision
                for statement, parameters in self._feed_statements(tx):
                    conn.execute(statement, parameters)
            return result

        try:
            async with self._write_turn():
                result = await self._db.run_transaction(run, write=True)
        except IntegrityError:
            raise
        except (OperationalError, DBAPIError) as exc:
            raise _unavailable(exc) from exc
        self._announce(started[0])
        return result

    async def _read_fast(self, body: Callable[[Connection], T]) -> T:
        """`_reading` for hot paths, as one synchronous function."""
        try:
            return await self._db.run_transaction(body, write=False)
        except IntegrityError:
            raise
        except (OperationalError, DBAPIError) as exc:
            raise _unavailable(exc) from exc

    @asynccontextmanager
    async def _writing_plain(self) -> AsyncIterator[AsyncSession]:
        """A write transaction for changes that publish no record (credentials, TSIG keys,
        replay guard, compaction): no feed lock, so it never waits behind record writers on
        PostgreSQL; on SQLite it queues on the same in-process lock as every writer."""
        try:
            async with self._write_turn(), self._db.writer_session() as session, session.begin():
                yield session
        except IntegrityError:
            raise
        except (OperationalError, DBAPIError) as exc:
            raise _unavailable(exc) from exc

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

    async def _values(self, session: AsyncSession, subdomain: str, owner: str = "") -> list[str]:
        """The values at one owner name, newest first."""
        return list(
            await session.scalars(
                select(TxtValueRow.value)
                .where(TxtValueRow.subdomain == subdomain, TxtValueRow.owner == owner)
                .order_by(TxtValueRow.create_time.desc(), TxtValueRow.id.desc())
            )
        )

    async def _record_set(self, session: AsyncSession, subdomain: str) -> RecordSet:
        return RecordSet(self.fqdn(subdomain), tuple(await self._values(session, subdomain)))

    async def _owner_change(
        self, session: AsyncSession, subdomain: str, owner: str
    ) -> tuple[ChangeType, RecordSet]:
        """The feed change for one owner name's current values. The fulldomain always exists
        (NODATA when empty); the alias name exists only while it holds values."""
        values = tuple(await self._values(session, subdomain, owner))
        record_set = RecordSet(self.fqdn(subdomain, owner), values)
        if owner and not values:
            return ChangeType.DELETE, record_set
        return ChangeType.PUT, record_set

    async def _txt_record(self, session: AsyncSession, subdomain: str, revision: int) -> TxtRecord:
        rows = await session.scalars(
            select(TxtValueRow)
            .where(TxtValueRow.subdomain == subdomain, TxtValueRow.owner == "")
            .order_by(TxtValueRow.create_time.desc(), TxtValueRow.id.desc())
        )
        values = tuple(TxtValue(r.value, r.create_time, r.expire_time, r.persistent) for r in rows)
        return TxtRecord(subdomain, self.fqdn(subdomain), values, revision)

    async def _current_revision(self, session: AsyncSession) -> int:
        revision = await session.scalar(
            select(FeedStateRow.revision).where(FeedStateRow.id == _FEED_STATE_ID)
        )
        return int(revision or 0)

    def _to_registration(self, row: RegistrationRow | Row[Any]) -> Registration:
        return Registration(
            subdomain=row.subdomain,
            username=row.username,
            fulldomain=f"{row.subdomain}.{self._zone}",
            allowed_cidrs=tuple(row.allowed_cidrs),
            description=row.description,
            max_txt_values=row.max_txt_values,
            create_time=row.create_time,
            update_time=row.update_time,
        )

    def _stored(self, row: RegistrationRow | Row[Any]) -> StoredRegistration:
        return StoredRegistration(self._to_registration(row), row.password_hash)

    # -- health -------------------------------------------------------------------------------

    async def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            async with self._reading() as session:
                await session.execute(text("SELECT 1"))
        except UnavailableError:
            return False
        return True

    # -- registrations ------------------------------------------------------------------------

    async def create_registration(self, new: NewRegistration) -> Registration:
        """Insert a registration; its name starts existing (with no values) in the feed."""
        subdomain = new.subdomain or str(uuid.uuid4())
        try:
            async with self._writing() as tx:
                taken = await tx.session.get(RegistrationRow, subdomain)
                if taken is not None:
                    raise _subdomain_taken(subdomain)
                row = RegistrationRow(
                    subdomain=subdomain,
                    username=new.username,
                    password_hash=new.password_hash,
                    allowed_cidrs=list(new.allowed_cidrs),
                    description=new.description,
                    max_txt_values=new.max_txt_values,
                    create_time=tx.now,
                    update_time=tx.now,
                )
                tx.session.add(row)
                await tx.session.flush()
                await tx.session.execute(_Hot.count_registrations, {"delta": 1})
                tx.changes.append((ChangeType.PUT, RecordSet(self.fqdn(subdomain), ())))
                return self._to_registration(row)
        except IntegrityError as exc:
            # Another replica took the label between our check and our insert.
            raise _subdomain_taken(subdomain) from exc

    async def get_registration(self, subdomain: str) -> StoredRegistration | None:
        """A registration by subdomain, or None."""
        async with self._reading() as session:
            row = await session.get(RegistrationRow, subdomain)
            return self._stored(row) if row else None

    async def get_registration_by_username(self, username: str) -> StoredRegistration | None:
        """A registration by username, or None (every authenticated request asks this)."""

        def read(conn: Connection) -> StoredRegistration | None:
            row = conn.execute(_Hot.registration_by_username, {"username": username}).first()
            return self._stored(row) if row else None

        return await self._read_fast(read)

    async def list_registrations(
        self, *, after: tuple[datetime, str] | None, limit: int
    ) -> list[Registration]:
        """Registrations ordered by (create_time, subdomain), strictly after the given key."""
        query = select(RegistrationRow).order_by(
            RegistrationRow.create_time, RegistrationRow.subdomain
        )
        if after is not None:
            query = query.where(
                tuple_(RegistrationRow.create_time, RegistrationRow.subdomain) > tuple_(*after)
            )
        async with self._reading() as session:
            rows = await session.scalars(query.limit(limit))
            return [self._to_registration(row) for row in rows]

    async def count_registrations(self) -> int:
        """How many registrations are stored: a counter kept in the feed_state row by every
        create and delete, so the gauge read every maintenance round costs one row, not a
        scan of a table of millions."""
        async with self._reading() as session:
            count = await session.scalar(
                select(FeedStateRow.registration_count).where(FeedStateRow.id == _FEED_STATE_ID)
            )
            return int(count or 0)

    async def update_registration(
        self, subdomain: str, changes: RegistrationChanges
    ) -> Registration:
        """Apply validated changes; lowering max_txt_values drops the oldest extra values."""
        async with self._writing() as tx:
            row = await tx.session.get(RegistrationRow, subdomain)
            if row is None:
                raise errors.registration_not_found(subdomain)
            if changes.allowed_cidrs is not None:
                row.allowed_cidrs = list(changes.allowed_cidrs)
            if changes.description is not None:
                row.description = changes.description
            if changes.max_txt_values is not None:
                row.max_txt_values = changes.max_txt_values
                for owner in ("", ALIAS_OWNER):
                    if await self._trim_values(tx.session, subdomain, row.max_txt_values, owner):
                        tx.changes.append(await self._owner_change(tx.session, subdomain, owner))
            row.update_time = tx.now
            return self._to_registration(row)

    async def delete_registration(self, subdomain: str) -> None:
        """Delete a registration and its values; its name stops existing in the feed."""
        async with self._writing() as tx:
            row = await tx.session.get(RegistrationRow, subdomain)
            if row is None:
                raise errors.registration_not_found(subdomain)
            alias_in_use = bool(await self._values(tx.session, subdomain, ALIAS_OWNER))
            await tx.session.execute(delete(TxtValueRow).where(TxtValueRow.subdomain == subdomain))
            await tx.session.execute(delete(TsigKeyRow).where(TsigKeyRow.subdomain == subdomain))
            await tx.session.delete(row)
            await tx.session.execute(_Hot.count_registrations, {"delta": -1})
            tx.changes.append((ChangeType.DELETE, RecordSet(self.fqdn(subdomain), ())))
            if alias_in_use:
                tx.changes.append(
                    (ChangeType.DELETE, RecordSet(self.fqdn(subdomain, ALIAS_OWNER), ()))
                )

    async def set_password_hash(self, subdomain: str, password_hash: str) -> Registration:
        """Replace a registration's password hash (no record changes: no feed lock)."""
        async with self._writing_plain() as session:
            row = await session.get(RegistrationRow, subdomain)
            if row is None:
                raise errors.registration_not_found(subdomain)
            row.password_hash = password_hash
            row.update_time = datetime.now(UTC)
            return self._to_registration(row)

    async def upgrade_password_hash(self, subdomain: str, old_hash: str, new_hash: str) -> bool:
        """Store `new_hash` only if the hash is still `old_hash` (a rotation in between wins).

        Used to replace an imported slow hash by the fast form after a successful check; the
        registration itself does not change, so `update_time` stays.
        """
        async with self._writing_plain() as session:
            result = await session.execute(
                update(RegistrationRow)
                .where(
                    RegistrationRow.subdomain == subdomain,
                    RegistrationRow.password_hash == old_hash,
                )
                .values(password_hash=new_hash)
            )
            return bool(getattr(result, "rowcount", 0))

    # -- TXT values ---------------------------------------------------------------------------

    async def get_txt_record(self, subdomain: str) -> TxtRecord:
        """The values of a registration, newest first, with the revision they are current at."""
        async with self._reading() as session:
            if await session.get(RegistrationRow, subdomain) is None:
                raise errors.registration_not_found(subdomain)
            revision = await self._current_revision(session)
            return await self._txt_record(session, subdomain, revision)

    async def add_txt_value(
        self,
        subdomain: str,
        value: str,
        *,
        now: datetime,
        expire_time: datetime | None,
        persistent: bool = False,
    ) -> TxtRecord:
        """Publish `value` newest first, keeping the registration's latest max_txt_values
        challenge values (persistent ones are not counted, never trimmed, never expire).

        Re-adding a published value only refreshes its expiry (or makes it persistent): no new
        revision.
        """
        if persistent:
            expire_time = None

        def write(tx: _SyncWrite) -> TxtRecord:
            # Four statements for a new value (limit, values, insert, trim); the record set and
            # the answer are computed from what was read, not read again.
            keep = tx.conn.execute(_Hot.max_txt_values, {"subdomain": subdomain}).scalar()
            if keep is None:
                raise errors.registration_not_found(subdomain)
            rows = tx.conn.execute(_Hot.values, {"subdomain": subdomain}).all()
            current = [TxtValue(r.value, r.create_time, r.expire_time, r.persistent) for r in rows]
            match = next((i for i, r in enumerate(rows) if r.value == value), None)
            if match is not None:
                found = rows[match]
                if not found.persistent and (
                    found.expire_time != expire_time or found.persistent != persistent
                ):
                    tx.conn.execute(
                        _Hot.set_expiry,
                        {
                            "value_id": found.id,
                            "new_expire_time": expire_time,
                            "new_persistent": persistent,
                        },
                    )
                    current[match] = TxtValue(value, found.create_time, expire_time, persistent)
                return TxtRecord(
                    subdomain, self.fqdn(subdomain), tuple(current), tx.resulting_revision
                )
            tx.conn.execute(
                _Hot.add_value,
                {
                    "subdomain": subdomain,
                    "owner": "",
                    "value": value,
                    "create_time": now,
                    "expire_time": expire_time,
                    "persistent": persistent,
                },
            )
            # Newest first; a value set at the same instant as an older one still sorts first
            # (its id is higher), as the ORDER BY above would put it. Persistent values stay
            # whatever their age; the newest `keep` challenge values stay beside them.
            newest = sorted(
                [TxtValue(value, now, expire_time, persistent), *current],
                key=lambda v: v.create_time,
                reverse=True,
            )
            challenge = [v for v in newest if not v.persistent][:keep]
            kept = [v for v in newest if v.persistent or v in challenge]
            dropped = [r.id for r in rows if all(r.value != v.value for v in kept)]
            if dropped:
                tx.conn.execute(_Hot.drop_values, {"value_ids": dropped})
            tx.changes.append(
                (ChangeType.PUT, RecordSet(self.fqdn(subdomain), tuple(v.value for v in kept)))
            )
            return TxtRecord(subdomain, self.fqdn(subdomain), tuple(kept), tx.resulting_revision)

        return await self._write_fast(write)

    async def remove_txt_values(self, subdomain: str, value: str | None) -> TxtRecord:
        """Remove one value, or every value when `value` is None. Removing nothing is no change."""
        async with self._writing() as tx:
            if await tx.session.get(RegistrationRow, subdomain) is None:
                raise errors.registration_not_found(subdomain)
            statement = delete(TxtValueRow).where(
                TxtValueRow.subdomain == subdomain, TxtValueRow.owner == ""
            )
            if value is not None:
                statement = statement.where(TxtValueRow.value == value)
            result = await tx.session.execute(statement)
            if getattr(result, "rowcount", 0):
                tx.changes.append((ChangeType.PUT, await self._record_set(tx.session, subdomain)))
            return await self._txt_record(tx.session, subdomain, tx.resulting_revision)

    async def _trim_values(
        self, session: AsyncSession, subdomain: str, keep: int, owner: str = ""
    ) -> bool:
        """Delete all but the newest `keep` challenge values at one owner (persistent values
        stay); True when any were deleted."""
        ids = list(
            await session.scalars(
                select(TxtValueRow.id)
                .where(
                    TxtValueRow.subdomain == subdomain,
                    TxtValueRow.owner == owner,
                    TxtValueRow.persistent.is_(False),
                )
                .order_by(TxtValueRow.create_time.desc(), TxtValueRow.id.desc())
                .offset(keep)
            )
        )
        if ids:
            await session.execute(delete(TxtValueRow).where(TxtValueRow.id.in_(ids)))
        return bool(ids)

    async def expire_txt_values(self, now: datetime) -> int:
        """Remove every value whose expire_time has passed; all in one revision. Returns how
        many values were removed."""
        due = (TxtValueRow.expire_time.is_not(None), TxtValueRow.expire_time <= now)
        async with self._reading() as session:
            if await session.scalar(select(TxtValueRow.id).where(*due).limit(1)) is None:
                return 0
        async with self._writing() as tx:
            expired = list(
                await tx.session.execute(
                    select(TxtValueRow.id, TxtValueRow.subdomain, TxtValueRow.owner).where(*due)
                )
            )
            if not expired:
                return 0
            await tx.session.execute(
                delete(TxtValueRow).where(TxtValueRow.id.in_([row.id for row in expired]))
            )
            for subdomain, owner in sorted({(row.subdomain, row.owner) for row in expired}):
                tx.changes.append(await self._owner_change(tx.session, subdomain, owner))
            return len(expired)

    # -- feed ---------------------------------------------------------------------------------

    async def feed_status(self) -> FeedStatus:
        """The feed's identity and current revision bounds."""
        async with self._reading() as session:
            state = (
                await session.execute(select(FeedStateRow).where(FeedStateRow.id == _FEED_STATE_ID))
            ).scalar_one()
            return FeedStatus(
                state.feed_id, state.revision, state.compacted_revision, self._zone + "."
            )

    async def snapshot_parts(self, batch_size: int) -> AsyncGenerator[tuple[int, list[RecordSet]]]:
        """Every record set, in parts of at most `batch_size` (each name in exactly one), all
        consistent at the revision that comes with each part; at least one part, empty when
        there is nothing.

        One read transaction streams the rows (SQLite's WAL snapshot; REPEATABLE READ on
        PostgreSQL), so the revision and every row come from the same moment without holding
        writers back, and at most a few thousand rows are in memory at a time, however large
        the table. Close the iterator (`aclose`) to end the transaction early.
        """
        # Oldest first within an owner name, so the covering index ix_txt_values_snapshot_order
        # gives the rows in order with no sort (3x cheaper on SQLite); reversed below.
        statement = (
            select(RegistrationRow.subdomain, TxtValueRow.owner, TxtValueRow.value)
            .outerjoin(TxtValueRow, TxtValueRow.subdomain == RegistrationRow.subdomain)
            .order_by(
                RegistrationRow.subdomain,
                TxtValueRow.owner,
                TxtValueRow.create_time,
                TxtValueRow.id,
            )
        )
        async with self._reading(consistent=True) as session:
            revision = await self._current_revision(session)
            connection = await session.connection()
            result = await connection.stream(statement)
            part: list[RecordSet] = []
            # The owner name being gathered: its registration and owner label; None before
            # the first row. Compared field by field: this loop runs once per row, a million
            # times for a large registry, and a tuple per row costs a tenth of it.
            subdomain_now: str | None = None
            owner_now: str | None = None
            values: list[str] = []
            suffix = f".{self._zone}."
            async for rows in result.partitions(_SNAPSHOT_ROWS_PER_READ):
                for subdomain, owner, value in rows:
                    if subdomain != subdomain_now or owner != owner_now:
                        if subdomain_now is not None:
                            values.reverse()
                            name = subdomain_now + suffix
                            part.append(
                                RecordSet(
                                    f"{owner_now}.{name}" if owner_now else name, tuple(values)
                                )
                            )
                            if len(part) >= batch_size:
                                yield revision, part
                                part = []
                        subdomain_now, owner_now, values = subdomain, owner, []
                    if value is not None:
                        values.append(value)
            if subdomain_now is not None:
                values.reverse()
                name = subdomain_now + suffix
                part.append(RecordSet(f"{owner_now}.{name}" if owner_now else name, tuple(values)))
            yield revision, part

    async def changes_since(self, start_revision: int, max_revisions: int) -> list[RecordChange]:
        """The changes of revisions start_revision .. start_revision + max_revisions - 1.

        The rows are read before the compaction mark: if compaction has reached start_revision
        by then, rows may be missing, so the caller must re-list (OUT_OF_RANGE).
        """
        async with self._reading() as session:
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
                select(FeedStateRow.compacted_revision).where(FeedStateRow.id == _FEED_STATE_ID)
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
        async with self._reading() as session:
            revision, compacted = (
                await session.execute(
                    select(FeedStateRow.revision, FeedStateRow.compacted_revision).where(
                        FeedStateRow.id == _FEED_STATE_ID
                    )
                )
            ).one()
        mark = revision - keep_revisions
        if mark <= compacted:
            return int(compacted)
        async with self._writing_plain() as session:
            await session.execute(delete(RecordChangeRow).where(RecordChangeRow.revision <= mark))
            await session.execute(
                update(FeedStateRow)
                .where(FeedStateRow.id == _FEED_STATE_ID, FeedStateRow.compacted_revision < mark)
                .values(compacted_revision=mark)
            )
        return int(mark)

    # -- TSIG keys ----------------------------------------------------------------------------

    @staticmethod
    def _tsig_info(row: TsigKeyRow) -> TsigKeyInfo:
        return TsigKeyInfo(row.subdomain, row.key_id, row.key_name, row.algorithm, row.create_time)

    async def create_tsig_key(
        self, subdomain: str, key_id: str, algorithm: str, secret: str, *, max_keys: int
    ) -> TsigKeyInfo:
        """Store a new key named `<key_id>.<fulldomain>.`."""
        key_name = f"{key_id}.{subdomain}.{self._zone}."
        try:
            async with self._writing_plain() as session:
                if await session.get(RegistrationRow, subdomain) is None:
                    raise errors.registration_not_found(subdomain)
                count = await session.scalar(
                    select(func.count())
                    .select_from(TsigKeyRow)
                    .where(TsigKeyRow.subdomain == subdomain)
                )
                if (count or 0) >= max_keys:
                    raise ResourceExhaustedError(
                        errors.TOO_MANY_TSIG_KEYS,
                        f"a registration has at most {max_keys} TSIG keys; delete one first",
                    )
                if await session.get(TsigKeyRow, (subdomain, key_id)) is not None:
                    raise _tsig_key_exists(key_id)
                row = TsigKeyRow(
                    subdomain=subdomain,
                    key_id=key_id,
                    key_name=key_name,
                    algorithm=algorithm,
                    secret=self._sealer.seal(secret, key_name),
                    create_time=datetime.now(UTC),
                )
                session.add(row)
                await session.flush()
                return self._tsig_info(row)
        except IntegrityError as exc:
            raise _tsig_key_exists(key_id) from exc

    async def get_tsig_key(self, subdomain: str, key_id: str) -> TsigKeyInfo:
        """One key of a registration, without its secret."""
        async with self._reading() as session:
            row = await session.get(TsigKeyRow, (subdomain, key_id))
            if row is None:
                raise errors.tsig_key_not_found(subdomain, key_id)
            return self._tsig_info(row)

    async def list_tsig_keys(
        self, subdomain: str, *, after: tuple[datetime, str] | None, limit: int
    ) -> list[TsigKeyInfo]:
        """A registration's keys ordered by (create_time, key_id), strictly after `after`."""
        query = (
            select(TsigKeyRow)
            .where(TsigKeyRow.subdomain == subdomain)
            .order_by(TsigKeyRow.create_time, TsigKeyRow.key_id)
        )
        if after is not None:
            query = query.where(tuple_(TsigKeyRow.create_time, TsigKeyRow.key_id) > tuple_(*after))
        async with self._reading() as session:
            if await session.get(RegistrationRow, subdomain) is None:
                raise errors.registration_not_found(subdomain)
            return [self._tsig_info(row) for row in await session.scalars(query.limit(limit))]

    async def delete_tsig_key(self, subdomain: str, key_id: str) -> None:
        """Delete a key; it stops verifying with this commit."""
        async with self._writing_plain() as session:
            row = await session.get(TsigKeyRow, (subdomain, key_id))
            if row is None:
                raise errors.tsig_key_not_found(subdomain, key_id)
            await session.delete(row)

    async def find_tsig_key(
        self, key_name: str
    ) -> tuple[TsigKeyWithSecret, StoredRegistration] | None:
        """A key by its DNS name (lower case, trailing dot) with its registration, or None."""
        async with self._reading() as session:
            row = await session.scalar(select(TsigKeyRow).where(TsigKeyRow.key_name == key_name))
            if row is None:
                return None
            registration = await session.get(RegistrationRow, row.subdomain)
            if registration is None:
                return None
            try:
                secret = self._sealer.open(row.secret, row.key_name)
            except ValueError:
                # Sealed under another key (a misconfigured replica): the key cannot verify.
                logger.error("TSIG secret does not open", extra={"key_name": row.key_name})
                return None
            return TsigKeyWithSecret(self._tsig_info(row), secret), self._stored(registration)

    # -- RFC 2136 updates ---------------------------------------------------------------------

    async def apply_update(
        self,
        subdomain: str,
        prerequisites: Sequence[Prerequisite],
        operations: Sequence[UpdateOperation],
        *,
        replay_guard: tuple[str, datetime] | None,
    ) -> UpdateOutcome | None:
        """Check prerequisites and apply operations atomically, in one revision.

        Returns None when `replay_guard` (the request MAC's digest and when its signature stops
        being valid) was seen before: the message is a replay and nothing is done. Otherwise the
        guard is recorded, even when a prerequisite fails, so the message cannot be replayed.
        """
        async with self._writing() as tx:
            registration = await tx.session.get(RegistrationRow, subdomain)
            if registration is None:
                raise errors.registration_not_found(subdomain)
            if replay_guard is not None:
                digest, expire_time = replay_guard
                if await tx.session.get(TsigReplayGuardRow, digest) is not None:
                    return None
                tx.session.add(TsigReplayGuardRow(mac_digest=digest, expire_time=expire_time))
            before = {o: await self._values(tx.session, subdomain, o) for o in ("", ALIAS_OWNER)}
            for prerequisite in prerequisites:
                failure = _failed_prerequisite(prerequisite, before[prerequisite.owner])
                if failure is not None:
                    return UpdateOutcome(failure, 0)
            for operation in operations:
                await self._apply_operation(tx, subdomain, operation)
            for owner, old_values in before.items():
                await tx.session.flush()
                await self._trim_values(tx.session, subdomain, registration.max_txt_values, owner)
                if await self._values(tx.session, subdomain, owner) != old_values:
                    tx.changes.append(await self._owner_change(tx.session, subdomain, owner))
        return UpdateOutcome(None, tx.revision)

    async def _apply_operation(
        self, tx: _WriteTransaction, subdomain: str, operation: UpdateOperation
    ) -> None:
        where = (TxtValueRow.subdomain == subdomain, TxtValueRow.owner == operation.owner)
        if operation.kind is UpdateKind.DELETE_RRSET:
            await tx.session.execute(delete(TxtValueRow).where(*where))
        elif operation.kind is UpdateKind.DELETE_VALUE:
            await tx.session.execute(
                delete(TxtValueRow).where(*where, TxtValueRow.value == operation.value)
            )
        else:
            assert operation.value is not None
            await tx.session.flush()
            existing = await tx.session.scalar(
                select(TxtValueRow).where(*where, TxtValueRow.value == operation.value)
            )
            if existing is None:
                tx.session.add(
                    TxtValueRow(
                        subdomain=subdomain,
                        owner=operation.owner,
                        value=operation.value,
                        create_time=tx.now,
                        expire_time=None,
                    )
                )

    async def purge_replay_guard(self, now: datetime) -> int:
        """Forget MACs whose signatures have expired anyway; returns how many."""
        expired = TsigReplayGuardRow.expire_time <= now
        async with self._reading() as session:
            if (
                await session.scalar(select(TsigReplayGuardRow.mac_digest).where(expired).limit(1))
                is None
            ):
                return 0
        async with self._writing_plain() as session:
            result = await session.execute(delete(TsigReplayGuardRow).where(expired))
            return int(getattr(result, "rowcount", 0) or 0)


def _failed_prerequisite(
    prerequisite: Prerequisite, values: Sequence[str]
) -> PrerequisiteFailure | None:
    """RFC 2136 section 3.2 for names that hold nothing but TXT records."""
    txt = set(values) if prerequisite.is_txt else set()
    in_use = bool(values)
    kind = prerequisite.kind
    if kind is PrerequisiteKind.NAME_IN_USE:
        return None if in_use else PrerequisiteFailure.NXDOMAIN
    if kind is PrerequisiteKind.NAME_NOT_IN_USE:
        return PrerequisiteFailure.YXDOMAIN if in_use else None
    if kind is PrerequisiteKind.RRSET_EXISTS:
        return None if txt else PrerequisiteFailure.NXRRSET
    if kind is PrerequisiteKind.RRSET_DOES_NOT_EXIST:
        return PrerequisiteFailure.YXRRSET if txt else None
    return None if txt and txt == set(prerequisite.values) else PrerequisiteFailure.NXRRSET


def _unavailable(exc: Exception) -> UnavailableError:
    logger.warning("database unavailable", extra={"error": str(exc).splitlines()[0]})
    return UnavailableError(errors.STORAGE_UNAVAILABLE, "the registry database is unavailable")


def _tsig_key_exists(key_id: str) -> AlreadyExistsError:
    return AlreadyExistsError(
        errors.TSIG_KEY_EXISTS,
        f"TSIG key {key_id!r} already exists for this registration",
        metadata={"tsig_key_id": key_id},
    )


def _subdomain_taken(subdomain: str) -> AlreadyExistsError:
    return AlreadyExistsError(
        errors.SUBDOMAIN_TAKEN,
        f"subdomain {subdomain!r} is already registered",
        metadata={"subdomain": subdomain},
    )


def record_sets_by_name(record_sets: Iterable[RecordSet]) -> dict[str, RecordSet]:
    """Index record sets by owner name (for tests and tools comparing states)."""
    return {record_set.fqdn: record_set for record_set in record_sets}


__all__: Sequence[str] = (
    "NOTIFY_CHANNEL",
    "NewRegistration",
    "Repository",
    "StoredRegistration",
    "record_sets_by_name",
)
