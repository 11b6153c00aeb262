"""The replay guard of signed updates: the MAC of every accepted RFC 2136 message until its
signature's time window closes, so the same signed message a second time is refused.

Remembering happens inside the update's own transaction (`remember`), so a replay is caught
however the two copies race; forgetting is maintenance (`ReplayGuard.purge_replay_guard`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from acmezone_common.sql import rowcount
from acmezone_registry.storage.revision_log import RevisionLog
from acmezone_registry.storage.tables import TsigReplayGuardRow


async def remember(session: AsyncSession, digest: str, expire_time: datetime) -> bool:
    """Remember a signed message's MAC digest until its signature expires; False when it was
    already remembered (the message is a replay)."""
    if await session.get(TsigReplayGuardRow, digest) is not None:
        return False
    session.add(TsigReplayGuardRow(mac_digest=digest, expire_time=expire_time))
    return True


class ReplayGuard:
    """Forgets the MACs nobody can replay any more."""

    def __init__(self, log: RevisionLog) -> None:
        self._log = log

    async def purge_replay_guard(self, now: datetime) -> int:
        """Forget MACs whose signatures have expired anyway; returns how many."""
        expired = TsigReplayGuardRow.expire_time <= now
        async with self._log.reading() as session:
            if (
                await session.scalar(select(TsigReplayGuardRow.mac_digest).where(expired).limit(1))
                is None
            ):
                return 0
        async with self._log.writing_plain() as session:
            return rowcount(await session.execute(delete(TsigReplayGuardRow).where(expired)))
