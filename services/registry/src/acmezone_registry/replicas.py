"""Which revision each dns replica serves, and waiting until all of them serve one.

CAs validate a DNS challenge from several vantage points at once (Let's Encrypt: a primary and
four remote perspectives), each reaching whichever dns replica its network path leads to, and
none reuses another's answer. A value is therefore ready only when every replica answers it.
Each replica reports the revision it serves over a long-lived stream; `wait_for` returns once
every live replica has reported at least a revision, or raises naming the ones behind.

"Live" is a replica whose report stream is open, or whose last report is younger than
`timeout`: one that lost its stream may still be answering queries from its last state, so it
is waited for until it is either back or long gone (scaled down, crashed). Reports are kept in
this process's memory: they describe the replicas that watch this registry replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from acmezone_common.errors import DeadlineExceededError, InvalidArgumentError, UnavailableError
from acmezone_registry import errors

MAX_REPLICA_NAME = 253


@dataclass(frozen=True)
class ReplicaReport:
    """The latest report of one replica."""

    replica: str
    feed_id: str
    revision: int
    report_time: datetime
    connected: bool
    seen: float  # monotonic time of the report or of the stream's end, whichever is later


class ReplicaTracker:
    """Holds every replica's latest report; wakes waiters when one moves."""

    def __init__(self, *, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        """`timeout`: how long a disconnected replica is still waited for; `clock` ages the
        reports (a test's own)."""
        self._timeout = timeout
        self._clock = clock
        self._reports: dict[str, ReplicaReport] = {}
        self._streams: dict[str, int] = {}  # open report streams per replica name
        self.closing = asyncio.Event()
        """Set when the registry stops: report streams end then (see `close`)."""
        self._changed = asyncio.Event()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    @contextlib.contextmanager
    def stream(self) -> Iterator[Callable[[str, str, int], None]]:
        """One replica's report stream: yields the function that takes each report, and marks
        the replica disconnected when the stream ends."""
        if self.closing.is_set():
            raise UnavailableError(errors.SHUTTING_DOWN, "this registry replica is stopping")
        names: set[str] = set()

        def report(replica: str, feed_id: str, revision: int) -> None:
            if not replica or len(replica) > MAX_REPLICA_NAME:
                raise InvalidArgumentError(
                    errors.INVALID_REPLICA,
                    f"replica must be 1 to {MAX_REPLICA_NAME} characters",
                    field="replica",
                )
            if revision < 0:
                raise InvalidArgumentError(
                    errors.INVALID_REVISION, "revision must not be negative", field="revision"
                )
            if replica not in names:
                names.add(replica)
                self._streams[replica] = self._streams.get(replica, 0) + 1
            self._reports[replica] = ReplicaReport(
                replica, feed_id, revision, datetime.now(UTC), True, self._clock()
            )
            self._wake()

        try:
            yield report
        finally:
            for name in names:
                self._streams[name] -= 1
                if not self._streams[name]:
                    del self._streams[name]
                    last = self._reports.get(name)
                    if last is not None:
                        self._reports[name] = replace(last, connected=False, seen=self._clock())
            self._wake()

    def close(self) -> None:
        """End every open report stream (the registry is stopping): a report stream never
        ends by itself, and a graceful server stop would otherwise wait its whole grace for
        them. The replicas report again to whichever registry replica they reach next."""
        self.closing.set()

    def live(self) -> list[ReplicaReport]:
        """The replicas still counted, ordered by name; forgets the long-gone ones."""
        now = self._clock()
        for name, report in list(self._reports.items()):
            if not report.connected and now - report.seen > self._timeout:
                del self._reports[name]
        return sorted(self._reports.values(), key=lambda r: r.replica)

    async def wait_for(self, revision: int, feed_id: str, within: float) -> list[ReplicaReport]:
        """Return once every live replica serves `revision` of feed `feed_id` (at once when
        none reports here); raise DeadlineExceededError naming the laggards after `within`
        seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within  # real time: the injected clock only ages reports
        while True:
            changed = self._changed
            replicas = self.live()
            behind = [r for r in replicas if r.revision < revision or r.feed_id != feed_id]
            if not behind:
                return replicas
            left = deadline - loop.time()
            if left <= 0:
                names = ", ".join(
                    f"{r.replica} at revision {r.revision}"
                    + ("" if r.connected else " (disconnected)")
                    + ("" if r.feed_id == feed_id else " of another feed")
                    for r in behind
                )
                raise DeadlineExceededError(
                    errors.REPLICAS_LAGGING,
                    f"after {within:g} s, not every dns replica serves revision {revision}: "
                    f"{names}",
                    metadata={"lagging": ",".join(r.replica for r in behind)},
                )
            # A replica that stops reporting goes out of the live set by time alone, so
            # wake up in time for that too. (`asyncio.timeout`, not `wait_for`: no task per
            # wake-up, and every held `/update` comes through here.)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, self._timeout)):
                    await changed.wait()
