"""Registry settings, from `ACMEZONE_REGISTRY_*` environment variables or an `.env` file.

List settings take JSON, e.g. `ACMEZONE_REGISTRY_TRUSTED_PROXIES='["10.0.0.0/8"]'`.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from acmezone_common.addresses import HostPort
from acmezone_common.settings import Address, ServiceSettings


class RegistrySettings(ServiceSettings):
    """Everything the registry can be told; the defaults run a complete local registry."""

    model_config = SettingsConfigDict(
        env_prefix="ACMEZONE_REGISTRY_", env_file=".env", extra="ignore"
    )

    grpc_address: Address = Field(
        default=HostPort("127.0.0.1", 50051), description="gRPC API listen address."
    )
    metrics_address: Address = Field(
        default=HostPort("127.0.0.1", 9101), description="Prometheus /metrics listen address."
    )
    http_address: Address = Field(
        default=HostPort("127.0.0.1", 8053),
        description="acme-dns compatible HTTP API listen address.",
    )
    data_dir: Path = Field(
        default=Path("var/registry"), description="Where the default SQLite database lives."
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL: `sqlite:///path/registry.db` or `postgresql://user@host/db`. "
        "Default: SQLite in data_dir.",
    )
    migrate_on_start: bool = Field(default=True, description="Apply Alembic migrations at start.")
    zone: str = Field(
        default="acme.example.test", description="The challenge zone names are allocated in."
    )
    operator_token: SecretStr | None = Field(
        default=None,
        description="When set, creating, listing, updating and deleting registrations need "
        "`Authorization: Bearer <token>`. Unset: open, as acme-dns.",
    )
    http_tls_cert_file: Path | None = Field(
        default=None,
        description="PEM certificate chain: the acme-dns HTTP API serves HTTPS (with "
        "HTTP_TLS_KEY_FILE); rewritten files are picked up without a restart.",
    )
    http_tls_key_file: Path | None = Field(
        default=None, description="PEM private key of HTTP_TLS_CERT_FILE."
    )
    http_tls_reload_seconds: float = Field(
        default=5.0, gt=0, description="How often the HTTPS certificate files are looked at."
    )
    feed_token: SecretStr | None = Field(
        default=None,
        description="The credential dns replicas present (`authorization: Bearer <token>`) on "
        "the record feed, UPDATE forwarding and reflection. With it or the operator token set, "
        "those need one of the two; with neither they stay open.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Networks whose X-Forwarded-For header is believed (JSON list of CIDRs).",
    )
    reserved_subdomains: list[str] = Field(
        default_factory=lambda: ["ns", "ns1", "ns2"],
        description="Labels no registration may take (the zone's own name server names).",
    )
    default_max_txt_values: int = Field(
        default=2,
        ge=1,
        le=10,
        description="TXT values kept per registration unless it asks for more.",
    )
    update_follow_cnames: bool = Field(
        default=False,
        description="RFC 2136 UPDATEs for a static zone the dns service serves (not the "
        "challenge zone) apply to the challenge-zone targets of the CNAMEs they name, when each "
        "target is one of the signing key's names: certbot-dns-rfc2136 sends its UPDATE for "
        "`_acme-challenge.<domain>` in the customer zone and never follows the CNAME.",
    )
    strict_txt_values: bool = Field(
        default=True,
        description="Accept only 43-character base64url values (ACME digests); "
        "off: any printable ASCII, 1-255 chars.",
    )
    txt_value_lifetime_seconds: float = Field(
        default=0,
        ge=0,
        description="Remove TXT values this long after they were set; 0 keeps them.",
    )
    encryption_key: SecretStr | None = Field(
        default=None,
        description="32 bytes, base64url, sealing TSIG secrets at rest (AES-GCM). Unset: "
        "generated once into `<data_dir>/encryption.key` (mode 0600). Replicas sharing a "
        "database need the same key.",
    )
    credential_key: SecretStr | None = Field(
        default=None,
        description="32 bytes, base64url, keying the fast password hash. Unset: generated once "
        "into `<data_dir>/credential.key` (mode 0600). Replicas sharing a database need the "
        "same key.",
    )
    auth_failures_per_minute_per_source: float = Field(
        default=60,
        ge=0,
        description="Failed authentications a source network (IPv4 /24, IPv6 /56) may make per "
        "minute (as a burst, refilling over the minute) before getting 429; 0: no limit.",
    )
    auth_failures_per_minute_per_username: float = Field(
        default=20,
        ge=0,
        description="Failed authentications per minute per username before 429; 0: no limit.",
    )
    open_registrations_per_hour_per_source: float = Field(
        default=100,
        ge=0,
        description="Open registrations (no operator token configured) a source network may make "
        "per hour; 0: no limit.",
    )
    open_registrations_per_hour: float = Field(
        default=10000,
        ge=0,
        description="Open registrations per hour from everyone together; 0: no limit.",
    )
    feed_retention_revisions: int = Field(
        default=10000,
        ge=1,
        description="How many past revisions the feed keeps for resuming watchers.",
    )
    feed_bookmark_interval_seconds: float = Field(
        default=10.0, gt=0, description="Idle watch streams get a bookmark this often."
    )
    replica_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A dns replica whose report stream closed is still waited for (it may be "
        "answering from its last state) until this long after its last report.",
    )
    wait_for_replicas_seconds: float = Field(
        default=2.0,
        ge=0,
        le=300,
        description="The acme-dns /update and RFC 2136 answers wait until every dns replica "
        "serves the change, up to this long (0: answer at once): the clients ask the CA right "
        "after. A few ms when the replicas are current; about 10% of the /update rate.",
    )
    feed_poll_interval_seconds: float = Field(
        default=1.0,
        gt=0,
        description="How often to look for changes committed by other replicas "
        "(PostgreSQL also pushes them with NOTIFY).",
    )
    maintenance_interval_seconds: float = Field(
        default=1.0,
        gt=0,
        description="How often expired values are removed and the feed compacted.",
    )
    http_max_body_bytes: int = Field(
        default=65536, ge=1024, description="Largest HTTP request body accepted."
    )
    http_header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A request's headers must arrive within this (JSON 408 and close otherwise).",
    )
    http_body_timeout_seconds: float = Field(
        default=10.0, gt=0, description="A request's body must arrive within this (JSON 408)."
    )
    http_idle_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Idle keep-alive HTTP connections are closed after this."
    )
    http_max_connections: int = Field(
        default=1024, ge=1, description="HTTP connections open at once; more get a JSON 503."
    )
    http_max_connections_per_source: int = Field(
        default=64, ge=1, description="HTTP connections one client address may hold open."
    )

    @field_validator("zone")
    @classmethod
    def _normalise_zone(cls, value: str) -> str:
        zone = value.strip().rstrip(".").lower()
        labels = zone.split(".")
        if not zone or any(not 0 < len(label) <= 63 for label in labels) or len(zone) > 200:
            raise ValueError(f"{value!r} is not a valid zone name")
        return zone

    @field_validator("trusted_proxies")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        return [str(ipaddress.ip_network(item.strip(), strict=False)) for item in value]

    @model_validator(mode="after")
    def _https_complete(self) -> RegistrySettings:
        if (self.http_tls_cert_file is None) != (self.http_tls_key_file is None):
            raise ValueError("http_tls_cert_file and http_tls_key_file go together")
        return self

    def resolved_database_url(self) -> str:
        """The database URL to use: the configured one, or SQLite inside data_dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'registry.db'}"
