"""The record-feed client: keeps the zone store in step with the registry.

It follows the feed protocol of `acmezone.registry.v1.RecordFeedService` (etcd Watch and
Kubernetes list/watch): a snapshot at start, then live change batches and bookmarks. After a
disconnect it resumes from the last applied revision + 1 with the feed_id it was built from, so
nothing is missed and nothing is applied twice; on OUT_OF_RANGE (compacted revision, new
database) it re-lists at once. Reconnects back off exponentially with full jitter so a fleet of
replicas does not stampede a registry that just came back.

While disconnected the store keeps its last snapshot: the zone goes on answering from the last
good state. A re-list builds the new state aside as the snapshot streams in, batch by batch, so
queries go on being answered from the current one, and swaps it in only when complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from acmezone.registry.v1 import record_feed_service_pb2 as feed_pb2
from acmezone.registry.v1 import record_feed_service_pb2_grpc as feed_grpc
from acmezone_common.transport import ChannelFactory, channel_to
from acmezone_dns.errors import FeedProtocolError
from acmezone_dns.metrics import FeedMetrics
from acmezone_dns.store import Relist, TxtChange, ZoneStore

logger = logging.getLogger(__name__)

_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


_REPORT_INTERVAL = 0.002
"""Least time between two served-revision reports (seconds). Every acme-dns `/update` waits for
the next report by default (the registry's WAIT_FOR_REPLICAS_SECONDS), so this bounds what a
client updating one value after another waits: 5 ms made its round trip 5.4 ms at p50, 2 ms
makes it 2.3 ms, and a busy replica still sends at most 500 reports a second."""


class FeedState(enum.Enum):
    """Where the client is in the feed protocol."""

    SYNCING = "syncing"
    LIVE = "live"
    DISCONNECTED = "disconnected"


def _changes(change: feed_pb2.RecordChange) -> TxtChange | None:
    record_set = change.record_set
    if record_set.type != feed_pb2.RECORD_TYPE_TXT:
        logger.warning(
            "feed record of an unknown type ignored",
            extra={"fqdn": record_set.fqdn, "type": record_set.type},
        )
        return None
    if change.type == feed_pb2.CHANGE_TYPE_DELETE:
        return TxtChange(record_set.fqdn, None)
    if change.type == feed_pb2.CHANGE_TYPE_PUT:
        return TxtChange(record_set.fqdn, tuple(record_set.txt_values))
    raise FeedProtocolError(f"change of unknown type {change.type} at revision {change.revision}")


def _lag(stamp: Timestamp) -> float:
    return max(0.0, time.time() - stamp.ToMicroseconds() / 1e6)


class FeedClient:
    """Streams the registry's record feed into a ZoneStore until stopped."""

    def __init__(
        self,
        target: str | ChannelFactory,
        store: ZoneStore,
        metrics: FeedMetrics,
        *,
        zone: str,
        backoff_initial: float,
        backoff_max: float,
        on_first_snapshot: Callable[[], Awaitable[None]],
        rng: random.Random | None = None,
    ) -> None:
        self._target = target
        self._store = store
        self._metrics = metrics
        self._zone = zone
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._on_first_snapshot = on_first_snapshot
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not secrets)
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None
        self._synced = False
        self._feed_id = ""
        self._delay = backoff_initial
        self.state = FeedState.SYNCING
        self.last_sync_time: datetime | None = None
        self._relist_started = 0.0
        self.last_snapshot_time: datetime | None = None
        """When the latest full snapshot was applied (None before the first)."""
        self._reporter: asyncio.Task[None] | None = None
        self._served = asyncio.Event()
        self.replica = ""
        """The name the served revision is reported under (set before `start`)."""

    @property
    def feed_id(self) -> str:
        """The identity of the feed the current state came from ("" before the first
        snapshot)."""
        return self._feed_id

    async def start(self) -> None:
        """Start following the feed in the background."""
        self._channel = channel_to(self._target, options=_CHANNEL_OPTIONS)
        stub = feed_grpc.RecordFeedServiceStub(self._channel)
        self._task = asyncio.create_task(self._run(stub))
        if self.replica:
            self._reporter = asyncio.create_task(self._report(stub))

    async def stop(self) -> None:
        """Stop following and close the channel; the store keeps its state."""
        for task in (self._task, self._reporter):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._reporter = None
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        self._metrics.connected = False

    async def _run(self, stub: feed_grpc.RecordFeedServiceAsyncStub) -> None:
        while True:
            try:
                await self._watch(stub)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.OUT_OF_RANGE:
                    logger.warning(
                        "feed revision gone, re-listing", extra={"details": exc.details()}
                    )
                    self._synced = False
                    self._feed_id = ""
                    self._disconnected()
                    continue
                logger.warning(
                    "feed stream lost",
                    extra={"code": exc.code().name, "details": exc.details()},
                )
            except FeedProtocolError as exc:
                logger.error("feed protocol violation, reconnecting", extra={"error": str(exc)})
            except Exception:
                # A bug (or data we cannot handle) must not end the feed for good: drop the
                # partial state by re-listing from scratch after the backoff.
                logger.exception("applying the feed failed; re-listing")
                self._synced = False
                self._feed_id = ""
            self._disconnected()
            delay = self._rng.uniform(0, self._delay)
            self._delay = min(self._delay * 2, self._backoff_max)
            await asyncio.sleep(delay)

    async def _report(self, stub: feed_grpc.RecordFeedServiceAsyncStub) -> None:
        """Tell the registry which revision this replica serves, each time it moves (and at
        every bookmark), over one long-lived stream; only the newest revision is sent, so a
        burst of revisions costs one message once the stream is free. The registry's
        readiness waits (WaitForReplicas) rest on these reports."""
        while True:
            await self._served.wait()
            call = stub.ReportServedRevisions()
            try:
                while True:
                    self._served.clear()
                    await call.write(
                        feed_pb2.ReportServedRevisionsRequest(
                            replica=self.replica,
                            feed_id=self._feed_id,
                            revision=self._store.snapshot.revision,
                        )
                    )
                    # At most one report per interval: a quiet replica reports a change at
                    # once, a busy one (hundreds of revisions a second) reports the newest
                    # revision every few ms instead of every one.
                    await asyncio.sleep(_REPORT_INTERVAL)
                    await self._served.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the registry went away: report again once it is back
                logger.debug("served-revision report stream lost", extra={"error": str(exc)})
            finally:
                call.cancel()
            self._served.set()
            await asyncio.sleep(self._rng.uniform(self._backoff_initial, self._backoff_max))

    def _report_served(self) -> None:
        if self._synced:
            self._served.set()

    def _disconnected(self) -> None:
        if self._metrics.connected:
            self._metrics.reconnects += 1
        self._metrics.connected = False
        self.state = FeedState.DISCONNECTED if self._synced else FeedState.SYNCING

    async def _watch(self, stub: feed_grpc.RecordFeedServiceAsyncStub) -> None:
        resume = self._synced
        request = feed_pb2.WatchRecordsRequest(
            start_revision=self._store.snapshot.revision + 1 if resume else 0,
            feed_id=self._feed_id if resume else "",
        )
        relist: Relist | None = None
        call = stub.WatchRecords(request)
        try:
            async for message in call:
                self._heard_from_registry()
                event = message.WhichOneof("event")
                if event == "snapshot":
                    if relist is None:
                        relist = self._store.relist()
                        self._relist_started = time.perf_counter()
                    if await self._snapshot_part(message.snapshot, relist):
                        relist = None
                elif event == "changes":
                    self._apply(message.changes)
                elif event == "bookmark":
                    self._bookmark(message.bookmark)
        finally:
            call.cancel()
            if relist is not None:
                relist.release()  # abandoned half-way: the live tables were never touched
        raise FeedProtocolError("the feed stream ended without a status")

    def _heard_from_registry(self) -> None:
        self._metrics.connected = True
        self._delay = self._backoff_initial
        self.last_sync_time = datetime.now(UTC)
        if self._synced:
            self.state = FeedState.LIVE

    async def _snapshot_part(self, part: feed_pb2.SnapshotBatch, relist: Relist) -> bool:
        """Add one snapshot batch to the re-list being built; swap it in on the last. True
        when applied. Each batch is built as it arrives (a few ms for a thousand names) and
        the stream's next read gives the event loop back, so queries go on being answered
        from the current tables while a million names stream in."""
        if part.zone.rstrip(".").lower() != self._zone.rstrip(".").lower():
            raise FeedProtocolError(f"the feed is for zone {part.zone!r}, we serve {self._zone!r}")
        txt = feed_pb2.RECORD_TYPE_TXT
        pending = (
            (record_set.fqdn, record_set.txt_values)
            for record_set in part.record_sets
            if record_set.type == txt
        )
        relist.add_many(pending)
        if not part.last:
            await asyncio.sleep(0)  # a stream read that finds data buffered does not yield
            return False
        relist.finish(part.revision, part.feed_id)
        self._feed_id = part.feed_id
        self._metrics.revision = part.revision
        self._metrics.snapshots_applied += 1
        first = self.last_snapshot_time is None  # a re-list after OUT_OF_RANGE is not first
        self.last_snapshot_time = datetime.now(UTC)
        self._synced = True
        self.state = FeedState.LIVE
        logger.info(
            "feed snapshot applied",
            extra={
                "revision": part.revision,
                "names": relist.names,
                "build_seconds": round(time.perf_counter() - self._relist_started, 4),
            },
        )
        self._report_served()
        if first:
            await self._on_first_snapshot()
        return True

    def _apply(self, batch: feed_pb2.ChangeBatch) -> None:
        if not self._synced:
            raise FeedProtocolError("changes before the snapshot")
        applied = self._store.snapshot.revision
        pending: list[TxtChange] = []
        revision = applied
        for change in batch.changes:
            if change.revision <= applied:
                continue  # already applied (a resume that overlaps)
            if change.revision not in (revision, revision + 1):
                raise FeedProtocolError(
                    f"revision gap: expected {revision + 1}, got {change.revision}"
                )
            revision = change.revision
            converted = _changes(change)
            if converted is not None:
                pending.append(converted)
            self._metrics.lag_seconds = _lag(change.commit_time)
        if revision == applied:
            return
        self._store.apply_changes(pending, revision)
        self._report_served()
        logger.debug(
            "feed changes applied",
            extra={"revision": revision, "changes": [(c.fqdn, c.values) for c in pending]},
        )
        self._metrics.revision = revision
        self._metrics.changes_applied += len(pending)

    def _bookmark(self, bookmark: feed_pb2.Bookmark) -> None:
        if bookmark.feed_id and self._feed_id and bookmark.feed_id != self._feed_id:
            raise FeedProtocolError("bookmark from another feed")
        self._metrics.lag_seconds = _lag(bookmark.time)
        self._report_served()  # a heartbeat: the registry keeps counting this replica
