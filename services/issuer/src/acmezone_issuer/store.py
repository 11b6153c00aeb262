"""Persistence of accounts, certificates, delegations and orders (SQLAlchemy 2.0, async).

The reconciler writes a certificate's state before every ACME step, so a restarted issuer resumes
an order in flight instead of placing another. Work on a certificate is guarded by a lease
(`lease_owner`, `lease_until`) taken with one conditional UPDATE, so two replicas sharing one
PostgreSQL never work the same certificate at once; every write by the reconciler is conditional
on still holding the lease. Every change bumps the certificate's `revision`, which Watch follows.

Methods are named for what the service needs, not for SQL; rows leave this module detached.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import logging
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from acmezone_common.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (the only kind of time this package handles)."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Stores aware UTC datetimes; SQLite hands back naive ones, which this makes aware again."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of the issuer's tables."""


class AccountRow(Base):
    """An ACME account; `sealed_key` is the account key sealed by `keys.KeySealer`."""

    __tablename__ = "accounts"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(63), unique=True)
    directory_url: Mapped[str] = mapped_column(String(2048))
    contact_emails: Mapped[list[str]] = mapped_column(JSON)
    terms_agreed: Mapped[bool] = mapped_column(Boolean)
    terms_url: Mapped[str] = mapped_column(String(2048), default="")
    eab_key_id: Mapped[str] = mapped_column(String(255), default="")
    key_type: Mapped[str] = mapped_column(String(16))
    sealed_key: Mapped[bytes] = mapped_column(LargeBinary)
    account_url: Mapped[str] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(16))
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)


class CertificateRow(Base):
    """A certificate resource with everything the reconciler needs to resume it."""

    __tablename__ = "certificates"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(63), unique=True)
    dns_names: Mapped[list[str]] = mapped_column(JSON)
    account_id: Mapped[str] = mapped_column(String(63), ForeignKey("accounts.id"))
    key_type: Mapped[str] = mapped_column(String(16))
    profile: Mapped[str] = mapped_column(String(64), default="")
    challenge_type: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(32))
    stage: Mapped[str] = mapped_column(String(32), default="")
    conditions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    delegations: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_failure: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    next_attempt_time: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    order_url: Mapped[str] = mapped_column(String(2048), default="")
    attempt_start_time: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    sealed_pending_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    sealed_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    chain_pem: Mapped[str] = mapped_column(Text, default="")
    serial_number: Mapped[str] = mapped_column(String(64), default="")
    not_before: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    not_after: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    renewal_time: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    renewal_source: Mapped[str] = mapped_column(String(16), default="")
    issue_time: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoke_time: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    renew_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    lease_owner: Mapped[str] = mapped_column(String(255), default="")
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)
    update_time: Mapped[datetime] = mapped_column(UtcDateTime)


class OrderRow(Base):
    """Every ACME order placed, so "one order per attempt" can be checked and audited."""

    __tablename__ = "orders"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    certificate_id: Mapped[str] = mapped_column(String(63), index=True)
    order_url: Mapped[str] = mapped_column(String(2048))
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)


class Http01TokenRow(Base):
    """An HTTP-01 key authorization being served, readable by every replica."""

    __tablename__ = "http01_tokens"

    token: Mapped[str] = mapped_column(String(255), primary_key=True)
    key_authorization: Mapped[str] = mapped_column(String(512))
    certificate_id: Mapped[str] = mapped_column(String(63), index=True)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)


class DelegationRow(Base):
    """The registry registration held for one base domain, kept across renewals."""

    __tablename__ = "delegations"

    domain: Mapped[str] = mapped_column(String(253), primary_key=True)
    registration_name: Mapped[str] = mapped_column(String(255))
    username: Mapped[str] = mapped_column(String(64))
    sealed_password: Mapped[bytes] = mapped_column(LargeBinary)
    fulldomain: Mapped[str] = mapped_column(String(253))
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)


class DeliveryTokenRow(Base):
    """A delivery token: its scope and the SHA-256 of its secret (the secret is never stored)."""

    __tablename__ = "delivery_tokens"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(63), unique=True)
    secret_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    certificate_ids: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(String(256), default="")
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)


class DeliveryTargetRow(Base):
    """What an agent last reported installing into one directory of one host."""

    __tablename__ = "delivery_targets"
    __table_args__ = (UniqueConstraint("certificate_id", "target_id"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    certificate_id: Mapped[str] = mapped_column(String(63), index=True)
    target_id: Mapped[str] = mapped_column(String(63))
    host: Mapped[str] = mapped_column(String(253))
    directory: Mapped[str] = mapped_column(String(1024))
    serial_number: Mapped[str] = mapped_column(String(64))
    not_after: Mapped[datetime] = mapped_column(UtcDateTime)
    install_time: Mapped[datetime] = mapped_column(UtcDateTime)
    hook_result: Mapped[str] = mapped_column(String(16))
    hook_exit_code: Mapped[int] = mapped_column(Integer, default=0)
    hook_output_tail: Mapped[str] = mapped_column(Text, default="")
    report_time: Mapped[datetime] = mapped_column(UtcDateTime)


def async_url(database_url: str, data_dir: Path) -> str:
    """The async SQLAlchemy URL for a setting: SQLite under `data_dir` when empty."""
    if not database_url:
        data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{data_dir / 'issuer.db'}"
    url = make_url(database_url)
    if url.drivername in ("sqlite", "sqlite+pysqlite"):
        url = url.set(drivername="sqlite+aiosqlite")
    elif url.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def sync_url(async_database_url: str) -> str:
    """The synchronous twin of an async URL, for Alembic."""
    url = make_url(async_database_url)
    if url.drivername == "sqlite+aiosqlite":
        url = url.set(drivername="sqlite")
    return url.render_as_string(hide_password=False)


def migrate(async_database_url: str) -> None:
    """Apply every Alembic migration (blocking; call through `asyncio.to_thread`)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", sync_url(async_database_url).replace("%", "%%"))
    command.upgrade(config, "head")


P = ParamSpec("P")
R = TypeVar("R")


def _shielded(method: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Run a database operation to its end even when the caller is cancelled.

    A coroutine cancelled in the middle of a query can leave its pooled connection neither
    returned nor closed; shutting the issuer down cancels the reconciler at any point, so every
    store operation runs as its own task, and `Store.close` waits for those still running.
    """

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        store = cast(Store, args[0])
        task = asyncio.ensure_future(method(*args, **kwargs))
        store._inflight.add(task)
        task.add_done_callback(store._finished)
        return await asyncio.shield(task)

    return wrapper


def encode_page_token(seq: int) -> str:
    """An opaque page token for the row after `seq`."""
    return base64.urlsafe_b64encode(f"v1:{seq}".encode()).decode().rstrip("=")


def decode_page_token(token: str, field: str = "page_token") -> int:
    """The `seq` a token continues after; INVALID_ARGUMENT when it is not one of ours."""
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        version, _, seq = text.partition(":")
        if version != "v1":
            raise ValueError(version)
        return int(seq)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(
            "INVALID_PAGE_TOKEN", "page_token is not a token from a previous response", field=field
        ) from exc


class Store:
    """The repository: every query the issuer makes, named for its purpose."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._inflight: set[asyncio.Future[Any]] = set()

    @classmethod
    def open(cls, async_database_url: str) -> Store:
        """An engine for the URL; SQLite gets a busy timeout so concurrent writers wait."""
        connect_args: dict[str, Any] = {}
        if async_database_url.startswith("sqlite"):
            connect_args["timeout"] = 30
        engine = create_async_engine(async_database_url, connect_args=connect_args)
        return cls(engine)

    def _finished(self, task: asyncio.Future[Any]) -> None:
        self._inflight.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the awaiting caller (if still there) re-raises it

    async def close(self) -> None:
        """Let running operations finish, then release every connection."""
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        await self._engine.dispose()

    # -- accounts ------------------------------------------------------------------------------

    @_shielded
    async def insert_account(self, row: AccountRow) -> AccountRow:
        """Store a new account; ALREADY_EXISTS when the id is taken."""
        try:
            async with self._sessions.begin() as session:
                session.add(row)
        except IntegrityError as exc:
            raise AlreadyExistsError(
                "ACCOUNT_EXISTS", f"account {row.id!r} exists already"
            ) from exc
        return row

    @_shielded
    async def get_account(self, account_id: str) -> AccountRow:
        """One account, or NOT_FOUND."""
        async with self._sessions() as session:
            row = await session.scalar(select(AccountRow).where(AccountRow.id == account_id))
        if row is None:
            raise NotFoundError("ACCOUNT_NOT_FOUND", f"accounts/{account_id} does not exist")
        return row

    @_shielded
    async def list_accounts(self, after_seq: int, limit: int) -> tuple[list[AccountRow], int]:
        """A page of accounts after `after_seq`, and the seq to continue after (0 at the end)."""
        async with self._sessions() as session:
            rows = list(
                await session.scalars(
                    select(AccountRow)
                    .where(AccountRow.seq > after_seq)
                    .order_by(AccountRow.seq)
                    .limit(limit + 1)
                )
            )
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (rows[-1].seq if more else 0)

    @_shielded
    async def set_account_url(self, account_id: str, account_url: str) -> None:
        """Record the URL a CA gave an account when it was registered again."""
        async with self._sessions.begin() as session:
            await session.execute(
                update(AccountRow)
                .where(AccountRow.id == account_id)
                .values(account_url=account_url, status="valid")
            )

    @_shielded
    async def delete_account(self, account_id: str) -> None:
        """Delete an account unless a certificate uses it."""
        async with self._sessions.begin() as session:
            used = await session.scalar(
                select(func.count())
                .select_from(CertificateRow)
                .where(CertificateRow.account_id == account_id)
            )
            if used:
                raise FailedPreconditionError(
                    "ACCOUNT_IN_USE", f"{used} certificate(s) use accounts/{account_id}"
                )
            result = await session.execute(delete(AccountRow).where(AccountRow.id == account_id))
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFoundError("ACCOUNT_NOT_FOUND", f"accounts/{account_id} does not exist")

    # -- certificates --------------------------------------------------------------------------

    @_shielded
    async def insert_certificate(self, row: CertificateRow) -> CertificateRow:
        """Store a new certificate; ALREADY_EXISTS when the id is taken."""
        try:
            async with self._sessions.begin() as session:
                session.add(row)
        except IntegrityError as exc:
            raise AlreadyExistsError(
                "CERTIFICATE_EXISTS", f"certificates/{row.id} exists already"
            ) from exc
        return row

    @_shielded
    async def get_certificate(self, certificate_id: str) -> CertificateRow:
        """One certificate, or NOT_FOUND."""
        row = await self.find_certificate(certificate_id)
        if row is None:
            raise NotFoundError(
                "CERTIFICATE_NOT_FOUND", f"certificates/{certificate_id} does not exist"
            )
        return row

    @_shielded
    async def find_certificate(self, certificate_id: str) -> CertificateRow | None:
        """One certificate, or None."""
        async with self._sessions() as session:
            return await session.scalar(
                select(CertificateRow).where(CertificateRow.id == certificate_id)
            )

    @_shielded
    async def list_certificates(
        self, after_seq: int, limit: int
    ) -> tuple[list[CertificateRow], int]:
        """A page of certificates after `after_seq`, and the seq to continue after (0 at end)."""
        async with self._sessions() as session:
            rows = list(
                await session.scalars(
                    select(CertificateRow)
                    .where(CertificateRow.seq > after_seq)
                    .order_by(CertificateRow.seq)
                    .limit(limit + 1)
                )
            )
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (rows[-1].seq if more else 0)

    @_shielded
    async def count_certificates_by_state(self) -> dict[str, int]:
        """How many certificates are in each state, for the gauge."""
        async with self._sessions() as session:
            result = await session.execute(
                select(CertificateRow.state, func.count()).group_by(CertificateRow.state)
            )
            return {str(state): int(count) for state, count in result.all()}

    @_shielded
    async def all_schedules(self) -> list[tuple[str, datetime | None, datetime | None]]:
        """(id, not_after, planned renewal) of every certificate; renewal None when none is
        planned (revoked), not_after None before the first issuance."""
        async with self._sessions() as session:
            result = await session.execute(
                select(
                    CertificateRow.id,
                    CertificateRow.not_after,
                    CertificateRow.renewal_time,
                    CertificateRow.state,
                )
            )
            return [
                (cid, not_after, None if state == "revoked" else renewal)
                for cid, not_after, renewal, state in result.all()
            ]

    @_shielded
    async def delete_certificate(self, certificate_id: str) -> None:
        """Delete a certificate and its order history."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                delete(CertificateRow).where(CertificateRow.id == certificate_id)
            )
            await session.execute(delete(OrderRow).where(OrderRow.certificate_id == certificate_id))
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFoundError(
                "CERTIFICATE_NOT_FOUND", f"certificates/{certificate_id} does not exist"
            )

    @_shielded
    async def update_certificate(
        self, certificate_id: str, *, lease_owner: str | None = None, **changes: Any
    ) -> CertificateRow | None:
        """Apply `changes`, bump revision and update_time, and return the row after.

        With `lease_owner`, the write only happens while that owner holds the lease; None is
        returned when it no longer does (another replica took over, or the row was deleted).
        """
        now = utcnow()
        statement = update(CertificateRow).where(CertificateRow.id == certificate_id)
        if lease_owner is not None:
            statement = statement.where(CertificateRow.lease_owner == lease_owner)
        statement = statement.values(
            **changes, revision=CertificateRow.revision + 1, update_time=now
        )
        async with self._sessions.begin() as session:
            result = await session.execute(statement)
            if result.rowcount == 0:  # type: ignore[attr-defined]
                return None
            return await session.scalar(
                select(CertificateRow)
                .where(CertificateRow.id == certificate_id)
                .execution_options(populate_existing=True)
            )

    @_shielded
    async def due_certificates(self, now: datetime, limit: int, owner: str = "") -> list[str]:
        """Ids of certificates whose next_attempt_time has come and whose lease is free or
        held by `owner` (a restarted replica's own, left by the process it replaces)."""
        async with self._sessions() as session:
            result = await session.scalars(
                select(CertificateRow.id)
                .where(CertificateRow.next_attempt_time.is_not(None))
                .where(CertificateRow.next_attempt_time <= now)
                .where(
                    or_(
                        CertificateRow.lease_until.is_(None),
                        CertificateRow.lease_until < now,
                        CertificateRow.lease_owner == owner,
                    )
                )
                .order_by(CertificateRow.next_attempt_time)
                .limit(limit)
            )
            return list(result)

    @_shielded
    async def acquire_lease(
        self, certificate_id: str, owner: str, duration: timedelta
    ) -> CertificateRow | None:
        """Take the lease on a certificate if it is free or expired; None when another holds it.

        One conditional UPDATE, so of two replicas racing exactly one wins.
        """
        now = utcnow()
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(CertificateRow)
                .where(CertificateRow.id == certificate_id)
                .where(
                    or_(
                        CertificateRow.lease_until.is_(None),
                        CertificateRow.lease_until < now,
                        CertificateRow.lease_owner == owner,
                    )
                )
                .values(lease_owner=owner, lease_until=now + duration)
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                return None
            return await session.scalar(
                select(CertificateRow)
                .where(CertificateRow.id == certificate_id)
                .execution_options(populate_existing=True)
            )

    @_shielded
    async def renew_lease(self, certificate_id: str, owner: str, duration: timedelta) -> bool:
        """Extend a lease this owner holds; False when it lost it."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(CertificateRow)
                .where(CertificateRow.id == certificate_id)
                .where(CertificateRow.lease_owner == owner)
                .values(lease_until=utcnow() + duration)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    @_shielded
    async def release_lease(self, certificate_id: str, owner: str) -> None:
        """Give a lease up so another replica (or this one) may work the certificate at once."""
        async with self._sessions.begin() as session:
            await session.execute(
                update(CertificateRow)
                .where(CertificateRow.id == certificate_id)
                .where(CertificateRow.lease_owner == owner)
                .values(lease_owner="", lease_until=None)
            )

    @_shielded
    async def record_order(self, certificate_id: str, order_url: str) -> None:
        """Remember an order placed for a certificate."""
        async with self._sessions.begin() as session:
            session.add(
                OrderRow(certificate_id=certificate_id, order_url=order_url, create_time=utcnow())
            )

    @_shielded
    async def orders_of(self, certificate_id: str) -> Sequence[OrderRow]:
        """Every order placed for a certificate, oldest first."""
        async with self._sessions() as session:
            return list(
                await session.scalars(
                    select(OrderRow)
                    .where(OrderRow.certificate_id == certificate_id)
                    .order_by(OrderRow.seq)
                )
            )

    # -- HTTP-01 tokens ------------------------------------------------------------------------

    @_shielded
    async def put_http01_token(
        self, token: str, key_authorization: str, certificate_id: str
    ) -> None:
        """Serve `key_authorization` for `token` from every replica (idempotent)."""
        async with self._sessions.begin() as session:
            await session.merge(
                Http01TokenRow(
                    token=token,
                    key_authorization=key_authorization,
                    certificate_id=certificate_id,
                    create_time=utcnow(),
                )
            )

    @_shielded
    async def get_http01_token(self, token: str) -> str | None:
        """The key authorization for a token, if one is being served."""
        async with self._sessions() as session:
            row = await session.get(Http01TokenRow, token)
            return row.key_authorization if row is not None else None

    @_shielded
    async def delete_http01_token(self, token: str) -> None:
        """Stop serving a token."""
        async with self._sessions.begin() as session:
            await session.execute(delete(Http01TokenRow).where(Http01TokenRow.token == token))

    # -- delegations ---------------------------------------------------------------------------

    @_shielded
    async def get_delegation(self, domain: str) -> DelegationRow | None:
        """The registration held for a base domain, if any."""
        async with self._sessions() as session:
            return await session.get(DelegationRow, domain)

    @_shielded
    async def insert_delegation(self, row: DelegationRow) -> DelegationRow:
        """Keep a new registration; if another writer won the race, return theirs."""
        try:
            async with self._sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            existing = await self.get_delegation(row.domain)
            if existing is None:
                raise
            return existing
        return row

    # -- delivery tokens -----------------------------------------------------------------------

    @_shielded
    async def insert_delivery_token(self, row: DeliveryTokenRow) -> DeliveryTokenRow:
        """Store a new delivery token; ALREADY_EXISTS when the id is taken."""
        try:
            async with self._sessions.begin() as session:
                session.add(row)
        except IntegrityError as exc:
            raise AlreadyExistsError(
                "DELIVERY_TOKEN_EXISTS", f"delivery token {row.id!r} exists already"
            ) from exc
        return row

    @_shielded
    async def find_delivery_token(self, token_id: str) -> DeliveryTokenRow | None:
        """A delivery token by id, or None (authentication must not tell the two apart)."""
        async with self._sessions() as session:
            return await session.scalar(
                select(DeliveryTokenRow).where(DeliveryTokenRow.id == token_id)
            )

    async def get_delivery_token(self, token_id: str) -> DeliveryTokenRow:
        """A delivery token by id, or NOT_FOUND."""
        row = await self.find_delivery_token(token_id)
        if row is None:
            raise NotFoundError(
                "DELIVERY_TOKEN_NOT_FOUND", f"deliveryTokens/{token_id} does not exist"
            )
        return row

    @_shielded
    async def list_delivery_tokens(
        self, after_seq: int, limit: int
    ) -> tuple[list[DeliveryTokenRow], int]:
        """A page of delivery tokens after `after_seq`, and the seq to continue after."""
        async with self._sessions() as session:
            rows = list(
                await session.scalars(
                    select(DeliveryTokenRow)
                    .where(DeliveryTokenRow.seq > after_seq)
                    .order_by(DeliveryTokenRow.seq)
                    .limit(limit + 1)
                )
            )
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (rows[-1].seq if more else 0)

    @_shielded
    async def delete_delivery_token(self, token_id: str) -> None:
        """Remove a delivery token; NOT_FOUND when there is none."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                delete(DeliveryTokenRow).where(DeliveryTokenRow.id == token_id)
            )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFoundError(
                "DELIVERY_TOKEN_NOT_FOUND", f"deliveryTokens/{token_id} does not exist"
            )

    # -- delivery targets ----------------------------------------------------------------------

    @_shielded
    async def put_delivery_target(self, row: DeliveryTargetRow) -> DeliveryTargetRow:
        """Create the target or replace its last report (one row per certificate and target)."""
        for _ in range(3):
            try:
                async with self._sessions.begin() as session:
                    existing = await session.scalar(
                        select(DeliveryTargetRow).where(
                            DeliveryTargetRow.certificate_id == row.certificate_id,
                            DeliveryTargetRow.target_id == row.target_id,
                        )
                    )
                    if existing is None:
                        session.add(row)
                        return row
                    for column in (
                        "host",
                        "directory",
                        "serial_number",
                        "not_after",
                        "install_time",
                        "hook_result",
                        "hook_exit_code",
                        "hook_output_tail",
                        "report_time",
                    ):
                        setattr(existing, column, getattr(row, column))
                    return existing
            except IntegrityError:
                continue  # another replica inserted it first: update that row instead
        raise AlreadyExistsError("DELIVERY_TARGET_CONFLICT", "concurrent reports kept colliding")

    @_shielded
    async def list_delivery_targets(
        self, certificate_id: str, after_seq: int, limit: int
    ) -> tuple[list[DeliveryTargetRow], int]:
        """A page of one certificate's targets after `after_seq`, and the seq to continue after."""
        async with self._sessions() as session:
            rows = list(
                await session.scalars(
                    select(DeliveryTargetRow)
                    .where(
                        DeliveryTargetRow.certificate_id == certificate_id,
                        DeliveryTargetRow.seq > after_seq,
                    )
                    .order_by(DeliveryTargetRow.seq)
                    .limit(limit + 1)
                )
            )
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (rows[-1].seq if more else 0)

    @_shielded
    async def delete_delivery_target(self, certificate_id: str, target_id: str) -> None:
        """Forget one target; NOT_FOUND when there is none."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                delete(DeliveryTargetRow).where(
                    DeliveryTargetRow.certificate_id == certificate_id,
                    DeliveryTargetRow.target_id == target_id,
                )
            )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFoundError(
                "DELIVERY_TARGET_NOT_FOUND",
                f"certificates/{certificate_id}/deliveryTargets/{target_id} does not exist",
            )

    @_shielded
    async def delivery_summary(self) -> list[tuple[str, str, str, datetime]]:
        """(certificate id, its current serial, a target's serial, that one's not-after) for
        every target of a certificate that still exists, for the fleet gauges."""
        async with self._sessions() as session:
            result = await session.execute(
                select(
                    DeliveryTargetRow.certificate_id,
                    CertificateRow.serial_number,
                    DeliveryTargetRow.serial_number,
                    DeliveryTargetRow.not_after,
                ).join(CertificateRow, CertificateRow.id == DeliveryTargetRow.certificate_id)
            )
            return [(a, b, c, d) for a, b, c, d in result.all()]
