"""What `deploy/generate.py` writes, split along its seams.

- `grafana`: the Grafana JSON model (`Panel`, `Row`, `dashboard`): layout on the 24-column grid,
  the `$datasource`, `$job` and `$instance` variables, one panel's JSON per kind.
- `panels`: the panel library every dashboard draws on: label selectors, PromQL helpers (summed
  rates, histogram quantiles), stat panels and the gRPC row all services share.
- `overview`, `registry`, `dns`, `issuer`: one dashboard each, `build()` returning its model.
- `manifests`: the Kubernetes objects around them (the PrometheusRule wrapping
  `deploy/prometheus/alerts.yaml`, the dashboards as Grafana sidecar ConfigMaps).

Needs only the standard library and PyYAML.
"""
