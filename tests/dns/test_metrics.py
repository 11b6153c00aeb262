"""acmezone_dns_* metrics: bounded labels initialised at 0, queries counted by transport, type
and rcode, sampled latency, records held."""

from __future__ import annotations

import asyncio
import urllib.request

from prometheus_client import CollectorRegistry

from acmezone_dns.app import DnsApp
from acmezone_dns.metrics import QTYPES, RCODES, TRANSPORTS
from tests.dns.conftest import query_tcp, query_udp, v4


def sample(registry: CollectorRegistry, transport: str, qtype: str, rcode: str) -> float:
    value = registry.get_sample_value(
        "acmezone_dns_queries_total", {"transport": transport, "qtype": qtype, "rcode": rcode}
    )
    assert value is not None
    return value


async def test_queries_are_counted_by_transport_type_and_rcode(
    dns_app: DnsApp, metrics_registry: CollectorRegistry
) -> None:
    for transport in TRANSPORTS:
        for qtype in QTYPES:
            for rcode in RCODES:
                assert sample(metrics_registry, transport, qtype, rcode) == 0
    for _ in range(3):
        await query_udp(v4(dns_app), "one.acme.example.test", "TXT")
    await query_udp(v4(dns_app), "nobody.acme.example.test", "A")
    await query_udp(v4(dns_app), "one.acme.example.test", "NAPTR")  # not a labelled type
    await query_tcp(v4(dns_app), "example.com", "AAAA")
    await query_udp(v4(dns_app), "one.acme.example.test", "TXT", use_edns=1)
    assert sample(metrics_registry, "udp", "TXT", "NOERROR") == 3
    assert sample(metrics_registry, "udp", "A", "NXDOMAIN") == 1
    assert sample(metrics_registry, "udp", "OTHER", "NOERROR") == 1
    assert sample(metrics_registry, "tcp", "AAAA", "REFUSED") == 1
    assert sample(metrics_registry, "udp", "OTHER", "BADVERS") == 1


async def test_records_latency_and_scrape_endpoint(
    dns_app: DnsApp, metrics_registry: CollectorRegistry
) -> None:
    assert metrics_registry.get_sample_value("acmezone_dns_records") == 18 + 11
    for _ in range(40):
        await query_udp(v4(dns_app), "one.acme.example.test", "TXT")
    count = metrics_registry.get_sample_value("acmezone_dns_answer_latency_seconds_count")
    assert count is not None
    assert count >= 2  # one in 16 is timed
    url = f"http://{dns_app.metrics_address}/metrics"

    def scrape() -> str:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    text = await asyncio.to_thread(scrape)
    assert "acmezone_dns_feed_connected 0.0" in text
    assert 'acmezone_dns_queries_total{qtype="TXT",rcode="NOERROR",transport="udp"} 40.0' in text
