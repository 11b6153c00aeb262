"""The issuer dashboard: certificates by state, expiry and renewal, issuance attempts, the ACME
server and delivery to the hosts."""

from __future__ import annotations

from typing import Any

from .grafana import Panel, Row, dashboard
from .panels import (
    EXPIRY_THRESHOLDS,
    JI,
    certificates_by_state,
    grpc_row,
    issuance_rates,
    quantiles,
    rate_by,
)

EXPIRY = "acmezone_issuer_certificate_expiration_timestamp_seconds"


def build() -> dict[str, Any]:
    """The issuer, per replica."""
    rows = [
        Row(
            "Certificates",
            [
                certificates_by_state(JI),
                Panel(
                    "Time left per certificate (soonest first)",
                    [
                        (
                            f"sort(max by (certificate) ({EXPIRY}{{{JI}}} > 0) - time())",
                            "{{certificate}}",
                        )
                    ],
                    kind="table",
                    unit="s",
                    width=8,
                    instant=True,
                    thresholds=EXPIRY_THRESHOLDS,
                ),
                Panel(
                    "Planned renewal per certificate",
                    [
                        (
                            "sort(max by (certificate) "
                            "(acmezone_issuer_certificate_renewal_timestamp_seconds"
                            f"{{{JI}}} > 0) - time())",
                            "{{certificate}}",
                        )
                    ],
                    kind="table",
                    unit="s",
                    width=8,
                    instant=True,
                    description="Negative: renewal is due or overdue.",
                ),
                Panel(
                    "Certificates by state over time",
                    [(f"max by (state) (acmezone_issuer_certificates{{{JI}}})", "{{state}}")],
                    stack=True,
                    width=24,
                ),
            ],
        ),
        Row(
            "Issuance",
            [
                issuance_rates("Attempts and failures by reason", JI, width=12),
                Panel(
                    "Issuance duration p50 / p90",
                    quantiles(
                        "acmezone_issuer_issuance_duration_seconds_bucket",
                        JI,
                        (0.5, 0.9),
                        window="1h",
                    ),
                    unit="s",
                    width=12,
                    description="From placing the order to storing the chain, over the last hour.",
                ),
                rate_by(
                    "ACME requests by endpoint and status",
                    "acmezone_issuer_acme_requests_total",
                    JI,
                    ("endpoint", "status"),
                    unit="reqps",
                    width=24,
                ),
            ],
        ),
        Row(
            "Delivery",
            [
                Panel(
                    "Delivery targets by status",
                    [
                        (
                            "sum by (status) (max by (certificate, status) "
                            f"(acmezone_issuer_delivery_targets{{{JI}}}))",
                            "{{status}}",
                        )
                    ],
                    stack=True,
                    width=12,
                    description="Hosts and directories agents reported: on the current serial "
                    "or an older one.",
                ),
                Panel(
                    "Stale targets: time left (soonest first)",
                    [
                        (
                            "sort(min by (certificate) "
                            "(acmezone_issuer_delivery_stale_expiration_timestamp_seconds"
                            f"{{{JI}}}) - time())",
                            "{{certificate}}",
                        )
                    ],
                    kind="table",
                    unit="s",
                    width=12,
                    instant=True,
                    thresholds=[(None, "red"), (7 * 86400, "green")],
                    description="Certificates with a target still on an older serial; "
                    "`acmezone cert show` names the hosts.",
                ),
            ],
        ),
        grpc_row(JI),
    ]
    return dashboard(
        "acmezone-issuer",
        "acmezone / Issuer",
        "Certificates by state, expiry and renewal, issuance attempts, the ACME server and "
        "delivery to the hosts.",
        rows,
        job_query_metric="acmezone_issuer_certificates",
        job_regex="acmezone-issuer.*",
        with_instance=True,
    )
