"""`acmezone-dns dnssec sign-zone`: the zone a running signed replica transfers (AXFR), or a zone
file, written fully signed with the key directory's keys, and checked by two independent
verifiers (ldns-verify-zone from ldnsutils, dnssec-verify from bind9-utils); a tampered record
makes both fail, and the replica's own live answers verify with the same DNSKEY RRset."""

from __future__ import annotations

import asyncio
import base64
import io
import shutil
from contextlib import redirect_stderr
from pathlib import Path

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest

from acmezone_dns.__main__ import main
from acmezone_dns.dnssec.keys import Role, ZoneKey
from tests.dns.conftest import EXAMPLE_ZONE, SNAPSHOT, ZONE, query_tcp, running_dns, v4
from tests.dns.dnssec_support import make_keys, validate_sections

APEX = dns.name.from_text(ZONE)
SECRET = base64.b64encode(b"transfer-secret-for-tests-32byte").decode()
TRANSFER = {"transfer_keys": [f"xfr:hmac-sha256:{SECRET}"], "transfer_allow": ["xfr@127.0.0.0/8"]}
LDNS_VERIFY = "ldns-verify-zone"
DNSSEC_VERIFY = "dnssec-verify"


def verifiers_or_skip() -> None:
    for tool, package in ((LDNS_VERIFY, "ldnsutils"), (DNSSEC_VERIFY, "bind9-utils")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian package {package})")


async def sign_zone(*argv: str) -> tuple[int, str]:
    """`acmezone-dns dnssec ... sign-zone ...` in a thread (the replica it transfers from runs
    on this event loop): its exit status and what it printed on stderr."""

    def run() -> tuple[int, str]:
        err = io.StringIO()
        with redirect_stderr(err), pytest.raises(SystemExit) as exit_:
            main(["dnssec", *argv])
        code = exit_.value.code
        return (code if isinstance(code, int) else 1), err.getvalue()

    return await asyncio.to_thread(run)


async def verify(zone_file: Path, origin: str, *, csk: bool) -> dict[str, tuple[int, str]]:
    """Both verifiers' exit status and output. dnssec-verify wants a ZSK (flags 256) unless told
    that the key with the SEP bit signs everything (`-z`, the CSK case)."""
    results = {}
    bind = [DNSSEC_VERIFY, *(["-z"] if csk else []), "-o", origin, str(zone_file)]
    for argv in ([LDNS_VERIFY, str(zone_file)], bind):
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        async with asyncio.timeout(60):
            output, _ = await process.communicate()
        assert process.returncode is not None
        results[argv[0]] = (process.returncode, output.decode(errors="replace"))
    return results


def dnskeys_of(path: Path, origin: str) -> dns.rrset.RRset:
    name = dns.name.from_text(origin)
    zone = dns.zone.from_file(str(path), origin=name, relativize=False)
    rdataset = zone.find_rdataset(name, dns.rdatatype.DNSKEY)
    rrset = dns.rrset.RRset(name, rdataset.rdclass, rdataset.rdtype)
    rrset.update(rdataset)
    return rrset


@pytest.mark.slow
@pytest.mark.parametrize("split", [False, True], ids=["csk", "ksk+zsk"])
async def test_a_transferred_zone_signs_and_both_verifiers_agree(
    tmp_path: Path, split: bool
) -> None:
    verifiers_or_skip()
    directory = tmp_path / "keys"
    keys: list[ZoneKey] = (
        make_keys(directory, [ZONE], role=Role.KSK) + make_keys(directory, [ZONE], role=Role.ZSK)
        if split
        else make_keys(directory, [ZONE])
    )
    tsig = tmp_path / "xfr.key"
    tsig.write_text(TRANSFER["transfer_keys"][0] + "\n")
    signed = tmp_path / "signed.zone"
    async with running_dns(tmp_path, dnssec_key_dir=str(directory), **TRANSFER) as app:
        app.store.apply_snapshot(SNAPSHOT, 1, "test-feed")
        address = v4(app)
        code, err = await sign_zone(
            "--key-dir",
            str(directory),
            "sign-zone",
            "--from",
            f"127.0.0.1:{address.port}",
            "--zone",
            ZONE,
            "--tsig-key-file",
            str(tsig),
            "--output",
            str(signed),
        )
        assert code == 0, err
        assert "signed with" in err
        # The replica's live answers verify with the signed zone's DNSKEY RRset, which is the
        # one it serves.
        dnskeys = dnskeys_of(signed, ZONE)
        assert {k.dnskey for k in keys} == set(dnskeys)
        checked = set()
        for name, rdtype in [
            ("one." + ZONE, "TXT"),
            ("big." + ZONE, "TXT"),
            (ZONE, "DNSKEY"),
            (ZONE, "SOA"),
            (ZONE, "NS"),
            ("ns1." + ZONE, "A"),
            ("nope." + ZONE, "TXT"),
        ]:
            live = await query_tcp(address, name, rdtype, use_edns=0, want_dnssec=True)
            if rdtype == "DNSKEY":
                assert set(live.answer[0]) == set(dnskeys)
            checked |= set(validate_sections(live, {APEX: dnskeys}))
        assert {("one." + ZONE + ".", "TXT"), ("nope." + ZONE + ".", "NSEC")} <= checked
    text = signed.read_text()
    zone = dns.zone.from_text(text, origin=APEX, relativize=False)
    for name in ("one", "big", "long", "leaf.sub"):
        node = zone.get_node(f"{name}.{ZONE}.")
        assert node is not None, name
        assert node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.NSEC) is not None, name
    # An empty non-terminal and a name whose values were all removed have no NSEC.
    assert zone.get_node(f"sub.{ZONE}.") is None
    assert zone.get_node(f"empty.{ZONE}.") is None
    results = await verify(signed, ZONE, csk=not split)
    assert {tool: code for tool, (code, _) in results.items()} == {
        LDNS_VERIFY: 0,
        DNSSEC_VERIFY: 0,
    }, results
    assert "Zone fully signed" in results[DNSSEC_VERIFY][1]
    # One TXT value changed after signing: both verifiers refuse the zone.
    assert "value-one-newest" in text
    tampered = tmp_path / "tampered.zone"
    tampered.write_text(text.replace("value-one-newest", "value-one-forged"))
    results = await verify(tampered, ZONE, csk=not split)
    assert all(code != 0 for code, _ in results.values()), results


DELEGATING_ZONE = (
    EXAMPLE_ZONE
    + """\
child   NS    ns.child
child   DS    12345 13 2 9b1a1d29c2b3cd26e79ceab4a00ac27fc5b4d4bbba8e5b9f1f6a4e5a0c3f7b21
ns.child A    192.0.2.53
*.wild  TXT   "wildcard"
"""
)


async def test_a_zone_file_signs_with_its_delegations_left_to_the_child(tmp_path: Path) -> None:
    """A static zone file with CNAMEs, empty non-terminals and a signed delegation (NS, DS and
    glue below it): the DS is signed, the NS and glue are not, and the glue is outside the
    NSEC chain; a wildcard is refused (the signer does not make wildcard RRSIGs)."""
    verifiers_or_skip()
    directory = tmp_path / "keys"
    make_keys(directory, ["example.test"])
    source = tmp_path / "example.test.zone"
    source.write_text(DELEGATING_ZONE)
    signed = tmp_path / "signed.zone"
    args = ["--key-dir", str(directory), "sign-zone", "--zone", "example.test"]
    code, err = await sign_zone(*args, "--zone-file", str(source), "-o", str(signed))
    assert code == 1
    assert "wildcards are not supported" in err
    source.write_text(DELEGATING_ZONE.replace('*.wild  TXT   "wildcard"\n', ""))
    code, err = await sign_zone(*args, "--zone-file", str(source), "-o", str(signed))
    assert code == 0, err
    zone = dns.zone.from_file(str(signed), origin="example.test.", relativize=False)
    child = zone.get_node("child.example.test.")
    assert child is not None
    covered = {r.covers for r in child.rdatasets if r.rdtype == dns.rdatatype.RRSIG}
    assert covered == {dns.rdatatype.DS, dns.rdatatype.NSEC}
    glue = zone.get_node("ns.child.example.test.")
    assert glue is not None
    assert [r.rdtype for r in glue.rdatasets] == [dns.rdatatype.A]
    results = await verify(signed, "example.test", csk=True)
    assert {tool: code for tool, (code, _) in results.items()} == {
        LDNS_VERIFY: 0,
        DNSSEC_VERIFY: 0,
    }, results


async def test_sign_zone_says_what_is_wrong(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    make_keys(directory, ["example.test"])
    code, err = await sign_zone(
        "--key-dir", str(directory), "sign-zone", "--zone", ZONE, "--zone-file", "/nonexistent"
    )
    assert (code, err.strip()) == (1, f"no keys for zone {ZONE}. in the key directory")
    code, err = await sign_zone(
        "--key-dir", str(directory), "sign-zone", "--zone", "example.test", "--from", "nowhere"
    )
    assert code == 2
    # A refused transfer (no TSIG key) is an error naming the server, not a traceback.
    async with running_dns(tmp_path, **TRANSFER) as app:
        code, err = await sign_zone(
            "--key-dir",
            str(directory),
            "sign-zone",
            "--zone",
            "example.test",
            "--from",
            f"127.0.0.1:{v4(app).port}",
        )
    assert code == 1
    assert f"AXFR of example.test. from 127.0.0.1:{v4(app).port}" in err
