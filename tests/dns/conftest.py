"""dns fixtures: a whole DnsApp on free loopback ports (IPv4 and IPv6), a static zone file with
CNAMEs into the challenge zone, and helpers that send real DNS packets and parse the answers
with dnspython."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import dns.rdatatype
import pytest
from prometheus_client import CollectorRegistry

from acmezone_common.addresses import HostPort
from acmezone_dns.app import DnsApp
from acmezone_dns.settings import DnsSettings
from acmezone_dns.store import TxtChange

ZONE = "acme.example.test"
CAA = '@ CAA 0 issue "letsencrypt.org"'
LONG_VALUE = "L" * 300
BIG_VALUES = tuple(f"{i}" * 200 for i in range(10))

EXAMPLE_ZONE = """\
$ORIGIN example.test.
$TTL 300
@       SOA   ns1.acme.example.test. hostmaster.example.test. 7 3600 600 86400 30
@       NS    ns1.acme.example.test.
www     A     192.0.2.10
www     AAAA  2001:db8::10
alias   CNAME www
_acme-challenge.www      CNAME one.acme.example.test.
_acme-challenge.missing  CNAME nobody.acme.example.test.
_acme-challenge.outside  CNAME target.elsewhere.test.
loop1   CNAME loop2
loop2   CNAME loop1
deep.a.b.c A  192.0.2.11
"""

SNAPSHOT = [
    TxtChange("one.acme.example.test.", ("value-one-newest", "value-one-older")),
    TxtChange("long.acme.example.test.", (LONG_VALUE,)),
    TxtChange("empty.acme.example.test.", ()),
    TxtChange("leaf.sub.acme.example.test.", ("in-a-subtree",)),
    TxtChange("big.acme.example.test.", BIG_VALUES),
]


def dns_settings(tmp_path: Path, **overrides: Any) -> DnsSettings:
    """Settings for an in-process dns on free loopback ports; the feed points nowhere unless a
    test gives a registry."""
    zone_file = tmp_path / "example.test.zone"
    zone_file.write_text(EXAMPLE_ZONE)
    values: dict[str, Any] = {
        "grpc_address": "127.0.0.1:0",
        "metrics_address": "127.0.0.1:0",
        "dns_addresses": ["127.0.0.1:0", "[::1]:0"],
        "registry_target": "127.0.0.1:1",
        "zone": ZONE,
        "static_records": [CAA],
        "zone_files": [str(zone_file)],
        "feed_backoff_initial_seconds": 0.05,
        "feed_backoff_max_seconds": 0.5,
    }
    values.update(overrides)
    return DnsSettings(**values)


@asynccontextmanager
async def running_dns(
    tmp_path: Path, metrics_registry: CollectorRegistry | None = None, **overrides: Any
) -> AsyncIterator[DnsApp]:
    """A whole dns service started in this process, always stopped."""
    app = DnsApp(dns_settings(tmp_path, **overrides), metrics_registry or CollectorRegistry())
    await app.start()
    try:
        yield app
    finally:
        await app.stop(grace=0)


@pytest.fixture
async def dns_app(tmp_path: Path, metrics_registry: CollectorRegistry) -> AsyncIterator[DnsApp]:
    """A running dns whose challenge zone holds SNAPSHOT at revision 1 (applied to the store
    directly: the feed itself is tested against a real registry in test_feed_client)."""
    async with running_dns(tmp_path, metrics_registry) as app:
        app.store.apply_snapshot(SNAPSHOT, 1, "test-feed")
        yield app


def v4(app: DnsApp) -> HostPort:
    """The app's IPv4 DNS address."""
    return app.dns_addresses[0]


async def query_udp(
    address: HostPort, name: str, rdtype: str | int = "TXT", **kwargs: Any
) -> dns.message.Message:
    """One query over UDP (no EDNS unless asked), parsed with dnspython."""
    kwargs.setdefault("use_edns", False)
    query = dns.message.make_query(name, rdtype, **kwargs)
    return await dns.asyncquery.udp(query, address.host, port=address.port, timeout=2)


async def query_tcp(
    address: HostPort, name: str, rdtype: str | int = "TXT", **kwargs: Any
) -> dns.message.Message:
    """One query over TCP, parsed with dnspython."""
    kwargs.setdefault("use_edns", False)
    query = dns.message.make_query(name, rdtype, **kwargs)
    return await dns.asyncquery.tcp(query, address.host, port=address.port, timeout=2)


async def raw_udp(address: HostPort, payload: bytes, wait: float = 1.0) -> bytes | None:
    """Send raw bytes over UDP; the raw reply, or None when none came within `wait` seconds."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    loop = asyncio.get_running_loop()
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_sendto(sock, payload, (address.host, address.port))
        try:
            async with asyncio.timeout(wait):
                data, _ = await loop.sock_recvfrom(sock, 65535)
        except TimeoutError:
            return None
        return data


def rdtype_of(name: str) -> int:
    """A type mnemonic as its number."""
    return int(dns.rdatatype.from_text(name))
