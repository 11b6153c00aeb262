"""Group commit: calls that arrive while a transaction runs share the next one.

On the hot paths the cost of a transaction is mostly its fixed part (a thread hop, BEGIN, the
feed lock, COMMIT), not its statements. `Grouped` queues each call's body and, one group at a
time, hands every body queued so far to one transaction; a caller waits for its own result,
which exists only once that transaction has ended. A lone call is not delayed: the first one
starts a transaction at once, and only those arriving meanwhile wait for the next.

When a group's transaction fails, it is rolled back as a whole and every body of it runs again
in a transaction of its own, so each caller gets exactly the outcome it would have had alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar, cast

A = TypeVar("A")
T = TypeVar("T")

# One transaction holds at most this many calls, so none stays open for long.
MAX_GROUP = 256


class Grouped(Generic[A]):
    """Runs bodies taking an `A` in groups through `run_group`, which runs the given bodies in
    one transaction and returns their results in order (or raises for the whole group)."""

    def __init__(
        self,
        run_group: Callable[[Sequence[Callable[[A], object]]], Awaitable[list[object]]],
        *,
        name: str,
    ) -> None:
        self._run_group = run_group
        self._name = name
        self._queued: list[tuple[Callable[[A], object], asyncio.Future[object]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def run(self, body: Callable[[A], T]) -> T:
        """`body`'s result, once the transaction it ran in has ended."""
        done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._queued.append((body, done))
        if self._runner is None:
            self._runner = asyncio.create_task(self._run_queued(), name=self._name)
        return cast(T, await done)

    async def _run_queued(self) -> None:
        try:
            while self._queued:
                group, self._queued = self._queued[:MAX_GROUP], self._queued[MAX_GROUP:]
                await self._run(group)
        finally:
            self._runner = None

    async def _run(self, group: list[tuple[Callable[[A], object], asyncio.Future[object]]]) -> None:
        try:
            results = await self._run_group([body for body, _ in group])
        except asyncio.CancelledError:
            for _, done in group:
                done.cancel()
            raise
        except Exception as exc:
            if len(group) > 1:
                for queued in group:
                    await self._run([queued])
            elif not group[0][1].done():
                group[0][1].set_exception(exc)
            return
        for (_, done), result in zip(group, results, strict=True):
            if not done.done():
                done.set_result(result)
