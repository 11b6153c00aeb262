"""Watches the database and reports it through health: NOT_SERVING while it is down.

A registry without its database can answer nothing useful; load balancers and dns replicas
should know at once rather than by failed requests. The watch pings every `interval` (bounded
by `timeout`, so a database that hangs counts as down) and calls `report(up)` on every change,
including the way back, so the registry recovers by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)


class StorageWatch:
    """Pings storage periodically and reports changes of its state."""

    def __init__(
        self,
        ping: Callable[[], Awaitable[bool]],
        report: Callable[[bool], Awaitable[None]],
        *,
        interval: float,
        timeout: float = 5.0,
    ) -> None:
        self._ping = ping
        self._report = report
        self._interval = interval
        self._timeout = timeout
        self._up = True
        self._task: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        """Whether the last ping succeeded."""
        return self._up

    async def check_once(self) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                up = await self._ping()
        except Exception:
            up = False
        if up != self._up:
            self._up = up
            if up:
                logger.info("database reachable again: serving")
            else:
                logger.warning("database unreachable: reporting NOT_SERVING")
            await self._report(up)
        return up

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check_once()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="registry-storage-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
