"""Registry fixtures: a migrated database, its repositories and the domain objects over them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from acmezone_common.sealing import SecretSealer
from acmezone_registry.app import RegistryApp
from acmezone_registry.metrics import RegistryMetrics
from acmezone_registry.registrations import RegistrationPolicy, Registrations
from acmezone_registry.settings import RegistrySettings
from acmezone_registry.storage import migrate
from acmezone_registry.storage.database import Database
from acmezone_registry.storage.stores import Stores

ZONE = "acme.example.test"
CREDENTIAL_KEY = bytes(range(32))
SEALER = SecretSealer(bytes(range(32, 64)))


@dataclass
class Stack:
    """A migrated database with the repositories and domain objects on top."""

    database: Database
    stores: Stores
    registrations: Registrations
    metrics: RegistryMetrics


async def open_stack(
    url: str,
    metrics_registry: CollectorRegistry | None = None,
    *,
    operator_token: str | None = None,
    lifetime: timedelta | None = None,
) -> Stack:
    """Open (and migrate) a database and build the registry domain over it."""
    database = Database(url)
    await asyncio.to_thread(migrate.upgrade, database)
    stores = Stores.open(database, ZONE, SEALER)
    metrics = RegistryMetrics(metrics_registry or CollectorRegistry())
    registrations = Registrations(
        stores.registrations,
        stores.txt_values,
        RegistrationPolicy(
            zone=ZONE,
            operator_token=operator_token,
            reserved_subdomains=("ns",),
            default_max_txt_values=2,
            strict_txt_values=True,
            txt_value_lifetime=lifetime,
            credential_key=CREDENTIAL_KEY,
        ),
        metrics,
    )
    return Stack(database, stores, registrations, metrics)


@pytest.fixture
async def stack(database_url: str, metrics_registry: CollectorRegistry) -> AsyncIterator[Stack]:
    """A registry domain over a fresh database (SQLite and PostgreSQL)."""
    opened = await open_stack(database_url, metrics_registry)
    try:
        yield opened
    finally:
        await opened.database.dispose()


def registry_settings(data_dir: Path, **overrides: Any) -> RegistrySettings:
    """Settings for an in-process registry on free loopback ports, keeping its files (database,
    generated keys) in `data_dir`."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "grpc_address": "127.0.0.1:0",
        "http_address": "127.0.0.1:0",
        "metrics_address": "127.0.0.1:0",
        "database_url": f"sqlite:///{data_dir}/registry.db",
        "zone": ZONE,
        # Tests register many accounts from 127.0.0.1; the quota has tests of its own.
        "open_registrations_per_hour_per_source": 0,
    }
    values.update(overrides)
    return RegistrySettings(**values)


@asynccontextmanager
async def running_registry(
    data_dir: Path, metrics_registry: CollectorRegistry | None = None, **overrides: Any
) -> AsyncIterator[RegistryApp]:
    """A whole registry (gRPC, HTTP, metrics ports) started in this process, always stopped."""
    app = RegistryApp(
        registry_settings(data_dir, **overrides), metrics_registry or CollectorRegistry()
    )
    await app.start()
    try:
        yield app
    finally:
        await app.stop(grace=0)
