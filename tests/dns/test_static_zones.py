"""Static records and zone files: what loads, and what is refused at start with a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from acmezone_dns.errors import ZoneConfigError
from acmezone_dns.static_zones import load_static_zones
from acmezone_dns.zone import ZoneSource
from tests.dns.conftest import dns_settings


def test_challenge_zone_has_soa_ns_glue_and_settings_records(tmp_path: Path) -> None:
    zones = load_static_zones(
        dns_settings(
            tmp_path,
            ns_names=["ns1.acme.example.test", "ns.elsewhere.test"],
            ns_addresses=["127.0.0.1", "::1"],
        )
    )
    challenge, example = zones
    assert challenge.source is ZoneSource.FEED
    assert example.source is ZoneSource.STATIC
    assert str(example.name) == "example.test."
    names = {str(name) for name, _ in challenge.records.values()}
    assert names == {"acme.example.test.", "ns1.acme.example.test."}  # no glue out of zone
    ns1 = next(r for n, r in challenge.records.values() if str(n) == "ns1.acme.example.test.")
    assert sorted(ns1) == [1, 28]  # A and AAAA


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("* TXT wild", "wildcards"),
        ("sub NS ns.other.test.", "delegations"),
        ("d DNAME other.test.", "DNAME"),
        ("c CNAME x.test.\nc TXT both", "CNAME"),
        ("@ CNAME x.test.", "CNAME"),
        ("bad TXT", "static records"),
    ],
)
def test_records_we_cannot_serve_are_refused(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ZoneConfigError, match=message):
        load_static_zones(dns_settings(tmp_path, static_records=line.split("\n")))


def test_zone_file_without_soa_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.zone"
    path.write_text("$ORIGIN bad.test.\n$TTL 60\nwww A 192.0.2.1\n")
    with pytest.raises(ZoneConfigError, match=r"bad\.zone"):
        load_static_zones(dns_settings(tmp_path, zone_files=[str(path)]))


def test_duplicate_zone_apex_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.zone"
    path.write_text("$ORIGIN acme.example.test.\n$TTL 60\n@ SOA a. b. 1 2 3 4 5\n@ NS ns1\n")
    with pytest.raises(ZoneConfigError, match="same apex"):
        load_static_zones(dns_settings(tmp_path, zone_files=[str(path)]))


def test_make_run_keeps_the_challenge_zone_apart_from_the_customer_zone(tmp_path: Path) -> None:
    """tools/run_local.py: the dev customer zone and the challenge zone load together, neither
    inside the other, and the customer zone's CNAME points into the challenge zone."""
    import importlib.util
    import sys

    import dns.name

    spec = importlib.util.spec_from_file_location(
        "run_local", Path(__file__).parents[2] / "tools" / "run_local.py"
    )
    assert spec is not None
    assert spec.loader is not None
    run_local = importlib.util.module_from_spec(spec)
    sys.modules["run_local"] = run_local  # its dataclasses look their module up
    try:
        spec.loader.exec_module(run_local)
    finally:
        del sys.modules["run_local"]
    zone_file = run_local.write_customer_zone(tmp_path / "dev" / "example.test.zone")
    challenge, customer = load_static_zones(
        dns_settings(
            tmp_path,
            zone=run_local.CHALLENGE_ZONE,
            ns_names=[f"ns1.{run_local.CHALLENGE_ZONE}"],
            zone_files=[str(zone_file)],
        )
    )
    assert not challenge.name.is_subdomain(customer.name)
    assert not customer.name.is_subdomain(challenge.name)
    cname = customer.records[b"\x0f_acme-challenge\x07example\x04test\x00"][1][
        int(dns.rdatatype.CNAME)
    ]
    assert next(iter(cname)).target.is_subdomain(dns.name.from_text(run_local.CHALLENGE_ZONE))
