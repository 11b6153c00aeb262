"""deploy/grafana/dashboards: valid Grafana JSON models that follow the house conventions.

Each dashboard has a `$datasource` variable (type datasource, Prometheus) and a `$job` variable;
every panel and query reads through `${datasource}` and filters on `$job`; panel ids are unique
and panels fit the 24-column grid without overlapping. (Metric names are checked against the
running services in test_metric_names.py.)
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY

DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
EXPECTED = {"overview", "registry", "dns", "issuer"}


def load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def test_an_overview_and_one_dashboard_per_service() -> None:
    assert {p.stem for p in DASHBOARDS} == EXPECTED
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids)
    assert all(uid.startswith("acmezone-") for uid in uids)


@pytest.fixture(params=DASHBOARDS, ids=lambda p: p.stem)
def board(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load(request.param)


def test_datasource_and_job_variables(board: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    job = variables["job"]
    assert job["type"] == "query"
    assert job["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert job["query"]["query"].startswith("label_values(")
    assert job["includeAll"] is True


def test_every_query_uses_the_datasource_variable_and_the_job_filter(
    board: dict[str, Any],
) -> None:
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len(panels) >= 6
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert 'job=~"$job"' in target["expr"], (panel["title"], target["expr"])
            assert target["refId"]


def test_panels_have_unique_ids_and_fit_the_grid_without_overlap(board: dict[str, Any]) -> None:
    ids = [p["id"] for p in board["panels"]]
    assert len(set(ids)) == len(ids)
    occupied: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells


def test_the_overview_covers_what_operators_look_at_first() -> None:
    board = load(DEPLOY / "grafana" / "dashboards" / "overview.json")
    text = json.dumps(board)
    for metric in (
        "acmezone_issuer_certificates",  # certificates by state
        "acmezone_issuer_certificate_expiration_timestamp_seconds",  # soonest expiry
        "acmezone_issuer_issuance_failures_total",  # issuance health
        "acmezone_dns_queries_total",  # QPS and rcodes
        "acmezone_dns_feed_lag_seconds",  # feed lag
        "acmezone_registry_txt_updates_total",  # registry update rate
        "acmezone_registry_auth_failures_total",  # auth failures
    ):
        assert metric in text, metric


def test_every_dashboard_expression_parses_as_promql(tmp_path: Path) -> None:
    """promtool's real PromQL parser reads every panel query: each becomes a recording rule
    (Grafana's variables replaced by what Grafana would put there) in a rule file that
    `promtool check rules` must accept."""
    from tests.deploy.test_prometheus import promtool

    substitutions = {
        "${datasource}": "prometheus",
        "$__rate_interval": "5m",
        "$job": "acmezone-.*",
        "$instance": ".*",
    }
    rules = []
    for path in DASHBOARDS:
        for panel in load(path)["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for variable, value in substitutions.items():
                    expr = expr.replace(variable, value)
                assert "$" not in expr, (path.name, panel["title"], expr)
                rules.append({"record": f"dashboard:check_{len(rules)}", "expr": expr})
    rule_file = tmp_path / "dashboards.rules.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(rule_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_production_ships_every_dashboard_as_a_grafana_sidecar_config_map() -> None:
    """The grafana-dashboards component: one ConfigMap per dashboard, labelled for the Grafana
    sidecar, in a folder, holding exactly the committed JSON; dev (no Grafana) has none."""
    from tests.deploy.conftest import objects

    def boards(overlay: str) -> dict[str, dict[str, Any]]:
        found = {}
        for config_map in objects(overlay, "ConfigMap"):
            metadata = config_map["metadata"]
            if metadata.get("labels", {}).get("grafana_dashboard") == "1":
                assert metadata["annotations"]["grafana_folder"] == "acmezone"
                assert metadata["namespace"] == "acmezone"
                ((key, text),) = config_map["data"].items()
                assert len(text) < 256 * 1024  # fits kubectl's client-side apply annotation
                found[key] = json.loads(text)
        return found

    assert boards("production") == {f"acmezone-{p.stem}.json": load(p) for p in DASHBOARDS}
    assert boards("dev") == {}
