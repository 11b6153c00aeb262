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
