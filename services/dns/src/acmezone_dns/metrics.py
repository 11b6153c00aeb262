"""Prometheus metrics of the dns service, cheap enough for a 100k-queries-a-second hot path.

Queries are counted in a flat list of plain ints indexed by (transport, qtype, rcode) slot, and a
sampled latency histogram is kept in plain ints too; a custom collector turns them into
`acmezone_dns_*` families only when Prometheus scrapes. A `Counter.labels(...).inc()` per query
would cost more than answering the query. Label values are bounded: query types outside a fixed
list count as OTHER, and every (transport, qtype, rcode) series exists from the start at 0.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import dns.rdatatype
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

TRANSPORTS = ("udp", "tcp")
QTYPES = (
    "A",
    "AAAA",
    "TXT",
    "CNAME",
    "NS",
    "SOA",
    "CAA",
    "MX",
    "SRV",
    "PTR",
    "HTTPS",
    "SVCB",
    "DS",
    "DNSKEY",
    "ANY",
    "AXFR",
    "IXFR",
    "OTHER",
)
RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS", "OTHER")

_NQ = len(QTYPES)
_NR = len(RCODES)
RCODE_SLOTS = _NR
"""Slots per query type: a qtype index times this plus an rcode slot is a counter slot."""
TCP_OFFSET = _NQ * _NR
"""Add to a slot to count over TCP instead of UDP."""

QTYPE_OTHER = _NQ - 1
QTYPE_INDEX: dict[int, int] = {
    int(dns.rdatatype.from_text(name)): i for i, name in enumerate(QTYPES[:-1])
}
"""Query type number -> index into QTYPES (missing: QTYPE_OTHER)."""

_RCODE_INDEX = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 16: 6}

# Sampled answer latency, seconds: from a query read to its answer handed to the kernel.
LATENCY_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01)
LATENCY_SAMPLE_EVERY = 16
"""One query in this many is timed; timing each costs more than a cache hit's answer."""

# Datagrams per batched UDP read: near 1 while the server keeps up, near the batch size when
# queries arrive faster than it answers them.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def qtype_index(qtype: int) -> int:
    """The QTYPES index of a query type."""
    return QTYPE_INDEX.get(qtype, QTYPE_OTHER)


def slot(qtype_idx: int, rcode: int) -> int:
    """The UDP counter slot of a (qtype index, rcode) pair; add TCP_OFFSET for TCP."""
    return qtype_idx * _NR + _RCODE_INDEX.get(rcode, _NR - 1)


class QueryStats:
    """Plain-int query counters and a sampled latency histogram, written by the DNS servers."""

    def __init__(self) -> None:
        self.counts = [0] * (len(TRANSPORTS) * _NQ * _NR)
        self.dropped = 0
        self.tcp_evicted = 0
        self.tcp_refused = 0
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0
        self.batch_buckets = [0] * (len(BATCH_BUCKETS) + 1)
        self.batch_sum = 0

    def observe_latency(self, seconds: float) -> None:
        """Record one sampled answer latency."""
        self.latency_buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds
        self.latency_count += 1

    def observe_batch(self, datagrams: int) -> None:
        """Record one batched UDP read of `datagrams` datagrams."""
        self.batch_buckets[bisect_left(BATCH_BUCKETS, datagrams)] += 1
        self.batch_sum += datagrams


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    """Prometheus histogram buckets (le, cumulative count) from per-bucket counts."""
    total = 0
    buckets: list[tuple[str, float]] = []
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        total += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), total))
    return buckets


@dataclass
class FeedMetrics:
    """What the feed client reports about itself (read by the collector, written by the client)."""

    connected: bool = False
    revision: int = 0
    reconnects: int = 0
    lag_seconds: float = 0.0
    snapshots_applied: int = 0
    changes_applied: int = 0


class DnsCollector(Collector):
    """Exposes QueryStats, zone size and feed state as acmezone_dns_* families on scrape."""

    def __init__(
        self, stats: QueryStats, feed: FeedMetrics, record_count: Callable[[], int]
    ) -> None:
        self._stats = stats
        self._feed = feed
        self._record_count = record_count

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        queries = CounterMetricFamily(
            "acmezone_dns_queries",
            "DNS queries answered, by transport, query type and response code.",
            labels=("transport", "qtype", "rcode"),
        )
        counts = list(stats.counts)
        i = 0
        for transport in TRANSPORTS:
            for qtype in QTYPES:
                for rcode in RCODES:
                    queries.add_metric((transport, qtype, rcode), counts[i])
                    i += 1
        yield queries
        yield CounterMetricFamily(
            "acmezone_dns_dropped_queries",
            "Packets that got no answer: responses, runts shorter than a header, send failures.",
            value=stats.dropped,
        )
        tcp = CounterMetricFamily(
            "acmezone_dns_tcp_connections_closed",
            "DNS-over-TCP connections the server closed for room: an idle one evicted for a new "
            "connection (RFC 7766 section 6.2.3), or a new one refused when none was idle.",
            labels=("reason",),
        )
        tcp.add_metric(("evicted",), stats.tcp_evicted)
        tcp.add_metric(("refused",), stats.tcp_refused)
        yield tcp
        latency = HistogramMetricFamily(
            "acmezone_dns_answer_latency_seconds",
            f"Time from reading a query to handing its answer to the kernel, sampled 1 in "
            f"{LATENCY_SAMPLE_EVERY} reads (for a batched read: to the batch's last answer).",
        )
        latency.add_metric(
            [], _cumulative(LATENCY_BUCKETS, list(stats.latency_buckets)), stats.latency_sum
        )
        yield latency
        batches = HistogramMetricFamily(
            "acmezone_dns_udp_batch_datagrams",
            "Datagrams per batched UDP read (recvmmsg): near 1 while the server keeps up, "
            "near UDP_BATCH_SIZE when it falls behind.",
        )
        batches.add_metric(
            [],
            _cumulative(tuple(float(b) for b in BATCH_BUCKETS), list(stats.batch_buckets)),
            float(stats.batch_sum),
        )
        yield batches
        yield GaugeMetricFamily(
            "acmezone_dns_records",
            "Resource records held in the served zones.",
            value=self._record_count(),
        )
        feed = self._feed
        yield GaugeMetricFamily(
            "acmezone_dns_feed_revision",
            "The record-feed revision the challenge zone is served at.",
            value=feed.revision,
        )
        yield GaugeMetricFamily(
            "acmezone_dns_feed_connected",
            "1 while the record-feed stream to the registry is up.",
            value=1 if feed.connected else 0,
        )
        yield GaugeMetricFamily(
            "acmezone_dns_feed_lag_seconds",
            "Registry clock at the last commit or bookmark received, to local receipt.",
            value=feed.lag_seconds,
        )
        yield CounterMetricFamily(
            "acmezone_dns_feed_reconnects",
            "Times the feed stream was lost and re-opened.",
            value=feed.reconnects,
        )
        yield CounterMetricFamily(
            "acmezone_dns_feed_snapshots",
            "Full snapshots applied (first sync and re-lists).",
            value=feed.snapshots_applied,
        )
        yield CounterMetricFamily(
            "acmezone_dns_feed_changes",
            "Record changes applied from the feed.",
            value=feed.changes_applied,
        )


def register(
    registry: CollectorRegistry,
    stats: QueryStats,
    feed: FeedMetrics,
    record_count: Callable[[], int],
) -> None:
    """Attach the dns collector to a registry (each test passes its own)."""
    registry.register(DnsCollector(stats, feed, record_count))


UPDATE_RCODES = (
    "NOERROR",
    "FORMERR",
    "SERVFAIL",
    "NXDOMAIN",
    "NOTIMP",
    "REFUSED",
    "YXDOMAIN",
    "YXRRSET",
    "NXRRSET",
    "NOTAUTH",
    "NOTZONE",
    "OTHER",
)
_UPDATE_RCODE_INDEX = {rcode: rcode for rcode in range(len(UPDATE_RCODES) - 1)}
"""DNS rcode number -> index into UPDATE_RCODES (0 NOERROR ... 10 NOTZONE, in number order)."""


class UpdateStats:
    """RFC 2136 UPDATE messages answered, by transport and response code (plain ints)."""

    def __init__(self) -> None:
        self.counts = [0] * (len(TRANSPORTS) * len(UPDATE_RCODES))

    def count(self, rcode: int, tcp: bool) -> None:
        """Count one answered UPDATE; rcodes outside UPDATE_RCODES count as OTHER."""
        index = _UPDATE_RCODE_INDEX.get(rcode, len(UPDATE_RCODES) - 1)
        self.counts[index + (len(UPDATE_RCODES) if tcp else 0)] += 1


class UpdateCollector(Collector):
    """Exposes UpdateStats as acmezone_dns_updates_total."""

    def __init__(self, stats: UpdateStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        updates = CounterMetricFamily(
            "acmezone_dns_updates",
            "RFC 2136 UPDATE messages answered, by transport and response code (SERVFAIL when "
            "the registry could not be asked).",
            labels=("transport", "rcode"),
        )
        counts = list(self._stats.counts)
        i = 0
        for transport in TRANSPORTS:
            for rcode in UPDATE_RCODES:
                updates.add_metric((transport, rcode), counts[i])
                i += 1
        yield updates


@dataclass
class ReloadStats:
    """Zone file reload outcomes, for `acmezone_dns_zone_reloads_total`."""

    ok: int = 0
    error: int = 0
    last_success_time: float = 0.0


class ReloadCollector(Collector):
    """Exposes zone file reloads as acmezone_dns_zone_reloads_total{result} and the time of the
    last good one."""

    def __init__(self, stats: ReloadStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        reloads = CounterMetricFamily(
            "acmezone_dns_zone_reloads",
            "Zone file reloads: ok (swapped in) or error (refused, the old zones kept).",
            labels=("result",),
        )
        reloads.add_metric(("ok",), self._stats.ok)
        reloads.add_metric(("error",), self._stats.error)
        yield reloads
        yield GaugeMetricFamily(
            "acmezone_dns_zone_reload_last_success_timestamp_seconds",
            "When zone files were last reloaded successfully (0: never since start).",
            value=self._stats.last_success_time,
        )


@dataclass
class SigningStats:
    """DNSSEC signing work (plain ints, counted by `dnssec.signer`)."""

    signatures: int = 0
    denials_signed: int = 0
    denials_refused: int = 0
    signed_answers: Callable[[], int] = lambda: 0


class SigningCollector(Collector):
    """Exposes SigningStats as acmezone_dns_dnssec_*."""

    def __init__(self, stats: SigningStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        yield CounterMetricFamily(
            "acmezone_dns_dnssec_signatures",
            "RRSIG signatures made (each RRset once per active key, again near expiry).",
            value=stats.signatures,
        )
        denials = CounterMetricFamily(
            "acmezone_dns_dnssec_denials",
            "Compact denial proofs (one NSEC per name asked for): signed, or refused because "
            "the signing budget was spent (answered TC over UDP, SERVFAIL over TCP).",
            labels=("result",),
        )
        denials.add_metric(("signed",), stats.denials_signed)
        denials.add_metric(("refused",), stats.denials_refused)
        yield denials
        yield GaugeMetricFamily(
            "acmezone_dns_dnssec_signed_answers",
            "Signed answers held for DO=1 queries.",
            value=stats.signed_answers(),
        )


TRANSFER_TYPES = ("AXFR", "IXFR")
TRANSFER_RESULTS = (
    "full",
    "incremental",
    "current",
    "refused",
    "notauth",
    "formerr",
    "servfail",
)
NOTIFY_RESULTS = ("ok", "failed")


class TransferStats:
    """Zone transfers answered, by type and result, and NOTIFY messages sent, by result."""

    def __init__(self) -> None:
        self.transfers = dict.fromkeys(
            ((t, r) for t in TRANSFER_TYPES for r in TRANSFER_RESULTS), 0
        )
        self.notifies = dict.fromkeys(NOTIFY_RESULTS, 0)

    def count(self, qtype: str, result: str) -> None:
        """One transfer request answered (`result` one of TRANSFER_RESULTS)."""
        self.transfers[(qtype, result)] += 1


class TransferCollector(Collector):
    """Exposes TransferStats as acmezone_dns_transfers_total and acmezone_dns_notifies_total."""

    def __init__(self, stats: TransferStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        transfers = CounterMetricFamily(
            "acmezone_dns_transfers",
            "Zone transfer requests answered, by type and result: full (the whole zone), "
            "incremental (only the changes), current (the client was up to date), refused, "
            "notauth (TSIG failure or another zone), formerr, servfail (feed not ready).",
            labels=("type", "result"),
        )
        for (qtype, result), value in self._stats.transfers.items():
            transfers.add_metric((qtype, result), value)
        yield transfers
        notifies = CounterMetricFamily(
            "acmezone_dns_notifies",
            "NOTIFY messages sent to secondaries: ok (acknowledged) or failed (no answer after "
            "the retries, or an error rcode).",
            labels=("result",),
        )
        for result, value in self._stats.notifies.items():
            notifies.add_metric((result,), value)
        yield notifies
