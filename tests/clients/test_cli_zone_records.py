"""`acmezone zone-record list/add/delete` against a real dns service: the CNAME a customer needs,
added from the command line, is served at once and written to the zone file; without the token
the command fails with the service's message."""

from __future__ import annotations

import io
import json
from pathlib import Path

import dns.rcode

from acmezone_clients.cli.commands import run as cli_run
from tests.dns.conftest import SNAPSHOT, ZONE, query_udp, running_dns, v4

TOKEN = "cli-zone-token"


async def acmezone(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = await cli_run(list(argv), out)
    return code, out.getvalue()


async def test_zone_record_commands_manage_a_live_cname(tmp_path: Path) -> None:
    async with running_dns(tmp_path, zone_edit_token=TOKEN, zone_reload_interval_seconds=0) as app:
        app.store.apply_snapshot(SNAPSHOT, 1, "f")
        dns_target = str(app.grpc_address)
        owner = "_acme-challenge.cli.example.test."
        code, out = await acmezone(
            "--dns",
            dns_target,
            "zone-record",
            "add",
            "example.test",
            owner,
            "CNAME",
            f"one.{ZONE}.",
        )
        assert code == 1  # no token given
        code, out = await acmezone(
            "--dns",
            dns_target,
            "--zone-token",
            TOKEN,
            "zone-record",
            "add",
            "example.test",
            owner,
            "CNAME",
            f"one.{ZONE}.",
        )
        assert code == 0, out
        assert "added (and served)" in out
        answer = await query_udp(v4(app), owner, "TXT")
        assert answer.rcode() == dns.rcode.NOERROR
        assert owner in (tmp_path / "example.test.zone").read_text()
        code, out = await acmezone(
            "--dns", dns_target, "--json", "zone-record", "list", "example.test"
        )
        assert code == 0, out
        (record,) = [r for r in json.loads(out) if r["domainName"] == owner]
        record_id = record["name"].rsplit("/", 1)[-1]
        code, out = await acmezone("--dns", dns_target, "zone-record", "list", "example.test")
        assert record_id in out
        assert "CNAME" in out
        code, out = await acmezone(
            "--dns",
            dns_target,
            "--zone-token",
            TOKEN,
            "zone-record",
            "delete",
            "example.test",
            record_id,
        )
        assert code == 0, out
        assert (await query_udp(v4(app), owner, "TXT")).rcode() == dns.rcode.NXDOMAIN
