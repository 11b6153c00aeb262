"""`acmezone-registry import-acme-dns`: an acme-dns installation's registrations, taken over.

acme-dns (joohoi/acme-dns, db.go) keeps two tables, on SQLite or PostgreSQL:

    records(Username TEXT PRIMARY KEY, Password TEXT, Subdomain TEXT UNIQUE, AllowFrom TEXT)
    txt(Subdomain TEXT, Value TEXT DEFAULT '', LastUpdate INT)

`Password` is a bcrypt hash (`$2a$10$...`), `AllowFrom` a JSON list of CIDRs, and every
registration has exactly two `txt` rows, the older overwritten by each update (`Value` empty
until first set, `LastUpdate` in Unix seconds). Each record becomes a registration with the same
username, bcrypt hash (verified as it is, then re-hashed into the fast form on first use, see
`credentials`), subdomain and CIDRs, holding up to two values like acme-dns, newest first.

Both tables are streamed in subdomain order and merged, one chunk at a time, so memory stays
bounded whatever the size of the source; the source is only read.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Row, create_engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError

from acmezone_common.errors import InvalidArgumentError
from acmezone_registry import credentials, validation
from acmezone_registry.storage.bulk_import import (
    BulkImporter,
    ImportedRegistration,
    ImportItem,
    ImportReport,
    Refusal,
)
from acmezone_registry.storage.database import Database

logger = logging.getLogger(__name__)

# acme-dns keeps two values per registration (a wildcard and its base name validate together).
ACME_DNS_TXT_VALUES = 2
DESCRIPTION = "imported from acme-dns"
CHUNK_ROWS = 5000


# Both tables in subdomain order, compared by code point as Python does (SQLite's default
# BINARY collation is that for UTF-8; PostgreSQL is told so).
_RECORDS = "SELECT Username, Password, Subdomain, AllowFrom FROM records ORDER BY Subdomain"
_TXT = "SELECT Subdomain, Value, LastUpdate FROM txt WHERE Value <> '' ORDER BY Subdomain"
_SQLITE_QUERIES = (_RECORDS, _TXT)
_POSTGRES_QUERIES = (_RECORDS + ' COLLATE "C"', _TXT + ' COLLATE "C"')


class SourceError(Exception):
    """The source cannot be read as an acme-dns database (message says why, without secrets)."""


@dataclass(frozen=True)
class _Source:
    url: str
    postgres: bool


def _source(url: str) -> _Source:
    """A read-only SQLAlchemy URL for the acme-dns database at `url`."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise SourceError(f"{url!r} is not a database URL") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = Path(parsed.database or "")
        if not parsed.database or not path.is_file():
            raise SourceError(f"no acme-dns SQLite database at {str(path)!r}")
        # Opened read-only through a URI, so a wrong path can never create an empty database.
        return _Source(f"sqlite:///file:{path.resolve()}?mode=ro&uri=true", postgres=False)
    if backend == "postgresql":
        rendered = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        return _Source(rendered, postgres=True)
    raise SourceError(f"unsupported source database {backend!r}: use sqlite:// or postgresql://")


def _text(value: object) -> str:
    """acme-dns writes the hash as Go []byte: SQLite may hand back bytes, PostgreSQL hex."""
    if isinstance(value, bytes | memoryview):
        value = bytes(value).decode("ascii", "replace")
    text_value = str(value or "")
    if text_value.startswith("\\x"):
        try:
            text_value = bytes.fromhex(text_value[2:]).decode("ascii")
        except ValueError:
            return ""
    return text_value


def _first_line(exc: SQLAlchemyError) -> str:
    return str(getattr(exc, "orig", None) or exc).splitlines()[0]


def _registration(
    record: Row[Any], values: list[tuple[str, int]], reserved: tuple[str, ...]
) -> ImportItem:
    """One acme-dns record (and its non-empty txt rows) as a registration, or why not."""
    username, password, subdomain, allow_from = tuple(record)
    subdomain = str(subdomain or "")
    where = f"acme-dns record {subdomain!r}"
    try:
        label = validation.subdomain_label(subdomain, field="Subdomain", reserved=reserved)
    except InvalidArgumentError as exc:
        return Refusal(f"{where}: {exc.message}")
    username = str(username or "").lower()
    if not credentials.plausible_username(username):
        return Refusal(f"{where}: username is not a UUID")
    password_hash = _text(password)
    if not credentials.is_slow_hash(password_hash) or len(password_hash) > 200:
        return Refusal(f"{where}: password is not a bcrypt hash")
    try:
        listed = json.loads(allow_from) if allow_from else []
        if not isinstance(listed, list) or not all(isinstance(c, str) for c in listed):
            raise ValueError("AllowFrom is not a JSON list of strings")
        networks = validation.cidrs(listed, field="AllowFrom")
    except (ValueError, InvalidArgumentError) as exc:
        message = exc.message if isinstance(exc, InvalidArgumentError) else str(exc)
        return Refusal(f"{where}: {message}")
    kept: dict[str, datetime] = {}
    for value, last_update in sorted(values, key=lambda v: v[1] or 0, reverse=True):
        try:
            checked = validation.txt_value(value, field="Value", strict=False)
        except InvalidArgumentError as exc:
            return Refusal(f"{where}: TXT value refused: {exc.message}")
        if checked not in kept and len(kept) < ACME_DNS_TXT_VALUES:
            kept[checked] = datetime.fromtimestamp(int(last_update or 0), UTC)
    return ImportedRegistration(
        subdomain=label,
        username=str(uuid.UUID(username)),
        password_hash=password_hash,
        allowed_cidrs=networks,
        description=DESCRIPTION,
        max_txt_values=ACME_DNS_TXT_VALUES,
        values=tuple(kept.items()),
    )


def read_acme_dns(
    url: str, *, reserved: tuple[str, ...] = (), chunk_rows: int = CHUNK_ROWS
) -> Iterator[list[ImportItem]]:
    """Stream an acme-dns database as chunks of registrations to import (or refusals)."""
    source = _source(url)
    records_query, txt_query = _POSTGRES_QUERIES if source.postgres else _SQLITE_QUERIES
    engine = create_engine(source.url)
    try:
        with engine.connect() as conn:
            streaming = conn.execution_options(stream_results=True, yield_per=chunk_rows)
            try:
                records = streaming.execute(text(records_query))
                txt_rows = streaming.execute(text(txt_query))
            except SQLAlchemyError as exc:
                raise SourceError(
                    f"{url.split('://', 1)[0]} source is not an acme-dns database "
                    f"(tables records and txt): {_first_line(exc)}"
                ) from exc
            pending = next(txt_rows, None)
            for partition in records.partitions(chunk_rows):
                chunk: list[ImportItem] = []
                for record in partition:
                    subdomain = str(record[2] or "")
                    while pending is not None and str(pending[0]) < subdomain:
                        pending = next(txt_rows, None)  # a value without a registration
                    values: list[tuple[str, int]] = []
                    while pending is not None and str(pending[0]) == subdomain:
                        values.append((str(pending[1]), int(pending[2] or 0)))
                        pending = next(txt_rows, None)
                    chunk.append(_registration(record, values, reserved))
                yield chunk
    except SQLAlchemyError as exc:
        raise SourceError(f"reading the acme-dns database failed: {_first_line(exc)}") from exc
    finally:
        engine.dispose()


def import_acme_dns(
    source_url: str, database: Database, zone: str, *, reserved: tuple[str, ...] = ()
) -> ImportReport:
    """Import everything from the acme-dns database at `source_url`, or nothing (blocking)."""
    report = BulkImporter(database, zone).run(read_acme_dns(source_url, reserved=reserved))
    logger.info(
        "acme-dns import finished" if report.committed else "acme-dns import refused",
        extra={
            "imported": report.imported,
            "already_present": report.already_present,
            "txt_values": report.txt_values,
            "refused": report.refusal_count,
            "revision": report.revision,
        },
    )
    return report
