"""Settings from ACMEZONE_ISSUER_* variables: defaults, unset as None, the registry's target
under its one name (the old `REGISTRY_ADDRESS` still read)."""

from __future__ import annotations

from pathlib import Path

import pytest

from acmezone_common.addresses import HostPort
from acmezone_issuer.settings import IssuerSettings


@pytest.fixture(autouse=True)
def _no_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults() -> None:
    settings = IssuerSettings()
    assert settings.grpc_address == HostPort("127.0.0.1", 50053)
    assert settings.registry_target == "127.0.0.1:50051"
    # Unset is None, as in the other services, never an empty string.
    assert (settings.database_url, settings.dns_resolver, settings.replica_id) == (None, None, None)


def test_registry_target_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACMEZONE_ISSUER_REGISTRY_TARGET", "dns:///registry:50051")
    assert IssuerSettings().registry_target == "dns:///registry:50051"


def test_the_deprecated_registry_address_is_still_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACMEZONE_ISSUER_REGISTRY_ADDRESS", "old.example:50051")
    assert IssuerSettings().registry_target == "old.example:50051"
    # The new name wins when both are set.
    monkeypatch.setenv("ACMEZONE_ISSUER_REGISTRY_TARGET", "new.example:50051")
    assert IssuerSettings().registry_target == "new.example:50051"


def test_registry_target_by_keyword() -> None:
    assert IssuerSettings(registry_target="kw.example:1").registry_target == "kw.example:1"
