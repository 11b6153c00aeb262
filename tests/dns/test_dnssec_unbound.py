"""The signed challenge zone through a real validating resolver (Debian's Unbound) trusting the
zone's DS record: answers come back secure (AD), negative answers are proven, a wrong key or an
expired signature is bogus (SERVFAIL), and a ZSK and a KSK rollover done as docs/dnssec.md says
never show the resolver a bogus answer."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from prometheus_client import CollectorRegistry

from acmezone_dns.app import DnsApp
from acmezone_dns.dnssec.keys import Role, State, ZoneKey, key_file_name, write_key
from acmezone_dns.store import TxtChange
from tests.dns.conftest import SNAPSHOT, ZONE, dns_settings, running_dns, v4
from tests.dns.dnssec_support import make_keys
from tests.dns.unbound_support import Unbound, ds_anchor, unbound_or_skip

pytestmark = pytest.mark.slow


def stubs(app: DnsApp) -> dict[str, int]:
    return {ZONE: v4(app).port, "example.test": v4(app).port}


async def test_answers_are_secure_and_denials_proven(tmp_path: Path) -> None:
    unbound_or_skip()
    (key,) = make_keys(tmp_path / "keys", [ZONE])
    async with running_dns(tmp_path, dnssec_key_dir=str(tmp_path / "keys")) as app:
        app.store.apply_snapshot(SNAPSHOT, 1, "test-feed")
        with Unbound(tmp_path / "unbound", stubs(app), [ds_anchor(key)]) as resolver:
            txt = await resolver.query("one." + ZONE, "TXT")
            assert txt.rcode() == dns.rcode.NOERROR
            assert txt.flags & dns.flags.AD
            assert {b"".join(r.strings) for r in txt.answer[0]} == {
                b"value-one-newest",
                b"value-one-older",
            }
            # A value set by a revision validates at once (signed when applied).
            app.store.apply_changes([TxtChange("new." + ZONE + ".", ("fresh-token",))], 2)
            new = await resolver.query("new." + ZONE, "TXT")
            assert new.flags & dns.flags.AD
            assert [b"".join(r.strings) for r in new.answer[0]] == [b"fresh-token"]
            # A random name: compact denial, NOERROR and secure, the NSEC saying NXNAME.
            missing = await resolver.query("x7f3-random." + ZONE, "TXT")
            assert missing.rcode() == dns.rcode.NOERROR
            assert missing.flags & dns.flags.AD
            assert missing.answer == []
            nsec = [r for r in missing.authority if r.rdtype == dns.rdatatype.NSEC]
            assert nsec
            assert "NXNAME" in nsec[0].to_text()
            # NODATA at a name that exists, at an empty non-terminal and at the apex.
            for name, rdtype in [("one." + ZONE, "A"), ("sub." + ZONE, "AAAA"), (ZONE, "MX")]:
                nodata = await resolver.query(name, rdtype)
                assert nodata.rcode() == dns.rcode.NOERROR, name
                assert nodata.flags & dns.flags.AD, name
                assert nodata.answer == []
            # The delegation CNAME lives in the unsigned parent: followed, insecure, answered.
            cname = await resolver.query("_acme-challenge.www.example.test", "TXT")
            assert cname.rcode() == dns.rcode.NOERROR
            assert [r.rdtype for r in cname.answer if r.rdtype != 46] == [
                dns.rdatatype.CNAME,
                dns.rdatatype.TXT,
            ]


async def test_a_key_the_anchor_does_not_name_is_bogus(tmp_path: Path) -> None:
    unbound_or_skip()
    make_keys(tmp_path / "keys", [ZONE])
    (stranger,) = make_keys(tmp_path / "other", [ZONE])
    async with running_dns(tmp_path, dnssec_key_dir=str(tmp_path / "keys")) as app:
        app.store.apply_snapshot(SNAPSHOT, 1, "test-feed")
        with Unbound(tmp_path / "unbound", stubs(app), [ds_anchor(stranger)]) as resolver:
            response = await resolver.query("one." + ZONE, "TXT")
            assert response.rcode() == dns.rcode.SERVFAIL
            assert "validation failure" in resolver.log.read_text()


async def test_expired_signatures_are_bogus(tmp_path: Path) -> None:
    unbound_or_skip()
    (key,) = make_keys(tmp_path / "keys", [ZONE])
    # Signatures made 20 days ago, valid for 14: expired six days ago.
    app = DnsApp(
        dns_settings(tmp_path, dnssec_key_dir=str(tmp_path / "keys")),
        CollectorRegistry(),
        signing_clock=lambda: time.time() - 20 * 86400,
    )
    await app.start()
    try:
        app.store.apply_snapshot(SNAPSHOT, 1, "test-feed")
        with Unbound(tmp_path / "unbound", stubs(app), [ds_anchor(key)]) as resolver:
            response = await resolver.query("one." + ZONE, "TXT")
            assert response.rcode() == dns.rcode.SERVFAIL
            assert "expired" in resolver.log.read_text()
    finally:
        await app.stop(grace=0)


class Watcher:
    """Asks Unbound for a TXT value and the DNSKEY RRset every 20 ms and tallies the outcome
    of every answer it gets (a timeout while Unbound restarts is not an answer)."""

    def __init__(self, resolver: Unbound) -> None:
        self.resolver = resolver
        self.outcomes: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            for name, rdtype in (("one." + ZONE, "TXT"), (ZONE, "DNSKEY")):
                try:
                    response = await self.resolver.query(name, rdtype, wait=0.5)
                except (dns.exception.Timeout, OSError):
                    continue
                secure = bool(response.flags & dns.flags.AD) and bool(response.answer)
                self.outcomes["secure" if secure else dns.rcode.to_text(response.rcode())] += 1
            await asyncio.sleep(0.02)

    def __enter__(self) -> Watcher:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_zsk_and_ksk_rollovers_never_look_bogus(tmp_path: Path) -> None:
    """The procedure of docs/dnssec.md with short TTLs (2 s) and a resolver that caches them:
    each step is a key file change the replica reloads by itself, and each wait is the TTL the
    procedure names. A KSK dropped before its successor's DS is published shows SERVFAIL here
    (checked by hand: leaving out the double-DS step fails this test). A ZSK switched without
    pre-publishing does not: Unbound fetches the DNSKEY RRset again when a signature names a
    key it has not cached, so that step protects resolvers that do not."""
    unbound_or_skip()
    directory = tmp_path / "keys"
    (ksk1,) = make_keys(directory, [ZONE], role=Role.KSK)
    (zsk1,) = make_keys(directory, [ZONE], role=Role.ZSK)
    ttl = 2.0
    settings = {
        "dnssec_key_dir": str(directory),
        "dnssec_dnskey_ttl": int(ttl),
        "txt_ttl": int(ttl),
        "static_ttl": int(ttl),
        "ns_ttl": int(ttl),
        "soa_ttl": int(ttl),
        "soa_minimum": int(ttl),
        "zone_reload_interval_seconds": 0.1,
    }

    def write(key: ZoneKey, state: State) -> None:
        write_key(ZoneKey(key.zone, key.role, state, key.private_key, key.dnskey), directory, None)

    async def step(app: DnsApp) -> None:
        """Wait until the replica has reloaded the key files, then one TTL."""
        generation = app.reloader.generation
        deadline = time.monotonic() + 5
        while app.reloader.generation == generation:
            assert time.monotonic() < deadline, "the key change was not reloaded"
            await asyncio.sleep(0.05)
        await asyncio.sleep(ttl + 0.5)

    async with running_dns(tmp_path, **settings) as app:
        app.store.apply_snapshot(SNAPSHOT, 1, "test-feed")
        workdir = tmp_path / "unbound"
        resolver = Unbound(workdir, stubs(app), [ds_anchor(ksk1)], cache_max_ttl=3600).start()
        try:
            with Watcher(resolver) as watch:
                await asyncio.sleep(ttl)
                # ZSK rollover, pre-publish: the new key is published, then it signs, then
                # the old one goes.
                (zsk2,) = make_keys(directory, [ZONE], role=Role.ZSK, state=State.PUBLISHED)
                await step(app)
                write(zsk2, State.ACTIVE)
                write(zsk1, State.RETIRED)
                await step(app)
                (directory / key_file_name(zsk1)).unlink()
                await step(app)
                zsk_phase = watch.outcomes.copy()
                # KSK rollover, double-DS: the parent publishes the new DS beside the old
                # (here: the resolver's trust anchors), then the new KSK signs, then the old
                # DS and key go.
                (ksk2,) = make_keys(directory, [ZONE], role=Role.KSK, state=State.PUBLISHED)
                await step(app)
                resolver.stop()
                resolver = Unbound(
                    workdir, stubs(app), [ds_anchor(ksk1), ds_anchor(ksk2)], cache_max_ttl=3600
                ).start()
                watch.resolver = resolver
                await asyncio.sleep(ttl)
                write(ksk2, State.ACTIVE)
                write(ksk1, State.RETIRED)
                await step(app)
                resolver.stop()
                resolver = Unbound(
                    workdir, stubs(app), [ds_anchor(ksk2)], cache_max_ttl=3600
                ).start()
                watch.resolver = resolver
                (directory / key_file_name(ksk1)).unlink()
                await step(app)
            outcomes = watch.outcomes
        finally:
            resolver.stop()
        dnskey = await resolver_free_dnskey(app)
        assert {k.flags for k in dnskey} == {256, 257}
        assert len(dnskey) == 2  # ksk2 and zsk2 left
    assert set(outcomes) == {"secure"}, outcomes
    assert zsk_phase["secure"] > 100
    assert outcomes["secure"] - zsk_phase["secure"] > 100


async def resolver_free_dnskey(app: DnsApp) -> dns.rrset.RRset:
    """The DNSKEY RRset the replica serves now, asked directly."""
    query = dns.message.make_query(ZONE, "DNSKEY")
    wire = app.responder.answer(query.to_wire(), False)
    assert wire is not None
    return dns.message.from_wire(wire).answer[0]
