"""Reading a repository's whole snapshot in tests, from the parts it streams."""

from __future__ import annotations

from acmezone_registry.model import RecordSet
from acmezone_registry.storage.repository import Repository


async def full_snapshot(
    repository: Repository, batch_size: int = 1000
) -> tuple[int, list[RecordSet]]:
    """Every part of one snapshot joined, with its revision; every part must carry the same
    revision."""
    revisions: set[int] = set()
    record_sets: list[RecordSet] = []
    async for revision, part in repository.snapshot_parts(batch_size):
        revisions.add(revision)
        record_sets.extend(part)
    assert len(revisions) == 1, revisions
    return revisions.pop(), record_sets
