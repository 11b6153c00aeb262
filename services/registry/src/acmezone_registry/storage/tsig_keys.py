"""TSIG keys of registrations (the replay guard of what they sign is `replay_guard`).

Keys publish no record, so their writes take no feed lock (`RevisionLog.writing_plain`).
Secrets are stored sealed (`sealing`) and opened only for the key lookup that verifies a MAC.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import func, select, tuple_
from sqlalchemy.exc import IntegrityError

from acmezone_common.errors import ResourceExhaustedError
from acmezone_common.sealing import SecretSealer
from acmezone_registry import errors
from acmezone_registry.model import TsigKeyInfo, TsigKeyWithSecret
from acmezone_registry.storage.registrations import StoredRegistration, to_stored
from acmezone_registry.storage.revision_log import RevisionLog
from acmezone_registry.storage.tables import RegistrationRow, TsigKeyRow

logger = logging.getLogger(__name__)


def _info(row: TsigKeyRow) -> TsigKeyInfo:
    return TsigKeyInfo(row.subdomain, row.key_id, row.key_name, row.algorithm, row.create_time)


class TsigKeyRepository:
    """Create, read, list, delete and look up TSIG keys."""

    def __init__(self, log: RevisionLog, zone: str, sealer: SecretSealer) -> None:
        self._log = log
        self._zone = zone.rstrip(".").lower()
        self._sealer = sealer

    async def create_tsig_key(
        self, subdomain: str, key_id: str, algorithm: str, secret: str, *, max_keys: int
    ) -> TsigKeyInfo:
        """Store a new key named `<key_id>.<fulldomain>.`."""
        key_name = f"{key_id}.{subdomain}.{self._zone}."
        try:
            async with self._log.writing_plain() as session:
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
                    raise errors.tsig_key_exists(key_id)
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
                return _info(row)
        except IntegrityError as exc:
            raise errors.tsig_key_exists(key_id) from exc

    async def get_tsig_key(self, subdomain: str, key_id: str) -> TsigKeyInfo:
        """One key of a registration, without its secret."""
        async with self._log.reading() as session:
            row = await session.get(TsigKeyRow, (subdomain, key_id))
            if row is None:
                raise errors.tsig_key_not_found(subdomain, key_id)
            return _info(row)

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
        async with self._log.reading() as session:
            if await session.get(RegistrationRow, subdomain) is None:
                raise errors.registration_not_found(subdomain)
            return [_info(row) for row in await session.scalars(query.limit(limit))]

    async def delete_tsig_key(self, subdomain: str, key_id: str) -> None:
        """Delete a key; it stops verifying with this commit."""
        async with self._log.writing_plain() as session:
            row = await session.get(TsigKeyRow, (subdomain, key_id))
            if row is None:
                raise errors.tsig_key_not_found(subdomain, key_id)
            await session.delete(row)

    async def find_tsig_key(
        self, key_name: str
    ) -> tuple[TsigKeyWithSecret, StoredRegistration] | None:
        """A key by its DNS name (lower case, trailing dot) with its registration, or None."""
        async with self._log.reading() as session:
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
            return TsigKeyWithSecret(_info(row), secret), to_stored(registration, self._zone)
