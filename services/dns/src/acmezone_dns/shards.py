"""A table split by key hash into many small dicts, for the zone's big lookup tables.

Why: a dict grows by copying its whole table into one twice the size, in one C call that holds
the GIL. At a million names the feed and answer tables pass 699,051 entries during a re-list
(or on the registration that tips them over, live) and the copy took 30-170 ms on this
machine, most of it faulting in 40 MB of fresh memory; every query waits while it runs. Split
into `SHARDS` dicts, each grows on its own at a few thousand entries, in well under a
millisecond, and since keys hash evenly the shards' growths are spread over tens of thousands
of insertions instead of landing on one.

The C hot loop (`_native_batch.c`, `lookup_sharded`) reads `ShardedTable.shards` directly and
picks the shard exactly as `shard_of` does: the key's `hash()` masked to the low bits. Bytes
hashes are randomised per process, which is fine: both sides run in the same one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping
from typing import TypeVar, overload

SHARD_BITS = 8
SHARDS = 1 << SHARD_BITS
"""At 1M names each shard holds about 4k entries: it grows in about 50 µs. At 1k names the
256 dicts cost about 60 KB per table."""
SHARD_MASK = SHARDS - 1
"""`hash(key) & SHARD_MASK` is the shard of `key`, here, in the C loop and in code that binds
the shards itself (`Relist.add_many`)."""

V = TypeVar("V")
_D = TypeVar("_D")


class ShardedTable(MutableMapping[bytes, V]):
    """A `dict[bytes, V]` split over `SHARDS` dicts by key hash (see the module docstring).
    The commonest operations are written out rather than inherited: the responder's slow
    path and the re-list loop call them once per query or name."""

    __slots__ = ("shards",)

    def __init__(self, items: Iterable[tuple[bytes, V]] = ()) -> None:
        self.shards: tuple[dict[bytes, V], ...] = tuple({} for _ in range(SHARDS))
        """The dicts, in shard order; the C loop reads them."""
        self.update_pairs(items)

    def shard_of(self, key: bytes) -> dict[bytes, V]:
        """The dict that holds (or would hold) `key`."""
        return self.shards[hash(key) & SHARD_MASK]

    @overload
    def get(self, key: bytes, /) -> V | None: ...

    @overload
    def get(self, key: bytes, default: V | _D, /) -> V | _D: ...

    def get(self, key: bytes, default: object = None) -> object:
        return self.shards[hash(key) & SHARD_MASK].get(key, default)

    def __getitem__(self, key: bytes) -> V:
        return self.shards[hash(key) & SHARD_MASK][key]

    def __setitem__(self, key: bytes, value: V) -> None:
        self.shards[hash(key) & SHARD_MASK][key] = value

    def __delitem__(self, key: bytes) -> None:
        del self.shards[hash(key) & SHARD_MASK][key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and key in self.shards[hash(key) & SHARD_MASK]

    @overload
    def pop(self, key: bytes, /) -> V: ...

    @overload
    def pop(self, key: bytes, default: V | _D, /) -> V | _D: ...

    def pop(self, key: bytes, *default: object) -> object:
        return self.shards[hash(key) & SHARD_MASK].pop(key, *default)

    def __len__(self) -> int:
        return sum(map(len, self.shards))

    def __iter__(self) -> Iterator[bytes]:
        for shard in self.shards:
            yield from shard

    def __bool__(self) -> bool:
        return any(self.shards)

    def __repr__(self) -> str:
        return f"ShardedTable({len(self)} entries)"

    def update_pairs(self, items: Iterable[tuple[bytes, V]]) -> None:
        """Insert or replace every (key, value), in order (a later repeat wins)."""
        shards = self.shards
        for key, value in items:
            shards[hash(key) & SHARD_MASK][key] = value

    def pairs(self) -> Iterator[tuple[bytes, V]]:
        """Every (key, value), shard by shard: `items()` without a lookup per key."""
        for shard in self.shards:
            yield from shard.items()

    def clear(self) -> None:
        for shard in self.shards:
            shard.clear()

    def copy(self) -> dict[bytes, V]:
        """Every entry in one plain dict (a zone transfer's consistent picture)."""
        whole: dict[bytes, V] = {}
        for shard in self.shards:
            whole.update(shard)
        return whole
