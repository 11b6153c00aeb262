"""The NetworkPolicies let exactly the flows acmezone needs through, and nothing else.

A small evaluator of the NetworkPolicy semantics (a flow is allowed when the source's egress
policies and the destination's ingress policies both allow it; a pod no policy selects for a
direction is open in that direction; named ports resolve against the destination pod) runs over
the rendered overlays, and a table of flows states what must pass and what must not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.deploy.conftest import objects
from tests.deploy.test_kubernetes import labels_match

NAMESPACE = {"dev": "acmezone-dev", "production": "acmezone"}


@dataclass(frozen=True)
class Pod:
    """A pod as the policies see it: where it is, its labels, and its container ports."""

    namespace: str
    labels: dict[str, str]
    ports: tuple[tuple[str, int, str], ...] = ()  # (name, number, protocol)

    def port_number(self, port: int | str, protocol: str) -> int | None:
        if isinstance(port, int):
            return port
        for name, number, proto in self.ports:
            if name == port and proto == protocol:
                return number
        return None


def namespace_labels(namespace: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": namespace}


def pods(overlay: str) -> dict[str, Pod]:
    """The overlay's pods by app.kubernetes.io/name."""
    found = {}
    for kind in ("Deployment", "StatefulSet"):
        for workload in objects(overlay, kind):
            template = workload["spec"]["template"]
            ports = tuple(
                (p["name"], p["containerPort"], p.get("protocol", "TCP"))
                for c in template["spec"]["containers"]
                for p in c.get("ports", [])
            )
            labels = template["metadata"]["labels"]
            found[labels["app.kubernetes.io/name"]] = Pod(NAMESPACE[overlay], labels, ports)
    return found


def peer_matches(peer: dict[str, Any], policy_namespace: str, other: Pod | str) -> bool:
    """Does a `from`/`to` peer match the other end (a pod, or an external IP as a string)?"""
    if isinstance(other, str):
        # An address outside the cluster: only ipBlocks can match it.
        return "ipBlock" in peer
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        if not labels_match(peer["namespaceSelector"], namespace_labels(other.namespace)):
            return False
    elif other.namespace != policy_namespace:
        return False
    return "podSelector" not in peer or labels_match(peer["podSelector"], other.labels)


def rule_allows(
    rule: dict[str, Any],
    direction: str,
    policy_namespace: str,
    other: Pod | str,
    target: Pod | str,
    port: int,
    protocol: str,
) -> bool:
    peers = rule.get("from" if direction == "Ingress" else "to")
    if peers is not None and not any(peer_matches(p, policy_namespace, other) for p in peers):
        return False
    rule_ports = rule.get("ports")
    if rule_ports is None:
        return True
    for rule_port in rule_ports:
        if rule_port.get("protocol", "TCP") != protocol:
            continue
        if "port" not in rule_port:
            return True
        number = (
            target.port_number(rule_port["port"], protocol)
            if isinstance(target, Pod)
            else rule_port["port"]
            if isinstance(rule_port["port"], int)
            else None
        )
        if number == port:
            return True
    return False


def direction_allows(
    overlay: str,
    direction: str,
    subject: Pod,
    other: Pod | str,
    dst: Pod | str,
    port: int,
    proto: str,
) -> bool:
    selecting = [
        p
        for p in objects(overlay, "NetworkPolicy")
        if direction in p["spec"].get("policyTypes", ["Ingress"])
        and p["metadata"]["namespace"] == subject.namespace
        and labels_match(p["spec"]["podSelector"], subject.labels)
    ]
    if not selecting:
        return True
    key = "ingress" if direction == "Ingress" else "egress"
    return any(
        rule_allows(rule, direction, subject.namespace, other, dst, port, proto)
        for policy in selecting
        for rule in policy["spec"].get(key, [])
    )


def allowed(overlay: str, src: Pod | str, dst: Pod | str, port: int, proto: str = "TCP") -> bool:
    """Is a connection from src to dst:port allowed? Strings are addresses outside the cluster."""
    egress = (
        direction_allows(overlay, "Egress", src, dst, dst, port, proto)
        if isinstance(src, Pod)
        else True
    )
    ingress = (
        direction_allows(overlay, "Ingress", dst, src, dst, port, proto)
        if isinstance(dst, Pod)
        else True
    )
    return egress and ingress


INTERNET = "203.0.113.7"
PROMETHEUS = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
INGRESS_CONTROLLER = Pod("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
CERT_MANAGER = Pod("cert-manager", {"app.kubernetes.io/name": "cert-manager"})
KUBE_DNS = Pod("kube-system", {"k8s-app": "kube-dns"})
OTHER_APP = Pod("shop", {"app.kubernetes.io/name": "shop"})


def test_the_needed_flows_pass(overlay: str) -> None:
    p = pods(overlay)
    registry, dns, issuer = p["acmezone-registry"], p["acmezone-dns"], p["acmezone-issuer"]
    must_pass = [
        (dns, registry, 50051, "TCP", "dns follows the record feed"),
        (issuer, registry, 50051, "TCP", "issuer manages registrations and TXT values"),
        (issuer, dns, 5353, "UDP", "issuer checks TXT propagation"),
        (issuer, dns, 5353, "TCP", "issuer checks TXT propagation over TCP"),
        (INTERNET, dns, 5353, "UDP", "resolvers and the CA query the zone"),
        (INTERNET, dns, 5353, "TCP", "resolvers and the CA query the zone over TCP"),
        (CERT_MANAGER, registry, 8053, "TCP", "acme-dns clients update TXT values"),
        (INGRESS_CONTROLLER, issuer, 5002, "TCP", "HTTP-01 through the ingress"),
        (issuer, INTERNET, 443, "TCP", "the ACME CA"),
        (registry, INTERNET, 5432, "TCP", "an external PostgreSQL"),
        (issuer, INTERNET, 5432, "TCP", "an external PostgreSQL"),
        (PROMETHEUS, registry, 9101, "TCP", "scrape"),
        (PROMETHEUS, dns, 9102, "TCP", "scrape"),
        (PROMETHEUS, issuer, 9103, "TCP", "scrape"),
    ]
    for pod in (registry, dns, issuer):
        must_pass.append((pod, KUBE_DNS, 53, "UDP", "cluster DNS"))
    if overlay == "dev":
        postgres = p["acmezone-postgres"]
        must_pass += [
            (registry, postgres, 5432, "TCP", "in-cluster PostgreSQL"),
            (issuer, postgres, 5432, "TCP", "in-cluster PostgreSQL"),
        ]
    for src, dst, port, proto, why in must_pass:
        assert allowed(overlay, src, dst, port, proto), f"blocked: {why}"


def test_nothing_else_passes(overlay: str) -> None:
    p = pods(overlay)
    registry, dns, issuer = p["acmezone-registry"], p["acmezone-dns"], p["acmezone-issuer"]
    must_not = [
        (INTERNET, registry, 50051, "TCP", "the registry's gRPC API from outside"),
        (OTHER_APP, registry, 50051, "TCP", "the registry's gRPC API from another app"),
        (INTERNET, registry, 8053, "TCP", "the acme-dns API from outside the cluster"),
        (OTHER_APP, issuer, 50053, "TCP", "the issuer's API from another namespace"),
        (INTERNET, issuer, 5002, "TCP", "HTTP-01 bypassing the ingress"),
        (OTHER_APP, dns, 50052, "TCP", "the dns API from another app"),
        (OTHER_APP, registry, 9101, "TCP", "metrics to anyone but Prometheus"),
        (registry, dns, 5353, "UDP", "registry has no reason to query dns"),
        (registry, issuer, 50053, "TCP", "registry never calls the issuer"),
        (dns, issuer, 50053, "TCP", "dns never calls the issuer"),
        (dns, INTERNET, 443, "TCP", "dns talks to nothing outside"),
        (dns, INTERNET, 5432, "TCP", "dns has no database"),
        (registry, INTERNET, 443, "TCP", "registry talks to nothing outside but PostgreSQL"),
        (issuer, INTERNET, 22, "TCP", "issuer only reaches HTTPS and PostgreSQL outside"),
        (registry, registry, 8053, "TCP", "no reason for replicas to call each other's HTTP"),
    ]
    if overlay == "dev":
        postgres = p["acmezone-postgres"]
        must_not += [
            (dns, postgres, 5432, "TCP", "dns has no database"),
            (OTHER_APP, postgres, 5432, "TCP", "the database from another app"),
        ]
    for src, dst, port, proto, why in must_not:
        assert not allowed(overlay, src, dst, port, proto), f"allowed: {why}"


def test_a_default_deny_policy_covers_every_pod(overlay: str) -> None:
    [deny] = [
        p
        for p in objects(overlay, "NetworkPolicy")
        if p["spec"]["podSelector"] == {} and "ingress" not in p["spec"]
    ]
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "egress" not in deny["spec"]


@pytest.mark.parametrize("overlay_name", ["dev", "production"])
def test_the_evaluator_sees_an_open_namespace_as_open(overlay_name: str) -> None:
    """Without policies everything passes: the 'must not' results above come from the
    policies, not from the evaluator refusing by default."""
    open_pod = Pod("elsewhere", {"app.kubernetes.io/name": "x"}, (("grpc", 1, "TCP"),))
    assert allowed(overlay_name, OTHER_APP, open_pod, 1)
