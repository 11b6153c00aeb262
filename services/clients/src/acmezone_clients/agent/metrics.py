"""The agent's Prometheus series (`acmezone_agent_*`).

Labelled by certificate name only, one series per certificate the host installs (a handful);
results are the fixed sets below. Each certificate's series are initialised when the agent
starts, so "never installed" reads as 0, not as a missing series.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge

INSTALL_RESULTS = ("success", "bundle_refused", "write_failed", "export_failed")
HOOK_RESULTS = ("success", "failure", "timeout")


class AgentMetrics:
    """Every `acmezone_agent_*` collector."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.not_after = Gauge(
            "acmezone_agent_certificate_not_after_timestamp_seconds",
            "End of validity of the installed certificate, Unix time; 0 before the first install.",
            ["certificate"],
            registry=registry,
        )
        self.installs = Counter(
            "acmezone_agent_installs_total",
            "Install attempts by result.",
            ["certificate", "result"],
            registry=registry,
        )
        self.last_install_success = Gauge(
            "acmezone_agent_last_install_success",
            "1 when the last install attempt succeeded, 0 when it failed.",
            ["certificate"],
            registry=registry,
        )
        self.last_install_time = Gauge(
            "acmezone_agent_last_install_timestamp_seconds",
            "When the last install attempt ended, Unix time.",
            ["certificate"],
            registry=registry,
        )
        self.hooks = Counter(
            "acmezone_agent_hook_runs_total",
            "Reload hook runs by result.",
            ["certificate", "result"],
            registry=registry,
        )
        self.last_hook_success = Gauge(
            "acmezone_agent_last_hook_success",
            "1 when the last hook run succeeded, 0 when it failed or timed out.",
            ["certificate"],
            registry=registry,
        )
        self.watch_connected = Gauge(
            "acmezone_agent_watch_connected",
            "1 while the watch stream of the certificate is open.",
            ["certificate"],
            registry=registry,
        )
        self.reconnects = Counter(
            "acmezone_agent_watch_reconnects_total",
            "Watch streams re-opened after the issuer was unreachable or ended the stream.",
            ["certificate"],
            registry=registry,
        )

    def initialise(self, certificate: str) -> None:
        """Create the certificate's series at zero."""
        self.not_after.labels(certificate)
        self.last_install_success.labels(certificate)
        self.last_install_time.labels(certificate)
        self.last_hook_success.labels(certificate)
        self.watch_connected.labels(certificate)
        self.reconnects.labels(certificate)
        for result in INSTALL_RESULTS:
            self.installs.labels(certificate, result)
        for result in HOOK_RESULTS:
            self.hooks.labels(certificate, result)

    def installed(self, certificate: str, not_after: datetime) -> None:
        self.not_after.labels(certificate).set(not_after.timestamp())

    def install_result(self, certificate: str, result: str, when: float) -> None:
        self.installs.labels(certificate, result).inc()
        self.last_install_success.labels(certificate).set(1 if result == "success" else 0)
        self.last_install_time.labels(certificate).set(when)

    def hook_result(self, certificate: str, result: str) -> None:
        self.hooks.labels(certificate, result).inc()
        self.last_hook_success.labels(certificate).set(1 if result == "success" else 0)
