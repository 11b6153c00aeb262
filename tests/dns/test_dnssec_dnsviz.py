"""The signed challenge zone as DNSViz (Debian package) sees it: probed over real sockets with the
DS record the CLI prints, delegated from a parent DNSViz serves itself, and grokked with the
zone's DNSKEY as trust anchor. No error and no warning, every answer and proof secure."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from acmezone_dns.__main__ import main
from acmezone_dns.store import TxtChange
from tests.dns.conftest import SNAPSHOT, ZONE, running_dns, v4
from tests.dns.dnssec_support import make_keys
from tests.dns.dnsviz_support import dnsviz_or_skip, findings, load, run_dnsviz

pytestmark = pytest.mark.slow

NAMES = [
    ZONE,
    "one." + ZONE,  # two TXT values
    "big." + ZONE,  # too big for a 512-byte UDP answer: truncated, then over TCP
    "long." + ZONE,
    "sub." + ZONE,  # an empty non-terminal
    "leaf.sub." + ZONE,
    "ns1." + ZONE,  # the name server's address
    "fresh." + ZONE,  # set by a revision after the snapshot
    "nope." + ZONE,  # does not exist: compact denial
]
TYPES = "SOA,NS,DNSKEY,DS,TXT,A,AAAA,CAA,MX"


def cli(*argv: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        main(["dnssec", *argv])
    assert exit_.value.code == 0
    return out.getvalue()


@pytest.mark.parametrize("algorithm", ["ecdsap256sha256", "ed25519"])
async def test_dnsviz_finds_no_error_in_the_signed_zone(tmp_path: Path, algorithm: str) -> None:
    dnsviz_or_skip()
    keys = tmp_path / "keys"
    (key,) = make_keys(keys, [ZONE], algorithm=algorithm)
    ds_file = tmp_path / "ds.txt"
    ds_file.write_text(cli("--key-dir", str(keys), "ds"))
    anchors = tmp_path / "trust-anchor.txt"
    anchors.write_text(f"{ZONE}. IN DNSKEY {key.dnskey.to_text()}\n")
    probe, grok = tmp_path / "probe.json", tmp_path / "grok.json"
    async with running_dns(tmp_path, dnssec_key_dir=str(keys)) as app:
        app.store.apply_snapshot(SNAPSHOT, 1, "test-feed")
        app.store.apply_changes([TxtChange("fresh." + ZONE + ".", ("token",))], 2)
        server = f"ns1.{ZONE}=127.0.0.1:{v4(app).port}"
        await run_dnsviz(
            "probe",
            "-A",
            "-a",
            ZONE,
            "-x",
            f"{ZONE}:{server}",
            "-N",
            f"{ZONE}:ns1.{ZONE}=127.0.0.1",
            "-D",
            f"{ZONE}:{ds_file}",
            "-E",  # EDNS diagnostics too
            "-R",
            TYPES,
            "-o",
            str(probe),
            *NAMES,
        )
    await run_dnsviz("grok", "-t", str(anchors), "-r", str(probe), "-l", "info", "-o", str(grok))
    report = load(grok)
    found = findings(report)
    assert found == {"errors": [], "warnings": []}, "\n".join(
        [f"{kind}: {line}" for kind, lines in found.items() for line in lines]
    )
    assert report[ZONE + "."]["delegation"]["status"] == "SECURE"
    assert {d["status"] for d in report[ZONE + "."]["dnskey"]} == {"SECURE"}
    insecure = []
    for name in NAMES:
        for query, results in report[name + "."]["queries"].items():
            if query == f"{ZONE}./IN/DS":
                continue  # answered by the unsigned parent
            for kind, items in results.items():
                insecure += [
                    f"{query} {kind} {i['status']}" for i in items if i["status"] != "SECURE"
                ]
    assert insecure == []
    assert "answer" in report[f"one.{ZONE}."]["queries"][f"one.{ZONE}./IN/TXT"]
    assert "answer" in report[f"fresh.{ZONE}."]["queries"][f"fresh.{ZONE}./IN/TXT"]
