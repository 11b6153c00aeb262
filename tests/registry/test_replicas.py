"""The replica tracker: every live dns replica's served revision, and waits on them."""

from __future__ import annotations

import asyncio

import pytest

from acmezone_common.errors import DeadlineExceededError, InvalidArgumentError
from acmezone_registry import errors
from acmezone_registry.replicas import ReplicaTracker


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_no_replica_means_nothing_to_wait_for() -> None:
    tracker = ReplicaTracker(timeout=30)
    assert await tracker.wait_for(7, "feed", 0.1) == []


async def test_a_wait_ends_when_the_last_replica_reports_the_revision() -> None:
    tracker = ReplicaTracker(timeout=30)
    with tracker.stream() as first, tracker.stream() as second:
        first("dns-a", "feed", 5)
        second("dns-b", "feed", 3)
        waiting = asyncio.ensure_future(tracker.wait_for(5, "feed", 5))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        second("dns-b", "feed", 4)
        await asyncio.sleep(0.05)
        assert not waiting.done()
        second("dns-b", "feed", 6)
        replicas = await asyncio.wait_for(waiting, 1)
    assert [(r.replica, r.revision, r.connected) for r in replicas] == [
        ("dns-a", 5, True),
        ("dns-b", 6, True),
    ]


async def test_a_timeout_names_every_replica_behind() -> None:
    tracker = ReplicaTracker(timeout=30)
    with tracker.stream() as a, tracker.stream() as b, tracker.stream() as c:
        a("dns-a", "feed", 9)
        b("dns-b", "feed", 2)
        c("dns-c", "old-feed", 9)
        with pytest.raises(DeadlineExceededError) as lagging:
            await tracker.wait_for(9, "feed", 0.2)
    assert lagging.value.reason == errors.REPLICAS_LAGGING
    assert "dns-b at revision 2" in lagging.value.message
    assert "dns-c at revision 9 of another feed" in lagging.value.message
    assert "dns-a" not in lagging.value.message
    assert lagging.value.metadata == {"lagging": "dns-b,dns-c"}


async def test_a_disconnected_replica_is_waited_for_until_it_times_out() -> None:
    clock = Clock()
    tracker = ReplicaTracker(timeout=30, clock=clock)
    with tracker.stream() as report:
        report("dns-a", "feed", 1)
    (gone,) = tracker.live()
    assert not gone.connected
    with pytest.raises(DeadlineExceededError, match=r"dns-a at revision 1 \(disconnected\)"):
        await tracker.wait_for(2, "feed", 0.05)
    clock.now += 31
    assert tracker.live() == []
    assert await tracker.wait_for(2, "feed", 0.05) == []


async def test_a_replica_reporting_on_two_streams_stays_connected_until_both_end() -> None:
    tracker = ReplicaTracker(timeout=30)
    with tracker.stream() as old:
        old("dns-a", "feed", 1)
        with tracker.stream() as new:
            new("dns-a", "feed", 2)
        assert tracker.live()[0].connected
    assert not tracker.live()[0].connected


def test_bad_reports_are_refused() -> None:
    tracker = ReplicaTracker(timeout=30)
    with tracker.stream() as report:
        for name in ("", "x" * 254):
            with pytest.raises(InvalidArgumentError) as bad:
                report(name, "feed", 1)
            assert bad.value.reason == errors.INVALID_REPLICA
        with pytest.raises(InvalidArgumentError) as negative:
            report("dns-a", "feed", -1)
        assert negative.value.reason == errors.INVALID_REVISION
    assert tracker.live() == []
