"""The issuer's settings, read from `ACMEZONE_ISSUER_*` environment variables or an `.env` file."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from acmezone_common.addresses import HostPort
from acmezone_common.settings import Address, RegistryClientSettings, ServiceSettings

DEFAULT_DIRECTORY_URL = "https://127.0.0.1:14000/dir"


class IssuerSettings(ServiceSettings, RegistryClientSettings):
    """Everything the issuer can be told; defaults run the whole system on one machine."""

    # validate_by_name: `IssuerSettings(registry_target=...)` works beside the env aliases.
    model_config = SettingsConfigDict(
        env_prefix="ACMEZONE_ISSUER_", env_file=".env", extra="ignore", validate_by_name=True
    )

    grpc_address: Address = Field(default=HostPort("127.0.0.1", 50053), description="gRPC API.")
    metrics_address: Address = Field(
        default=HostPort("127.0.0.1", 9103), description="Prometheus /metrics."
    )
    http01_address: Address = Field(
        default=HostPort("127.0.0.1", 5002),
        description="Where `/.well-known/acme-challenge/` is served for HTTP-01.",
    )
    data_dir: Path = Field(
        default=Path("var/issuer"),
        description="Holds the SQLite database and the generated encryption key by default.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL, e.g. `postgresql+psycopg://u:p@host/db`; unset means "
        "SQLite at `<data_dir>/issuer.db`.",
    )
    encryption_key: SecretStr | None = Field(
        default=None,
        description="32 bytes, base64url, that encrypt private keys at rest (AES-256-GCM). "
        "Unset means a key generated once into `<data_dir>/encryption.key` (mode 0600).",
    )
    operator_token: SecretStr | None = Field(
        default=None,
        description="When set, every RPC needs `authorization: Bearer <token>`; "
        "ExportCertificate is only possible with a token configured.",
    )
    default_directory_url: str = Field(
        default=DEFAULT_DIRECTORY_URL,
        description="The ACME directory used when an account names none (a local Pebble).",
    )
    acme_ca_bundle: Path | None = Field(
        default=None,
        description="PEM bundle to trust for the ACME server's HTTPS (Pebble's test CA); "
        "unset means the system trust store.",
    )
    registry_target: str = Field(
        default="127.0.0.1:50051",
        # The same name as the dns service's; REGISTRY_ADDRESS is its deprecated old name.
        validation_alias=AliasChoices(
            "ACMEZONE_ISSUER_REGISTRY_TARGET", "ACMEZONE_ISSUER_REGISTRY_ADDRESS"
        ),
        description="The registry's gRPC target (`host:port` or a grpc URI such as "
        "`dns:///registry:50051`), where DNS-01 registrations and TXT values live.",
    )
    registry_token: SecretStr | None = Field(
        default=None, description="The registry's operator token, if it requires one."
    )

    dns_resolver: str | None = Field(
        default=None,
        description="`host:port` of the DNS server used to check `_acme-challenge` CNAMEs and "
        "TXT propagation; unset means the system resolver.",
    )
    registration_id_from_domain: bool = Field(
        default=False,
        description="Development only: name each registry registration after its domain "
        "(`example.test` -> `example-test`) so a dev zone can hold the CNAMEs in advance.",
    )
    reconcile_interval_seconds: float = Field(
        default=5.0, gt=0, description="How often due certificates are looked for."
    )
    delegation_recheck_seconds: float = Field(
        default=30.0, gt=0, description="How often a missing CNAME is checked again."
    )
    propagation_timeout_seconds: float = Field(
        default=60.0, gt=0, description="How long to wait for the dns service to answer a TXT."
    )
    validation_timeout_seconds: float = Field(
        default=180.0, gt=0, description="How long one order may take from answer to download."
    )
    retry_base_seconds: float = Field(
        default=60.0, gt=0, description="First retry delay after a failure; doubles per failure."
    )
    retry_max_seconds: float = Field(
        default=6 * 3600.0, gt=0, description="Longest retry delay after repeated failures."
    )
    renewal_jitter_fraction: float = Field(
        default=0.05,
        ge=0,
        le=0.2,
        description="Renewal at 2/3 of the lifetime moves by up to this fraction of the lifetime.",
    )
    lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How long a replica owns a certificate it works on; renewed while working.",
    )
    replica_id: str | None = Field(
        default=None,
        description="Names this replica in leases, the same across restarts so it reclaims its "
        "own at once (e.g. the pod name); unset: one kept in `<data_dir>/replica-id`.",
    )
