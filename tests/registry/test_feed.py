"""The record feed: snapshot, live changes, resume, compaction, bookmarks, and replicas."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from acmezone_common.errors import InvalidArgumentError, OutOfRangeError, UnavailableError
from acmezone_registry import errors
from acmezone_registry.access import Caller
from acmezone_registry.feed import RecordFeed
from acmezone_registry.model import Bookmark, ChangeBatch, ChangeType, SnapshotPart, WatchEvent
from acmezone_registry.replicas import ReplicaTracker
from tests.registry.conftest import ZONE, Stack, open_stack
from tests.registry.values import acme_digest

ANYONE = Caller(address=None)


def make_feed(stack: Stack, *, bookmark: float = 30.0, poll: float = 30.0) -> RecordFeed:
    return RecordFeed(
        stack.stores.log,
        stack.stores.record_sets,
        stack.metrics,
        bookmark_interval=bookmark,
        poll_interval=poll,
        replicas=ReplicaTracker(timeout=30.0),
    )


def watchers(stack: Stack) -> float:
    """The feed-watchers gauge, read as a scrape would."""
    [metric] = stack.metrics.feed_watchers.collect()
    [sample] = metric.samples
    return sample.value


async def next_event(stream: AsyncIterator[WatchEvent], within: float = 5.0) -> WatchEvent:
    return await asyncio.wait_for(anext(stream), within)


@pytest.fixture
async def feed(stack: Stack) -> AsyncIterator[RecordFeed]:
    record_feed = make_feed(stack)
    await record_feed.start()
    yield record_feed
    await record_feed.stop()


async def test_snapshot_then_live_changes(stack: Stack, feed: RecordFeed) -> None:
    issued = await stack.registrations.create(ANYONE)
    sub = issued.registration.subdomain
    me = Caller(address=None, username=issued.registration.username, password=issued.password)
    await stack.registrations.add_txt_value(me, sub, acme_digest(1))
    stream = aiter(feed.watch(0, ""))
    snapshot = await next_event(stream)
    assert isinstance(snapshot, SnapshotPart)
    assert snapshot.last
    assert snapshot.revision == 2
    assert snapshot.zone == f"{ZONE}."
    assert [(r.fqdn, r.txt_values) for r in snapshot.record_sets] == [
        (f"{sub}.{ZONE}.", (acme_digest(1),))
    ]
    pending = asyncio.ensure_future(next_event(stream))
    # Not a synchronisation (a commit before the watcher parks is read, not missed): it lets
    # the watcher park, so the change takes the wake-up path whose latency is measured.
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await stack.registrations.add_txt_value(me, sub, acme_digest(2))
    batch = await pending
    assert time.monotonic() - started < 1.0
    assert isinstance(batch, ChangeBatch)
    assert [(c.revision, c.type, c.record_set.txt_values) for c in batch.changes] == [
        (3, ChangeType.PUT, (acme_digest(2), acme_digest(1)))
    ]
    assert watchers(stack) == 1
    await stream.aclose()  # type: ignore[attr-defined]
    assert watchers(stack) == 0


async def test_large_snapshot_comes_in_batches(stack: Stack, feed: RecordFeed) -> None:
    for _ in range(3):
        await stack.registrations.create(ANYONE)
    import acmezone_registry.feed as feed_module

    original = feed_module.SNAPSHOT_BATCH_SIZE
    feed_module.SNAPSHOT_BATCH_SIZE = 2
    try:
        stream = aiter(feed.watch(0, ""))
        first, second = await next_event(stream), await next_event(stream)
    finally:
        feed_module.SNAPSHOT_BATCH_SIZE = original
    assert isinstance(first, SnapshotPart)
    assert isinstance(second, SnapshotPart)
    assert (len(first.record_sets), first.last, len(second.record_sets), second.last) == (
        2,
        False,
        1,
        True,
    )
    assert first.revision == second.revision == 3


async def test_empty_feed_still_sends_a_final_snapshot(feed: RecordFeed) -> None:
    snapshot = await next_event(aiter(feed.watch(0, "")))
    assert isinstance(snapshot, SnapshotPart)
    assert (snapshot.record_sets, snapshot.revision, snapshot.last) == ((), 0, True)


async def test_resume_from_revision_replays_exactly_the_missed_changes(
    stack: Stack, feed: RecordFeed
) -> None:
    subs = [(await stack.registrations.create(ANYONE)).registration.subdomain for _ in range(4)]
    status = await feed.status()
    stream = aiter(feed.watch(3, status.feed_id))
    batch = await next_event(stream)
    assert isinstance(batch, ChangeBatch)
    assert [c.revision for c in batch.changes] == [3, 4]
    assert [c.record_set.fqdn for c in batch.changes] == [f"{s}.{ZONE}." for s in subs[2:]]
    # Resuming at head + 1 waits for the future without error: with nothing to send, what
    # comes first is the idle bookmark at the head (never a change or an error), and the next
    # change follows the bookmarks.
    quiet = make_feed(stack, bookmark=0.1)
    await quiet.start()
    try:
        live = aiter(quiet.watch(5, status.feed_id))
        idle = await next_event(live)
        assert isinstance(idle, Bookmark)
        assert idle.revision == 4
        await stack.registrations.delete(ANYONE, subs[0])
        change = await next_event(live)
        while isinstance(change, Bookmark):
            assert change.revision == 4
            change = await next_event(live)
        assert isinstance(change, ChangeBatch)
        assert [(c.revision, c.type) for c in change.changes] == [(5, ChangeType.DELETE)]
    finally:
        await quiet.stop()


async def test_out_of_range_resumes(stack: Stack, feed: RecordFeed) -> None:
    for _ in range(5):
        await stack.registrations.create(ANYONE)
    status = await feed.status()
    await stack.stores.log.compact(keep_revisions=2)
    cases = [
        (2, status.feed_id, errors.REVISION_COMPACTED),
        (7, status.feed_id, errors.REVISION_IN_FUTURE),
        (4, "another-feed", errors.FEED_ID_MISMATCH),
    ]
    for start, feed_id, reason in cases:
        with pytest.raises(OutOfRangeError) as out:
            await next_event(aiter(feed.watch(start, feed_id)))
        assert out.value.reason == reason
    with pytest.raises(InvalidArgumentError) as negative:
        await next_event(aiter(feed.watch(-1, "")))
    assert negative.value.reason == errors.INVALID_START_REVISION
    ok = await next_event(aiter(feed.watch(4, status.feed_id)))
    assert isinstance(ok, ChangeBatch)
    assert [c.revision for c in ok.changes] == [4, 5]


async def test_idle_stream_gets_bookmarks(stack: Stack) -> None:
    feed = make_feed(stack, bookmark=0.2)
    await feed.start()
    try:
        await stack.registrations.create(ANYONE)
        stream = aiter(feed.watch(0, ""))
        assert isinstance(await next_event(stream), SnapshotPart)
        bookmark = await next_event(stream, within=2)
        assert isinstance(bookmark, Bookmark)
        assert bookmark.revision == 1
        assert bookmark.feed_id == (await feed.status()).feed_id
    finally:
        await feed.stop()


async def test_stop_ends_watchers_with_unavailable(stack: Stack) -> None:
    feed = make_feed(stack)
    await feed.start()
    stream = aiter(feed.watch(0, ""))
    await next_event(stream)
    pending = asyncio.ensure_future(next_event(stream))
    await asyncio.sleep(0.05)  # parked or not, a stopping feed ends the watch the same way
    await feed.stop()
    with pytest.raises(UnavailableError) as stopped:
        await pending
    assert stopped.value.reason == errors.SHUTTING_DOWN


async def test_change_on_one_replica_reaches_watcher_on_another(database_url: str) -> None:
    """Two registries on one database: B's watcher sees A's commit. On PostgreSQL the poll
    interval is 30 s, so only NOTIFY can deliver it in time; SQLite relies on the poll."""
    replica_a = await open_stack(database_url)
    replica_b = await open_stack(database_url, CollectorRegistry())
    poll = 0.1 if replica_b.database.is_sqlite else 30.0
    feed_b = make_feed(replica_b, poll=poll)
    await feed_b.start()
    try:
        stream = aiter(feed_b.watch(0, ""))
        assert isinstance(await next_event(stream), SnapshotPart)
        await asyncio.wait_for(feed_b.listening.wait(), 5)  # B's LISTEN is in place
        started = time.monotonic()
        issued = await replica_a.registrations.create(ANYONE)
        change = await next_event(stream, within=5)
        elapsed = time.monotonic() - started
        assert isinstance(change, ChangeBatch)
        assert change.changes[0].record_set.fqdn == f"{issued.registration.fulldomain}."
        assert elapsed < 1.0, f"replica B saw the change after {elapsed:.3f}s"
    finally:
        await feed_b.stop()
        await replica_a.database.dispose()
        await replica_b.database.dispose()


async def test_memory_and_table_revisions_interleave_in_order(database_url: str) -> None:
    """Revisions 1 and 3 are committed here (kept in memory), 2 by another replica (only in
    the table): a watcher from 1 still gets 1, 2, 3 exactly once each, in order."""
    here = await open_stack(database_url)
    elsewhere = await open_stack(database_url, CollectorRegistry())
    feed = make_feed(here)
    await feed.start()
    try:
        first = await here.registrations.create(ANYONE)
        second = await elsewhere.registrations.create(ANYONE)
        third = await here.registrations.create(ANYONE)
        status = await feed.status()
        stream = aiter(feed.watch(1, status.feed_id))
        seen: list[tuple[int, str]] = []
        while len(seen) < 3:
            batch = await next_event(stream)
            assert isinstance(batch, ChangeBatch)
            seen += [(c.revision, c.record_set.fqdn) for c in batch.changes]
        assert seen == [
            (1, f"{first.registration.fulldomain}."),
            (2, f"{second.registration.fulldomain}."),
            (3, f"{third.registration.fulldomain}."),
        ]
    finally:
        await feed.stop()
        await here.database.dispose()
        await elsewhere.database.dispose()
