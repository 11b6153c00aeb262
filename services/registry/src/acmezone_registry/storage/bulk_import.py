"""Bulk import of whole registrations into the registry database, in one transaction.

Built for millions of rows: Core `executemany` inserts in chunks (no ORM objects), one lookup of
existing rows per chunk, and one feed revision for the whole import. A small import writes its
record sets into the feed like any change; a large one (past `change_rows_limit`) compacts the
feed up to its revision instead, so watchers re-list once rather than replaying a million
changes (the same OUT_OF_RANGE path as any compaction).

The transaction holds the feed lock (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: the `feed_state`
row) from the first row to the commit, so nothing else writes meanwhile. Any refusal (a conflict
with an existing registration, an unusable source row) rolls everything back: an import lands
whole or not at all, and rerunning a landed import changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Connection, bindparam, delete, insert, select, text, update

from acmezone_registry.model import ChangeType
from acmezone_registry.storage.database import Database
from acmezone_registry.storage.revision_log import NOTIFY_CHANNEL
from acmezone_registry.storage.tables import (
    FeedStateRow,
    RecordChangeRow,
    RegistrationRow,
    TxtValueRow,
)

logger = logging.getLogger(__name__)

_FEED_STATE_ID = 1
# Refusals listed in the report; past this, only counted.
_REPORTED_REFUSALS = 20


@dataclass(frozen=True)
class ImportedRegistration:
    """A registration to import as it is, password hash included; `values` newest first."""

    subdomain: str
    username: str
    password_hash: str
    allowed_cidrs: tuple[str, ...]
    description: str
    max_txt_values: int
    values: tuple[tuple[str, datetime], ...] = ()


@dataclass(frozen=True)
class Refusal:
    """A source row that cannot be imported, and why (never containing a secret)."""

    reason: str


ImportItem = ImportedRegistration | Refusal


@dataclass
class ImportReport:
    """What an import did, or why it did nothing (`committed` False, `refusals` non-empty)."""

    imported: int = 0
    already_present: int = 0
    txt_values: int = 0
    revision: int = 0
    committed: bool = False
    refusal_count: int = 0
    refusals: list[str] = field(default_factory=list)

    def refuse(self, reason: str) -> None:
        self.refusal_count += 1
        if len(self.refusals) < _REPORTED_REFUSALS:
            self.refusals.append(reason)


class BulkImporter:
    """Writes streams of `ImportItem` chunks into the registry database atomically."""

    def __init__(self, database: Database, zone: str, *, change_rows_limit: int = 10_000) -> None:
        self._db = database
        self._zone = zone.rstrip(".").lower()
        self._change_rows_limit = change_rows_limit

    def run(self, chunks: Iterable[Sequence[ImportItem]]) -> ImportReport:
        """Import every chunk, or nothing when anything is refused (blocking: a CLI command)."""
        report = ImportReport()
        engine = self._db.create_sync_engine()
        try:
            with engine.connect() as conn, self._transaction(conn) as commit:
                base = conn.execute(
                    select(FeedStateRow.revision)
                    .where(FeedStateRow.id == _FEED_STATE_ID)
                    .with_for_update()
                ).scalar_one()
                now = datetime.now(UTC)
                changes: list[dict[str, object]] | None = []
                for chunk in chunks:
                    rows = self._admit(conn, chunk, report)
                    if report.refusal_count:
                        continue  # keep reading only to report every refusal
                    self._insert(conn, rows, now, report)
                    if changes is not None:
                        changes.extend(self._change(row) for row in rows)
                        if len(changes) > self._change_rows_limit:
                            changes = None
                if report.refusal_count or not report.imported:
                    report.revision = int(base)
                    return report
                report.revision = int(base) + 1
                self._publish(conn, report.revision, changes, now)
                conn.execute(
                    update(FeedStateRow)
                    .where(FeedStateRow.id == _FEED_STATE_ID)
                    .values(registration_count=FeedStateRow.registration_count + report.imported)
                )
                commit()
                report.committed = True
        finally:
            engine.dispose()
        return report

    @contextmanager
    def _transaction(self, conn: Connection) -> Iterator[Callable[[], None]]:
        """A write transaction taking SQLite's write lock up front; commits only when told."""
        committed = False

        def commit() -> None:
            nonlocal committed
            committed = True

        if self._db.is_sqlite:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("PRAGMA busy_timeout=15000")
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield commit
            finally:
                conn.exec_driver_sql("COMMIT" if committed else "ROLLBACK")
            return
        transaction = conn.begin()
        try:
            yield commit
        finally:
            if committed:
                transaction.commit()
            else:
                transaction.rollback()

    def _admit(
        self, conn: Connection, chunk: Sequence[ImportItem], report: ImportReport
    ) -> list[ImportedRegistration]:
        """The chunk's registrations that are new here; counts those already present and
        refuses conflicts (same subdomain or username, other credentials)."""
        candidates = [item for item in chunk if isinstance(item, ImportedRegistration)]
        for item in chunk:
            if isinstance(item, Refusal):
                report.refuse(item.reason)
        if not candidates:
            return []
        by_subdomain: dict[str, str] = dict(
            conn.execute(
                select(RegistrationRow.subdomain, RegistrationRow.username).where(
                    RegistrationRow.subdomain.in_(bindparam("names", expanding=True))
                ),
                {"names": [c.subdomain for c in candidates]},
            ).all()
        )
        by_username: dict[str, str] = dict(
            conn.execute(
                select(RegistrationRow.username, RegistrationRow.subdomain).where(
                    RegistrationRow.username.in_(bindparam("names", expanding=True))
                ),
                {"names": [c.username for c in candidates]},
            ).all()
        )
        admitted = []
        for candidate in candidates:
            holder = by_subdomain.get(candidate.subdomain)
            owner_of_username = by_username.get(candidate.username)
            if holder == candidate.username:
                report.already_present += 1
            elif holder is not None:
                report.refuse(
                    f"subdomain {candidate.subdomain} already exists here with other "
                    f"credentials (username {holder})"
                )
            elif owner_of_username is not None:
                report.refuse(
                    f"username {candidate.username} (subdomain {candidate.subdomain}) already "
                    f"belongs to subdomain {owner_of_username} here"
                )
            else:
                admitted.append(candidate)
        return admitted

    def _insert(
        self,
        conn: Connection,
        rows: Sequence[ImportedRegistration],
        now: datetime,
        report: ImportReport,
    ) -> None:
        if not rows:
            return
        conn.execute(
            insert(RegistrationRow),
            [
                {
                    "subdomain": row.subdomain,
                    "username": row.username,
                    "password_hash": row.password_hash,
                    "allowed_cidrs": list(row.allowed_cidrs),
                    "description": row.description,
                    "max_txt_values": row.max_txt_values,
                    "create_time": now,
                    "update_time": now,
                }
                for row in rows
            ],
        )
        values = [
            {
                "subdomain": row.subdomain,
                "owner": "",
                "value": value,
                "create_time": set_time,
                "expire_time": None,
            }
            for row in rows
            for value, set_time in row.values
        ]
        if values:
            conn.execute(insert(TxtValueRow), values)
        report.imported += len(rows)
        report.txt_values += len(values)

    def _change(self, row: ImportedRegistration) -> dict[str, object]:
        return {
            "fqdn": f"{row.subdomain}.{self._zone}.",
            "txt_values": [value for value, _ in row.values],
        }

    def _publish(
        self,
        conn: Connection,
        revision: int,
        changes: list[dict[str, object]] | None,
        now: datetime,
    ) -> None:
        """Give the import its one revision: its changes, or a compaction up to it."""
        if changes is not None:
            conn.execute(
                update(FeedStateRow)
                .where(FeedStateRow.id == _FEED_STATE_ID)
                .values(revision=revision)
            )
            conn.execute(
                insert(RecordChangeRow),
                [
                    {
                        "revision": revision,
                        "seq": seq,
                        "change_type": ChangeType.PUT.value,
                        "commit_time": now,
                        **change,
                    }
                    for seq, change in enumerate(changes)
                ],
            )
        else:
            # Too many changes to replay: watchers resuming from before this revision get
            # OUT_OF_RANGE and re-list, which reads the imported state once.
            conn.execute(delete(RecordChangeRow).where(RecordChangeRow.revision <= revision))
            conn.execute(
                update(FeedStateRow)
                .where(FeedStateRow.id == _FEED_STATE_ID)
                .values(revision=revision, compacted_revision=revision)
            )
        if not self._db.is_sqlite:
            conn.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": NOTIFY_CHANNEL, "payload": str(revision)},
            )
