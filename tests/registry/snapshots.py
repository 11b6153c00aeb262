"""Reading the whole snapshot in tests, from the parts it streams."""

from __future__ import annotations

from acmezone_registry.model import RecordSet
from acmezone_registry.storage.record_sets import RecordSets


async def full_snapshot(
    record_sets: RecordSets, batch_size: int = 1000
) -> tuple[int, list[RecordSet]]:
    """Every part of one snapshot joined, with its revision; every part must carry the same
    revision."""
    revisions: set[int] = set()
    joined: list[RecordSet] = []
    async for revision, part in record_sets.snapshot_parts(batch_size):
        revisions.add(revision)
        joined.extend(part)
    assert len(revisions) == 1, revisions
    return revisions.pop(), joined
