"""Module boundaries: the issuer never imports another service or the clients (the CLI and the
agent live in acmezone_clients), and its domain never imports grpc (only the servicer, the app and
the registry client in solvers/dns01 do)."""

from __future__ import annotations

import acmezone_issuer
from tests.boundaries import (
    from_packages,
    grpc_users,
    may_use_grpc,
    others_than,
    package_imports,
)

OTHERS = others_than("acmezone_issuer")
GRPC_CLIENTS = {"solvers/dns01.py"}


def test_no_other_service_and_no_grpc_in_the_domain() -> None:
    found = package_imports(acmezone_issuer)
    for relative, modules in found.items():
        assert not from_packages(modules, OTHERS), relative
    assert {r for r in grpc_users(found) if not may_use_grpc(r, GRPC_CLIENTS)} == set()
    assert "servicer.py" in grpc_users(found)  # the check does see grpc imports
    assert len(found) > 20
