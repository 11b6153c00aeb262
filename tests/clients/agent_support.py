"""An issuer that a test can stop and start again on the same port and database, and agent
settings with short backoffs, for the agent's integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from acmezone.issuer.v1 import account_service_pb2_grpc, certificate_service_pb2_grpc
from acmezone.issuer.v1 import certificate_service_pb2 as pb
from acmezone_clients.agent.config import Target, target_from_table
from acmezone_clients.agent.settings import AgentSettings
from acmezone_common.testing import free_port
from acmezone_issuer.app import IssuerApp
from tests.issuer.conftest import AUTH, CA, OPERATOR_TOKEN, Client, issuer_settings


class RestartableIssuer:
    """An in-process issuer on a fixed loopback port; `stop` then `start` is a restart."""

    def __init__(
        self,
        data_dir: Path,
        ca: CA,
        credentials: grpc.ChannelCredentials | None = None,
        **overrides: Any,
    ) -> None:
        self._credentials = credentials
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._settings = issuer_settings(data_dir, ca, grpc_address=self.address, **overrides)
        self.app: IssuerApp | None = None
        self._channel: grpc.aio.Channel | None = None
        self.client: Client | None = None
        self.metrics = CollectorRegistry()

    async def start(self) -> Client:
        self.metrics = CollectorRegistry()
        self.app = IssuerApp(self._settings, metrics_registry=self.metrics)
        await self.app.start()
        options = [("grpc.use_local_subchannel_pool", 1)]
        self._channel = (
            grpc.aio.secure_channel(self.address, self._credentials, options=options)
            if self._credentials is not None
            else grpc.aio.insecure_channel(self.address, options=options)
        )
        self.client = Client(
            self.app,
            account_service_pb2_grpc.AccountServiceStub(self._channel),
            certificate_service_pb2_grpc.CertificateServiceStub(self._channel),
        )
        return self.client

    async def stop(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        if self.app is not None:
            await self.app.stop(grace=0)
            self.app = None

    @property
    def channel(self) -> grpc.aio.Channel:
        assert self._channel is not None
        return self._channel

    async def issue(self, certificate_id: str, dns_name: str) -> pb.Certificate:
        """An account and an HTTP-01 certificate, waited for until issued."""
        assert self.client is not None
        account = await self.client.create_account()
        created = await self.client.create_certificate(
            certificate_id,
            dns_names=[dns_name],
            account=account.name,
            challenge_type=pb.CHALLENGE_TYPE_HTTP_01,
        )
        return await self.client.wait_for(created.name, lambda c: c.state == pb.STATE_ISSUED)

    async def renew(self, name: str, old_serial: str) -> pb.Certificate:
        """Force a renewal and wait for the new serial."""
        assert self.client is not None
        await self.client.certificates.RenewCertificate(
            pb.RenewCertificateRequest(name=name), metadata=AUTH
        )
        return await self.client.wait_for(
            name, lambda c: c.state == pb.STATE_ISSUED and c.serial_number != old_serial
        )


@asynccontextmanager
async def restartable_issuer(
    data_dir: Path, ca: CA, credentials: grpc.ChannelCredentials | None = None, **overrides: Any
) -> AsyncIterator[RestartableIssuer]:
    issuer = RestartableIssuer(data_dir, ca, credentials, **overrides)
    try:
        yield issuer
    finally:
        await issuer.stop()


def agent_settings(issuer: str, **extra: Any) -> AgentSettings:
    """Fast retries so the tests do not wait for production backoffs."""
    values: dict[str, Any] = {
        "issuer": issuer,
        "token": OPERATOR_TOKEN,
        "backoff_initial_seconds": 0.05,
        "backoff_max_seconds": 0.4,
        "hook_backoff_initial_seconds": 0.05,
        "rpc_timeout_seconds": 10,
    }
    values.update(extra)
    return AgentSettings(**values)


def target(certificate: str, directory: Path, hook: str | None = None) -> Target:
    table: dict[str, Any] = {"name": certificate, "dir": str(directory)}
    if hook:
        table["reload_command"] = hook
    table["hook_timeout_seconds"] = 20
    return target_from_table(table, "test")
