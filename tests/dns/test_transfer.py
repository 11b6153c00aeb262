"""Zone transfers of the challenge zone, checked with dnspython's own transfer client over real
TCP: AXFR gives the whole zone (static records and feed TXT); IXFR carries only what changed
since the client's serial, condensed over several revisions; the serial follows the feed; a
client too far behind gets the whole zone; refusals (unsigned, unknown key, bad signature,
wrong network, another zone) change nothing and say why in the rcode."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.versioned
import dns.xfr
import dns.zone
import pytest
from prometheus_client import CollectorRegistry

from acmezone_dns.app import DnsApp
from acmezone_dns.static_zones import load_static_zones
from acmezone_dns.store import TxtChange, ZoneStore
from acmezone_dns.transfer import Journal, serial_gt
from tests.dns.conftest import SNAPSHOT, ZONE, dns_settings, query_tcp, query_udp, running_dns, v4

SECRET = base64.b64encode(b"transfer-secret-for-tests-32byte").decode()
KEY = dns.tsig.Key("xfr.", SECRET, dns.tsig.HMAC_SHA256)
TRANSFER_SETTINGS: dict[str, Any] = {
    "transfer_keys": [f"xfr:hmac-sha256:{SECRET}", "far:hmac-sha256:" + SECRET],
    "transfer_allow": ["xfr@127.0.0.0/8", "far@192.0.2.0/24"],
    "ixfr_journal_revisions": 3,
}


@pytest.fixture
async def xfr_app(tmp_path: Path, metrics_registry: CollectorRegistry) -> AsyncIterator[DnsApp]:
    async with running_dns(tmp_path, metrics_registry, **TRANSFER_SETTINGS) as app:
        app.store.apply_snapshot(SNAPSHOT, 10, "feed")
        yield app


async def axfr(app: DnsApp, key: Any = KEY) -> dns.zone.Zone:
    address = v4(app)
    zone = dns.versioned.Zone(ZONE)
    query, _ = dns.xfr.make_query(zone, serial=None)
    query.use_tsig(key)
    await dns.asyncquery.inbound_xfr(address.host, zone, query, port=address.port, timeout=5)
    return zone


async def ixfr(app: DnsApp, serial: int) -> list[dns.message.Message]:
    """The raw messages of an IXFR from `serial`, read with dnspython's xfr generator."""
    import asyncio

    address = v4(app)

    def run() -> list[dns.message.Message]:
        return list(
            dns.query.xfr(
                address.host,
                ZONE,
                rdtype=dns.rdatatype.IXFR,
                serial=serial,
                port=address.port,
                keyring={KEY.name: KEY},
                keyalgorithm=KEY.algorithm,
                relativize=False,
                timeout=5,
            )
        )

    return await asyncio.to_thread(run)


def records(messages: list[dns.message.Message]) -> list[str]:
    return [
        f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rd.to_text()}"
        for m in messages
        for rrset in m.answer
        for rd in rrset
    ]


def txt(zone: dns.zone.Zone, name: str) -> set[str]:
    rdataset = zone.get_rdataset(f"{name}.{ZONE}.", "TXT")
    return {b"".join(rd.strings).decode() for rd in rdataset} if rdataset else set()


async def test_axfr_carries_static_records_and_every_feed_name(xfr_app: DnsApp) -> None:
    zone = await axfr(xfr_app)
    soa = zone.get_rdataset("@", "SOA")
    assert soa is not None
    assert soa[0].serial == 10
    assert zone.get_rdataset("@", "NS") is not None
    assert zone.get_rdataset("@", "CAA") is not None
    assert zone.get_rdataset("ns1", "A") is not None
    assert txt(zone, "one") == {"value-one-newest", "value-one-older"}
    assert txt(zone, "long") == {"L" * 300}
    assert txt(zone, "leaf.sub") == {"in-a-subtree"}
    assert len(zone.get_rdataset("big", "TXT")) == 10
    # The SOA served over UDP has the same serial.
    answer = await query_udp(v4(xfr_app), ZONE, "SOA")
    assert answer.answer[0][0].serial == 10


async def test_ixfr_carries_only_the_changes_since_the_client_serial(
    xfr_app: DnsApp, metrics_registry: CollectorRegistry
) -> None:
    store = xfr_app.store
    store.apply_changes([TxtChange(f"one.{ZONE}.", ("value-one-newest", "added"))], 11)
    store.apply_changes([TxtChange(f"new.{ZONE}.", ("fresh",))], 12)
    store.apply_changes(
        [TxtChange(f"long.{ZONE}.", None), TxtChange(f"new.{ZONE}.", ("fresh", "2"))], 13
    )
    messages = await ixfr(xfr_app, 10)
    got = records(messages)
    soa = lambda s: f"{ZONE}. SOA ns1.{ZONE}. hostmaster.{ZONE}. {s} 3600 600 86400 60"  # noqa: E731
    assert got[0] == soa(13)
    assert got[1] == soa(10)
    assert got[-1] == soa(13)
    middle = got.index(soa(13), 1)
    deleted, added = set(got[2:middle]), set(got[middle + 1 : -1])
    assert deleted == {
        f'one.{ZONE}. TXT "value-one-older"',
        f'long.{ZONE}. TXT "{"L" * 255}" "{"L" * 45}"',
    }
    assert added == {f'one.{ZONE}. TXT "added"', f'new.{ZONE}. TXT "fresh"', f'new.{ZONE}. TXT "2"'}
    # From serial 12: only the last revision.
    got = records(await ixfr(xfr_app, 12))
    assert len(got) == 6  # SOA, SOA 12, long deleted, SOA, "2" added, SOA
    # Up to date: one SOA.
    assert records(await ixfr(xfr_app, 13)) == [soa(13)]
    assert (
        metrics_registry.get_sample_value(
            "acmezone_dns_transfers_total", {"type": "IXFR", "result": "incremental"}
        )
        == 2
    )


async def test_ixfr_from_a_serial_the_journal_no_longer_holds_is_the_whole_zone(
    xfr_app: DnsApp,
) -> None:
    for revision in range(11, 16):  # journal of 3: serial 10 falls out
        xfr_app.store.apply_changes([TxtChange(f"r{revision}.{ZONE}.", ("x",))], revision)
    got = records(await ixfr(xfr_app, 10))
    assert got[0].endswith(" 15 3600 600 86400 60")
    assert got[-1] == got[0]
    assert f'r11.{ZONE}. TXT "x"' in got
    assert f'one.{ZONE}. TXT "value-one-older"' in got
    assert got.count(got[0]) == 2  # the AXFR form: no difference sequences


async def test_a_relist_moves_the_serial_forward_never_back(xfr_app: DnsApp) -> None:
    journal = xfr_app.store.observer
    assert isinstance(journal, Journal)
    xfr_app.store.apply_snapshot(SNAPSHOT, 3, "new-feed")  # a new database: revisions restart
    assert journal.serial == 11
    xfr_app.store.apply_changes([TxtChange(f"one.{ZONE}.", ("z",))], 4)
    assert journal.serial == 12
    assert serial_gt(1, 2**32 - 1)
    assert not serial_gt(2**32 - 1, 1)
    zone = await axfr(xfr_app)
    assert zone.get_rdataset("@", "SOA")[0].serial == 12
    assert txt(zone, "one") == {"z"}


async def _raw_xfr(app: DnsApp, query: dns.message.Message) -> dns.message.Message:
    address = v4(app)
    return await dns.asyncquery.tcp(query, address.host, port=address.port, timeout=5)


async def test_refused_transfers_say_why_and_change_nothing(
    xfr_app: DnsApp, metrics_registry: CollectorRegistry
) -> None:
    unsigned = dns.message.make_query(ZONE, "AXFR")
    assert (await _raw_xfr(xfr_app, unsigned)).rcode() == dns.rcode.REFUSED
    # A key the server does not know: NOTAUTH, TSIG error BADKEY.
    stranger = dns.tsig.Key("stranger.", SECRET, dns.tsig.HMAC_SHA256)
    query = dns.message.make_query(ZONE, "AXFR")
    query.use_tsig(stranger)
    response = await _raw_xfr_unverified(xfr_app, query)
    assert response.rcode() == dns.rcode.NOTAUTH
    assert response.tsig_error == dns.rcode.BADKEY
    # The right name with the wrong secret: BADSIG.
    forged = dns.tsig.Key("xfr.", base64.b64encode(b"x" * 32).decode(), dns.tsig.HMAC_SHA256)
    query = dns.message.make_query(ZONE, "AXFR")
    query.use_tsig(forged)
    response = await _raw_xfr_unverified(xfr_app, query)
    assert response.rcode() == dns.rcode.NOTAUTH
    assert response.tsig_error == 16
    # A good key from a network it is not allowed from: a signed REFUSED.
    far = dns.tsig.Key("far.", SECRET, dns.tsig.HMAC_SHA256)
    query = dns.message.make_query(ZONE, "AXFR")
    query.use_tsig(far)
    assert (await _raw_xfr(xfr_app, query)).rcode() == dns.rcode.REFUSED
    # A zone we serve but do not transfer: NOTAUTH.
    query = dns.message.make_query("example.test.", "AXFR")
    query.use_tsig(KEY)
    assert (await _raw_xfr(xfr_app, query)).rcode() == dns.rcode.NOTAUTH
    # Over UDP a transfer is refused as before.
    answer = await query_udp(v4(xfr_app), ZONE, "AXFR")
    assert answer.rcode() == dns.rcode.REFUSED
    # Nothing changed: the zone still transfers, same serial, and is still answered.
    zone = await axfr(xfr_app)
    assert zone.get_rdataset("@", "SOA")[0].serial == 10
    assert (await query_udp(v4(xfr_app), f"one.{ZONE}.", "TXT")).rcode() == dns.rcode.NOERROR
    assert (
        metrics_registry.get_sample_value(
            "acmezone_dns_transfers_total", {"type": "AXFR", "result": "refused"}
        )
        == 2
    )


async def _raw_xfr_unverified(app: DnsApp, query: dns.message.Message) -> dns.message.Message:
    """Send a signed query and parse the answer without checking its (error) TSIG."""
    import asyncio

    address = v4(app)
    reader, writer = await asyncio.open_connection(address.host, address.port)
    try:
        wire = query.to_wire()
        writer.write(len(wire).to_bytes(2, "big") + wire)
        length = int.from_bytes(await reader.readexactly(2), "big")
        data = await reader.readexactly(length)
    finally:
        writer.close()
    return dns.message.from_wire(data, keyring=False)


async def test_without_transfer_settings_the_serial_is_fixed_and_transfers_refused(
    tmp_path: Path,
) -> None:
    async with running_dns(tmp_path) as app:
        app.store.apply_snapshot(SNAPSHOT, 10, "feed")
        app.store.apply_changes([TxtChange(f"one.{ZONE}.", ("z",))], 11)
        answer = await query_udp(v4(app), ZONE, "SOA")
        assert answer.answer[0][0].serial == 1
        response = await _raw_xfr(app, dns.message.make_query(ZONE, "AXFR"))
        assert response.rcode() == dns.rcode.REFUSED


def test_the_patched_soa_answer_equals_one_packed_afresh(tmp_path: Path) -> None:
    """The serial is patched into the pre-packed SOA answer on every revision; a static reload
    packs the apex from scratch, from the SOA RRset the slow path reads: the same bytes."""
    settings = dns_settings(tmp_path)
    store = ZoneStore(load_static_zones(settings), feed_zone=ZONE, txt_ttl=1)
    store.observer = Journal(store, 10)
    store.apply_snapshot(SNAPSHOT, 10, "f")
    store.apply_changes([TxtChange(f"one.{ZONE}.", ("x",))], 11)
    key = b"\x04acme\x07example\x04test\x00\x00\x06\x00\x01"
    patched = store.snapshot.answers[key]
    assert (11).to_bytes(4, "big") in patched.body
    store.replace_static(load_static_zones(settings))
    fresh = store.snapshot.answers[key]
    assert fresh is not patched
    assert (fresh.body, fresh.heads, fresh.stat) == (patched.body, patched.heads, patched.stat)


async def test_udp_and_tcp_soa_answers_carry_the_same_serial(xfr_app: DnsApp) -> None:
    xfr_app.store.apply_changes([TxtChange(f"one.{ZONE}.", ("x",))], 11)
    udp = await query_udp(v4(xfr_app), ZONE, "SOA")
    tcp = await query_tcp(v4(xfr_app), ZONE, "SOA")
    assert udp.answer[0][0].serial == tcp.answer[0][0].serial == 11
