"""Module boundaries of the registry: it never imports another service or the clients, and its
domain (storage, feed, credentials, validation, ...) never imports grpc; only servicers and the
composition root do."""

from __future__ import annotations

import acmezone_registry
from tests.boundaries import (
    from_packages,
    grpc_users,
    may_use_grpc,
    others_than,
    package_imports,
)

OTHERS = others_than("acmezone_registry")
GRPC_CLIENTS: set[str] = set()  # the registry calls no other service


def test_no_other_service_and_no_grpc_in_the_domain() -> None:
    found = package_imports(acmezone_registry)
    for relative, modules in found.items():
        assert not from_packages(modules, OTHERS), relative
    assert {r for r in grpc_users(found) if not may_use_grpc(r, GRPC_CLIENTS)} == set()
    assert "servicer.py" in grpc_users(found)  # the check does see grpc imports
    assert len(found) > 20
