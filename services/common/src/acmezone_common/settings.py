"""The settings every service shares; each service subclasses `ServiceSettings`.

Settings come from the environment (`ACMEZONE_<SVC>_*`) or an `.env` file and are validated at
start, so a typo fails loudly before any port is bound. Nothing outside a settings class reads
`os.environ`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, PlainSerializer
from pydantic_settings import BaseSettings, NoDecode

from acmezone_common.addresses import HostPort
from acmezone_common.logs import LogFormat


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
