"""The issuer's repository: accounts, certificates, delegations, orders, HTTP-01 tokens and
delivery tokens and targets (SQLAlchemy 2.0, async).

The reconciler writes a certificate's state before every ACME step, so a restarted issuer resumes
an order in flight instead of placing another. Work on a certificate is guarded by a lease
(`lease_owner`, `lease_until`) taken with one conditional UPDATE, so two replicas sharing one
PostgreSQL never work the same certificate at once; every write by the reconciler is conditional
on still holding the lease. Every change bumps the certificate's `revision`, which Watch follows.

Methods are named for what the service needs, not for SQL; rows leave this module detached.
Every operation runs under the `Shield`, so a cancelled caller never strands a connection.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from enum import Enum
from typing import ParamSpec, TypeVar

from sqlalchemy import ColumnElement, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from acmezone_common.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    NotFoundError,
)
from acmezone_common.paging import Page, PageKey, fetch_limit, page_of, seq_after
from acmezone_common.sql import rowcount, utcnow
from acmezone_issuer import errors
from acmezone_issuer.states import CertificateState
from acmezone_issuer.storage.database import Shield, open_engine
from acmezone_issuer.storage.tables import (
    AccountRow,
    Base,
    CertificateRow,
    DelegationRow,
    DelegationStatus,
    DeliveryTargetRow,
    DeliveryTokenRow,
    Http01TokenRow,
    OrderRow,
)

logger = logging.getLogger(__name__)

# An account the CA registered again is valid (RFC 8555 status, as the accounts table stores it).
ACCOUNT_VALID = "valid"

P = ParamSpec("P")
R = TypeVar("R")
RowT = TypeVar("RowT", bound=Base)
# The tables listed in pages, ordered by their `seq`.
PagedT = TypeVar("PagedT", AccountRow, CertificateRow, DeliveryTokenRow, DeliveryTargetRow)


class _Unset(Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET


@dataclass(frozen=True)
class CertificateUpdate:
    """The fields of a certificate one write changes; a field left `UNSET` is not written
    (None is a value: it clears the column). Typed, so a misspelt column fails `mypy` rather
    than the UPDATE at run time."""

    state: str | _Unset = UNSET
    stage: str | _Unset = UNSET
    conditions: list[dict[str, str]] | _Unset = UNSET
    delegations: list[DelegationStatus] | _Unset = UNSET
    failed_attempts: int | _Unset = UNSET
    last_failure: dict[str, str] | _Unset | None = UNSET
    next_attempt_time: datetime | _Unset | None = UNSET
    order_url: str | _Unset = UNSET
    attempt_start_time: datetime | _Unset | None = UNSET
    sealed_pending_key: bytes | _Unset | None = UNSET
    sealed_key: bytes | _Unset | None = UNSET
    chain_pem: str | _Unset = UNSET
    serial_number: str | _Unset = UNSET
    not_before: datetime | _Unset | None = UNSET
    not_after: datetime | _Unset | None = UNSET
    renewal_time: datetime | _Unset | None = UNSET
    renewal_source: str | _Unset = UNSET
    issue_time: datetime | _Unset | None = UNSET
    revoke_time: datetime | _Unset | None = UNSET
    renew_requested: bool | _Unset = UNSET

    def values(self) -> dict[str, object]:
        """The columns to write, by name."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) is not UNSET
        }

    def apply_to(self, row: CertificateRow) -> None:
        """Set the changed fields on a detached row, as the write will store them."""
        for name, value in self.values().items():
            setattr(row, name, value)


async def _reread(session: AsyncSession, certificate_id: str) -> CertificateRow | None:
    """The certificate as the UPDATE just left it, inside the same transaction (not a copy the
    session already held)."""
    return await session.scalar(
        select(CertificateRow)
        .where(CertificateRow.id == certificate_id)
        .execution_options(populate_existing=True)
    )


def _by_seq(row: AccountRow | CertificateRow | DeliveryTokenRow | DeliveryTargetRow) -> PageKey:
    return (row.seq,)


def _shielded(
    method: Callable[P, Coroutine[object, object, R]],
) -> Callable[P, Coroutine[object, object, R]]:
    """Run the operation under its repository's `Shield` (see `storage.database.Shield`)."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        repository = args[0]
        assert isinstance(repository, Repository)
        return await repository.shield.run(method(*args, **kwargs))

    return wrapper


class Repository:
    """Every query the issuer makes, named for its purpose."""

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._now = clock
        self.shield = Shield()

    @classmethod
    def open(cls, async_database_url: str, *, clock: Callable[[], datetime] = utcnow) -> Repository:
        """A repository over a new engine for the URL."""
        return cls(open_engine(async_database_url), clock=clock)

    async def close(self) -> None:
        """Let running operations finish, then release every connection."""
        await self.shield.drain()
        await self._engine.dispose()

    async def _insert(self, row: RowT, reason: str, message: str) -> RowT:
        """Add a row in its own transaction; ALREADY_EXISTS (`reason`) when its key is taken."""
        try:
            async with self._sessions.begin() as session:
                session.add(row)
        except IntegrityError as exc:
            raise AlreadyExistsError(reason, message) from exc
        return row

    async def _page(
        self, model: type[PagedT], page_token: str, limit: int, *where: ColumnElement[bool]
    ) -> Page[PagedT]:
        """A page of `model` rows in `seq` order after the one `page_token` names."""
        statement = (
            select(model)
            .where(model.seq > seq_after(page_token), *where)
            .order_by(model.seq)
            .limit(fetch_limit(limit))
        )
        async with self._sessions() as session:
            rows = list(await session.scalars(statement))
        return page_of(rows, limit, _by_seq)

    # -- accounts ------------------------------------------------------------------------------

    @_shielded
    async def insert_account(self, row: AccountRow) -> AccountRow:
        """Store a new account; ALREADY_EXISTS when the id is taken."""
        return await self._insert(row, errors.ACCOUNT_EXISTS, f"account {row.id!r} exists already")

    @_shielded
    async def get_account(self, account_id: str) -> AccountRow:
        """One account, or NOT_FOUND."""
        async with self._sessions() as session:
            row = await session.scalar(select(AccountRow).where(AccountRow.id == account_id))
        if row is None:
            raise errors.account_not_found(account_id)
        return row

    @_shielded
    async def list_accounts(self, page_token: str, limit: int) -> Page[AccountRow]:
        """A page of accounts, in creation order, after the one `page_token` names."""
        return await self._page(AccountRow, page_token, limit)

    @_shielded
    async def set_account_url(self, account_id: str, account_url: str) -> None:
        """Record the URL a CA gave an account when it was registered again."""
        async with self._sessions.begin() as session:
            await session.execute(
                update(AccountRow)
                .where(AccountRow.id == account_id)
                .values(account_url=account_url, status=ACCOUNT_VALID)
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
                    errors.ACCOUNT_IN_USE, f"{used} certificate(s) use accounts/{account_id}"
                )
            result = await session.execute(delete(AccountRow).where(AccountRow.id == account_id))
        if rowcount(result) == 0:
            raise errors.account_not_found(account_id)

    # -- certificates --------------------------------------------------------------------------

    @_shielded
    async def insert_certificate(self, row: CertificateRow) -> CertificateRow:
        """Store a new certificate; ALREADY_EXISTS when the id is taken."""
        return await self._insert(
            row, errors.CERTIFICATE_EXISTS, f"certificates/{row.id} exists already"
        )

    @_shielded
    async def get_certificate(self, certificate_id: str) -> CertificateRow:
        """One certificate, or NOT_FOUND."""
        row = await self.find_certificate(certificate_id)
        if row is None:
            raise errors.certificate_not_found(certificate_id)
        return row

    @_shielded
    async def find_certificate(self, certificate_id: str) -> CertificateRow | None:
        """One certificate, or None."""
        async with self._sessions() as session:
            return await session.scalar(
                select(CertificateRow).where(CertificateRow.id == certificate_id)
            )

    @_shielded
    async def list_certificates(self, page_token: str, limit: int) -> Page[CertificateRow]:
        """A page of certificates, in creation order, after the one `page_token` names."""
        return await self._page(CertificateRow, page_token, limit)

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
                (cid, not_after, None if state == CertificateState.REVOKED else renewal)
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
        if rowcount(result) == 0:
            raise errors.certificate_not_found(certificate_id)

    @_shielded
    async def update_certificate(
        self, certificate_id: str, changes: CertificateUpdate, *, lease_owner: str | None = None
    ) -> CertificateRow | None:
        """Apply `changes`, bump revision and update_time, and return the row after.

        With `lease_owner`, the write only happens while that owner holds the lease; None is
        returned when it no longer does (another replica took over, or the row was deleted).
        """
        now = self._now()
        statement = update(CertificateRow).where(CertificateRow.id == certificate_id)
        if lease_owner is not None:
            statement = statement.where(CertificateRow.lease_owner == lease_owner)
        statement = statement.values(
            **changes.values(), revision=CertificateRow.revision + 1, update_time=now
        )
        async with self._sessions.begin() as session:
            result = await session.execute(statement)
            if rowcount(result) == 0:
                return None
            return await _reread(session, certificate_id)

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
        now = self._now()
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
            if rowcount(result) == 0:
                return None
            return await _reread(session, certificate_id)

    @_shielded
    async def renew_lease(self, certificate_id: str, owner: str, duration: timedelta) -> bool:
        """Extend a lease this owner holds; False when it lost it."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(CertificateRow)
                .where(CertificateRow.id == certificate_id)
                .where(CertificateRow.lease_owner == owner)
                .values(lease_until=self._now() + duration)
            )
            return rowcount(result) > 0

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
                OrderRow(
                    certificate_id=certificate_id, order_url=order_url, create_time=self._now()
                )
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
                    create_time=self._now(),
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
        return await self._insert(
            row, errors.DELIVERY_TOKEN_EXISTS, f"delivery token {row.id!r} exists already"
        )

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
            raise errors.delivery_token_not_found(token_id)
        return row

    @_shielded
    async def list_delivery_tokens(self, page_token: str, limit: int) -> Page[DeliveryTokenRow]:
        """A page of delivery tokens, in creation order, after the one `page_token` names."""
        return await self._page(DeliveryTokenRow, page_token, limit)

    @_shielded
    async def delete_delivery_token(self, token_id: str) -> None:
        """Remove a delivery token; NOT_FOUND when there is none."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                delete(DeliveryTokenRow).where(DeliveryTokenRow.id == token_id)
            )
        if rowcount(result) == 0:
            raise errors.delivery_token_not_found(token_id)

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
        raise AlreadyExistsError(
            errors.DELIVERY_TARGET_CONFLICT, "concurrent reports kept colliding"
        )

    @_shielded
    async def list_delivery_targets(
        self, certificate_id: str, page_token: str, limit: int
    ) -> Page[DeliveryTargetRow]:
        """A page of one certificate's targets, in report order, after the one `page_token`
        names."""
        return await self._page(
            DeliveryTargetRow, page_token, limit, DeliveryTargetRow.certificate_id == certificate_id
        )

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
        if rowcount(result) == 0:
            raise NotFoundError(
                errors.DELIVERY_TARGET_NOT_FOUND,
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
