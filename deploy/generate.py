"""Generate the Grafana dashboards and the Prometheus Operator rule object from one place.

    python deploy/generate.py          # rewrite the generated files
    python deploy/generate.py --check  # exit 1 if a committed file differs (tests run this)

Writes `deploy/grafana/dashboards/{overview,registry,dns,issuer}.json` (Grafana JSON model,
`$datasource` and `$job` variables, uid `acmezone-*`) and
`deploy/k8s/components/prometheus-operator/prometheusrule.yaml` (the groups of
`deploy/prometheus/alerts.yaml` wrapped in a PrometheusRule) and
`deploy/k8s/components/grafana-dashboards/dashboards.yaml` (the dashboards as ConfigMaps for the
Grafana sidecar). Dashboards are code here, as the
etcd and Kubernetes mixins keep theirs, so every panel follows the same conventions and a test can
check each expression against the metrics the services really export.

Needs only the standard library and PyYAML (installed by `make install`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parent
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
PROMETHEUS_RULE = DEPLOY / "k8s" / "components" / "prometheus-operator" / "prometheusrule.yaml"
DASHBOARD_CONFIGMAPS = DEPLOY / "k8s" / "components" / "grafana-dashboards" / "dashboards.yaml"
GRAFANA_FOLDER = "acmezone"

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
GRID_WIDTH = 24


@dataclass
class Panel:
    """One panel; `targets` are (expr, legend) pairs."""

    title: str
    targets: list[tuple[str, str]]
    kind: str = "timeseries"
    unit: str = "short"
    width: int = 12
    height: int = 8
    description: str = ""
    thresholds: list[tuple[float | None, str]] = field(default_factory=list)
    instant: bool = False
    stack: bool = False
    min_zero: bool = True


@dataclass
class Row:
    """A titled group of panels, laid out left to right and wrapped at 24 columns."""

    title: str
    panels: list[Panel]


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.min_zero and panel.kind == "timeseries":
        defaults["min"] = 0
    if panel.thresholds:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": color, "value": value} for value, color in panel.thresholds],
        }
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 20 if panel.stack else 10,
            "showPoints": "never",
            "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
        }
    result: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "targets": [
            {
                "refId": chr(ord("A") + index),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
                "instant": panel.instant,
                "range": not panel.instant,
            }
            for index, (expr, legend) in enumerate(panel.targets)
        ],
    }
    if panel.kind == "timeseries":
        result["options"] = {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif panel.kind == "stat":
        result["options"] = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background" if panel.thresholds else "value",
            "graphMode": "none",
            "textMode": "auto",
        }
    elif panel.kind == "bargauge":
        result["options"] = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "horizontal",
            "displayMode": "basic",
        }
    elif panel.kind == "table":
        result["options"] = {"showHeader": True, "sortBy": [{"displayName": "Value"}]}
        result["transformations"] = [
            {"id": "labelsToFields", "options": {"mode": "columns"}},
            {"id": "organize", "options": {"excludeByName": {"Time": True}}},
        ]
    return result


def _variables(job_query_metric: str, job_regex: str, with_instance: bool) -> list[dict[str, Any]]:
    variables: list[dict[str, Any]] = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "refresh": 1,
            "regex": "",
        },
        {
            "name": "job",
            "label": "Job",
            "type": "query",
            "datasource": DATASOURCE,
            "definition": f'label_values({job_query_metric}{{job=~"{job_regex}"}}, job)',
            "query": {
                "query": f'label_values({job_query_metric}{{job=~"{job_regex}"}}, job)',
                "refId": "job",
            },
            "current": {},
            "includeAll": True,
            "allValue": job_regex,
            "multi": True,
            "refresh": 2,
            "sort": 1,
            "hide": 0,
        },
    ]
    if with_instance:
        variables.append(
            {
                "name": "instance",
                "label": "Instance",
                "type": "query",
                "datasource": DATASOURCE,
                "definition": f'label_values({job_query_metric}{{job=~"$job"}}, instance)',
                "query": {
                    "query": f'label_values({job_query_metric}{{job=~"$job"}}, instance)',
                    "refId": "instance",
                },
                "current": {},
                "includeAll": True,
                "allValue": ".*",
                "multi": True,
                "refresh": 2,
                "sort": 1,
                "hide": 0,
            }
        )
    return variables


def dashboard(
    uid: str,
    title: str,
    description: str,
    rows: list[Row],
    *,
    job_query_metric: str,
    job_regex: str,
    with_instance: bool,
) -> dict[str, Any]:
    """A whole dashboard in Grafana's JSON model."""
    panels: list[dict[str, Any]] = []
    panel_id = 1
    y = 0
    for row in rows:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id += 1
        y += 1
        x = 0
        line_height = 0
        for panel in row.panels:
            if x + panel.width > GRID_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            panels.append(_panel_json(panel, panel_id, x, y))
            panel_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    links = [
        {
            "title": "acmezone",
            "type": "dashboards",
            "tags": ["acmezone"],
            "asDropdown": True,
            "includeVars": True,
            "keepTime": True,
        }
    ]
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["acmezone"],
        "timezone": "",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "links": links,
        "annotations": {"list": []},
        "templating": {
            "list": _variables(job_query_metric, job_regex, with_instance),
        },
        "panels": panels,
    }


# -- the panels -------------------------------------------------------------------------------

J = 'job=~"$job"'
JI = 'job=~"$job", instance=~"$instance"'


def grpc_row(selector: str) -> Row:
    """The standard gRPC server panels every service shares."""
    return Row(
        "gRPC API",
        [
            Panel(
                "RPCs by method and code",
                [
                    (
                        "sum by (grpc_method, grpc_code) "
                        f"(rate(grpc_server_handled_total{{{selector}}}[{RATE}]))",
                        "{{grpc_method}} {{grpc_code}}",
                    )
                ],
                unit="reqps",
                width=12,
            ),
            Panel(
                "Unary RPC latency p99 by method",
                [
                    (
                        "histogram_quantile(0.99, sum by (grpc_method, le) "
                        "(rate(grpc_server_handling_seconds_bucket"
                        f'{{{selector}, grpc_type="unary"}}[{RATE}])))',
                        "{{grpc_method}}",
                    )
                ],
                unit="s",
                width=12,
            ),
        ],
    )


def overview() -> dict[str, Any]:
    """Issuance health, certificates by state, soonest expiry, DNS QPS and rcodes, feed lag,
    registry update rate and auth failures, and who is up."""
    rows = [
        Row(
            "Issuance",
            [
                Panel(
                    "Certificates issued",
                    [(f'max(acmezone_issuer_certificates{{{J}, state="issued"}})', "issued")],
                    kind="stat",
                    width=4,
                    height=4,
                    instant=True,
                ),
                Panel(
                    "Certificates failed",
                    [(f'max(acmezone_issuer_certificates{{{J}, state="failed"}})', "failed")],
                    kind="stat",
                    width=4,
                    height=4,
                    instant=True,
                    thresholds=[(None, "green"), (1, "red")],
                ),
                Panel(
                    "Waiting for CNAME delegation",
                    [
                        (
                            f"max(acmezone_issuer_certificates"
                            f'{{{J}, state="waiting_for_delegation"}})',
                            "waiting",
                        )
                    ],
                    kind="stat",
                    width=4,
                    height=4,
                    instant=True,
                    thresholds=[(None, "green"), (1, "yellow")],
                ),
                Panel(
                    "Soonest expiry",
                    [
                        (
                            "min(max by (certificate) "
                            f"(acmezone_issuer_certificate_expiration_timestamp_seconds{{{J}}} > 0)"
                            " - time())",
                            "soonest",
                        )
                    ],
                    kind="stat",
                    unit="s",
                    width=4,
                    height=4,
                    instant=True,
                    thresholds=[(None, "red"), (3 * 86400, "orange"), (14 * 86400, "green")],
                    description="Time until the first certificate expires.",
                ),
                Panel(
                    "Issuance failure ratio (1h)",
                    [
                        (
                            f"sum(rate(acmezone_issuer_issuance_failures_total{{{J}}}[1h])) / "
                            f"sum(rate(acmezone_issuer_issuance_attempts_total{{{J}}}[1h]))",
                            "failed",
                        )
                    ],
                    kind="stat",
                    unit="percentunit",
                    width=4,
                    height=4,
                    instant=True,
                    thresholds=[(None, "green"), (0.2, "orange"), (0.5, "red")],
                ),
                Panel(
                    "Services up",
                    [(f"sum by (job) (up{{{J}}})", "{{job}}")],
                    kind="stat",
                    width=4,
                    height=4,
                    instant=True,
                    thresholds=[(None, "red"), (1, "green")],
                ),
                Panel(
                    "Certificates by state",
                    [(f"max by (state) (acmezone_issuer_certificates{{{J}}})", "{{state}}")],
                    kind="bargauge",
                    width=8,
                ),
                Panel(
                    "Issuance attempts and failures",
                    [
                        (
                            f"sum(rate(acmezone_issuer_issuance_attempts_total{{{J}}}[{RATE}]))",
                            "attempts",
                        ),
                        (
                            "sum by (reason) "
                            f"(rate(acmezone_issuer_issuance_failures_total{{{J}}}[{RATE}]))",
                            "failed: {{reason}}",
                        ),
                    ],
                    unit="ops",
                    width=16,
                ),
            ],
        ),
        Row(
            "DNS",
            [
                Panel(
                    "Queries per second by rcode",
                    [
                        (
                            f"sum by (rcode) (rate(acmezone_dns_queries_total{{{J}}}[{RATE}]))",
                            "{{rcode}}",
                        )
                    ],
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
                Panel(
                    "TXT updates by result",
                    [
                        (
                            "sum by (result) (rate(acmezone_registry_txt_updates_total"
                            f'{{{J}, operation!="get"}}[{RATE}]))',
                            "{{result}}",
                        )
                    ],
                    unit="ops",
                    stack=True,
                    width=12,
                ),
                Panel(
                    "Authentication failures by reason",
                    [
                        (
                            "sum by (reason) "
                            f"(rate(acmezone_registry_auth_failures_total{{{J}}}[{RATE}]))",
                            "{{reason}}",
                        )
                    ],
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


def registry() -> dict[str, Any]:
    """The registry: registrations, TXT values, auth, the feed, the HTTP API and gRPC."""
    rows = [
        Row(
            "Registrations and TXT values",
            [
                Panel(
                    "Registrations",
                    [(f"max(acmezone_registry_registrations{{{JI}}})", "registrations")],
                    kind="stat",
                    width=6,
                    height=4,
                    instant=True,
                ),
                Panel(
                    "Open feed watchers",
                    [(f"sum(acmezone_registry_feed_watchers{{{JI}}})", "watchers")],
                    kind="stat",
                    width=6,
                    height=4,
                    instant=True,
                    thresholds=[(None, "red"), (1, "green")],
                    description="Every dns pod holds one watch; 0 means no dns pod is fed.",
                ),
                Panel(
                    "Feed revision",
                    [(f"max(acmezone_registry_feed_revision{{{JI}}})", "revision")],
                    kind="stat",
                    width=6,
                    height=4,
                    instant=True,
                ),
                Panel(
                    "Compacted up to revision",
                    [(f"max(acmezone_registry_feed_compacted_revision{{{JI}}})", "compacted")],
                    kind="stat",
                    width=6,
                    height=4,
                    instant=True,
                ),
                Panel(
                    "TXT operations by operation and result",
                    [
                        (
                            "sum by (operation, result) "
                            f"(rate(acmezone_registry_txt_updates_total{{{JI}}}[{RATE}]))",
                            "{{operation}} {{result}}",
                        )
                    ],
                    unit="ops",
                    width=12,
                ),
                Panel(
                    "Registrations created, deleted; values expired",
                    [
                        (
                            "sum(rate(acmezone_registry_registrations_created_total"
                            f"{{{JI}}}[{RATE}]))",
                            "created",
                        ),
                        (
                            "sum(rate(acmezone_registry_registrations_deleted_total"
                            f"{{{JI}}}[{RATE}]))",
                            "deleted",
                        ),
                        (
                            "sum(rate(acmezone_registry_txt_values_expired_total"
                            f"{{{JI}}}[{RATE}]))",
                            "values expired",
                        ),
                    ],
                    unit="ops",
                    width=12,
                ),
                Panel(
                    "Authentication failures by reason",
                    [
                        (
                            "sum by (reason) "
                            f"(rate(acmezone_registry_auth_failures_total{{{JI}}}[{RATE}]))",
                            "{{reason}}",
                        )
                    ],
                    unit="reqps",
                    width=12,
                ),
                Panel(
                    "Feed watchers by replica",
                    [(f"acmezone_registry_feed_watchers{{{JI}}}", "{{instance}}")],
                    width=12,
                ),
                Panel(
                    "RFC 2136 DNS UPDATEs by response code",
                    [
                        (
                            "sum by (rcode) "
                            f"(rate(acmezone_registry_dns_updates_total{{{JI}}}[{RATE}]))",
                            "{{rcode}}",
                        )
                    ],
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
                Panel(
                    "Requests by route and status",
                    [
                        (
                            "sum by (route, status) "
                            f"(rate(acmezone_registry_http_requests_total{{{JI}}}[{RATE}]))",
                            "{{route}} {{status}}",
                        )
                    ],
                    unit="reqps",
                    width=12,
                ),
                Panel(
                    "Request duration p50 / p99 by route",
                    [
                        (
                            "histogram_quantile(0.5, sum by (route, le) (rate("
                            f"acmezone_registry_http_request_duration_seconds_bucket{{{JI}}}"
                            f"[{RATE}])))",
                            "p50 {{route}}",
                        ),
                        (
                            "histogram_quantile(0.99, sum by (route, le) (rate("
                            f"acmezone_registry_http_request_duration_seconds_bucket{{{JI}}}"
                            f"[{RATE}])))",
                            "p99 {{route}}",
                        ),
                    ],
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


def dns() -> dict[str, Any]:
    """The dns service: queries, latency, the zone and the feed."""
    rows = [
        Row(
            "Queries",
            [
                Panel(
                    "Queries per second",
                    [(f"sum(rate(acmezone_dns_queries_total{{{JI}}}[{RATE}]))", "total")],
                    kind="stat",
                    unit="reqps",
                    width=6,
                    height=4,
                    instant=True,
                ),
                Panel(
                    "SERVFAIL ratio",
                    [
                        (
                            "sum(rate(acmezone_dns_queries_total"
                            f'{{{JI}, rcode="SERVFAIL"}}[{RATE}])) / '
                            f"sum(rate(acmezone_dns_queries_total{{{JI}}}[{RATE}]))",
                            "SERVFAIL",
                        )
                    ],
                    kind="stat",
                    unit="percentunit",
                    width=6,
                    height=4,
                    instant=True,
                    thresholds=[(None, "green"), (0.001, "orange"), (0.01, "red")],
                ),
                Panel(
                    "Records held",
                    [(f"max(acmezone_dns_records{{{JI}}})", "records")],
                    kind="stat",
                    width=6,
                    height=4,
                    instant=True,
                ),
                Panel(
                    "Pods connected to the feed",
                    [(f"sum(acmezone_dns_feed_connected{{{JI}}})", "connected")],
                    kind="stat",
                    width=6,
                    height=4,
                    instant=True,
                    thresholds=[(None, "red"), (1, "green")],
                ),
                Panel(
                    "Queries by rcode",
                    [
                        (
                            f"sum by (rcode) (rate(acmezone_dns_queries_total{{{JI}}}[{RATE}]))",
                            "{{rcode}}",
                        )
                    ],
                    unit="reqps",
                    stack=True,
                    width=8,
                ),
                Panel(
                    "Queries by type",
                    [
                        (
                            f"sum by (qtype) (rate(acmezone_dns_queries_total{{{JI}}}[{RATE}]))",
                            "{{qtype}}",
                        )
                    ],
                    unit="reqps",
                    stack=True,
                    width=8,
                ),
                Panel(
                    "Queries by transport and pod",
                    [
                        (
                            "sum by (instance, transport) "
                            f"(rate(acmezone_dns_queries_total{{{JI}}}[{RATE}]))",
                            "{{instance}} {{transport}}",
                        )
                    ],
                    unit="reqps",
                    width=8,
                ),
                Panel(
                    "Answer latency p50 / p99 (sampled)",
                    [
                        (
                            "histogram_quantile(0.5, sum by (le) (rate("
                            f"acmezone_dns_answer_latency_seconds_bucket{{{JI}}}[{RATE}])))",
                            "p50",
                        ),
                        (
                            "histogram_quantile(0.99, sum by (le) (rate("
                            f"acmezone_dns_answer_latency_seconds_bucket{{{JI}}}[{RATE}])))",
                            "p99",
                        ),
                    ],
                    unit="s",
                    width=8,
                ),
                Panel(
                    "UDP datagrams per read p50 / p99 (near the batch size: falling behind)",
                    [
                        (
                            "histogram_quantile(0.5, sum by (le) (rate("
                            f"acmezone_dns_udp_batch_datagrams_bucket{{{JI}}}[{RATE}])))",
                            "p50",
                        ),
                        (
                            "histogram_quantile(0.99, sum by (le) (rate("
                            f"acmezone_dns_udp_batch_datagrams_bucket{{{JI}}}[{RATE}])))",
                            "p99",
                        ),
                    ],
                    width=8,
                ),
                Panel(
                    "Dropped packets",
                    [
                        (
                            "sum by (instance) "
                            f"(rate(acmezone_dns_dropped_queries_total{{{JI}}}[{RATE}]))",
                            "{{instance}}",
                        )
                    ],
                    unit="pps",
                    width=8,
                ),
            ],
        ),
        Row(
            "Record feed",
            [
                Panel(
                    "Feed revision by pod",
                    [(f"acmezone_dns_feed_revision{{{JI}}}", "{{instance}}")],
                    width=8,
                ),
                Panel(
                    "Feed lag by pod",
                    [(f"acmezone_dns_feed_lag_seconds{{{JI}}}", "{{instance}}")],
                    unit="s",
                    width=8,
                ),
                Panel(
                    "Feed connected by pod",
                    [(f"acmezone_dns_feed_connected{{{JI}}}", "{{instance}}")],
                    width=8,
                ),
                Panel(
                    "Reconnects and re-lists",
                    [
                        (
                            "sum by (instance) (increase("
                            f"acmezone_dns_feed_reconnects_total{{{JI}}}[{RATE}]))",
                            "reconnects {{instance}}",
                        ),
                        (
                            "sum by (instance) (increase("
                            f"acmezone_dns_feed_snapshots_total{{{JI}}}[{RATE}]))",
                            "snapshots {{instance}}",
                        ),
                    ],
                    width=12,
                ),
                Panel(
                    "Record changes applied",
                    [
                        (
                            "sum by (instance) "
                            f"(rate(acmezone_dns_feed_changes_total{{{JI}}}[{RATE}]))",
                            "{{instance}}",
                        )
                    ],
                    unit="ops",
                    width=12,
                ),
            ],
        ),
        Row(
            "Dynamic updates (RFC 2136)",
            [
                Panel(
                    "UPDATEs answered by response code and transport",
                    [
                        (
                            "sum by (rcode, transport) "
                            f"(rate(acmezone_dns_updates_total{{{JI}}}[{RATE}]))",
                            "{{rcode}} {{transport}}",
                        )
                    ],
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


def issuer() -> dict[str, Any]:
    """The issuer: certificates, expiry, issuance, the ACME server."""
    expiry = "acmezone_issuer_certificate_expiration_timestamp_seconds"
    rows = [
        Row(
            "Certificates",
            [
                Panel(
                    "Certificates by state",
                    [(f"max by (state) (acmezone_issuer_certificates{{{JI}}})", "{{state}}")],
                    kind="bargauge",
                    width=8,
                ),
                Panel(
                    "Time left per certificate (soonest first)",
                    [
                        (
                            f"sort(max by (certificate) ({expiry}{{{JI}}} > 0) - time())",
                            "{{certificate}}",
                        )
                    ],
                    kind="table",
                    unit="s",
                    width=8,
                    instant=True,
                    thresholds=[(None, "red"), (3 * 86400, "orange"), (14 * 86400, "green")],
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
                Panel(
                    "Attempts and failures by reason",
                    [
                        (
                            f"sum(rate(acmezone_issuer_issuance_attempts_total{{{JI}}}[{RATE}]))",
                            "attempts",
                        ),
                        (
                            "sum by (reason) "
                            f"(rate(acmezone_issuer_issuance_failures_total{{{JI}}}[{RATE}]))",
                            "failed: {{reason}}",
                        ),
                    ],
                    unit="ops",
                    width=12,
                ),
                Panel(
                    "Issuance duration p50 / p90",
                    [
                        (
                            "histogram_quantile(0.5, sum by (le) (rate("
                            f"acmezone_issuer_issuance_duration_seconds_bucket{{{JI}}}[1h])))",
                            "p50",
                        ),
                        (
                            "histogram_quantile(0.9, sum by (le) (rate("
                            f"acmezone_issuer_issuance_duration_seconds_bucket{{{JI}}}[1h])))",
                            "p90",
                        ),
                    ],
                    unit="s",
                    width=12,
                    description="From placing the order to storing the chain, over the last hour.",
                ),
                Panel(
                    "ACME requests by endpoint and status",
                    [
                        (
                            "sum by (endpoint, status) "
                            f"(rate(acmezone_issuer_acme_requests_total{{{JI}}}[{RATE}]))",
                            "{{endpoint}} {{status}}",
                        )
                    ],
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


def prometheus_rule() -> str:
    """The alert rules file wrapped in a Prometheus Operator PrometheusRule, as YAML text."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "acmezone", "labels": {"app.kubernetes.io/name": "acmezone"}},
        "spec": {"groups": groups},
    }
    header = (
        "# Generated by `python deploy/generate.py` from deploy/prometheus/alerts.yaml: edit that\n"
        "# file, then regenerate. A test fails when the two differ.\n"
    )
    return header + yaml.safe_dump(rule, sort_keys=False, width=100, allow_unicode=True)


def dashboard_configmaps(dashboards: dict[str, str]) -> str:
    """The dashboards as ConfigMaps for the Grafana sidecar (kube-prometheus-stack, the Grafana
    Helm chart): labelled `grafana_dashboard: "1"`, which the sidecar watches for, and annotated
    `grafana_folder`, its usual folder annotation. Kustomize cannot read files outside a
    component's directory, so the JSON is copied in here rather than referenced."""
    header = (
        "# Generated by `python deploy/generate.py` with deploy/grafana/dashboards/*.json: edit\n"
        "# generate.py, then regenerate. A test fails when the two differ.\n"
    )
    documents = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": f"acmezone-dashboard-{name}",
                "labels": {
                    "app.kubernetes.io/name": "acmezone",
                    "app.kubernetes.io/component": "dashboards",
                    "grafana_dashboard": "1",
                },
                "annotations": {"grafana_folder": GRAFANA_FOLDER},
            },
            "data": {f"acmezone-{name}.json": text},
        }
        for name, text in dashboards.items()
    ]
    return header + yaml.safe_dump_all(documents, sort_keys=False, width=100, allow_unicode=True)


def outputs() -> dict[Path, str]:
    """Every generated file and its content."""
    dashboards = {
        name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        for name, build in (
            ("overview", overview),
            ("registry", registry),
            ("dns", dns),
            ("issuer", issuer),
        )
    }
    files = {DASHBOARDS / f"{name}.json": text for name, text in dashboards.items()}
    files[PROMETHEUS_RULE] = prometheus_rule()
    files[DASHBOARD_CONFIGMAPS] = dashboard_configmaps(dashboards)
    return files


def main(argv: list[str] | None = None) -> int:
    """Write the files, or with --check report the ones that are out of date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for path, content in outputs().items():
        current = path.read_text() if path.exists() else None
        if current == content:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    for path in stale:
        verb = "out of date" if args.check else "written"
        print(f"{path.relative_to(DEPLOY.parent)}: {verb}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
