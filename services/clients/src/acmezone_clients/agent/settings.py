"""The agent's settings, from `ACMEZONE_AGENT_*` environment variables (flags override some)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from acmezone_common.logs import LogFormat
from acmezone_common.settings import Address


class AgentSettings(BaseSettings):
    """Where the issuer is, the credential to present, and how patiently to retry."""

    model_config = SettingsConfigDict(env_prefix="ACMEZONE_AGENT_", extra="ignore")

    issuer: str = Field(default="127.0.0.1:50053", description="issuer gRPC address")
    token: SecretStr | None = Field(
        default=None, description="token presented to the issuer (a delivery token)"
    )
    tls: bool = Field(
        default=False, description="TLS to the issuer, verified against the system roots"
    )
    tls_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle to verify the issuer with (implies TLS)"
    )
    tls_client_cert_file: Path | None = Field(
        default=None, description="PEM client certificate for an issuer that requires one"
    )
    tls_client_key_file: Path | None = Field(
        default=None, description="PEM key of tls_client_cert_file"
    )
    tls_server_name: str | None = Field(
        default=None, description="name to verify in the issuer's certificate, if not the host"
    )
    metrics_address: Address | None = Field(
        default=None, description="where Prometheus scrapes the agent's /metrics; none if unset"
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: LogFormat = Field(default="text", description="`text` or `json`.")
    backoff_initial_seconds: float = Field(
        default=1.0, gt=0, description="first wait before reconnecting to the issuer"
    )
    backoff_max_seconds: float = Field(
        default=60.0, gt=0, description="longest wait between reconnects (full jitter below it)"
    )
    hook_attempts: int = Field(
        default=5, ge=1, description="runs of a failing hook before giving up on that install"
    )
    hook_backoff_initial_seconds: float = Field(
        default=2.0, gt=0, description="wait before the second hook run; doubles per run"
    )
    rpc_timeout_seconds: float = Field(
        default=30.0, gt=0, description="deadline of unary calls (export) to the issuer"
    )
    host: str = Field(
        default_factory=socket.gethostname,
        description="the host name reported to the issuer for the fleet view",
    )
    report_installs: bool = Field(
        default=True, description="report each install to the issuer (DeliveryTargetService)"
    )
    crash_after_writes: int | None = Field(
        default=None,
        ge=1,
        description="tests only: SIGKILL the agent after this many file renames",
    )
    crash_signal: Literal["KILL", "TERM"] = Field(
        default="KILL", description="tests only: the signal of crash_after_writes"
    )

    @property
    def uses_tls(self) -> bool:
        """TLS when asked for or when any TLS file is given."""
        return self.tls or any(
            f is not None
            for f in (self.tls_ca_file, self.tls_client_cert_file, self.tls_client_key_file)
        )

    def token_value(self) -> str | None:
        """The token as text."""
        return self.token.get_secret_value() if self.token else None
