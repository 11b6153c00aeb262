"""Periodic upkeep: remove expired TXT values, compact feed history, forget expired TSIG
MACs, refresh gauges.

Every replica runs it; each step is idempotent and runs under the feed lock, so replicas doing
the same work at once only cost a little duplicated effort.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from acmezone_common.errors import UnavailableError
from acmezone_registry.metrics import RegistryMetrics
from acmezone_registry.storage.stores import Stores

logger = logging.getLogger(__name__)


class Maintenance:
    """Runs `run_once` every `interval` seconds until stopped."""

    def __init__(
        self,
        stores: Stores,
        metrics: RegistryMetrics,
        *,
        interval: float,
        feed_retention_revisions: int,
        expire_values: bool,
    ) -> None:
        self._stores = stores
        self._metrics = metrics
        self._interval = interval
        self._retention = feed_retention_revisions
        self._expire_values = expire_values
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> None:
        """One round of upkeep."""
        if self._expire_values:
            expired = await self._stores.txt_values.expire_txt_values(datetime.now(UTC))
            if expired:
                self._metrics.txt_values_expired.inc(expired)
                logger.info("expired TXT values removed", extra={"count": expired})
        self._metrics.replay_guard_purged.inc(
            await self._stores.replay_guard.purge_replay_guard(datetime.now(UTC))
        )
        mark = await self._stores.log.compact(self._retention)
        self._metrics.feed_compacted_revision.set(mark)
        self._metrics.registrations.set(await self._stores.registrations.count_registrations())

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except UnavailableError:
                pass  # already logged by the revision log; try again next round
            except Exception:
                logger.exception("maintenance round failed")
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        """Start the background loop."""
        self._task = asyncio.create_task(self._loop(), name="registry-maintenance")

    async def stop(self) -> None:
        """Stop the background loop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
