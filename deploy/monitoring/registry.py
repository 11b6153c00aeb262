"""The registry dashboard: registrations, TXT values, auth, the feed, the HTTP API and gRPC."""

from __future__ import annotations

from typing import Any

from .grafana import Panel, Row, dashboard
from .panels import AT_LEAST_ONE, JI, grpc_row, per_instance, quantiles, rate_by, stat, summed


def build() -> dict[str, Any]:
    """The registry, per replica."""
    rows = [
        Row(
            "Registrations and TXT values",
            [
                stat(
                    "Registrations",
                    f"max(acmezone_registry_registrations{{{JI}}})",
                    "registrations",
                    width=6,
                ),
                stat(
                    "Open feed watchers",
                    f"sum(acmezone_registry_feed_watchers{{{JI}}})",
                    "watchers",
                    width=6,
                    thresholds=AT_LEAST_ONE,
                    description="Every dns pod holds one watch; 0 means no dns pod is fed.",
                ),
                stat(
                    "Feed revision",
                    f"max(acmezone_registry_feed_revision{{{JI}}})",
                    "revision",
                    width=6,
                ),
                stat(
                    "Compacted up to revision",
                    f"max(acmezone_registry_feed_compacted_revision{{{JI}}})",
                    "compacted",
                    width=6,
                ),
                rate_by(
                    "TXT operations by operation and result",
                    "acmezone_registry_txt_updates_total",
                    JI,
                    ("operation", "result"),
                    unit="ops",
                    width=12,
                ),
                Panel(
                    "Registrations created, deleted; values expired",
                    [
                        (summed("acmezone_registry_registrations_created_total", JI), "created"),
                        (summed("acmezone_registry_registrations_deleted_total", JI), "deleted"),
                        (
                            summed("acmezone_registry_txt_values_expired_total", JI),
                            "values expired",
                        ),
                    ],
                    unit="ops",
                    width=12,
                ),
                rate_by(
                    "Authentication failures by reason",
                    "acmezone_registry_auth_failures_total",
                    JI,
                    ("reason",),
                    unit="reqps",
                    width=12,
                ),
                per_instance(
                    "Feed watchers by replica", "acmezone_registry_feed_watchers", JI, width=12
                ),
                rate_by(
                    "RFC 2136 DNS UPDATEs by response code",
                    "acmezone_registry_dns_updates_total",
                    JI,
                    ("rcode",),
                    unit="ops",
                    width=24,
                    description="TSIG-signed UPDATE messages applied to TXT values (lego's and "
                    "certbot's rfc2136 plugins), by the answer they got.",
                ),
            ],
        ),
        Row(
            "acme-dns HTTP API",
            [
                rate_by(
                    "Requests by route and status",
                    "acmezone_registry_http_requests_total",
                    JI,
                    ("route", "status"),
                    unit="reqps",
                    width=12,
                ),
                Panel(
                    "Request duration p50 / p99 by route",
                    quantiles(
                        "acmezone_registry_http_request_duration_seconds_bucket",
                        JI,
                        (0.5, 0.99),
                        by=("route",),
                    ),
                    unit="s",
                    width=12,
                ),
            ],
        ),
        grpc_row(JI),
    ]
    return dashboard(
        "acmezone-registry",
        "acmezone / Registry",
        "Registrations, TXT values, credentials, the record feed, the acme-dns HTTP API and gRPC.",
        rows,
        job_query_metric="acmezone_registry_feed_revision",
        job_regex="acmezone-registry.*",
        with_instance=True,
    )
