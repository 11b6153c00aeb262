"""What every service's SQLAlchemy storage needs the same way: a UTC datetime column, the async
and sync URLs for one database setting, and the number of rows a statement touched.

Kept here rather than in each service's `storage/` so the rules cannot drift: a naive datetime
stored on one service and read as UTC by another, or a URL spelling (`postgres://`) accepted by
one and refused by the other.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import CursorResult, DateTime, Dialect, TypeDecorator
from sqlalchemy.engine import make_url

_SQLITE_DRIVERS = ("sqlite", "sqlite+pysqlite")
_POSTGRES_DRIVERS = ("postgresql", "postgres", "postgresql+psycopg2")


class UtcDateTime(TypeDecorator[datetime]):
    """Stores aware UTC datetimes on both databases; SQLite keeps no zone of its own and hands
    back naive values, which this makes aware again. A naive value is refused on the way in:
    guessing its zone is how a lease ends an hour early."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: object, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (the only kind of time the services store)."""
    return datetime.now(UTC)


def async_url(database_url: str | None, default_sqlite: Path | None = None) -> str:
    """The async SQLAlchemy URL for a database setting: SQLite at `default_sqlite` when the
    setting is unset or empty (without one, that is a ValueError); `sqlite:` and
    `postgres(ql):` spellings get the async drivers."""
    if not database_url:
        if default_sqlite is None:
            raise ValueError("no database URL given")
        default_sqlite.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{default_sqlite}"
    url = make_url(database_url)
    if url.drivername in _SQLITE_DRIVERS:
        url = url.set(drivername="sqlite+aiosqlite")
    elif url.drivername in _POSTGRES_DRIVERS:
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def sync_url(async_database_url: str) -> str:
    """The synchronous twin of an async URL, for Alembic (psycopg serves both)."""
    url = make_url(async_database_url)
    if url.drivername == "sqlite+aiosqlite":
        url = url.set(drivername="sqlite")
    return url.render_as_string(hide_password=False)


def rowcount(result: object) -> int:
    """How many rows an UPDATE or DELETE matched. `Session.execute` is typed as returning a
    plain `Result`; for DML it is a `CursorResult`, which this checks rather than assumes."""
    assert isinstance(result, CursorResult)
    return result.rowcount
