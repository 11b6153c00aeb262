"""Generate the Grafana dashboards and the Prometheus Operator rule object from one place.

    python deploy/generate.py          # rewrite the generated files
    python deploy/generate.py --check  # exit 1 if a committed file differs (tests run this)

Writes `deploy/grafana/dashboards/{overview,registry,dns,issuer}.json` (Grafana JSON model,
`$datasource` and `$job` variables, uid `acmezone-*`) and
`deploy/k8s/components/prometheus-operator/prometheusrule.yaml` (the groups of
`deploy/prometheus/alerts.yaml` wrapped in a PrometheusRule) and
`deploy/k8s/components/grafana-dashboards/dashboards.yaml` (the dashboards as ConfigMaps for the
Grafana sidecar). Dashboards are code, as the etcd and Kubernetes mixins keep theirs, so every
panel follows the same conventions and a test can check each expression against the metrics the
services really export. The code lives in `deploy/monitoring/` (its docstring names the modules:
the Grafana model, the panel library, one module per dashboard); this file only writes.

Needs only the standard library and PyYAML (installed by `make install`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from monitoring import dns, issuer, overview, registry
from monitoring.manifests import dashboard_configmaps, prometheus_rule

DEPLOY = Path(__file__).resolve().parent
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
PROMETHEUS_RULE = DEPLOY / "k8s" / "components" / "prometheus-operator" / "prometheusrule.yaml"
DASHBOARD_CONFIGMAPS = DEPLOY / "k8s" / "components" / "grafana-dashboards" / "dashboards.yaml"
BOARDS = {"overview": overview, "registry": registry, "dns": dns, "issuer": issuer}


def outputs() -> dict[Path, str]:
    """Every generated file and its content."""
    dashboards = {
        name: json.dumps(module.build(), indent=2, ensure_ascii=False) + "\n"
        for name, module in BOARDS.items()
    }
    files = {DASHBOARDS / f"{name}.json": text for name, text in dashboards.items()}
    files[PROMETHEUS_RULE] = prometheus_rule(ALERTS)
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
