"""The issuer's Prometheus series, registered against the registry the composition root passes.

Names follow `acmezone_issuer_<thing>_<unit>`; labels are bounded: states, stages, reasons and
ACME endpoint names are fixed sets. The per-certificate expiry gauge is labelled by certificate
name as cert-manager's `certmanager_certificate_expiration_timestamp_seconds` is: one series per
certificate resource, which operators create deliberately.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from acmezone_issuer.errors import FailureReason
from acmezone_issuer.states import CertificateState

STATES = tuple(CertificateState)
FAILURE_REASONS = tuple(FailureReason)
ACME_ENDPOINTS = (
    "directory",
    "newNonce",
    "newAccount",
    "newOrder",
    "account",
    "orders",
    "order",
    "authorization",
    "challenge",
    "finalize",
    "certificate",
    "renewalInfo",
    "revokeCert",
)

# Issuance takes seconds against Pebble and minutes against a busy CA.
_DURATION_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800)


class IssuerMetrics:
    """Every `acmezone_issuer_*` collector."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.certificates = Gauge(
            "acmezone_issuer_certificates",
            "Certificates by state.",
            ("state",),
            registry=registry,
        )
        self.attempts = Counter(
            "acmezone_issuer_issuance_attempts_total",
            "Issuance attempts started (first issuance and renewals).",
            registry=registry,
        )
        self.failures = Counter(
            "acmezone_issuer_issuance_failures_total",
            "Issuance attempts that failed, by reason.",
            ("reason",),
            registry=registry,
        )
        self.duration = Histogram(
            "acmezone_issuer_issuance_duration_seconds",
            "Time from placing an order to storing the issued chain.",
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.acme_requests = Counter(
            "acmezone_issuer_acme_requests_total",
            "HTTP requests to ACME servers by endpoint and HTTP status (`error` when no answer).",
            ("endpoint", "status"),
            registry=registry,
        )
        self.expiry = Gauge(
            "acmezone_issuer_certificate_expiration_timestamp_seconds",
            "The notAfter of each certificate's issued chain, as Unix time.",
            ("certificate",),
            registry=registry,
        )
        self.persist_until = Gauge(
            "acmezone_issuer_dns_persist_until_timestamp_seconds",
            "The earliest persistUntil of the dns-persist-01 records a certificate relies on, "
            "as Unix time; absent when they have none.",
            ("certificate",),
            registry=registry,
        )
        self.renewal = Gauge(
            "acmezone_issuer_certificate_renewal_timestamp_seconds",
            "When each certificate is planned to be renewed, as Unix time.",
            ("certificate",),
            registry=registry,
        )
        self.delivery_targets = Gauge(
            "acmezone_issuer_delivery_targets",
            "Targets (host and directory) agents reported for each certificate, by whether they "
            "run its current serial (`current`) or an older one (`stale`).",
            ("certificate", "status"),
            registry=registry,
        )
        self.delivery_stale_expiry = Gauge(
            "acmezone_issuer_delivery_stale_expiration_timestamp_seconds",
            "The earliest notAfter among a certificate's targets that run an older serial, as "
            "Unix time; no series while every target runs the current serial.",
            ("certificate",),
            registry=registry,
        )
        self._known: set[str] = set()
        self._delivered: set[str] = set()
        for state in STATES:
            self.certificates.labels(state)
        for reason in FAILURE_REASONS:
            self.failures.labels(reason)

    def set_state_counts(self, counts: dict[str, int]) -> None:
        """Replace the by-state gauge with fresh counts (states absent from `counts` are 0)."""
        for state in STATES:
            self.certificates.labels(state).set(counts.get(state, 0))

    def set_schedules(self, schedules: dict[str, tuple[datetime | None, datetime | None]]) -> None:
        """Expiry and planned renewal per certificate; series of certificates that are gone, not
        yet issued, or no longer renewed (revoked) are removed."""
        for certificate, (not_after, renewal) in schedules.items():
            if not_after is not None:
                self.expiry.labels(certificate).set(not_after.timestamp())
            if renewal is not None:
                self.renewal.labels(certificate).set(renewal.timestamp())
            else:
                with contextlib.suppress(KeyError):
                    self.renewal.remove(certificate)
        for certificate in self._known - schedules.keys():
            self.forget_certificate(certificate)
        self._known = set(schedules)

    def set_delivery(self, figures: dict[str, tuple[int, int, datetime | None]]) -> None:
        """Per certificate (name): (current targets, stale targets, earliest stale notAfter);
        series of certificates no longer reported are removed."""
        for certificate, (current, stale, earliest) in figures.items():
            self.delivery_targets.labels(certificate, "current").set(current)
            self.delivery_targets.labels(certificate, "stale").set(stale)
            if earliest is not None:
                self.delivery_stale_expiry.labels(certificate).set(earliest.timestamp())
            else:
                with contextlib.suppress(KeyError):
                    self.delivery_stale_expiry.remove(certificate)
        for certificate in self._delivered - figures.keys():
            for status in ("current", "stale"):
                with contextlib.suppress(KeyError):
                    self.delivery_targets.remove(certificate, status)
            with contextlib.suppress(KeyError):
                self.delivery_stale_expiry.remove(certificate)
        self._delivered = set(figures)

    def set_persist_until(self, certificate: str, until: datetime | None) -> None:
        """Set (or, without an end, drop) a certificate's dns-persist-01 record end. Set by the
        replica that last checked the records."""
        if until is not None:
            self.persist_until.labels(certificate).set(until.timestamp())
        else:
            with contextlib.suppress(KeyError):
                self.persist_until.remove(certificate)

    def forget_certificate(self, certificate: str) -> None:
        """Drop a deleted certificate's series."""
        for gauge in (self.expiry, self.renewal, self.persist_until):
            with contextlib.suppress(KeyError):
                gauge.remove(certificate)
