"""The record feed: snapshot, then every change in revision order, then bookmarks while idle.

Watchers read committed changes straight from the `record_changes` table, so every replica
serves the same ordered history whichever replica wrote it. What differs is only how soon a
watcher learns that there is something new to read:

- a change committed by this process wakes its watchers at once (commit listener);
- on PostgreSQL, a LISTEN connection hears the NOTIFY every writer queues in its transaction,
  so changes made on other replicas arrive within milliseconds;
- and a poll of the feed head every `poll_interval` is the safety net (and the only cross-process
  signal on SQLite).

A watcher reads the table only for revisions one of these made known; once caught up it waits.

Changes this process committed are also kept in memory for a short while, so its watchers get
them without a database round trip each (the commonest case: one replica takes an update, its
dns watchers forward it at once). The memory is only used when it holds every revision from the
one a watcher needs next; anything else is read from the table.

A watcher that falls behind the compacted history gets OUT_OF_RANGE and re-lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from acmezone_common.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    OutOfRangeError,
    UnavailableError,
)
from acmezone_registry import errors
from acmezone_registry.metrics import RegistryMetrics
from acmezone_registry.model import (
    Bookmark,
    ChangeBatch,
    FeedStatus,
    RecordChange,
    RecordSet,
    SnapshotPart,
    WatchEvent,
)
from acmezone_registry.replicas import ReplicaReport, ReplicaTracker
from acmezone_registry.storage.record_sets import RecordSets
from acmezone_registry.storage.revision_log import NOTIFY_CHANNEL, RevisionLog

logger = logging.getLogger(__name__)

SNAPSHOT_BATCH_SIZE = 1000
MAX_REVISIONS_PER_BATCH = 256
RECENT_REVISIONS_KEPT = 1024


class RecordFeed:
    """Serves WatchRecords streams for one registry process."""

    def __init__(
        self,
        log: RevisionLog,
        record_sets: RecordSets,
        metrics: RegistryMetrics,
        *,
        bookmark_interval: float,
        poll_interval: float,
        replicas: ReplicaTracker,
        settle_within: float = 0.0,
    ) -> None:
        self._log = log
        self._record_sets = record_sets
        self.replicas = replicas
        self._settle_within = settle_within
        self._metrics = metrics
        self._bookmark_interval = bookmark_interval
        self._poll_interval = poll_interval
        self._changed = asyncio.Event()
        self._known_revision = 0
        # The feed's identity, read at start: it is made with the database and never changes
        # (the poll keeps it current all the same), so a wait for the replicas reads nothing.
        self._feed_id = ""
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._recent: dict[int, tuple[RecordChange, ...]] = {}
        # Set while other replicas' commits reach this one promptly: on PostgreSQL once LISTEN
        # is in place (cleared while it reconnects); on SQLite, polled, from start.
        self.listening = asyncio.Event()
        log.add_commit_listener(self._on_commit)

    async def start(self) -> None:
        """Learn the current head and start listening for other replicas' commits."""
        status = await self._log.feed_status()
        self._feed_id = status.feed_id
        self._advance(status.revision)
        self._metrics.feed_compacted_revision.set(status.compacted_revision)
        self._tasks.append(asyncio.create_task(self._poll_loop(), name="feed-poll"))
        if self._log.database.is_sqlite:
            self.listening.set()
        else:
            self._tasks.append(asyncio.create_task(self._listen_loop(), name="feed-listen"))

    async def stop(self) -> None:
        """End every open watch with UNAVAILABLE (clients move to another replica) and stop."""
        self._closing = True
        self._wake()
        self.replicas.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def status(self) -> FeedStatus:
        """The feed's identity and revision bounds."""
        return await self._log.feed_status()

    def replica_states(self) -> tuple[dict[str, int], int]:
        """How many reporting replicas are current, behind or disconnected, and the most
        revisions one is behind the head this process knows (for the metrics)."""
        counts = dict.fromkeys(("current", "behind", "disconnected"), 0)
        lag = 0
        for report in self.replicas.live():
            behind = max(0, self._known_revision - report.revision)
            lag = max(lag, behind)
            if not report.connected:
                counts["disconnected"] += 1
            else:
                counts["behind" if behind else "current"] += 1
        return counts, lag

    async def settle(self, revision: int) -> None:
        """Hold an acme-dns `/update` or RFC 2136 answer until every dns replica serves
        `revision` (WAIT_FOR_REPLICAS_SECONDS; 0: at once). Those clients ask the CA right
        after the answer, and the CA asks any replica. Past the bound it answers anyway (the
        change is stored) and counts the timeout: a refusal would only make the client retry
        a write that already happened."""
        if self._settle_within <= 0 or revision <= 0:
            return
        try:
            await self.wait_for_replicas(revision, self._settle_within)
        except DeadlineExceededError as exc:
            self._metrics.replica_waits.labels("timeout").inc()
            logger.warning(
                "answering before every dns replica serves the change",
                extra={"revision": revision, "detail": exc.message},
            )
            return
        self._metrics.replica_waits.labels("ready").inc()

    async def wait_for_replicas(self, revision: int, within: float) -> list[ReplicaReport]:
        """Return once every live dns replica serves `revision` of this feed (see
        `replicas`); DeadlineExceededError naming the laggards after `within` seconds. Held
        by every `/update` when WAIT_FOR_REPLICAS_SECONDS is set, so it reads no database."""
        feed_id = self._feed_id or (await self._log.feed_status()).feed_id
        return await self.replicas.wait_for(revision, feed_id, within)

    # -- wake-ups -----------------------------------------------------------------------------

    def _wake(self) -> None:
        """Wake every waiting watcher; later waiters wait on a fresh event."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _advance(self, revision: int) -> None:
        if revision > self._known_revision:
            self._known_revision = revision
            self._metrics.feed_revision.set(revision)

    def _on_commit(self, revision: int, changes: tuple[RecordChange, ...]) -> None:
        self._recent[revision] = changes
        while len(self._recent) > RECENT_REVISIONS_KEPT:
            del self._recent[min(self._recent)]
        self._advance(revision)
        self._wake()

    def _recent_from(self, start_revision: int) -> list[RecordChange]:
        """Changes from `start_revision` on, if memory holds that revision and the ones after
        it without a gap; empty when the table must be asked."""
        changes: list[RecordChange] = []
        revision = start_revision
        while revision in self._recent and revision < start_revision + MAX_REVISIONS_PER_BATCH:
            changes.extend(self._recent[revision])
            revision += 1
        return changes

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                status = await self._log.feed_status()
            except UnavailableError:
                continue
            self._metrics.feed_compacted_revision.set(status.compacted_revision)
            self._feed_id = status.feed_id
            if status.revision != self._known_revision:
                self._advance(status.revision)
                self._wake()

    async def _listen_loop(self) -> None:
        # Imported here: only PostgreSQL deployments listen, and psycopg costs a SQLite
        # registry about 9 MB of its idle memory.
        import psycopg

        conninfo = self._log.database.libpq_conninfo()
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.listening.set()
                    self._wake()  # whatever was committed while we were not listening
                    async for notify in conn.notifies():
                        with contextlib.suppress(ValueError):
                            self._advance(int(notify.payload))
                        self._wake()
            except (psycopg.Error, OSError) as exc:
                self.listening.clear()
                logger.warning("feed LISTEN connection lost; retrying", extra={"error": str(exc)})
                await asyncio.sleep(1.0)

    # -- watching -----------------------------------------------------------------------------

    async def watch(self, start_revision: int, feed_id: str) -> AsyncIterator[WatchEvent]:
        """Snapshot (start 0) or history from start_revision, then live changes and bookmarks."""
        if start_revision < 0:
            raise InvalidArgumentError(
                errors.INVALID_START_REVISION,
                f"start_revision must be 0 or positive, not {start_revision}",
                field="start_revision",
            )
        self._metrics.feed_watchers.inc()
        try:
            async for event in self._watch(start_revision, feed_id):
                yield event
        finally:
            self._metrics.feed_watchers.dec()

    async def _watch(self, start_revision: int, feed_id: str) -> AsyncIterator[WatchEvent]:
        status = await self._log.feed_status()
        if start_revision == 0:
            # Parts are streamed from the table as the watcher takes them (gRPC flow
            # control), one held back to know which is the last.
            revision = 0
            held: list[RecordSet] | None = None
            async with contextlib.aclosing(
                self._record_sets.snapshot_parts(SNAPSHOT_BATCH_SIZE)
            ) as parts:
                async for revision, record_sets in parts:
                    if held is not None:
                        yield SnapshotPart(
                            tuple(held), revision, False, status.feed_id, status.zone
                        )
                    held = record_sets
            yield SnapshotPart(tuple(held or ()), revision, True, status.feed_id, status.zone)
            next_revision = revision + 1
        else:
            if feed_id and feed_id != status.feed_id:
                raise OutOfRangeError(
                    errors.FEED_ID_MISMATCH,
                    "the feed was recreated since this client's state was built; start again "
                    "from revision 0",
                    metadata={"feed_id": status.feed_id},
                )
            if start_revision > status.revision + 1:
                raise OutOfRangeError(
                    errors.REVISION_IN_FUTURE,
                    f"revision {start_revision} is ahead of the feed (at {status.revision}); "
                    "start again from revision 0",
                    metadata={"revision": str(status.revision)},
                )
            if start_revision <= status.compacted_revision:
                # Checked here too because recent revisions may still be in memory: the
                # contract says a compacted revision cannot be resumed from, whatever we hold.
                raise errors.revision_compacted(start_revision, status.compacted_revision)
            next_revision = start_revision
        last_sent = time.monotonic()
        while True:
            if self._closing:
                raise UnavailableError(errors.SHUTTING_DOWN, "this registry replica is stopping")
            changed = self._changed  # taken before reading, so no commit slips between
            changes = self._recent_from(next_revision)
            if not changes and next_revision <= self._known_revision:
                # Only ask the table for revisions some wake-up said exist: a watcher that is
                # caught up would otherwise cost a query per commit, for nothing.
                changes = await self._log.changes_since(next_revision, MAX_REVISIONS_PER_BATCH)
            if changes:
                yield ChangeBatch(tuple(changes))
                next_revision = changes[-1].revision + 1
                last_sent = time.monotonic()
                continue
            idle_for = time.monotonic() - last_sent
            if idle_for >= self._bookmark_interval:
                yield Bookmark(next_revision - 1, datetime.now(UTC), status.feed_id)
                last_sent = time.monotonic()
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), self._bookmark_interval - idle_for)
