"""Real BIND (`named`) and NSD as secondaries of the challenge zone on 127.0.0.1 ports: each
loads the zone by transfer (TSIG-signed), answers a TXT change within a second of the NOTIFY
(by IXFR, which carries only the change), and a secondary with the wrong key gets nothing."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import pytest
from prometheus_client import CollectorRegistry

from acmezone_common.testing import ServiceProcess, free_port
from acmezone_dns.app import DnsApp
from acmezone_dns.store import TxtChange
from tests.dns.conftest import SNAPSHOT, ZONE, running_dns
from tests.dns.test_transfer import SECRET

pytestmark = pytest.mark.slow
WRONG_SECRET = "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZw=="


def named_config(tmp: Path, port: int, primary: int, secret: str) -> list[str]:
    tmp.mkdir()
    conf = tmp / "named.conf"
    conf.write_text(
        f"""
options {{
    directory "{tmp}";
    pid-file "{tmp}/named.pid";
    session-keyfile "{tmp}/session.key";
    managed-keys-directory "{tmp}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    notify no;
    dnssec-validation no;
    allow-query {{ any; }};
}};
controls {{ }};
key "xfr" {{ algorithm hmac-sha256; secret "{secret}"; }};
zone "{ZONE}" {{
    type secondary;
    primaries port {primary} {{ 127.0.0.1 key "xfr"; }};
    file "{tmp}/{ZONE}.db";
}};
"""
    )
    return ["named", "-g", "-c", str(conf)]


def nsd_config(tmp: Path, port: int, primary: int, secret: str) -> list[str]:
    tmp.mkdir()
    conf = tmp / "nsd.conf"
    conf.write_text(
        f"""
server:
    port: {port}
    ip-address: 127.0.0.1
    do-ip6: no
    username: ""
    chroot: ""
    zonesdir: "{tmp}"
    database: ""
    pidfile: "{tmp}/nsd.pid"
    xfrdfile: "{tmp}/xfrd.state"
    xfrdir: "{tmp}"
    zonelistfile: "{tmp}/zone.list"
    verbosity: 2
    rrl-ratelimit: 0
    xfrd-reload-timeout: 0
remote-control:
    control-enable: no
key:
    name: "xfr"
    algorithm: hmac-sha256
    secret: "{secret}"
zone:
    name: "{ZONE}"
    zonefile: "{ZONE}.zone"
    request-xfr: 127.0.0.1@{primary} xfr
    allow-notify: 127.0.0.1 NOKEY
"""
    )
    return ["nsd", "-d", "-c", str(conf)]


SECONDARIES: dict[str, Callable[[Path, int, int, str], list[str]]] = {
    "bind": named_config,
    "nsd": nsd_config,
}


@asynccontextmanager
async def secondary(
    kind: str, tmp: Path, port: int, primary: int, secret: str = SECRET
) -> AsyncIterator[ServiceProcess]:
    process = ServiceProcess(SECONDARIES[kind](tmp, port, primary, secret), {}, str(tmp / "log"))
    await process.start()
    try:
        yield process
    finally:
        await process.stop()


async def ask(port: int, name: str, rdtype: str) -> dns.message.Message | None:
    query = dns.message.make_query(name, rdtype)
    try:
        return await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=0.5)
    except dns.exception.Timeout:
        return None


async def txt_at(port: int, name: str) -> set[str]:
    response = await ask(port, name, "TXT")
    if response is None or response.rcode() != dns.rcode.NOERROR or not response.answer:
        return set()
    return {b"".join(rd.strings).decode() for rd in response.answer[-1]}


async def until(
    check: Callable[[], object], what: str, within: float, log: Callable[[], str]
) -> None:
    """Poll a peer process (it offers no event to wait on) until `check` holds."""
    deadline = time.monotonic() + within
    while not await check():  # type: ignore[misc]
        assert time.monotonic() < deadline, f"{what}\n{log()[-3000:]}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("kind", ["bind", "nsd"])
async def test_secondary_follows_the_feed_by_notify_and_ixfr(tmp_path: Path, kind: str) -> None:
    if shutil.which({"bind": "named", "nsd": "nsd"}[kind]) is None:
        pytest.skip(f"{kind} is not installed")
    registry = CollectorRegistry()
    ours = free_port(kind=2)
    theirs = free_port(kind=2)
    async with running_dns(
        tmp_path,
        registry,
        dns_addresses=[f"127.0.0.1:{ours}"],
        transfer_keys=[f"xfr:hmac-sha256:{SECRET}"],
        transfer_allow=["xfr@127.0.0.1/32"],
        notify_targets=[f"127.0.0.1:{theirs}"],
        notify_delay_seconds=0.01,
    ) as app:
        app.store.apply_snapshot(SNAPSHOT, 10, "feed")
        async with secondary(kind, tmp_path / kind, theirs, ours) as peer:
            name = f"one.{ZONE}."
            await until(
                lambda: _has(theirs, name, "value-one-older"), "initial transfer", 20, peer.log
            )
            rounds = app.notifier.rounds
            app.store.apply_changes([TxtChange(name, ("value-one-newest", "brand-new"))], 11)
            await app.notifier.wait_rounds(rounds + 1)
            notified = time.monotonic()
            await until(
                lambda: _has(theirs, name, "brand-new"),
                "the change, by IXFR after the NOTIFY",
                5,
                peer.log,
            )
            elapsed = time.monotonic() - notified
            assert elapsed < 1.0, f"{kind} answered {elapsed:.2f} s after the NOTIFY"
            assert await txt_at(theirs, name) == {"value-one-newest", "brand-new"}
            assert await _serial(theirs) == 11
            assert (
                registry.get_sample_value(
                    "acmezone_dns_transfers_total", {"type": "IXFR", "result": "incremental"}
                )
                or 0
            ) >= 1
            assert registry.get_sample_value("acmezone_dns_notifies_total", {"result": "ok"})


async def _has(port: int, name: str, value: str) -> bool:
    return value in await txt_at(port, name)


async def _serial(port: int) -> int | None:
    response = await ask(port, ZONE, "SOA")
    if response is None or not response.answer:
        return None
    return int(response.answer[0][0].serial)


@pytest.mark.parametrize("kind", ["bind", "nsd"])
async def test_a_secondary_with_the_wrong_key_gets_nothing(tmp_path: Path, kind: str) -> None:
    if shutil.which({"bind": "named", "nsd": "nsd"}[kind]) is None:
        pytest.skip(f"{kind} is not installed")
    registry = CollectorRegistry()
    ours = free_port(kind=2)
    theirs = free_port(kind=2)
    async with running_dns(
        tmp_path,
        registry,
        dns_addresses=[f"127.0.0.1:{ours}"],
        transfer_keys=[f"xfr:hmac-sha256:{SECRET}"],
        transfer_allow=["xfr@127.0.0.1/32"],
    ) as app:
        app.store.apply_snapshot(SNAPSHOT, 10, "feed")
        async with secondary(kind, tmp_path / kind, theirs, ours, WRONG_SECRET) as peer:

            async def refused() -> bool:
                return bool(
                    registry.get_sample_value(
                        "acmezone_dns_transfers_total", {"type": "AXFR", "result": "notauth"}
                    )
                    or registry.get_sample_value(
                        "acmezone_dns_transfers_total", {"type": "IXFR", "result": "notauth"}
                    )
                    or registry.get_sample_value(
                        "acmezone_dns_transfers_total", {"type": "AXFR", "result": "refused"}
                    )
                )

            await until(refused, "a refused transfer", 20, peer.log)
            # The secondary has no zone to answer from; ours is unchanged and still served.
            assert await txt_at(theirs, f"one.{ZONE}.") == set()
            assert await _serial_ours(app) == 10


async def _serial_ours(app: DnsApp) -> int | None:
    return await _serial(app.dns_addresses[0].port)
