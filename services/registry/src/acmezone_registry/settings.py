"""Registry settings, from `ACMEZONE_REGISTRY_*` environment variables or an `.env` file.

List settings take JSON, e.g. `ACMEZONE_REGISTRY_TRUSTED_PROXIES='["10.0.0.0/8"]'`.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
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
    password_scrypt_n: int = Field(
        default=16384, ge=2, description="scrypt cost (a power of two) for new password hashes."
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
        default=0.0,
        ge=0,
        le=300,
        description="When above 0, the acme-dns /update and RFC 2136 answers wait until every "
        "dns replica serves the change, up to this long (0: answer at once).",
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

    @field_validator("password_scrypt_n")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError("scrypt N must be a power of two")
        return value

    def resolved_database_url(self) -> str:
        """The database URL to use: the configured one, or SQLite inside data_dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'registry.db'}"
