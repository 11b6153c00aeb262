"""The overview dashboard: issuance health, certificates by state, soonest expiry, DNS QPS and
rcodes, feed lag, registry update rate and auth failures, and who is up."""

from __future__ import annotations

from typing import Any

from .grafana import Panel, Row, dashboard
from .panels import (
    AT_LEAST_ONE,
    EXPIRY_THRESHOLDS,
    J,
    certificates_by_state,
    issuance_rates,
    rate_by,
    stat,
    summed,
)


def in_state(
    title: str, state: str, legend: str, thresholds: list[tuple[float | None, str]] | None = None
) -> Panel:
    """How many certificates are in `state` (the issuer's gauge), as a stat."""
    expr = f'max(acmezone_issuer_certificates{{{J}, state="{state}"}})'
    return stat(title, expr, legend, width=4, thresholds=thresholds)


def build() -> dict[str, Any]:
    """The overview, across every acmezone job."""
    rows = [
        Row(
            "Issuance",
            [
                in_state("Certificates issued", "issued", "issued"),
                in_state("Certificates failed", "failed", "failed", [(None, "green"), (1, "red")]),
                in_state(
                    "Waiting for CNAME delegation",
                    "waiting_for_delegation",
                    "waiting",
                    [(None, "green"), (1, "yellow")],
                ),
                stat(
                    "Soonest expiry",
                    "min(max by (certificate) "
                    f"(acmezone_issuer_certificate_expiration_timestamp_seconds{{{J}}} > 0)"
                    " - time())",
                    "soonest",
                    unit="s",
                    width=4,
                    thresholds=EXPIRY_THRESHOLDS,
                    description="Time until the first certificate expires.",
                ),
                stat(
                    "Issuance failure ratio (1h)",
                    f"{summed('acmezone_issuer_issuance_failures_total', J, window='1h')} / "
                    f"{summed('acmezone_issuer_issuance_attempts_total', J, window='1h')}",
                    "failed",
                    unit="percentunit",
                    width=4,
                    thresholds=[(None, "green"), (0.2, "orange"), (0.5, "red")],
                ),
                stat(
                    "Services up",
                    f"sum by (job) (up{{{J}}})",
                    "{{job}}",
                    width=4,
                    thresholds=AT_LEAST_ONE,
                ),
                certificates_by_state(J),
                issuance_rates("Issuance attempts and failures", J, width=16),
            ],
        ),
        Row(
            "DNS",
            [
                rate_by(
                    "Queries per second by rcode",
                    "acmezone_dns_queries_total",
                    J,
                    ("rcode",),
                    unit="reqps",
                    stack=True,
                    width=12,
                ),
                Panel(
                    "Feed lag by pod",
                    [(f"max by (instance) (acmezone_dns_feed_lag_seconds{{{J}}})", "{{instance}}")],
                    unit="s",
                    width=6,
                ),
                Panel(
                    "Feed revisions behind the registry",
                    [
                        (
                            "max(acmezone_registry_feed_revision) - on() group_right() "
                            f"acmezone_dns_feed_revision{{{J}}}",
                            "{{instance}}",
                        )
                    ],
                    width=6,
                ),
            ],
        ),
        Row(
            "Registry",
            [
                rate_by(
                    "TXT updates by result",
                    "acmezone_registry_txt_updates_total",
                    f'{J}, operation!="get"',
                    ("result",),
                    unit="ops",
                    stack=True,
                    width=12,
                ),
                rate_by(
                    "Authentication failures by reason",
                    "acmezone_registry_auth_failures_total",
                    J,
                    ("reason",),
                    unit="reqps",
                    stack=True,
                    width=12,
                ),
            ],
        ),
    ]
    return dashboard(
        "acmezone-overview",
        "acmezone / Overview",
        "Issuance health, certificates, DNS traffic, the record feed and the registry at a glance.",
        rows,
        job_query_metric="up",
        job_regex="acmezone-.*",
        with_instance=False,
    )
