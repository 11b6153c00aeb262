"""The TXT values of registrations: publish, remove, expire, and RFC 2136 changes.

Every change here is a record change: it runs in a `RevisionLog` write transaction and appends
the owner names it changed, with their values afterwards, to the feed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from sqlalchemy import and_, bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from acmezone_common.sql import rowcount
from acmezone_registry import errors
from acmezone_registry.model import (
    ALIAS_OWNER,
    ChangeType,
    PrerequisiteFailure,
    RecordSet,
    TxtRecord,
    TxtValue,
    UpdateKind,
    UpdateOperation,
    UpdateOutcome,
)
from acmezone_registry.storage.record_sets import RecordSets
from acmezone_registry.storage.replay_guard import remember
from acmezone_registry.storage.revision_log import AsyncWrite, RevisionLog, SyncWrite
from acmezone_registry.storage.tables import RegistrationRow, TxtValueRow

OWNERS = ("", ALIAS_OWNER)

PrerequisiteCheck = Callable[[Mapping[str, Sequence[str]]], PrerequisiteFailure | None]
"""Given the values at each owner name before an update, the first prerequisite that fails."""


class _Hot:
    """The statements of `add_txt_value`, built once (see `revision_log._Hot`)."""

    # The registration's limit and its fulldomain values, newest first, in one statement; no
    # row at all when the registration does not exist, one with a NULL id when it has none.
    values = (
        select(
            RegistrationRow.max_txt_values,
            TxtValueRow.id,
            TxtValueRow.value,
            TxtValueRow.create_time,
            TxtValueRow.expire_time,
            TxtValueRow.persistent,
        )
        .select_from(RegistrationRow)
        .outerjoin(
            TxtValueRow,
            and_(TxtValueRow.subdomain == RegistrationRow.subdomain, TxtValueRow.owner == ""),
        )
        .where(RegistrationRow.subdomain == bindparam("subdomain"))
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


async def trim_values(session: AsyncSession, subdomain: str, keep: int, owner: str = "") -> bool:
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


class TxtValueRepository:
    """Reads and record-changing writes of TXT values."""

    def __init__(self, log: RevisionLog, record_sets: RecordSets) -> None:
        self._log = log
        self._sets = record_sets

    async def get_txt_record(self, subdomain: str) -> TxtRecord:
        """The values of a registration, newest first, with the revision they are current at."""
        async with self._log.reading() as session:
            if await session.get(RegistrationRow, subdomain) is None:
                raise errors.registration_not_found(subdomain)
            revision = await self._log.current_revision(session)
            return await self._sets.txt_record(session, subdomain, revision)

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
        revision. This is the `/update` path, so it is group-committed (`write_fast`).
        """
        if persistent:
            expire_time = None
        fqdn = self._sets.fqdn(subdomain)

        def write(tx: SyncWrite) -> TxtRecord:
            # Two statements for a new value (values with the limit, insert), a third when one
            # is trimmed; the record set and the answer come from what was read, not read again.
            rows = tx.conn.execute(_Hot.values, {"subdomain": subdomain}).all()
            if not rows:
                raise errors.registration_not_found(subdomain)
            keep = rows[0].max_txt_values
            rows = [row for row in rows if row.id is not None]
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
                return TxtRecord(subdomain, fqdn, tuple(current), tx.resulting_revision)
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
            tx.changes.append((ChangeType.PUT, RecordSet(fqdn, tuple(v.value for v in kept))))
            return TxtRecord(subdomain, fqdn, tuple(kept), tx.resulting_revision)

        return await self._log.write_fast(write)

    async def remove_txt_values(self, subdomain: str, value: str | None) -> TxtRecord:
        """Remove one value, or every value when `value` is None. Removing nothing is no change."""
        async with self._log.writing() as tx:
            if await tx.session.get(RegistrationRow, subdomain) is None:
                raise errors.registration_not_found(subdomain)
            statement = delete(TxtValueRow).where(
                TxtValueRow.subdomain == subdomain, TxtValueRow.owner == ""
            )
            if value is not None:
                statement = statement.where(TxtValueRow.value == value)
            if rowcount(await tx.session.execute(statement)):
                tx.changes.append(await self._sets.owner_change(tx.session, subdomain))
            return await self._sets.txt_record(tx.session, subdomain, tx.resulting_revision)

    async def expire_txt_values(self, now: datetime) -> int:
        """Remove every value whose expire_time has passed; all in one revision. Returns how
        many values were removed."""
        due = (TxtValueRow.expire_time.is_not(None), TxtValueRow.expire_time <= now)
        async with self._log.reading() as session:
            if await session.scalar(select(TxtValueRow.id).where(*due).limit(1)) is None:
                return 0
        async with self._log.writing() as tx:
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
                tx.changes.append(await self._sets.owner_change(tx.session, subdomain, owner))
            return len(expired)

    async def apply_update(
        self,
        subdomain: str,
        check: PrerequisiteCheck,
        operations: Sequence[UpdateOperation],
        *,
        replay_guard: tuple[str, datetime] | None,
    ) -> UpdateOutcome | None:
        """Check an RFC 2136 update's prerequisites against the values now stored and apply its
        operations atomically, in one revision.

        Returns None when `replay_guard` (the request MAC's digest and when its signature stops
        being valid) was seen before: the message is a replay and nothing is done. Otherwise the
        guard is recorded, even when a prerequisite fails, so the message cannot be replayed.
        """
        async with self._log.writing() as tx:
            registration = await tx.session.get(RegistrationRow, subdomain)
            if registration is None:
                raise errors.registration_not_found(subdomain)
            if replay_guard is not None and not await remember(tx.session, *replay_guard):
                return None
            before = {o: await self._sets.values(tx.session, subdomain, o) for o in OWNERS}
            failure = check(before)
            if failure is not None:
                return UpdateOutcome(failure, 0)
            for operation in operations:
                await _apply_operation(tx, subdomain, operation)
            for owner, old_values in before.items():
                await tx.session.flush()
                await trim_values(tx.session, subdomain, registration.max_txt_values, owner)
                if await self._sets.values(tx.session, subdomain, owner) != old_values:
                    tx.changes.append(await self._sets.owner_change(tx.session, subdomain, owner))
        return UpdateOutcome(None, tx.revision)


async def _apply_operation(tx: AsyncWrite, subdomain: str, operation: UpdateOperation) -> None:
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
