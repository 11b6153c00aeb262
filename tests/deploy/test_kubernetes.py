"""deploy/k8s: every overlay renders with kustomize, every object validates against the Kubernetes
OpenAPI schemas (offline, the schemas kubernetes-validate ships), and the manifests keep the
promises of issue 6: non-root, read-only root filesystem, no capabilities, native gRPC probes,
requests and limits, disruption budgets, network policies that let exactly the needed flows
through, settings the services accept, and Secrets they can find.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.name
import jsonschema
import kubernetes_validate
import pytest
from pydantic_settings import BaseSettings

from acmezone_dns.dnssec.keys import ECDSAP256SHA256, Role, State, generate, key_file_name
from acmezone_dns.settings import DnsSettings
from acmezone_dns.static_zones import load_static_zones
from acmezone_issuer.settings import IssuerSettings
from acmezone_registry.settings import RegistrySettings
from tests.deploy.conftest import K8S, objects, one, render, rendered

# The oldest Kubernetes the manifests are meant for (mixed-protocol LoadBalancer Services are GA
# since 1.26; 1.29 is the oldest minor still maintained by major clouds), and the newest the
# installed kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
CRD_SCHEMAS = {
    "PodMonitor": Path(__file__).parent / "schemas" / "podmonitor.json",
    "PrometheusRule": Path(__file__).parent / "schemas" / "prometheusrule.json",
}
SERVICES = {
    "acmezone-registry": ("registry", RegistrySettings, "ACMEZONE_REGISTRY_", 50051),
    "acmezone-dns": ("dns", DnsSettings, "ACMEZONE_DNS_", 50052),
    "acmezone-issuer": ("issuer", IssuerSettings, "ACMEZONE_ISSUER_", 50053),
}
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


def workloads(overlay: str) -> list[dict[str, Any]]:
    return [obj for kind in WORKLOAD_KINDS for obj in objects(overlay, kind)]


def containers(workload: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def labels_match(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes LabelSelector against a label set."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


# -- rendering and schemas --------------------------------------------------------------------


def test_base_renders_on_its_own() -> None:
    kinds = {obj["kind"] for obj in rendered("base")}
    assert {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"} <= kinds


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_against_the_schemas(overlay: str, version: str) -> None:
    validated = 0
    for obj in rendered(overlay):
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in CRD_SCHEMAS:
            schema = json.loads(CRD_SCHEMAS[obj["kind"]].read_text())
            try:
                jsonschema.validate(obj, schema)
            except jsonschema.ValidationError as exc:
                pytest.fail(f"{overlay} {name}: {exc.message} at {list(exc.absolute_path)}")
        else:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{overlay} {name} (k8s {version}): {exc.message} at {exc.path}")
        validated += 1
    assert validated >= 20


def test_a_typo_in_a_manifest_fails_validation(tmp_path: Path) -> None:
    """The strict schemas reject unknown fields: the validation above has teeth."""
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - bad.yaml\n")
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n"
        "spec:\n  ports:\n    - port: 53\n      protocl: UDP\n"
    )
    [service] = render(tmp_path)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, KUBERNETES_VERSIONS[-1], strict=True)


def test_production_includes_prometheus_operator_objects_and_dev_does_not() -> None:
    assert objects("production", "PodMonitor")
    assert objects("production", "PrometheusRule")
    assert not objects("dev", "PodMonitor")


def test_overlays_use_their_own_namespace(overlay: str) -> None:
    expected = {"dev": "acmezone-dev", "production": "acmezone"}[overlay]
    for obj in rendered(overlay):
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == expected
            labels = obj["metadata"]["labels"]
            assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        else:
            assert obj["metadata"]["namespace"] == expected, obj["metadata"]["name"]


# -- pods: security, probes, resources ---------------------------------------------------------


def test_every_pod_runs_as_non_root_with_a_read_only_root_and_no_capabilities(
    overlay: str,
) -> None:
    for workload in workloads(overlay):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod.get("automountServiceAccountToken") is False
        for container in containers(workload):
            context = container["securityContext"]
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in context["capabilities"], where


def test_every_container_has_requests_and_limits(overlay: str) -> None:
    for workload in workloads(overlay):
        for container in containers(workload):
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), container["name"]


def test_services_have_native_grpc_probes_on_their_grpc_port(overlay: str) -> None:
    for name, (_, _, _, port) in SERVICES.items():
        deployment = one(overlay, "Deployment", name)
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == port, (name, probe)
        grpc_port = next(p for p in container["ports"] if p["name"] == "grpc")
        assert grpc_port["containerPort"] == port


def test_scrape_annotations_point_at_the_metrics_port(overlay: str) -> None:
    for name in SERVICES:
        template = one(overlay, "Deployment", name)["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        [container] = template["spec"]["containers"]
        metrics = next(p for p in container["ports"] if p["name"] == "metrics")
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(metrics["containerPort"])
        assert annotations["prometheus.io/path"] == "/metrics"


def test_every_workload_has_a_disruption_budget(overlay: str) -> None:
    budgets = objects(overlay, "PodDisruptionBudget")
    for workload in workloads(overlay):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets if labels_match(b["spec"]["selector"], labels)]
        assert len(matching) == 1, workload["metadata"]["name"]


def test_service_selectors_and_target_ports_resolve(overlay: str) -> None:
    pods = [w["spec"]["template"] for w in workloads(overlay)]
    for service in objects(overlay, "Service"):
        # Service selectors are plain maps: matchLabels.
        selected = [
            p
            for p in pods
            if labels_match({"matchLabels": service["spec"]["selector"]}, p["metadata"]["labels"])
        ]
        assert selected, f"Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            for pod in selected:
                names = {
                    (p["name"], p.get("protocol", "TCP"))
                    for c in pod["spec"]["containers"]
                    for p in c["ports"]
                }
                assert (port["targetPort"], port.get("protocol", "TCP")) in names, (
                    service["metadata"]["name"],
                    port,
                )


# -- per service ---------------------------------------------------------------------------------


def test_registry_runs_replicated_with_migrations_first(overlay: str) -> None:
    deployment = one(overlay, "Deployment", "acmezone-registry")
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]["spec"]
    [migrate] = pod["initContainers"]
    assert migrate["args"] == ["migrate"]
    assert migrate["image"] == pod["containers"][0]["image"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    for name, key in (
        ("ACMEZONE_REGISTRY_DATABASE_URL", "database-url"),
        ("ACMEZONE_REGISTRY_OPERATOR_TOKEN", "operator-token"),
    ):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["key"] == key
        # dev's generated Secrets carry a content hash suffix
        assert ref["name"] == "acmezone-registry" or ref["name"].startswith("acmezone-registry-")
    service = one(overlay, "Service", "acmezone-registry")
    assert {p["port"] for p in service["spec"]["ports"]} == {50051, 8053}


def test_dns_is_published_on_port_53_udp_and_tcp_keeping_client_addresses(overlay: str) -> None:
    service = one(overlay, "Service", "acmezone-dns")
    expected_type = {"dev": "NodePort", "production": "LoadBalancer"}[overlay]
    assert service["spec"]["type"] == expected_type
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    assert {(p["port"], p["protocol"]) for p in service["spec"]["ports"]} == {
        (53, "UDP"),
        (53, "TCP"),
    }


def test_dns_is_replicated_spread_and_autoscaled(overlay: str) -> None:
    deployment = one(overlay, "Deployment", "acmezone-dns")
    assert deployment["spec"]["replicas"] >= 2
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    if overlay == "production":
        [term] = anti["requiredDuringSchedulingIgnoredDuringExecution"]
        assert "preferredDuringSchedulingIgnoredDuringExecution" not in anti
    else:
        [weighted] = anti["preferredDuringSchedulingIgnoredDuringExecution"]
        term = weighted["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": "acmezone-dns"}
    hpa = one(overlay, "HorizontalPodAutoscaler", "acmezone-dns")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "acmezone-dns",
    }
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


def test_issuer_is_replicated_and_rolls_without_downtime(overlay: str) -> None:
    deployment = one(overlay, "Deployment", "acmezone-issuer")
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    replica_id = next(e for e in container["env"] if e["name"] == "ACMEZONE_ISSUER_REPLICA_ID")
    assert replica_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_issuer_serves_http01_through_the_ingress(overlay: str) -> None:
    ingress = one(overlay, "Ingress", "acmezone-issuer-http01")
    [rule] = ingress["spec"]["rules"]
    [path] = rule["http"]["paths"]
    assert path["path"] == "/.well-known/acme-challenge/"
    assert path["pathType"] == "Prefix"
    backend = path["backend"]["service"]
    service = one(overlay, "Service", backend["name"])
    [port] = service["spec"]["ports"]
    assert port["name"] == backend["port"]["name"]
    assert port["targetPort"] == "http01"
    deployment = one(overlay, "Deployment", "acmezone-issuer")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    secrets = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert secrets["ACMEZONE_ISSUER_ENCRYPTION_KEY"] == "encryption-key"
    assert secrets["ACMEZONE_ISSUER_DATABASE_URL"] == "database-url"


def test_production_images_are_pinned_to_a_registry_and_tag() -> None:
    for workload in workloads("production"):
        for container in containers(workload):
            image = container["image"]
            repository, _, tag = image.rpartition(":")
            assert "/" in repository, image
            assert tag, image
            assert tag != "latest", image


# -- settings and secrets ------------------------------------------------------------------------


def container_env(overlay: str, container: dict[str, Any]) -> dict[str, str]:
    """The environment a container gets: its ConfigMaps, then its own env (Secrets filled in
    from the dev overlay's generated Secrets or with stand-ins for production's)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        config_map = one(overlay, "ConfigMap", source["configMapRef"]["name"])
        env.update(config_map["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "secretKeyRef" in item["valueFrom"]:
            env[item["name"]] = secret_value(overlay, item["valueFrom"]["secretKeyRef"])
        else:
            env[item["name"]] = "fieldref-value"
    return env


def secret_value(overlay: str, ref: dict[str, str]) -> str:
    import base64

    if overlay == "production":  # created by the operator; any well-formed value stands in
        return {
            "database-url": "postgresql://acmezone@db.example.internal/acmezone",
            "encryption-key": base64.urlsafe_b64encode(b"k" * 32).decode(),
        }.get(ref["key"], "a-secret-token")
    secret = one(overlay, "Secret", ref["name"])
    assert ref["key"] in secret["data"], f"Secret {ref['name']} has no key {ref['key']}"
    return base64.b64decode(secret["data"][ref["key"]]).decode()


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_the_services_accept_the_settings_the_manifests_give_them(
    overlay: str, service: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, settings_class, prefix, _ = SERVICES[service]
    deployment = one(overlay, "Deployment", service)
    monkeypatch.chdir(tmp_path)  # no stray .env file
    for container in containers(deployment):
        env = container_env(overlay, container)
        ours = {k: v for k, v in env.items() if k.startswith(prefix)}
        fields = {f"{prefix}{name.upper()}" for name in settings_class.model_fields}
        unknown = set(ours) - fields
        assert not unknown, f"{service} ignores unknown settings {sorted(unknown)}"
        for key in list(os.environ):
            if key.startswith("ACMEZONE_"):
                monkeypatch.delenv(key)
        for key, value in ours.items():
            monkeypatch.setenv(key, value)
        settings: BaseSettings = settings_class()
        assert settings.log_format == "json"  # type: ignore[attr-defined]
    if service == "acmezone-registry":
        assert isinstance(settings, RegistrySettings)
        assert settings.migrate_on_start is False  # the init container migrated
        assert settings.operator_token is not None
        assert settings.feed_token is not None
    if service == "acmezone-dns":
        assert isinstance(settings, DnsSettings)
        assert [str(a) for a in settings.dns_addresses] == ["0.0.0.0:5353"]
        assert settings.ns_names[0] == f"ns.{settings.zone}"
        assert load_static_zones(settings)  # static records (CAA, ...) parse
        assert settings.registry_token is not None  # the registry guards its feed


def test_every_referenced_config_map_and_secret_exists_in_dev() -> None:
    names = {(o["kind"], o["metadata"]["name"]) for o in rendered("dev")}
    for workload in workloads("dev"):
        for container in containers(workload):
            for source in container.get("envFrom", []):
                assert ("ConfigMap", source["configMapRef"]["name"]) in names
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    secret_value("dev", ref)


def test_production_secrets_are_not_in_the_repository() -> None:
    assert not objects("production", "Secret")
    readme = (K8S.parent / "README.md").read_text()
    for workload in workloads("production"):
        for container in containers(workload):
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in readme, ref
                    assert ref["key"] in readme, ref


def secret_refs(overlay: str, deployment: str) -> dict[str, tuple[str, str]]:
    """Each Secret-backed variable of a Deployment's containers: (Secret name without dev's
    hash suffix, key)."""
    refs = {}
    for container in containers(one(overlay, "Deployment", deployment)):
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                name = ref["name"]
                for base_name in ("acmezone-registry", "acmezone-feed", "acmezone-issuer"):
                    if name.startswith(f"{base_name}-"):
                        name = base_name
                refs[item["name"]] = (name, ref["key"])
    return refs


def test_the_feed_token_is_a_secret_of_its_own_for_registry_and_dns(overlay: str) -> None:
    """dns replicas present the feed token, which the registry accepts on the feed and UPDATE
    forwarding only: a dns pod never holds the operator token that manages registrations, and
    the issuer (which presents the operator token) does not hold the feed token."""
    registry = secret_refs(overlay, "acmezone-registry")
    dns = secret_refs(overlay, "acmezone-dns")
    issuer = secret_refs(overlay, "acmezone-issuer")
    assert registry["ACMEZONE_REGISTRY_FEED_TOKEN"] == ("acmezone-feed", "token")
    assert dns["ACMEZONE_DNS_REGISTRY_TOKEN"] == ("acmezone-feed", "token")
    assert set(dns.values()) == {("acmezone-feed", "token")}
    assert ("acmezone-feed", "token") not in issuer.values()
    assert registry["ACMEZONE_REGISTRY_OPERATOR_TOKEN"] != ("acmezone-feed", "token")
    if overlay == "dev":  # the generated values: the same on both ends, not the operator's
        registry_env = container_env(overlay, registry_container(overlay))
        dns_env = container_env(
            overlay, next(containers(one(overlay, "Deployment", "acmezone-dns")))
        )
        assert (
            registry_env["ACMEZONE_REGISTRY_FEED_TOKEN"] == dns_env["ACMEZONE_DNS_REGISTRY_TOKEN"]
        )
        assert (
            registry_env["ACMEZONE_REGISTRY_FEED_TOKEN"]
            != registry_env["ACMEZONE_REGISTRY_OPERATOR_TOKEN"]
        )


def registry_container(overlay: str) -> dict[str, Any]:
    container: dict[str, Any] = one(overlay, "Deployment", "acmezone-registry")["spec"]["template"][
        "spec"
    ]["containers"][0]
    return container


def test_registry_and_zone_settings_agree(overlay: str) -> None:
    data = one(overlay, "ConfigMap", _settings_map_name(overlay))["data"]
    assert data["ACMEZONE_REGISTRY_ZONE"] == data["ACMEZONE_DNS_ZONE"]
    assert data["ACMEZONE_DNS_NS_NAMES"] == f"ns.{data['ACMEZONE_DNS_ZONE']}"


def _settings_map_name(overlay: str) -> str:
    [config_map] = [
        c
        for c in objects(overlay, "ConfigMap")
        if c["metadata"]["name"].startswith("acmezone-settings")
    ]
    name: str = config_map["metadata"]["name"]
    return name


def test_the_dnssec_component_mounts_the_keys_for_every_dns_replica(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An overlay with the dnssec component: the dns pods mount the key Secret read-only where
    the key directory setting points and take the sealing key from its Secret; a key directory
    made by the CLI, as the Secret would hold it, opens with those settings."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"resources:\n  - {os.path.relpath(K8S / 'overlays' / 'production', overlay)}\n"
        f"components:\n  - {os.path.relpath(K8S / 'components' / 'dnssec', overlay)}\n"
    )
    (deployment,) = [
        o
        for o in render(overlay)
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "acmezone-dns"
    ]
    spec = deployment["spec"]["template"]["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == "dns"]
    env = {e["name"]: e for e in container["env"]}
    key_dir = env["ACMEZONE_DNS_DNSSEC_KEY_DIR"]["value"]
    sealing = env["ACMEZONE_DNS_DNSSEC_SEALING_KEY"]["valueFrom"]["secretKeyRef"]
    assert sealing == {"name": "acmezone-dnssec", "key": "sealing-key"}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == key_dir]
    assert mount["readOnly"] is True
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "acmezone-dnssec-keys"
    # Both Secrets are documented, and the CLI's file names are valid Secret keys.
    readme = (K8S.parent / "README.md").read_text()
    assert "acmezone-dnssec-keys" in readme
    assert "sealing-key" in readme
    key = generate(dns.name.from_text("acme.example.org"), ECDSAP256SHA256, Role.CSK, State.ACTIVE)
    assert re.fullmatch(r"[-._a-zA-Z0-9]+", key_file_name(key))
