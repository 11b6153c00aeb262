"""The registry's own Prometheus series (the gRPC standard ones come from acmezone_common).

Labels are bounded: operations, results and reasons are fixed lists, never a subdomain or a
username. Every known label set is created at 0 so rates and alerts work before the first event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

TXT_OPERATIONS = ("add", "remove", "clear", "get")
TXT_RESULTS = ("ok", "invalid", "denied")
AUTH_FAILURE_REASONS = (
    "operator_token_required",
    "operator_token_invalid",
    "credentials_required",
    "credentials_invalid",
    "subdomain_mismatch",
    "source_address_not_allowed",
)
HTTP_ROUTES = ("/register", "/update", "/health", "other")
# The abuse limits of `rate_limits.AbuseLimits`, as metric labels.
RATE_LIMITS = ("auth_source", "auth_username", "registration_source", "registration_global")
DNS_UPDATE_RCODES = (
    "NOERROR",
    "FORMERR",
    "NXDOMAIN",
    "NOTIMP",
    "REFUSED",
    "YXDOMAIN",
    "YXRRSET",
    "NXRRSET",
    "NOTAUTH",
    "NOTZONE",
)


class RegistryMetrics:
    """All registry-specific collectors, registered on one CollectorRegistry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registrations = Gauge(
            "acmezone_registry_registrations",
            "Registrations currently stored.",
            registry=registry,
        )
        self.registrations_created = Counter(
            "acmezone_registry_registrations_created_total",
            "Registrations created by this replica.",
            registry=registry,
        )
        self.registrations_deleted = Counter(
            "acmezone_registry_registrations_deleted_total",
            "Registrations deleted by this replica.",
            registry=registry,
        )
        self.txt_updates = Counter(
            "acmezone_registry_txt_updates_total",
            "TXT value operations, by operation and result.",
            ("operation", "result"),
            registry=registry,
        )
        self.txt_values_expired = Counter(
            "acmezone_registry_txt_values_expired_total",
            "TXT values removed because their lifetime ran out.",
            registry=registry,
        )
        self.auth_failures = Counter(
            "acmezone_registry_auth_failures_total",
            "Requests refused for missing or wrong credentials, by reason.",
            ("reason",),
            registry=registry,
        )
        self.rate_limited = Counter(
            "acmezone_registry_rate_limited_total",
            "Requests refused by an abuse limit (429 / RESOURCE_EXHAUSTED), by limit.",
            ("limit",),
            registry=registry,
        )
        for limit in RATE_LIMITS:
            self.rate_limited.labels(limit)
        self.http_connections = Gauge(
            "acmezone_registry_http_connections",
            "HTTP API connections currently open.",
            registry=registry,
        )
        self.http_connections_refused = Counter(
            "acmezone_registry_http_connections_refused_total",
            "HTTP API connections refused at a connection limit, by limit (global, per_source).",
            ("limit",),
            registry=registry,
        )
        self.http_timeouts = Counter(
            "acmezone_registry_http_timeouts_total",
            "HTTP API requests closed for taking too long to arrive, by phase (header, body).",
            ("phase",),
            registry=registry,
        )
        for limit in ("global", "per_source"):
            self.http_connections_refused.labels(limit)
        for phase in ("header", "body"):
            self.http_timeouts.labels(phase)
        self.password_rehashes = Counter(
            "acmezone_registry_password_rehashes_total",
            "Slow password hashes (imported bcrypt, earlier scrypt) replaced by the fast form "
            "after a successful check.",
            registry=registry,
        )
        self.feed_watchers = Gauge(
            "acmezone_registry_feed_watchers",
            "Record feed watch streams currently open on this replica.",
            registry=registry,
        )
        self.feed_revision = Gauge(
            "acmezone_registry_feed_revision",
            "Latest record feed revision this replica knows of.",
            registry=registry,
        )
        self.feed_compacted_revision = Gauge(
            "acmezone_registry_feed_compacted_revision",
            "Feed revisions up to this one have been compacted away.",
            registry=registry,
        )
        self.http_requests = Counter(
            "acmezone_registry_http_requests_total",
            "acme-dns HTTP API requests, by route and status code.",
            ("route", "status"),
            registry=registry,
        )
        self.http_request_seconds = Histogram(
            "acmezone_registry_http_request_duration_seconds",
            "acme-dns HTTP API request duration, by route.",
            ("route",),
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.dns_updates = Counter(
            "acmezone_registry_dns_updates_total",
            "RFC 2136 UPDATE messages processed, by response code.",
            ("rcode",),
            registry=registry,
        )
        self.replica_waits = Counter(
            "acmezone_registry_replica_waits_total",
            "acme-dns /update and RFC 2136 answers held until every dns replica served the "
            "change (WAIT_FOR_REPLICAS_SECONDS), by how the wait ended.",
            ("result",),
            registry=registry,
        )
        self.replay_guard_purged = Counter(
            "acmezone_registry_tsig_replay_guard_purged_total",
            "Remembered TSIG MACs forgotten after their signatures expired.",
            registry=registry,
        )
        for rcode in DNS_UPDATE_RCODES:
            self.dns_updates.labels(rcode)
        for result in ("ready", "timeout"):
            self.replica_waits.labels(result)
        for operation in TXT_OPERATIONS:
            for result in TXT_RESULTS:
                self.txt_updates.labels(operation, result)
        for reason in AUTH_FAILURE_REASONS:
            self.auth_failures.labels(reason)
        for route in HTTP_ROUTES:
            self.http_request_seconds.labels(route)


REPLICA_STATES = ("current", "behind", "disconnected")


class ReplicaCollector(Collector):
    """The dns replicas reporting to this registry replica, read at scrape time: how many are
    current, behind or disconnected (but still waited for), and the most revisions any live
    one is behind. No replica name is a label: pods come and go."""

    def __init__(self, read: Callable[[], tuple[dict[str, int], int]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        counts, lag = self._read()
        replicas = GaugeMetricFamily(
            "acmezone_registry_feed_replicas",
            "dns replicas reporting the revision they serve to this registry replica, by state.",
            labels=["state"],
        )
        for state in REPLICA_STATES:
            replicas.add_metric([state], counts.get(state, 0))
        yield replicas
        yield GaugeMetricFamily(
            "acmezone_registry_feed_replica_lag_revisions",
            "The most feed revisions any reporting dns replica is behind this registry's head.",
            value=lag,
        )
