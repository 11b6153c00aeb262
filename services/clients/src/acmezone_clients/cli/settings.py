"""The CLI's defaults, from `ACMEZONE_CLI_*` environment variables (flags override them)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class CliSettings(BaseSettings):
    """Where the services are and the tokens to present."""

    model_config = SettingsConfigDict(env_prefix="ACMEZONE_CLI_", extra="ignore")

    issuer: str = Field(default="127.0.0.1:50053", description="issuer gRPC address")
    registry: str = Field(default="127.0.0.1:50051", description="registry gRPC address")
    dns: str = Field(default="127.0.0.1:50052", description="dns gRPC address")
    token: SecretStr | None = Field(default=None, description="issuer operator token")
    registry_token: SecretStr | None = Field(default=None, description="registry token")
    tls_ca_file: Path | None = Field(default=None, description="CA the services' TLS chains to")
    tls_cert_file: Path | None = Field(default=None, description="client certificate (mTLS)")
    tls_key_file: Path | None = Field(default=None, description="client key (mTLS)")
    tls_server_name: str | None = Field(default=None, description="name checked on the servers")
    zone_token: SecretStr | None = Field(
        default=None, description="the dns service's ZONE_EDIT_TOKEN, for `zone-record` changes"
    )

    def token_value(self) -> str | None:
        """The issuer token as text."""
        return self.token.get_secret_value() if self.token else None

    def registry_token_value(self) -> str | None:
        """The registry token as text."""
        return self.registry_token.get_secret_value() if self.registry_token else None

    def zone_token_value(self) -> str | None:
        """The dns zone edit token as text."""
        return self.zone_token.get_secret_value() if self.zone_token else None
