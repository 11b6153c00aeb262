"""The feed snapshot streamed from the table in parts: each name once, in bounded parts, and
every part consistent at one revision even while writers commit in the middle of the stream."""

from __future__ import annotations

import contextlib

from acmezone_registry.access import Caller, parse_address
from acmezone_registry.model import RecordSet
from tests.registry.conftest import ZONE, Stack
from tests.registry.snapshots import full_snapshot
from tests.registry.values import acme_digest

ANYONE = Caller(parse_address("127.0.0.1"))


def owner(username: str, password: str) -> Caller:
    return Caller(parse_address("127.0.0.1"), username=username, password=password)


async def test_parts_are_bounded_and_hold_every_name_once(stack: Stack) -> None:
    issued = [await stack.registrations.create(ANYONE, max_txt_values=3) for _ in range(23)]
    for index, mine in enumerate(issued[:10]):
        me = owner(mine.registration.username, mine.password)
        for n in range(index % 3 + 1):
            await stack.registrations.add_txt_value(
                me, mine.registration.subdomain, acme_digest((index, n))
            )
    sizes = []
    names: list[str] = []
    async for _, part in stack.stores.record_sets.snapshot_parts(5):
        sizes.append(len(part))
        names += [record_set.fqdn for record_set in part]
    assert sizes == [5, 5, 5, 5, 3]
    assert sorted(names) == sorted(f"{i.registration.fulldomain}." for i in issued)
    _, record_sets = await full_snapshot(stack.stores.record_sets)
    by_name = {rs.fqdn: rs.txt_values for rs in record_sets}
    for index, mine in enumerate(issued[:10]):
        # newest first, as the feed promises
        expected = tuple(acme_digest((index, n)) for n in reversed(range(index % 3 + 1)))
        assert by_name[f"{mine.registration.fulldomain}."] == expected
    for mine in issued[10:]:
        assert by_name[f"{mine.registration.fulldomain}."] == ()


async def test_an_empty_registry_streams_one_empty_part(stack: Stack) -> None:
    parts = [part async for part in stack.stores.record_sets.snapshot_parts(10)]
    assert parts == [(0, [])]


async def test_writes_during_the_stream_do_not_leak_into_it(stack: Stack) -> None:
    """The stream reads one transaction: a value published and a registration created after
    the first part was read are in no part, and the revision is the one before them."""
    issued = [await stack.registrations.create(ANYONE) for _ in range(12)]
    first = issued[0]
    me = owner(first.registration.username, first.password)
    parts = stack.stores.record_sets.snapshot_parts(4)
    async with contextlib.aclosing(parts):
        revision, part = await anext(parts)
        await stack.registrations.add_txt_value(me, first.registration.subdomain, acme_digest(1))
        late = await stack.registrations.create(ANYONE)
        seen: list[RecordSet] = list(part)
        async for later_revision, later in parts:
            assert later_revision == revision
            seen += later
    assert revision == len(issued)
    assert {rs.fqdn for rs in seen} == {f"{i.registration.fulldomain}." for i in issued}
    assert f"{late.registration.fulldomain}." not in {rs.fqdn for rs in seen}
    assert all(rs.txt_values == () for rs in seen)
    now_revision, now = await full_snapshot(stack.stores.record_sets)
    assert now_revision == revision + 2
    assert {rs.fqdn: rs.txt_values for rs in now}[f"{first.registration.fulldomain}."] == (
        acme_digest(1),
    )
    assert ZONE in late.registration.fulldomain
