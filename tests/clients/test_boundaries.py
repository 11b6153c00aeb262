"""Module boundaries of the clients: they talk to the services only through gRPC stubs, so they
never import a service's package (acmezone_common and the generated `acmezone.*` stubs are
shared code, not services)."""

from __future__ import annotations

import acmezone_clients
from tests.boundaries import SERVICES, from_packages, package_imports


def test_no_service_package_is_imported() -> None:
    found = package_imports(acmezone_clients)
    for relative, modules in found.items():
        assert not from_packages(modules, SERVICES), relative
    assert len(found) >= 5
