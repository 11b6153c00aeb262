"""Online DNSSEC signing, over real sockets: every signature checked with dnspython's validator,
compact denial of existence (RFC 9824), DO and CO handling, truncation, the signing budget, the
refresh of signatures near expiry, key files and the `dnssec` CLI."""

from __future__ import annotations

import io
import json
import stat
from collections.abc import AsyncIterator
from contextlib import redirect_stdout
from pathlib import Path

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest
from prometheus_client import CollectorRegistry

from acmezone_common.sealing import SecretSealer
from acmezone_dns.__main__ import main
from acmezone_dns.app import DnsApp
from acmezone_dns.dnssec.keys import KeyFileError, Role, State, read_key, read_keys, write_key
from acmezone_dns.dnssec.records import TYPE_NXNAME
from acmezone_dns.store import TxtChange
from tests.dns.conftest import BIG_VALUES, SNAPSHOT, ZONE, query_tcp, query_udp, running_dns, v4
from tests.dns.dnssec_support import dnskey_rrset, make_keys, validate_sections

APEX = dns.name.from_text(ZONE)


class Clock:
    """A settable clock for the signer."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def signed(
    tmp_path: Path,
) -> AsyncIterator[tuple[DnsApp, dict[dns.name.Name, dns.rrset.RRset]]]:
    """A dns signing both the challenge zone and the static example.test, holding SNAPSHOT."""
    keys = make_keys(tmp_path / "keys", [ZONE, "example.test"])
    async with running_dns(tmp_path, dnssec_key_dir=str(tmp_path / "keys")) as app:
        app.store.apply_snapshot(SNAPSHOT, 1, "test-feed")
        yield app, dnskey_rrset(keys)


def nsec_of(response: dns.message.Message) -> dns.rrset.RRset:
    (nsec,) = [r for r in response.authority if r.rdtype == dns.rdatatype.NSEC]
    return nsec


def bitmap_types(nsec: dns.rrset.RRset) -> set[int]:
    rdata = next(iter(nsec))
    return {t for window in rdata.windows for t in _window_types(window)}


def _window_types(window: tuple[int, bytes]) -> list[int]:
    number, bits = window
    return [
        number * 256 + i * 8 + j
        for i, byte in enumerate(bits)
        for j in range(8)
        if byte & (0x80 >> j)
    ]


async def test_positive_answers_are_signed_and_validate(
    signed: tuple[DnsApp, dict[dns.name.Name, dns.rrset.RRset]],
) -> None:
    app, keys = signed
    address = v4(app)
    cases = [
        ("one." + ZONE, "TXT"),
        (ZONE, "DNSKEY"),
        (ZONE, "SOA"),
        (ZONE, "NS"),
        ("example.test", "DNSKEY"),
        ("www.example.test", "A"),
        ("leaf.sub." + ZONE, "TXT"),
    ]
    for name, rdtype in cases:
        for transport in (query_udp, query_tcp):
            response = await transport(
                address, name, rdtype, use_edns=0, want_dnssec=True, payload=1232
            )
            assert response.rcode() == dns.rcode.NOERROR
            assert response.flags & dns.flags.AA
            signed_sets = validate_sections(response, keys)
            assert (dns.name.from_text(name).to_text(), rdtype) in signed_sets, (name, rdtype)
    # The challenge zone's TXT values are signed with its own key, not the parent's.
    response = await query_udp(address, "one." + ZONE, "TXT", use_edns=0, want_dnssec=True)
    (sig,) = [r for r in response.answer if r.rdtype == dns.rdatatype.RRSIG]
    assert next(iter(sig)).signer == APEX


async def test_without_do_nothing_changes(
    signed: tuple[DnsApp, dict[dns.name.Name, dns.rrset.RRset]], tmp_path: Path
) -> None:
    """DO=0 answers are byte for byte the unsigned service's (the apex aside, which now holds
    a DNSKEY RRset: ANY there answers it)."""
    app, _ = signed
    (tmp_path / "plain").mkdir()
    async with running_dns(tmp_path / "plain") as plain:
        plain.store.apply_snapshot(SNAPSHOT, 1, "test-feed")
        for name in ["one." + ZONE, "nobody." + ZONE, "sub." + ZONE, "www.example.test", ZONE]:
            for rdtype in ["TXT", "A", "SOA", "NS", "MX"]:
                for edns in (None, 1232):
                    query = dns.message.make_query(
                        name, rdtype, use_edns=edns is not None, payload=edns or 512
                    )
                    wire = query.to_wire()
                    assert app.responder.answer(wire, False) == plain.responder.answer(wire, False)
        query = dns.message.make_query(ZONE, "DNSKEY").to_wire()
        response = dns.message.from_wire(app.responder.answer(query, False) or b"")
        assert [r.rdtype for r in response.answer] == [dns.rdatatype.DNSKEY]


async def test_a_name_that_does_not_exist_is_proven_with_compact_denial(
    signed: tuple[DnsApp, dict[dns.name.Name, dns.rrset.RRset]],
) -> None:
    app, keys = signed
    name = "random-label-42." + ZONE
    response = await query_udp(v4(app), name, "TXT", use_edns=0, want_dnssec=True)
    # RFC 9824: NOERROR with one NSEC at the name itself; NXNAME says it does not exist.
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []
    assert ("acme.example.test.", "SOA") in validate_sections(response, keys)
    nsec = nsec_of(response)
    assert nsec.name == dns.name.from_text(name)
    assert next(iter(nsec)).next == dns.name.from_text("\\000." + name)
    assert bitmap_types(nsec) == {dns.rdatatype.RRSIG, dns.rdatatype.NSEC, TYPE_NXNAME}
    assert (name + ".", "NSEC") in validate_sections(response, keys)
    # With CO (Compact Answers OK) the rcode says NXDOMAIN, and CO is echoed.
    query = dns.message.make_query(name, "TXT", use_edns=0, want_dnssec=True)
    query.ednsflags |= 0x4000
    wire = app.responder.answer(query.to_wire(), False)
    assert wire is not None
    reply = dns.message.from_wire(wire)
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.ednsflags & 0x4000
    assert reply.ednsflags & dns.flags.DO
    assert nsec_of(reply) == nsec


async def test_nodata_proves_the_types_the_name_has(
    signed: tuple[DnsApp, dict[dns.name.Name, dns.rrset.RRset]],
) -> None:
    app, keys = signed
    cases = {
        "one." + ZONE: {dns.rdatatype.TXT},
        "sub." + ZONE: set(),  # an empty non-terminal
        "empty." + ZONE: set(),  # a registration with no value yet
        ZONE: {dns.rdatatype.SOA, dns.rdatatype.NS, dns.rdatatype.DNSKEY, dns.rdatatype.CAA},
    }
    for name, types in cases.items():
        response = await query_udp(v4(app), name, "MX", use_edns=0, want_dnssec=True)
        assert response.rcode() == dns.rcode.NOERROR
        assert response.answer == []
        nsec = nsec_of(response)
        assert nsec.name == dns.name.from_text(name)
        assert bitmap_types(nsec) == types | {dns.rdatatype.RRSIG, dns.rdatatype.NSEC}
        assert (dns.name.from_text(name).to_text(), "NSEC") in validate_sections(response, keys)


async def test_a_cname_into_the_signed_zone_carries_the_targets_proof(
    signed: tuple[DnsApp, dict[dns.name.Name, dns.rrset.RRset]],
) -> None:
    app, keys = signed
    response = await query_udp(
        v4(app), "_acme-challenge.missing.example.test", "TXT", use_edns=0, want_dnssec=True
    )
    sets = validate_sections(response, keys)
    assert ("_acme-challenge.missing.example.test.", "CNAME") in sets
    assert nsec_of(response).name == dns.name.from_text("nobody." + ZONE)
    assert ("nobody.acme.example.test.", "NSEC") in sets


async def test_a_revision_is_signed_when_applied_and_old_proofs_go(
    signed: tuple[DnsApp, dict[dns.name.Name, dns.rrset.RRset]],
) -> None:
    app, keys = signed
    name = "fresh." + ZONE
    before = await query_udp(v4(app), name, "TXT", use_edns=0, want_dnssec=True)
    assert TYPE_NXNAME in bitmap_types(nsec_of(before))
    signatures = app.signing_stats.signatures
    app.store.apply_changes([TxtChange(name + ".", ("token-1",))], 2)
    # Signed by the revision itself (one signature, one key), not by the next query.
    assert app.signing_stats.signatures == signatures + 1
    assert app.signer is not None
    assert (dns.name.from_text(name).to_wire() or b"") + b"\x00\x10\x00\x01" in app.signer.answers
    response = await query_udp(v4(app), name, "TXT", use_edns=0, want_dnssec=True)
    assert [b"".join(r.strings) for r in response.answer[0]] == [b"token-1"]
    assert (name + ".", "TXT") in validate_sections(response, keys)
    nodata = await query_udp(v4(app), name, "A", use_edns=0, want_dnssec=True)
    assert bitmap_types(nsec_of(nodata)) == {
        dns.rdatatype.TXT,
        dns.rdatatype.RRSIG,
        dns.rdatatype.NSEC,
    }
    app.store.apply_changes([TxtChange(name + ".", None)], 3)
    gone = await query_udp(v4(app), name, "TXT", use_edns=0, want_dnssec=True)
    assert gone.answer == []
    assert TYPE_NXNAME in bitmap_types(nsec_of(gone))


async def test_an_answer_too_big_for_udp_is_truncated_and_whole_over_tcp(
    signed: tuple[DnsApp, dict[dns.name.Name, dns.rrset.RRset]],
) -> None:
    app, keys = signed
    name = "big." + ZONE
    udp = await query_udp(v4(app), name, "TXT", use_edns=0, want_dnssec=True, payload=1232)
    assert udp.flags & dns.flags.TC
    assert udp.answer == []
    tcp = await query_tcp(v4(app), name, "TXT", use_edns=0, want_dnssec=True, payload=1232)
    assert len(tcp.answer[0]) == len(BIG_VALUES)
    assert (name + ".", "TXT") in validate_sections(tcp, keys)


async def test_new_denials_past_the_budget_are_refused_and_counted(tmp_path: Path) -> None:
    keys = dnskey_rrset(make_keys(tmp_path / "keys", [ZONE]))
    metrics = CollectorRegistry()
    async with running_dns(
        tmp_path,
        metrics,
        dnssec_key_dir=str(tmp_path / "keys"),
        dnssec_denial_signatures_per_second=1,
    ) as app:
        app.store.apply_snapshot(SNAPSHOT, 1, "test-feed")
        first = await query_udp(v4(app), "a1." + ZONE, "TXT", use_edns=0, want_dnssec=True)
        assert ("a1.acme.example.test.", "NSEC") in validate_sections(first, keys)
        second = await query_udp(v4(app), "a2." + ZONE, "TXT", use_edns=0, want_dnssec=True)
        assert second.flags & dns.flags.TC
        assert second.answer == []
        assert second.authority == []
        over_tcp = await query_tcp(v4(app), "a3." + ZONE, "TXT", use_edns=0, want_dnssec=True)
        assert over_tcp.rcode() == dns.rcode.SERVFAIL
        # A proof made before is served from the cache; existing names are never refused.
        again = await query_udp(v4(app), "a1." + ZONE, "TXT", use_edns=0, want_dnssec=True)
        assert nsec_of(again) == nsec_of(first)
        txt = await query_udp(v4(app), "one." + ZONE, "TXT", use_edns=0, want_dnssec=True)
        assert ("one.acme.example.test.", "TXT") in validate_sections(txt, keys)
        assert (
            metrics.get_sample_value("acmezone_dns_dnssec_denials_total", {"result": "refused"})
            == 2
        )
        assert (
            metrics.get_sample_value("acmezone_dns_dnssec_denials_total", {"result": "signed"}) == 1
        )


async def test_signatures_near_expiry_are_made_again(tmp_path: Path) -> None:
    make_keys(tmp_path / "keys", [ZONE])
    clock = Clock()
    settings_dir = tmp_path
    from tests.dns.conftest import dns_settings

    settings = dns_settings(
        settings_dir,
        dnssec_key_dir=str(tmp_path / "keys"),
        dnssec_signature_validity_seconds=10 * 86400,
        dnssec_refresh_seconds=3 * 86400,
    )
    app = DnsApp(settings, CollectorRegistry(), signing_clock=clock)
    await app.start()
    try:
        app.store.apply_snapshot(SNAPSHOT, 1, "test-feed")

        async def expiration(name: str, rdtype: str) -> int:
            response = await query_udp(v4(app), name, rdtype, use_edns=0, want_dnssec=True)
            sigs = [r for r in response.answer + response.authority if r.rdtype == 46]
            return min(int(rd.expiration) for rrset in sigs for rd in rrset)

        assert app.signer is not None
        first = await expiration("one." + ZONE, "TXT")
        first_nx = await expiration("gone." + ZONE, "TXT")
        assert first == first_nx == int(clock.now) + 10 * 86400
        clock.now += 6 * 86400  # 4 days left: still outside the 3-day margin
        assert app.signer.sweep() == 0
        assert await expiration("one." + ZONE, "TXT") == first
        clock.now += 2 * 86400  # 2 days left: inside it
        assert app.signer.sweep() >= 1
        assert await expiration("one." + ZONE, "TXT") == int(clock.now) + 10 * 86400
        assert await expiration("gone." + ZONE, "TXT") == int(clock.now) + 10 * 86400
    finally:
        await app.stop(grace=0)


async def test_ed25519_keys_sign_too(tmp_path: Path) -> None:
    keys = dnskey_rrset(make_keys(tmp_path / "keys", [ZONE], algorithm="ed25519"))
    async with running_dns(tmp_path, dnssec_key_dir=str(tmp_path / "keys")) as app:
        app.store.apply_snapshot(SNAPSHOT, 1, "test-feed")
        for name, rdtype in [("one." + ZONE, "TXT"), (ZONE, "DNSKEY"), ("no." + ZONE, "A")]:
            response = await query_udp(v4(app), name, rdtype, use_edns=0, want_dnssec=True)
            assert validate_sections(response, keys)
            sigs = [r for r in response.answer + response.authority if r.rdtype == 46]
            assert {rd.algorithm for rrset in sigs for rd in rrset} == {15}


async def test_ksk_and_zsk_sign_their_own_sets(tmp_path: Path) -> None:
    """A split KSK/ZSK pair: the DNSKEY RRset is signed by the KSK, everything else by the ZSK;
    a pre-published key is in the DNSKEY RRset and signs nothing."""
    directory = tmp_path / "keys"
    (ksk,) = make_keys(directory, [ZONE], role=Role.KSK)
    (zsk,) = make_keys(directory, [ZONE], role=Role.ZSK)
    (spare,) = make_keys(directory, [ZONE], role=Role.ZSK, state=State.PUBLISHED)
    keys = dnskey_rrset([ksk, zsk, spare])
    async with running_dns(tmp_path, dnssec_key_dir=str(directory)) as app:
        app.store.apply_snapshot(SNAPSHOT, 1, "test-feed")
        dnskey = await query_udp(v4(app), ZONE, "DNSKEY", use_edns=0, want_dnssec=True)
        assert {rd.flags for rd in dnskey.answer[0]} == {256, 257}
        assert len(dnskey.answer[0]) == 3
        validate_sections(dnskey, keys)
        tags = {
            dns.rdatatype.to_text(rd.type_covered): rd.key_tag
            for rrset in dnskey.answer
            + (await query_udp(v4(app), "one." + ZONE, "TXT", use_edns=0, want_dnssec=True)).answer
            if rrset.rdtype == 46
            for rd in rrset
        }
        assert tags == {"DNSKEY": ksk.tag, "TXT": zsk.tag}


def test_key_files_are_private_and_sealed_when_asked(tmp_path: Path) -> None:
    (key,) = make_keys(tmp_path / "plain", [ZONE])
    path = next((tmp_path / "plain").glob("K*.json"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key(path, None).dnskey == key.dnskey
    sealer = SecretSealer(bytes(range(32)))
    (tmp_path / "sealed").mkdir()
    sealed_path = write_key(key, tmp_path / "sealed", sealer)
    document = json.loads(sealed_path.read_text())
    assert document["private_key"].startswith("sealed-v1:")
    assert "PRIVATE KEY" not in sealed_path.read_text()
    assert read_key(sealed_path, sealer).dnskey == key.dnskey
    with pytest.raises(KeyFileError, match="no sealing key"):
        read_key(sealed_path, None)
    with pytest.raises(KeyFileError, match="does not open") as wrong:
        read_key(sealed_path, SecretSealer(bytes(32)))
    assert document["private_key"] not in str(wrong.value)
    # A sealed key copied under another zone's name does not open either.
    document["zone"] = "other.test."
    sealed_path.write_text(json.dumps(document))
    with pytest.raises(KeyFileError):
        read_key(sealed_path, sealer)
    with pytest.raises(KeyFileError, match="does not exist"):
        read_keys(tmp_path / "nowhere", None)


async def test_a_key_for_a_zone_not_served_stops_the_start(tmp_path: Path) -> None:
    make_keys(tmp_path / "keys", ["not-ours.test"])
    with pytest.raises(ValueError, match=r"not served: not-ours\.test"):
        async with running_dns(tmp_path, dnssec_key_dir=str(tmp_path / "keys")):
            pass


def test_cli_makes_keys_prints_ds_and_moves_states(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "keys"
    monkeypatch.setenv("ACMEZONE_DNS_DNSSEC_KEY_DIR", str(directory))
    monkeypatch.setenv("ACMEZONE_DNS_DNSSEC_SEALING_KEY", "A" * 43)

    def run(*argv: str) -> str:
        out = io.StringIO()
        with redirect_stdout(out), pytest.raises(SystemExit) as exit_:
            main(["dnssec", *argv])
        assert exit_.value.code == 0
        return out.getvalue()

    made = run("keygen", "--zone", ZONE)
    assert "csk active" in made
    assert "not sealed" not in made
    (path,) = directory.glob("K*.json")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    key = read_keys(directory, SecretSealer(bytes(32)))[0]
    ds_line = run("ds").strip()
    assert ds_line == f"{ZONE}. IN DS {key.ds().to_text()}"
    assert dns.dnssec.make_ds(APEX, key.dnskey, "SHA256").to_text() in ds_line
    run("keygen", "--zone", ZONE, "--role", "zsk", "--state", "published")
    listing = run("list")
    assert "zsk published" in listing
    assert "PRIVATE" not in listing
    (zsk,) = [k for k in read_keys(directory, SecretSealer(bytes(32))) if k.role is Role.ZSK]
    assert "zsk active" in run("state", str(zsk.tag), "active")
    assert {k.state for k in read_keys(directory, SecretSealer(bytes(32)))} == {State.ACTIVE}
    for line in (made + listing + ds_line).splitlines():
        assert "sealed-v1" not in line
    assert path.exists()


async def test_a_zone_transfer_leaves_the_dnskey_out(tmp_path: Path) -> None:
    """Secondaries get the zone's data unsigned: serving our DNSKEY without our signatures
    would make them bogus to every validator."""
    from tests.dns.test_transfer import TRANSFER_SETTINGS, axfr

    make_keys(tmp_path / "keys", [ZONE])
    async with running_dns(
        tmp_path, dnssec_key_dir=str(tmp_path / "keys"), **TRANSFER_SETTINGS
    ) as app:
        app.store.apply_snapshot(SNAPSHOT, 10, "feed")
        zone = await axfr(app)
        types = {rdataset.rdtype for _, rdataset in zone.iterate_rdatasets()}
        assert dns.rdatatype.TXT in types
        assert dns.rdatatype.SOA in types
        assert dns.rdatatype.DNSKEY not in types
        assert dns.rdatatype.RRSIG not in types
        # The zone served keeps its DNSKEY.
        served = await query_udp(v4(app), ZONE, "DNSKEY", use_edns=0, want_dnssec=True)
        assert served.answer
