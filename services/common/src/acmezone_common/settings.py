"""The settings every service shares; each service subclasses `ServiceSettings`.

Settings come from the environment (`ACMEZONE_<SVC>_*`) or an `.env` file and are validated at
start, so a typo fails loudly before any port is bound. Nothing outside a settings class reads
`os.environ`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field, PlainSerializer, model_validator
from pydantic_settings import BaseSettings, NoDecode

from acmezone_common.addresses import HostPort
from acmezone_common.logs import LogFormat
from acmezone_common.transport import ClientTls, ServerTls, client_tls


def _parse_host_port(value: object) -> HostPort:
    if isinstance(value, HostPort):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a host:port string")
    return HostPort.parse(value)


Address = Annotated[HostPort, NoDecode, BeforeValidator(_parse_host_port), PlainSerializer(str)]
"""A `host:port` setting, parsed into a `HostPort`."""


class ServiceSettings(BaseSettings):
    """Fields common to every acmezone service. Subclasses set defaults and the env prefix."""

    grpc_address: Address = Field(description="Where the gRPC API listens.")
    metrics_address: Address = Field(description="Where Prometheus scrapes /metrics.")
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: LogFormat = Field(
        default="text", description="`text` for terminals, `json` for containers."
    )
    shutdown_grace_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long in-flight RPCs may finish after SIGTERM before they are cancelled.",
    )
    grpc_tls_cert_file: Path | None = Field(
        default=None,
        description="PEM certificate chain: the gRPC port serves TLS (with GRPC_TLS_KEY_FILE).",
    )
    grpc_tls_key_file: Path | None = Field(
        default=None, description="PEM private key of GRPC_TLS_CERT_FILE."
    )
    grpc_tls_client_ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle: gRPC clients must present a certificate it signed (mTLS).",
    )

    @model_validator(mode="after")
    def _grpc_tls_complete(self) -> ServiceSettings:
        if (self.grpc_tls_cert_file is None) != (self.grpc_tls_key_file is None):
            raise ValueError("grpc_tls_cert_file and grpc_tls_key_file are set together")
        if self.grpc_tls_client_ca_file is not None and self.grpc_tls_cert_file is None:
            raise ValueError("grpc_tls_client_ca_file needs grpc_tls_cert_file and its key")
        return self

    def grpc_server_tls(self) -> ServerTls | None:
        """The gRPC port's TLS, or None for plaintext."""
        if self.grpc_tls_cert_file is None or self.grpc_tls_key_file is None:
            return None
        return ServerTls(
            self.grpc_tls_cert_file, self.grpc_tls_key_file, self.grpc_tls_client_ca_file
        )


class RegistryClientSettings(BaseSettings):
    """How a service's channel to the registry is secured (dns and issuer both dial it).
    Mixed into a service's settings class, so the fields take that class's env prefix."""

    registry_tls: bool = Field(
        default=False,
        description="Connect to the registry with TLS, verified against the system roots "
        "unless REGISTRY_TLS_CA_FILE names a CA (which turns TLS on by itself).",
    )
    registry_tls_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle the registry's gRPC certificate chains to."
    )
    registry_tls_cert_file: Path | None = Field(
        default=None, description="PEM client certificate presented to the registry (mTLS)."
    )
    registry_tls_key_file: Path | None = Field(
        default=None, description="PEM private key of REGISTRY_TLS_CERT_FILE."
    )
    registry_tls_server_name: str | None = Field(
        default=None,
        description="The name checked in the registry's certificate, when the target is not it.",
    )

    def registry_client_tls(self) -> ClientTls | None:
        """How the channel to the registry is secured (None: plaintext)."""
        return client_tls(
            self.registry_tls,
            self.registry_tls_ca_file,
            self.registry_tls_cert_file,
            self.registry_tls_key_file,
            self.registry_tls_server_name,
        )
