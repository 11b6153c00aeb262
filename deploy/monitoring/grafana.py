"""The Grafana JSON model: panels, rows of panels on the 24-column grid, and whole dashboards.

A dashboard here is plain data (`Panel`, `Row`); `dashboard()` lays the rows out left to right,
wrapping at 24 columns, numbers the panels, and adds the `$datasource`, `$job` and (per service)
`$instance` variables every panel reads through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
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


def _query_variable(name: str, label: str, query: str, all_value: str) -> dict[str, Any]:
    """A multi-value variable filled from a label_values() query, with an "All" option."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": name},
        "current": {},
        "includeAll": True,
        "allValue": all_value,
        "multi": True,
        "refresh": 2,
        "sort": 1,
        "hide": 0,
    }


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
        _query_variable(
            "job", "Job", f'label_values({job_query_metric}{{job=~"{job_regex}"}}, job)', job_regex
        ),
    ]
    if with_instance:
        variables.append(
            _query_variable(
                "instance",
                "Instance",
                f'label_values({job_query_metric}{{job=~"$job"}}, instance)',
                ".*",
            )
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
