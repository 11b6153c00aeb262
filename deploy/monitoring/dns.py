"""The dns dashboard: queries by rcode, type and transport, latency, the record feed and the
RFC 2136 UPDATEs forwarded to the registry."""

from __future__ import annotations

from typing import Any

from .grafana import Panel, Row, dashboard
from .panels import AT_LEAST_ONE, JI, grpc_row, per_instance, quantiles, rate_by, stat, summed

QUERIES = "acmezone_dns_queries_total"
SERVFAIL = f'{JI}, rcode="SERVFAIL"'


def build() -> dict[str, Any]:
    """The dns service, per pod."""
    rows = [
        Row(
            "Queries",
            [
                stat("Queries per second", summed(QUERIES, JI), "total", unit="reqps", width=6),
                stat(
                    "SERVFAIL ratio",
                    f"{summed(QUERIES, SERVFAIL)} / {summed(QUERIES, JI)}",
                    "SERVFAIL",
                    unit="percentunit",
                    width=6,
                    thresholds=[(None, "green"), (0.001, "orange"), (0.01, "red")],
                ),
                stat("Records held", f"max(acmezone_dns_records{{{JI}}})", "records", width=6),
                stat(
                    "Pods connected to the feed",
                    f"sum(acmezone_dns_feed_connected{{{JI}}})",
                    "connected",
                    width=6,
                    thresholds=AT_LEAST_ONE,
                ),
                rate_by(
                    "Queries by rcode", QUERIES, JI, ("rcode",), unit="reqps", stack=True, width=8
                ),
                rate_by(
                    "Queries by type", QUERIES, JI, ("qtype",), unit="reqps", stack=True, width=8
                ),
                rate_by(
                    "Queries by transport and pod",
                    QUERIES,
                    JI,
                    ("instance", "transport"),
                    unit="reqps",
                    width=8,
                ),
                Panel(
                    "Answer latency p50 / p99 (sampled)",
                    quantiles("acmezone_dns_answer_latency_seconds_bucket", JI, (0.5, 0.99)),
                    unit="s",
                    width=8,
                ),
                Panel(
                    "UDP datagrams per read p50 / p99 (near the batch size: falling behind)",
                    quantiles("acmezone_dns_udp_batch_datagrams_bucket", JI, (0.5, 0.99)),
                    width=8,
                ),
                rate_by(
                    "Dropped packets",
                    "acmezone_dns_dropped_queries_total",
                    JI,
                    ("instance",),
                    unit="pps",
                    width=8,
                ),
            ],
        ),
        Row(
            "Record feed",
            [
                per_instance("Feed revision by pod", "acmezone_dns_feed_revision", JI, width=8),
                per_instance(
                    "Feed lag by pod", "acmezone_dns_feed_lag_seconds", JI, width=8, unit="s"
                ),
                per_instance("Feed connected by pod", "acmezone_dns_feed_connected", JI, width=8),
                Panel(
                    "Reconnects and re-lists",
                    [
                        (
                            summed(
                                f"acmezone_dns_feed_{counter}_total",
                                JI,
                                by=("instance",),
                                function="increase",
                            ),
                            f"{counter} {{{{instance}}}}",
                        )
                        for counter in ("reconnects", "snapshots")
                    ],
                    width=12,
                ),
                rate_by(
                    "Record changes applied",
                    "acmezone_dns_feed_changes_total",
                    JI,
                    ("instance",),
                    unit="ops",
                    width=12,
                ),
            ],
        ),
        Row(
            "Dynamic updates (RFC 2136)",
            [
                rate_by(
                    "UPDATEs answered by response code and transport",
                    "acmezone_dns_updates_total",
                    JI,
                    ("rcode", "transport"),
                    unit="ops",
                    width=24,
                    description="UPDATE messages forwarded to the registry, by the answer the "
                    "client got; SERVFAIL means the registry could not be asked.",
                ),
            ],
        ),
        grpc_row(JI),
    ]
    return dashboard(
        "acmezone-dns",
        "acmezone / DNS",
        "The authoritative dns service: queries by rcode, type and transport, latency, and the "
        "registry's record feed.",
        rows,
        job_query_metric="acmezone_dns_feed_revision",
        job_regex="acmezone-dns.*",
        with_instance=True,
    )
