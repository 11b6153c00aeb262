"""The dashboards and the alert rules only use metrics the services really export.

The three services start in this process on loopback ports (registry on SQLite, dns fed by it,
issuer on SQLite; no CA is needed to start), get a little traffic, and their /metrics pages are
scraped over HTTP. Every metric name in every dashboard expression, template variable and alert
rule must be among the scraped names (or the few Prometheus adds itself, such as `up`), and every
label used in a selector must be a label of that metric (or one Prometheus attaches to targets).
The container HEALTHCHECK script is run against the three gRPC servers on the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import grpc
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from acmezone.issuer.v1 import account_service_pb2, account_service_pb2_grpc
from acmezone_common.testing import free_port
from acmezone_dns.app import DnsApp
from acmezone_dns.settings import DnsSettings
from acmezone_issuer.app import IssuerApp
from acmezone_issuer.settings import IssuerSettings
from acmezone_registry.app import RegistryApp
from acmezone_registry.settings import RegistrySettings
from tests.deploy.conftest import DEPLOY, ROOT
from tests.dns.dnssec_support import make_keys

DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
RULES = DEPLOY / "prometheus" / "alerts.yaml"
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
ZONE = "acme.example.test"

# Series Prometheus makes itself, and labels it attaches to every scraped sample (the
# Kubernetes ones through the PodMonitor / relabelling).
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS"}
TARGET_LABELS = {"job", "instance", "pod", "namespace", "container", "endpoint", "service"}

_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


@dataclass
class Exported:
    """What the services' /metrics pages showed: sample names and their label names."""

    labels: dict[str, set[str]] = field(default_factory=dict)
    sampled: set[str] = field(default_factory=set)

    def add(self, name: str, labels: set[str], *, sample: bool) -> None:
        self.labels.setdefault(name, set()).update(labels)
        if sample:
            self.sampled.add(name)


def _sample_names(family_name: str, family_type: str) -> list[str]:
    base = family_name.removesuffix("_total") if family_type == "counter" else family_name
    return {
        "counter": [f"{base}_total", f"{base}_created"],
        "histogram": [f"{base}_bucket", f"{base}_sum", f"{base}_count", f"{base}_created"],
        "summary": [base, f"{base}_sum", f"{base}_count", f"{base}_created"],
    }.get(family_type, [base])


def parse_exposition(text: str, exported: Exported) -> None:
    """Names from samples and from `# TYPE` lines (labelled families with no samples yet still
    declare themselves there); labels from samples."""
    for family in text_string_to_metric_families(text):
        for name in _sample_names(family.name, family.type):
            exported.add(name, set(), sample=False)
        for sample in family.samples:
            exported.add(sample.name, set(sample.labels), sample=True)


def _scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


def _healthcheck(address: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), address],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@dataclass
class Live:
    """What a real Prometheus made of the running services: query answers and rule states."""

    queries: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Run:
    exported: Exported
    health: dict[str, str]
    live: Live


DASHBOARD_VALUES = {"$__rate_interval": "30s", "$job": "acmezone-.*", "$instance": ".*"}


def _api(base: str, path: str, **params: str) -> dict[str, Any]:
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
        data: dict[str, Any] = json.loads(response.read())
    return data


def _query_all(base: str, expressions: list[str]) -> Live:
    """Wait until every target is scraped a few times and every rule group evaluated, then run
    the expressions and read the rules."""
    deadline = time.monotonic() + 30
    while True:
        try:
            samples = _api(base, "/api/v1/query", query="min(count_over_time(up[1m]))")
            groups = _api(base, "/api/v1/rules")["data"]["groups"]
            scraped = int(float(samples["data"]["result"][0]["value"][1])) >= 4
            targets = _api(base, "/api/v1/query", query="count(up == 1)")
            up = int(float(targets["data"]["result"][0]["value"][1])) == 3
            evaluated = all(not g["lastEvaluation"].startswith("0001") for g in groups)
            if scraped and up and evaluated:
                break
        except (OSError, IndexError, KeyError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("Prometheus did not scrape the three services in time")
        time.sleep(0.25)
    live = Live()
    for expr in expressions:
        try:
            live.queries[expr] = _api(base, "/api/v1/query", query=expr)
        except urllib.error.HTTPError as exc:  # a bad query answers 400 with a JSON error
            live.queries[expr] = json.loads(exc.read())
    live.rules = _api(base, "/api/v1/rules")["data"]["groups"]
    return live


def _live_prometheus(workdir: Path, targets: dict[str, str]) -> Live:
    """Run Debian's Prometheus on loopback, scraping the services every second with the
    alert rules loaded, and ask it every dashboard query."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is needed (Debian package `prometheus`; `make test` installs it)")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [address]}]}
            for job, address in targets.items()
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    expressions = []
    for _, expr in dashboard_expressions():
        for variable, value in DASHBOARD_VALUES.items():
            expr = expr.replace(variable, value)
        expressions.append(expr)
    with (workdir / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            return _query_all(f"http://127.0.0.1:{port}", expressions)
        finally:
            process.terminate()
            process.wait(timeout=20)


async def _run_services(workdir: Path) -> Run:
    """Start the three services, give them a little traffic, scrape, stop."""
    registry = RegistryApp(
        RegistrySettings(
            grpc_address="127.0.0.1:0",
            http_address="127.0.0.1:0",
            metrics_address="127.0.0.1:0",
            database_url=f"sqlite:///{workdir}/registry.db",
            zone=ZONE,
        ),
        CollectorRegistry(),
    )
    await registry.start()
    dns_app: DnsApp | None = None
    issuer: IssuerApp | None = None
    health: dict[str, str] = {}
    exported = Exported()
    try:
        # Signing on, so the DNSSEC metrics are exported too.
        make_keys(workdir / "dnssec", [ZONE])
        dns_app = DnsApp(
            DnsSettings(
                grpc_address="127.0.0.1:0",
                metrics_address="127.0.0.1:0",
                dns_addresses=["127.0.0.1:0"],
                registry_target=str(registry.grpc_address),
                zone=ZONE,
                ns_names=[f"ns.{ZONE}"],
                feed_backoff_initial_seconds=0.05,
                feed_backoff_max_seconds=0.5,
                dnssec_key_dir=workdir / "dnssec",
            ),
            CollectorRegistry(),
        )
        await dns_app.start()
        issuer = IssuerApp(
            IssuerSettings(
                grpc_address="127.0.0.1:0",
                http01_address="127.0.0.1:0",
                metrics_address="127.0.0.1:0",
                data_dir=workdir / "issuer",
                registry_target=str(registry.grpc_address),
                default_directory_url="https://127.0.0.1:9/dir",
            ),
            metrics_registry=CollectorRegistry(),
        )
        await issuer.start()

        # Traffic: an acme-dns health request, DNS queries answered and refused.
        await asyncio.to_thread(_get, f"http://{registry.http_address}/health")
        dns_address = dns_app.dns_addresses[0]
        for _ in range(100):  # wait for the first snapshot (SERVING) before querying
            check = await asyncio.to_thread(_healthcheck, str(dns_app.grpc_address))
            if check.returncode == 0:
                break
            await asyncio.sleep(0.05)
        else:
            # Querying a dns service that never loaded its zone would count refusals, not
            # answers, and the figures below would check the wrong thing.
            pytest.fail(f"the dns service never reported SERVING: {check.stdout}{check.stderr}")
        for name in (f"ns.{ZONE}", "example.org"):
            await dns.asyncquery.udp(
                dns.message.make_query(name, "A"),
                dns_address.host,
                port=dns_address.port,
                timeout=2,
            )

        # An account on a CA that does not answer: the issuer counts the failed ACME request.
        async with grpc.aio.insecure_channel(issuer.grpc_address) as channel:
            stub = account_service_pb2_grpc.AccountServiceStub(channel)
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.CreateAccount(
                    account_service_pb2.CreateAccountRequest(
                        account=account_service_pb2.Account(
                            directory_url="https://127.0.0.1:9/dir",
                            terms_of_service_agreed=True,
                        )
                    ),
                    timeout=20,
                )

        for service, address in (
            ("registry", str(registry.grpc_address)),
            ("dns", str(dns_app.grpc_address)),
            ("issuer", issuer.grpc_address),
        ):
            result = await asyncio.to_thread(_healthcheck, address)
            health[service] = f"{result.returncode} {result.stdout.strip()}"
        for address in (registry.metrics_address, dns_app.metrics_address, issuer.metrics_address):
            parse_exposition(await asyncio.to_thread(_scrape, str(address)), exported)
        live = await asyncio.to_thread(
            _live_prometheus,
            workdir,
            {
                "acmezone-registry": str(registry.metrics_address),
                "acmezone-dns": str(dns_app.metrics_address),
                "acmezone-issuer": str(issuer.metrics_address),
            },
        )
    finally:
        if issuer is not None:
            await issuer.stop(grace=0)
        if dns_app is not None:
            await dns_app.stop(grace=0)
        await registry.stop(grace=0)
    return Run(exported, health, live)


def _get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
        response.read()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Scraped metrics, health-check results and a live Prometheus's view, gathered once."""
    return asyncio.run(_run_services(tmp_path_factory.mktemp("metric-names")))


@pytest.fixture(scope="module")
def exported(running: Run) -> Exported:
    return running.exported


# -- PromQL --------------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)\b(?!\s*\()")


@dataclass
class Uses:
    """Metric names and the labels an expression uses on each, plus its grouping labels."""

    metrics: dict[str, set[str]] = field(default_factory=dict)
    grouping: set[str] = field(default_factory=set)


def promql_uses(expr: str) -> Uses:
    """The metrics an expression reads, the labels its selectors match on, and the labels its
    aggregations and vector matching group by. Grafana's `$variables` are treated as values."""
    uses = Uses()
    text = re.sub(r"\$\{?\w+\}?", "x", expr)
    # Label names of matchers, per metric (strings hold values, never names: keep positions).
    blanked = _STRING.sub('""', text)
    for match in _SELECTOR.finditer(blanked):
        metric = match.group(1)
        labels = set(_MATCHER_LABEL.findall(match.group(2)))
        if metric:
            uses.metrics.setdefault(metric, set()).update(labels - {"__name__"})
    stripped = _SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", blanked)
    stripped = _RANGE.sub(" ", stripped)
    for match in _GROUPING.finditer(stripped):
        uses.grouping.update(label.strip() for label in match.group(2).split(",") if label.strip())
    stripped = _GROUPING.sub(" ", stripped)
    stripped = re.sub(r'""', " ", stripped)
    for name in _IDENTIFIER.findall(stripped):
        if name.lower() not in _KEYWORDS:
            uses.metrics.setdefault(name, set())
    return uses


def test_the_promql_reader_finds_names_labels_and_grouping() -> None:
    uses = promql_uses(
        "histogram_quantile(0.99, sum by (le, grpc_method) (rate(grpc_server_handling_seconds_"
        'bucket{job=~"$job", grpc_type="unary"}[$__rate_interval]))) / on() group_left '
        "max(up offset 5m) and acmezone_dns_records > 14 * 86400 - time()"
    )
    assert uses.metrics == {
        "grpc_server_handling_seconds_bucket": {"job", "grpc_type"},
        "up": set(),
        "acmezone_dns_records": set(),
    }
    assert uses.grouping == {"le", "grpc_method"}


# -- where expressions live ----------------------------------------------------------------------


def dashboard_expressions() -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and query variable of every dashboard."""
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield f"{path.name}: {panel['title']}", target["expr"]
        for variable in board["templating"]["list"]:
            if variable["type"] != "query":
                continue
            query = variable["query"]["query"]
            match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query)
            assert match, f"{path.name}: unexpected variable query {query!r}"
            yield f"{path.name}: variable {variable['name']}", match.group(1)


def rule_expressions() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield f"alerts.yaml: {rule.get('alert') or rule.get('record')}", rule["expr"]


def all_expressions() -> list[tuple[str, str]]:
    return [*dashboard_expressions(), *rule_expressions()]


def test_there_is_something_to_check() -> None:
    expressions = all_expressions()
    assert len(expressions) > 60
    assert any("acmezone_dns_" in e for _, e in expressions)
    assert any("acmezone_issuer_" in e for _, e in expressions)
    assert any("acmezone_registry_" in e for _, e in expressions)


def test_every_service_was_scraped(exported: Exported) -> None:
    for name in (
        "acmezone_registry_registrations",
        "acmezone_dns_queries_total",
        "acmezone_issuer_certificates",
        "grpc_server_handled_total",
    ):
        assert name in exported.labels, name


def test_dashboards_and_alerts_use_only_exported_metric_names(exported: Exported) -> None:
    unknown = []
    for where, expr in all_expressions():
        for metric in promql_uses(expr).metrics:
            if metric not in exported.labels and metric not in PROMETHEUS_SERIES:
                unknown.append(f"{where}: {metric}")
    assert not unknown, "metrics no service exports:\n" + "\n".join(unknown)


def test_selectors_use_only_labels_the_metrics_have(exported: Exported) -> None:
    wrong = []
    for where, expr in all_expressions():
        for metric, labels in promql_uses(expr).metrics.items():
            if metric not in exported.sampled:  # no samples yet: its labels are unknown
                continue
            known = exported.labels[metric]
            extra = labels - known - TARGET_LABELS
            if extra:
                wrong.append(f"{where}: {metric} has no label(s) {sorted(extra)}")
    assert not wrong, "\n".join(wrong)


def test_grouping_uses_labels_some_used_metric_has(exported: Exported) -> None:
    wrong = []
    for where, expr in all_expressions():
        uses = promql_uses(expr)
        if any(m not in exported.sampled for m in uses.metrics if m not in PROMETHEUS_SERIES):
            continue  # a metric without samples yet: its labels are unknown
        available = set(TARGET_LABELS)
        for metric in uses.metrics:
            available |= exported.labels.get(metric, set())
        extra = uses.grouping - available
        if extra:
            wrong.append(f"{where}: groups by {sorted(extra)}")
    assert not wrong, "\n".join(wrong)


def test_labels_were_checked_for_almost_every_metric(exported: Exported) -> None:
    """Only the per-certificate gauges (no certificate is issued or delivered here, none
    relies on a dns-persist-01 record) lack samples."""
    used = {m for _, e in all_expressions() for m in promql_uses(e).metrics}
    unsampled = used - exported.sampled - PROMETHEUS_SERIES
    assert unsampled <= {
        "acmezone_issuer_certificate_expiration_timestamp_seconds",
        "acmezone_issuer_certificate_renewal_timestamp_seconds",
        "acmezone_issuer_delivery_stale_expiration_timestamp_seconds",
        "acmezone_issuer_delivery_targets",
        "acmezone_issuer_dns_persist_until_timestamp_seconds",
    }


def test_a_misspelt_metric_would_be_caught(exported: Exported) -> None:
    uses = promql_uses('rate(acmezone_dns_query_total{job=~"$job"}[5m])')
    assert "acmezone_dns_query_total" not in exported.labels
    assert set(uses.metrics) == {"acmezone_dns_query_total"}


def test_container_healthcheck_reports_serving(running: Run) -> None:
    health = running.health
    assert health == {
        "registry": "0 SERVING",
        "dns": "0 SERVING",
        "issuer": "0 SERVING",
    }


def test_container_healthcheck_fails_when_nothing_listens() -> None:
    result = _healthcheck("127.0.0.1:9")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr


# -- a real Prometheus -----------------------------------------------------------------------------


def test_a_real_prometheus_scrapes_the_three_jobs(running: Run) -> None:
    up = running.live.queries
    assert up  # the dashboard queries ran
    values = {}
    for expr, answer in up.items():
        if expr.startswith("sum by (job) (up{"):
            values = {r["metric"]["job"]: r["value"][1] for r in answer["data"]["result"]}
    assert values == {"acmezone-registry": "1", "acmezone-dns": "1", "acmezone-issuer": "1"}


def test_every_dashboard_query_runs_on_prometheus(running: Run) -> None:
    failed = {
        expr: answer.get("error")
        for expr, answer in running.live.queries.items()
        if answer["status"] != "success"
    }
    assert not failed


def test_dashboard_queries_return_data(running: Run) -> None:
    """Every query finds series, except those that need an issued (or delivered) certificate."""
    needs_a_certificate = (
        "acmezone_issuer_certificate_expiration_timestamp_seconds",
        "acmezone_issuer_certificate_renewal_timestamp_seconds",
        "acmezone_issuer_delivery_targets",
        "acmezone_issuer_delivery_stale_expiration_timestamp_seconds",
    )
    empty = [
        expr
        for expr, answer in running.live.queries.items()
        if not answer["data"]["result"] and not any(m in expr for m in needs_a_certificate)
    ]
    assert not empty, "queries that found nothing:\n" + "\n".join(empty)


def test_alert_rules_evaluate_cleanly_and_stay_quiet_on_a_healthy_system(running: Run) -> None:
    rules = [rule for group in running.live.rules for rule in group["rules"]]
    assert len(rules) == len(list(rule_expressions()))
    for rule in rules:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
        assert rule["state"] == "inactive", (rule["name"], rule["alerts"])
