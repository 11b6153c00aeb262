"""The zone store: incremental revisions must give exactly what a full rebuild gives, and a
query holding an old snapshot keeps seeing it whole."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from pathlib import Path

import dns.name
import pytest

from acmezone_dns.shards import SHARDS, ShardedTable
from acmezone_dns.static_zones import load_static_zones
from acmezone_dns.store import TxtChange, ZoneStore, txt_rdataset
from tests.dns.conftest import SNAPSHOT, ZONE, dns_settings

NAMES = [
    "one.acme.example.test.",
    "a.acme.example.test.",
    "x.y.acme.example.test.",
    "y.acme.example.test.",
    "deep.x.y.acme.example.test.",
    "nobody.acme.example.test.",  # the target of a static CNAME
]


def new_store(tmp_path: Path) -> ZoneStore:
    settings = dns_settings(tmp_path)
    return ZoneStore(load_static_zones(settings), feed_zone=ZONE, txt_ttl=1)


def observable(store: ZoneStore) -> tuple[object, ...]:
    """Everything a query can see of a snapshot, in comparable form."""
    snapshot = store.snapshot
    answers = {k: (p.heads, p.heads_edns, p.body, p.stat) for k, p in snapshot.answers.items()}
    defaults = {k: (p.heads, p.heads_edns, p.body, p.stat) for k, p in snapshot.defaults.items()}
    fallbacks = {k: (p.heads, p.heads_edns, p.body, p.stat) for k, p in snapshot.fallbacks.items()}
    nodes = {k: sorted(n.rrsets) for k, n in snapshot.view.nodes.items()}
    return answers, defaults, fallbacks, nodes, snapshot.record_count, snapshot.zone_record_counts


@pytest.mark.parametrize("seed", range(3))
def test_incremental_changes_equal_a_full_rebuild(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    incremental = new_store(tmp_path)
    incremental.apply_snapshot(SNAPSHOT, 1, "f")
    state = {c.fqdn: c.values for c in SNAPSHOT}
    for revision in range(2, 45):
        batch = []
        for _ in range(rng.randint(1, 3)):
            name = rng.choice(NAMES)
            values = (
                None
                if rng.random() < 0.35
                else tuple(f"v{rng.randint(0, 9)}" for _ in range(rng.randint(0, 3)))
            )
            batch.append(TxtChange(name, values))
            if values is None:
                state.pop(name, None)
            else:
                state[name] = values
        incremental.apply_changes(batch, revision)
        full = new_store(tmp_path)
        full.apply_snapshot(
            [TxtChange(n, v) for n, v in state.items() if v is not None], revision, "f"
        )
        assert observable(incremental) == observable(full), f"revision {revision}"


def test_a_revision_rewrites_only_the_entries_of_the_names_it_touches(tmp_path: Path) -> None:
    """Revisions change the live tables in place: the same dict objects before and after, and
    every entry of a name the revision did not touch is the very object it was."""
    store = new_store(tmp_path)
    bulk = [TxtChange(f"bulk{i}.{ZONE}.", (f"bulk-{i}",)) for i in range(500)]
    store.apply_snapshot([*SNAPSHOT, *bulk], 1, "f")
    snapshot = store.snapshot
    answers, defaults = dict(snapshot.answers), dict(snapshot.defaults)
    store.apply_changes(
        [TxtChange(f"bulk7.{ZONE}.", ("changed",)), TxtChange(f"bulk8.{ZONE}.", None)], 2
    )
    assert store.snapshot is snapshot
    assert snapshot.revision == 2
    changed = {
        k
        for k in answers.keys() | snapshot.answers.keys()
        if answers.get(k) is not snapshot.answers.get(k)
    }
    changed |= {
        k
        for k in defaults.keys() | snapshot.defaults.keys()
        if defaults.get(k) is not snapshot.defaults.get(k)
    }
    bulk7 = b"\x05bulk7\x04acme\x07example\x04test\x00"
    bulk8 = b"\x05bulk8\x04acme\x07example\x04test\x00"
    assert changed == {bulk7 + b"\x00\x10\x00\x01", bulk8 + b"\x00\x10\x00\x01", bulk8}


def test_a_change_reaching_a_static_cname_repacks_it(tmp_path: Path) -> None:
    """`_acme-challenge.www.example.test` is a static CNAME to one.acme...: its pre-packed
    answer embeds the target's TXT values and follows every change to them."""
    store = new_store(tmp_path)
    store.apply_snapshot(SNAPSHOT, 1, "f")
    key = b"\x0f_acme-challenge\x03www\x07example\x04test\x00\x00\x10\x00\x01"
    assert b"value-one-newest" in store.snapshot.answers[key].body
    store.apply_changes([TxtChange(f"one.{ZONE}.", ("fresh",))], 2)
    assert b"fresh" in store.snapshot.answers[key].body
    assert b"value-one-newest" not in store.snapshot.answers[key].body
    store.apply_changes([TxtChange(f"one.{ZONE}.", None)], 3)
    # The target is gone: a TXT question now gets the name's default, the bare CNAME.
    assert key not in store.snapshot.answers
    assert b"fresh" not in store.snapshot.defaults[key[:-4]].body


def test_names_outside_the_zone_are_ignored(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.apply_snapshot([TxtChange("evil.example.com.", ("x",))], 1, "f")
    store.apply_changes(
        [TxtChange("acme.example.test.", ("apex",)), TxtChange("www.example.test.", ("x",))], 2
    )
    assert store.snapshot.record_count == new_store(tmp_path).snapshot.record_count


def test_txt_values_are_split_at_255_bytes() -> None:
    rdataset = txt_rdataset(["a" * 600, ""], ttl=1)
    assert rdataset is not None
    assert sorted([len(s) for s in rd.strings] for rd in rdataset) == [[0], [255, 255, 90]]
    assert txt_rdataset([], ttl=1) is None


def test_an_abandoned_relist_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    """The feed client can lose its stream in the middle of a re-list: the old snapshot stays,
    and later changes build on the old state, not on the half-built one."""
    store = new_store(tmp_path)
    store.apply_snapshot(SNAPSHOT, 1, "feed")
    before = store.snapshot
    relist = store.relist()
    for i in range(2000):
        relist.add(f"bulk{i}.{ZONE}.", (f"bulk-{i}",))
    relist.release()
    assert store.snapshot is before
    # Deleting a name needs the old bookkeeping: a half-built one would not know it.
    later = [TxtChange(f"two.{ZONE}.", ("two",)), TxtChange(f"long.{ZONE}.", None)]
    store.apply_changes(later, 2)
    expected = new_store(tmp_path)
    expected.apply_snapshot(SNAPSHOT, 1, "feed")
    expected.apply_changes(later, 2)
    long_key = b"\x04long\x04acme\x07example\x04test\x00"
    assert long_key not in expected.snapshot.view.nodes
    assert observable(store) == observable(expected)


@pytest.mark.parametrize("seed", range(4))
def test_snapshots_and_revisions_in_any_interleaving_give_the_same_zone(
    tmp_path: Path, seed: int
) -> None:
    """One history of changes, applied to stores that re-list at random points (the snapshot
    in random batch sizes, random name order and with duplicates, as a registry with a
    different layout might send it): every store ends equal to one fresh snapshot of the
    final state."""
    rng = random.Random(seed)
    names = [*NAMES, *(f"n{i}.sub{i % 3}.{ZONE}." for i in range(20))]
    history = [
        [
            TxtChange(
                rng.choice(names),
                None
                if rng.random() < 0.3
                else tuple(f"v{rng.randint(0, 5)}" for _ in range(rng.randint(0, 2))),
            )
            for _ in range(rng.randint(1, 4))
        ]
        for _ in range(60)
    ]
    state: dict[str, tuple[str, ...]] = {}
    store = new_store(tmp_path)
    store.apply_snapshot([], 0, "f")
    for revision, batch in enumerate(history, 1):
        for change in batch:
            if change.values is None:
                state.pop(change.fqdn, None)
            else:
                state[change.fqdn] = change.values
        if rng.random() < 0.15:
            relist = store.relist()
            items = list(state.items())
            rng.shuffle(items)
            items += rng.sample(items, min(len(items), 2))  # the same name twice, same values
            for fqdn, values in items:
                relist.add(fqdn, values)
            relist.finish(revision, "f")
        else:
            store.apply_changes(batch, revision)
    fresh = new_store(tmp_path)
    fresh.apply_snapshot([TxtChange(n, v) for n, v in state.items()], len(history), "f")
    assert observable(store) == observable(fresh)
    assert store.snapshot.revision == len(history)


def test_feed_names_become_keys_as_dnspython_makes_them(tmp_path: Path) -> None:
    """The fast conversion of feed names agrees with dnspython, and names it cannot take
    (escapes, upper case, other zones, the apex, over-long) are handled or refused the same."""
    store = new_store(tmp_path)
    for fqdn in [
        f"one.{ZONE}.",
        f"ONE.{ZONE.upper()}.",
        f"_acme-challenge.d420c923-bbd7-4056-ab64-c3ca54c9b3cf.{ZONE}.",
        f"a.b.c.{ZONE}.",
        f"we\\.ird.{ZONE}.",
        f"sp\\032ace.{ZONE}.",
        f"{'x' * 63}.{ZONE}.",
    ]:
        expected = dns.name.from_text(fqdn).canonicalize().to_wire()
        assert store.feed_key(fqdn) == expected, fqdn
    for outside in [
        f"{ZONE}.",
        "evil.example.com.",
        f"x{ZONE}.",
        f"{'x' * 64}.{ZONE}.",
        ".".join(["y" * 60] * 5) + f".{ZONE}.",
        "..",
    ]:
        assert store.feed_key(outside) is None, outside


GC_PAUSE_SCRIPT = """
import asyncio, gc, sys
from pathlib import Path
from acmezone_dns.static_zones import load_static_zones
from acmezone_dns.store import ZoneStore
from tests.dns.conftest import ZONE, dns_settings

async def main() -> None:
    zones = load_static_zones(dns_settings(Path(sys.argv[1])))
    store = ZoneStore(zones, feed_zone=ZONE, txt_ttl=1, freeze_gc=True)
    seen = []

    async def watch() -> None:
        while True:
            seen.append(gc.isenabled())
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    relist = store.relist()
    for batch in range(20):
        for i in range(25):
            relist.add(f"n{batch}-{i}.{ZONE}.", ("v",))
        await asyncio.sleep(0)
    relist.finish(1, "feed")
    await asyncio.sleep(0)
    watcher.cancel()
    assert len(seen) > 10 and seen[0] and not any(seen[1:-1]) and seen[-1], seen
    assert gc.isenabled() and gc.get_freeze_count() > 0
    abandoned = store.relist()
    abandoned.add(f"late.{ZONE}.", ("v",))
    assert not gc.isenabled()
    abandoned.release()
    assert gc.isenabled()
    print("ok")

asyncio.run(main())
"""


def test_the_service_build_holds_the_cyclic_gc_and_freezes_the_result(tmp_path: Path) -> None:
    """With freeze_gc (process-wide, so in a child process): no cyclic collection runs while
    a re-list is built, the new zone ends up frozen out of the collector's sight, and an
    abandoned re-list gives the collector back."""
    result = subprocess.run(
        [sys.executable, "-c", GC_PAUSE_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_a_batch_add_equals_one_add_at_a_time(tmp_path: Path) -> None:
    """`Relist.add_many` builds the commonest record sets itself: whatever the mix (plain
    names, deeper ones, upper case, several or long values, a repeat, a name also holding
    static data, a name outside the zone), it ends exactly where `add` one by one does."""
    record_sets: list[tuple[str, tuple[str, ...]]] = [
        *((c.fqdn, c.values or ()) for c in SNAPSHOT),
        *((f"plain{i}.{ZONE}.", (f"v{i}",)) for i in range(50)),
        (f"plain3.{ZONE}.", ("again",)),
        (f"UPPER.{ZONE}.", ("u",)),
        (f"deep.er.{ZONE}.", ("d",)),
        (f"two.{ZONE}.", ("a", "b")),
        (f"long.{ZONE}.", ("L" * 256,)),
        (f"ns1.{ZONE}.", ("static-and-feed",)),
        ("elsewhere.example.com.", ("x",)),
    ]
    batched = new_store(tmp_path)
    relist = batched.relist()
    relist.add_many(iter(record_sets[:20]))
    relist.add_many(iter(record_sets[20:]))
    relist.finish(1, "f")
    one_by_one = new_store(tmp_path)
    relist = one_by_one.relist()
    for fqdn, values in record_sets:
        relist.add(fqdn, values)
    relist.finish(1, "f")
    assert observable(batched) == observable(one_by_one)


async def test_replaced_tables_are_taken_apart_in_slices(tmp_path: Path) -> None:
    """After a re-list on the event loop, the old generation's tables are emptied in the
    background, a shard per loop turn, and the new ones are untouched."""
    store = new_store(tmp_path)
    store.apply_snapshot([TxtChange(f"old{i}.{ZONE}.", ("o",)) for i in range(50_000)], 1, "f")
    old = store.snapshot
    relist = store.relist()
    relist.add_many((f"new{i}.{ZONE}.", ("n",)) for i in range(1000))
    relist.finish(2, "f")
    new = observable(store)
    before = len(old.answers)
    assert before > 50_000  # the feed names' and the static names' answers
    await asyncio.sleep(0)
    assert 0 < len(old.answers) < before  # one shard gone, the loop was given back
    turns = 1
    while old.answers or old.defaults:
        await asyncio.sleep(0)
        turns += 1
        assert turns <= 3 * SHARDS + 10  # a shard or slice a turn, never stuck
    assert not old.answers
    assert not old.defaults
    assert observable(store) == new


def test_a_big_relist_grows_no_table_by_more_than_a_shard(tmp_path: Path) -> None:
    """The big tables are split by key hash (shards.py): 100k names leave every shard of the
    feed, answer and default tables a small dict near its even share, so no single growth
    copies more than a sliver of the zone."""
    store = new_store(tmp_path)
    relist = store.relist()
    relist.add_many((f"n{i}.{ZONE}.", (f"v{i}",)) for i in range(100_000))
    relist.finish(1, "f")
    tables = store._tables
    for table in (tables.feed, tables.answers, tables.defaults):
        sizes = [len(shard) for shard in table.shards]
        assert len(sizes) == SHARDS
        assert sum(sizes) >= 100_000
        assert max(sizes) < 2 * 100_000 / SHARDS
        assert max(sys.getsizeof(shard) for shard in table.shards) < 100_000
    for i in (0, 99_999):
        key = store.feed_key(f"n{i}.{ZONE}.")
        assert key is not None
        assert key in tables.feed.shard_of(key)


def test_a_sharded_table_behaves_as_a_dict() -> None:
    """Random inserts, replacements, deletions and pops leave a ShardedTable equal to a
    dict that had the same operations, by every reader the store and the responder use."""
    rng = random.Random(11)
    table: ShardedTable[int] = ShardedTable()
    model: dict[bytes, int] = {}
    keys = [f"k{i}".encode() for i in range(3000)]
    for step in range(20_000):
        key = rng.choice(keys)
        action = rng.random()
        if action < 0.5:
            table[key] = model[key] = step
        elif action < 0.7:
            assert table.pop(key, None) == model.pop(key, None)
        elif action < 0.8 and key in model:
            del table[key]
            del model[key]
        else:
            assert table.get(key) == model.get(key)
            assert (key in table) == (key in model)
    assert len(table) == len(model)
    assert dict(table) == table.copy() == dict(table.pairs()) == model
    assert table == model
    assert bool(table)
    assert 42 not in table
    table.update_pairs([(b"k1", -1), (b"k1", -2)])
    assert table[b"k1"] == -2
    with pytest.raises(KeyError):
        table[b"absent"]
    table.clear()
    assert not table
    assert len(table) == 0


def test_a_relist_shares_the_answers_it_leaves_unchanged(tmp_path: Path) -> None:
    """While a re-list is built the old generation is still served, so both are in memory:
    a name whose answer is byte for byte the live one takes the live `Packed` (answers are
    never changed in place), and only changed names get a new one."""
    store = new_store(tmp_path)
    store.apply_snapshot([TxtChange(f"n{i}.{ZONE}.", (f"v{i}",)) for i in range(100)], 1, "f")
    live = {k: p for k, p in store.snapshot.answers.items() if k.startswith(b"\x02n")}
    assert len(live) == 10  # n0 .. n9 (the others have longer labels)
    relist = store.relist()
    relist.add_many((f"n{i}.{ZONE}.", ("changed" if i == 3 else f"v{i}",)) for i in range(100))
    relist.finish(2, "f")
    answers = store.snapshot.answers
    for key, packed in live.items():
        if key.startswith(b"\x02n3"):
            assert answers[key] is not packed
            assert b"changed" in answers[key].body
        else:
            assert answers[key] is packed
    fresh = new_store(tmp_path)
    fresh.apply_snapshot(
        [TxtChange(f"n{i}.{ZONE}.", ("changed" if i == 3 else f"v{i}",)) for i in range(100)],
        2,
        "f",
    )
    assert observable(store) == observable(fresh)
