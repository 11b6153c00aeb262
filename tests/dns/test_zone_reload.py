"""Live static zones: a reloaded static set gives exactly what a fresh store built from it gives,
feed names kept; a running server picks up an edited zone file without a restart, and refuses a
bad one while serving the old zone."""

from __future__ import annotations

import os
import random
from pathlib import Path

import dns.name
import dns.rcode
import dns.rdatatype
import pytest
from prometheus_client import CollectorRegistry

from acmezone_dns.static_zones import load_static_zones
from acmezone_dns.store import TxtChange, ZoneStore
from tests.dns.conftest import (
    EXAMPLE_ZONE,
    SNAPSHOT,
    ZONE,
    dns_settings,
    query_udp,
    running_dns,
    v4,
)
from tests.dns.test_store import NAMES, observable

EXTRA_LINES = [
    "_acme-challenge.new CNAME one.acme.example.test.",
    "_acme-challenge.gone CNAME x.y.acme.example.test.",
    "deeper.ent.here A 192.0.2.99",
    "alias2 CNAME alias",
    "chain CNAME _acme-challenge.new",
    "www2 TXT static-text",
]


def _write(path: Path, lines: list[str], *, serial: int, drop_www: bool = False) -> None:
    text = EXAMPLE_ZONE.replace(" 7 3600", f" {serial} 3600")
    if drop_www:
        text = text.replace("www     A     192.0.2.10\n", "")
    path.write_text(text + "".join(line + "\n" for line in lines))


def _fresh(tmp_path: Path, state: dict[str, tuple[str, ...]], revision: int) -> ZoneStore:
    store = ZoneStore(load_static_zones(dns_settings_keep(tmp_path)), feed_zone=ZONE, txt_ttl=1)
    store.apply_snapshot([TxtChange(n, v) for n, v in state.items()], revision, "f")
    return store


def dns_settings_keep(tmp_path: Path) -> object:
    """Settings over the zone file as the test left it (dns_settings would rewrite it)."""
    zone_file = tmp_path / "example.test.zone"
    text = zone_file.read_text()
    settings = dns_settings(tmp_path)
    zone_file.write_text(text)
    return settings


@pytest.mark.parametrize("seed", range(8))
def test_static_reloads_among_revisions_and_relists_equal_a_fresh_store(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    settings = dns_settings(tmp_path)
    zone_file = tmp_path / "example.test.zone"
    store = ZoneStore(load_static_zones(settings), feed_zone=ZONE, txt_ttl=1)
    state = {c.fqdn: c.values or () for c in SNAPSHOT}
    store.apply_snapshot(SNAPSHOT, 1, "f")
    relist = None
    for revision in range(2, 40):
        roll = rng.random()
        if roll < 0.3:
            lines = rng.sample(EXTRA_LINES, rng.randint(0, len(EXTRA_LINES)))
            serial = revision if rng.random() < 0.5 else 7  # half the edits keep the SOA
            _write(zone_file, lines, serial=serial, drop_www=rng.random() < 0.2)
            store.replace_static(load_static_zones(settings))
        elif roll < 0.4 and relist is None:
            relist = store.relist()
            for fqdn, values in state.items():
                relist.add(fqdn, values)
            relist_revision = revision - 1
        else:
            name = rng.choice(NAMES)
            values = None if rng.random() < 0.3 else (f"v{revision}",)
            if values is None:
                state.pop(name, None)
            else:
                state[name] = values
            store.apply_changes([TxtChange(name, values)], revision)
            if relist is not None:
                relist.finish(relist_revision, "f")  # behind: the feed would resume from here
                relist = None
                store.apply_changes([TxtChange(name, values)], revision)
        assert observable(store) == observable(_fresh(tmp_path, state, revision)), revision


async def test_an_edited_zone_file_is_served_without_a_restart(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    async with running_dns(tmp_path, registry, zone_reload_interval_seconds=0.05) as app:
        app.store.apply_snapshot(SNAPSHOT, 1, "f")
        zone_file = tmp_path / "example.test.zone"
        name = "_acme-challenge.new.example.test."
        before = await query_udp(v4(app), name, "TXT")
        assert before.rcode() == dns.rcode.NXDOMAIN
        zone_file.write_text(EXAMPLE_ZONE + f"{name} CNAME one.{ZONE}.\n")
        await app.reloader.wait_attempts(1)
        after = await query_udp(v4(app), name, "TXT")
        assert after.rcode() == dns.rcode.NOERROR
        txt = after.find_rrset(after.answer, dns.name.from_text(f"one.{ZONE}."), 1, 16)
        assert {s.decode() for rd in txt for s in rd.strings} >= {"value-one-newest"}
        # Feed changes reach the new CNAME's answer like any other.
        app.store.apply_changes([TxtChange(f"one.{ZONE}.", ("fresh",))], 2)
        fresh = await query_udp(v4(app), name, "TXT")
        assert [s.decode() for rrset in fresh.answer[1:] for rd in rrset for s in rd.strings] == [
            "fresh"
        ]
        assert registry.get_sample_value("acmezone_dns_zone_reloads_total", {"result": "ok"}) == 1


async def test_a_bad_zone_file_is_refused_and_the_old_zone_kept(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    async with running_dns(tmp_path, registry, zone_reload_interval_seconds=0.05) as app:
        zone_file = tmp_path / "example.test.zone"
        zone_file.write_text(EXAMPLE_ZONE + "* TXT wildcards-are-refused\nwww A 192.0.2.77\n")
        await app.reloader.wait_attempts(1)
        answer = await query_udp(v4(app), "www.example.test.", "A")
        assert [rd.to_text() for rd in answer.answer[0]] == ["192.0.2.10"]
        assert registry.get_sample_value("acmezone_dns_zone_reloads_total", {"result": "ok"}) == 0
        assert (
            registry.get_sample_value("acmezone_dns_zone_reloads_total", {"result": "error"}) == 1
        )
        # A file that no longer parses at all is refused the same way; a fixed one is taken.
        zone_file.write_text("$ORIGIN example.test.\nthis is not a zone file\n")
        await app.reloader.wait_attempts(2)
        zone_file.write_text(EXAMPLE_ZONE.replace("192.0.2.10", "192.0.2.12"))
        await app.reloader.wait_attempts(3)
        answer = await query_udp(v4(app), "www.example.test.", "A")
        assert [rd.to_text() for rd in answer.answer[0]] == ["192.0.2.12"]
        assert (
            registry.get_sample_value("acmezone_dns_zone_reloads_total", {"result": "error"}) == 2
        )


async def test_a_touch_alone_is_no_change_and_sighup_forces_a_reload(tmp_path: Path) -> None:
    async with running_dns(tmp_path, zone_reload_interval_seconds=0) as app:
        zone_file = tmp_path / "example.test.zone"
        os.utime(zone_file, ns=(1, 1))
        assert not app.reloader.changed()
        zone_file.write_text(EXAMPLE_ZONE.replace("192.0.2.10", "192.0.2.13"))
        os.utime(zone_file, ns=(2, 2))
        assert app.reloader.changed()
        app.reloader.trigger()  # what SIGHUP does (the command wires it: test_processes)
        await app.reloader.wait_attempts(1)
        assert app.reloader.generation == 1
        answer = await query_udp(v4(app), "www.example.test.", dns.rdatatype.A)
        assert [rd.to_text() for rd in answer.answer[0]] == ["192.0.2.13"]
