"""The zone store: incremental revisions must give exactly what a full rebuild gives, and a
query holding an old snapshot keeps seeing it whole."""

from __future__ import annotations

import random
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
