"""The zone store: incremental revisions must give exactly what a full rebuild gives, and a
query holding an old snapshot keeps seeing it whole."""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import sys
from pathlib import Path

import pytest

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
    answers = {k: (p.heads, p.heads_edns, p.body) for k, p in snapshot.answers.items()}
    defaults = {k: (p.heads, p.heads_edns, p.body) for k, p in snapshot.defaults.items()}
    fallbacks = {k: (p.heads, p.heads_edns, p.body) for k, p in snapshot.fallbacks.items()}
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


def test_old_snapshots_are_never_mutated(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.apply_snapshot(SNAPSHOT, 1, "f")
    before = store.snapshot
    seen = observable(store)
    store.apply_changes([TxtChange("one.acme.example.test.", None)], 2)
    store.apply_changes([TxtChange("new.acme.example.test.", ("n",))], 3)
    assert store.snapshot is not before
    current = store.snapshot
    store.snapshot = before
    assert observable(store) == seen
    store.snapshot = current
    assert store.snapshot.revision == 3


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


async def test_a_cancelled_relist_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    """The feed client can be stopped in the middle of a cooperative re-list: the old snapshot
    stays, and later changes build on the old state, not on the half-built one."""
    store = new_store(tmp_path)
    store.apply_snapshot(SNAPSHOT, 1, "feed")
    before = store.snapshot
    relist = [TxtChange(f"bulk{i}.{ZONE}.", (f"bulk-{i}",)) for i in range(2000)]
    build = asyncio.create_task(store.apply_snapshot_cooperatively(relist, 5, "other-feed"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert not build.done()
    build.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await build
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


async def test_a_cooperative_relist_equals_a_one_go_relist(tmp_path: Path) -> None:
    changes = [TxtChange(f"n{i}.sub{i % 7}.{ZONE}.", (f"v{i}",)) for i in range(300)]
    stepwise = new_store(tmp_path)
    await stepwise.apply_snapshot_cooperatively([*SNAPSHOT, *changes], 1, "feed")
    at_once = new_store(tmp_path)
    at_once.apply_snapshot([*SNAPSHOT, *changes], 1, "feed")
    assert observable(stepwise) == observable(at_once)
    assert stepwise.snapshot.revision == 1


GC_PAUSE_SCRIPT = """
import asyncio, gc, sys
from pathlib import Path
from acmezone_dns.static_zones import load_static_zones
from acmezone_dns.store import TxtChange, ZoneStore
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
    relist = [TxtChange(f"n{i}.{ZONE}.", ("v",)) for i in range(500)]
    await store.apply_snapshot_cooperatively(relist, 1, "feed")
    watcher.cancel()
    assert len(seen) > 10 and not any(seen[1:-1]), seen[:5]
    assert gc.isenabled() and gc.get_freeze_count() > 0
    print("ok")

asyncio.run(main())
"""


def test_the_service_build_holds_the_cyclic_gc_and_freezes_the_result(tmp_path: Path) -> None:
    """With freeze_gc (process-wide, so in a child process): no cyclic collection runs while
    a re-list is built, and the new zone ends up frozen out of the collector's sight."""
    result = subprocess.run(
        [sys.executable, "-c", GC_PAUSE_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
