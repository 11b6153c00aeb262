"""Registrations as stored: create, read, list, count, change, delete, and their password hashes.

Creating and deleting a registration is a record change (its fulldomain starts or stops existing
in the feed), as is lowering its max_txt_values when that trims values; credential changes
publish nothing and take no feed lock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import bindparam, delete, select, tuple_, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from acmezone_common.sql import rowcount
from acmezone_registry import errors
from acmezone_registry.model import (
    ALIAS_OWNER,
    ChangeType,
    RecordSet,
    Registration,
    RegistrationChanges,
)
from acmezone_registry.storage.record_sets import RecordSets
from acmezone_registry.storage.revision_log import FEED_STATE_ID, RevisionLog
from acmezone_registry.storage.tables import FeedStateRow, RegistrationRow, TsigKeyRow, TxtValueRow
from acmezone_registry.storage.txt_values import OWNERS, trim_values


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


class _RegistrationFields(Protocol):
    """A registrations row, as an ORM object or a Core row."""

    @property
    def subdomain(self) -> str: ...
    @property
    def username(self) -> str: ...
    @property
    def password_hash(self) -> str: ...
    @property
    def allowed_cidrs(self) -> list[str]: ...
    @property
    def description(self) -> str: ...
    @property
    def max_txt_values(self) -> int: ...
    @property
    def create_time(self) -> datetime: ...
    @property
    def update_time(self) -> datetime: ...


def to_registration(row: _RegistrationFields, zone: str) -> Registration:
    """The domain registration of a stored row."""
    return Registration(
        subdomain=row.subdomain,
        username=row.username,
        fulldomain=f"{row.subdomain}.{zone}",
        allowed_cidrs=tuple(row.allowed_cidrs),
        description=row.description,
        max_txt_values=row.max_txt_values,
        create_time=row.create_time,
        update_time=row.update_time,
    )


def to_stored(row: _RegistrationFields, zone: str) -> StoredRegistration:
    """A stored row with its password hash, for authentication."""
    return StoredRegistration(to_registration(row, zone), row.password_hash)


class _Hot:
    """The statements of the hot paths, built once (see `revision_log._Hot`)."""

    count_registrations = (
        update(FeedStateRow)
        .where(FeedStateRow.id == FEED_STATE_ID)
        .values(registration_count=FeedStateRow.registration_count + bindparam("delta"))
    )
    registration_by_username = select(RegistrationRow.__table__).where(
        RegistrationRow.username == bindparam("username")
    )


class RegistrationRepository:
    """Reads and writes of registrations."""

    def __init__(self, log: RevisionLog, record_sets: RecordSets) -> None:
        self._log = log
        self._sets = record_sets
        self._zone = record_sets.zone

    async def create_registration(self, new: NewRegistration) -> Registration:
        """Insert a registration; its name starts existing (with no values) in the feed."""
        subdomain = new.subdomain or str(uuid.uuid4())
        try:
            async with self._log.writing() as tx:
                if await tx.session.get(RegistrationRow, subdomain) is not None:
                    raise errors.subdomain_taken(subdomain)
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
                tx.changes.append((ChangeType.PUT, RecordSet(self._sets.fqdn(subdomain), ())))
                return to_registration(row, self._zone)
        except IntegrityError as exc:
            # Another replica took the label between our check and our insert.
            raise errors.subdomain_taken(subdomain) from exc

    async def get_registration(self, subdomain: str) -> StoredRegistration | None:
        """A registration by subdomain, or None."""
        async with self._log.reading() as session:
            row = await session.get(RegistrationRow, subdomain)
            return to_stored(row, self._zone) if row else None

    async def get_registration_by_username(self, username: str) -> StoredRegistration | None:
        """A registration by username, or None (every authenticated request asks this)."""

        def read(conn: Connection) -> StoredRegistration | None:
            row = conn.execute(_Hot.registration_by_username, {"username": username}).first()
            return to_stored(row, self._zone) if row else None

        return await self._log.read_fast(read)

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
        async with self._log.reading() as session:
            rows = await session.scalars(query.limit(limit))
            return [to_registration(row, self._zone) for row in rows]

    async def count_registrations(self) -> int:
        """How many registrations are stored: a counter kept in the feed_state row by every
        create and delete, so the gauge read every maintenance round costs one row, not a
        scan of a table of millions."""
        async with self._log.reading() as session:
            count = await session.scalar(
                select(FeedStateRow.registration_count).where(FeedStateRow.id == FEED_STATE_ID)
            )
            return int(count or 0)

    async def update_registration(
        self, subdomain: str, changes: RegistrationChanges
    ) -> Registration:
        """Apply validated changes; lowering max_txt_values drops the oldest extra values."""
        async with self._log.writing() as tx:
            row = await tx.session.get(RegistrationRow, subdomain)
            if row is None:
                raise errors.registration_not_found(subdomain)
            if changes.allowed_cidrs is not None:
                row.allowed_cidrs = list(changes.allowed_cidrs)
            if changes.description is not None:
                row.description = changes.description
            if changes.max_txt_values is not None:
                row.max_txt_values = changes.max_txt_values
                for owner in OWNERS:
                    if await trim_values(tx.session, subdomain, row.max_txt_values, owner):
                        tx.changes.append(
                            await self._sets.owner_change(tx.session, subdomain, owner)
                        )
            row.update_time = tx.now
            return to_registration(row, self._zone)

    async def delete_registration(self, subdomain: str) -> None:
        """Delete a registration and its values; its name stops existing in the feed."""
        async with self._log.writing() as tx:
            row = await tx.session.get(RegistrationRow, subdomain)
            if row is None:
                raise errors.registration_not_found(subdomain)
            alias_in_use = bool(await self._sets.values(tx.session, subdomain, ALIAS_OWNER))
            await tx.session.execute(delete(TxtValueRow).where(TxtValueRow.subdomain == subdomain))
            await tx.session.execute(delete(TsigKeyRow).where(TsigKeyRow.subdomain == subdomain))
            await tx.session.delete(row)
            await tx.session.execute(_Hot.count_registrations, {"delta": -1})
            tx.changes.append((ChangeType.DELETE, RecordSet(self._sets.fqdn(subdomain), ())))
            if alias_in_use:
                tx.changes.append(
                    (ChangeType.DELETE, RecordSet(self._sets.fqdn(subdomain, ALIAS_OWNER), ()))
                )

    async def set_password_hash(self, subdomain: str, password_hash: str) -> Registration:
        """Replace a registration's password hash (no record changes: no feed lock)."""
        async with self._log.writing_plain() as session:
            row = await session.get(RegistrationRow, subdomain)
            if row is None:
                raise errors.registration_not_found(subdomain)
            row.password_hash = password_hash
            row.update_time = datetime.now(UTC)
            return to_registration(row, self._zone)

    async def upgrade_password_hash(self, subdomain: str, old_hash: str, new_hash: str) -> bool:
        """Store `new_hash` only if the hash is still `old_hash` (a rotation in between wins).

        Used to replace an imported slow hash by the fast form after a successful check; the
        registration itself does not change, so `update_time` stays.
        """
        async with self._log.writing_plain() as session:
            result = await session.execute(
                update(RegistrationRow)
                .where(
                    RegistrationRow.subdomain == subdomain,
                    RegistrationRow.password_hash == old_hash,
                )
                .values(password_hash=new_hash)
            )
            return rowcount(result) > 0
