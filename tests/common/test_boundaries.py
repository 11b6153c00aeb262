"""Module boundaries of acmezone_common: shared code imports no service and no client (or it
would tie every service to one of them), and its rules (errors, paging, names, sql, settings,
logs) never import grpc, so domain modules can use them without pulling grpc in."""

from __future__ import annotations

import acmezone_common
from tests.boundaries import CLIENTS, SERVICES, from_packages, grpc_users, package_imports

GRPC_ALLOWED = {
    "grpc_server.py",
    "guard.py",
    "interceptors.py",
    "testing.py",
    "tls.py",
    "transport.py",
}


def test_no_service_and_grpc_only_in_the_server_parts() -> None:
    found = package_imports(acmezone_common)
    for relative, modules in found.items():
        assert not from_packages(modules, (*SERVICES, CLIENTS)), relative
    assert grpc_users(found) - GRPC_ALLOWED == set()
    assert "interceptors.py" in grpc_users(found)  # the check does see grpc imports
    assert {"errors.py", "paging.py", "names.py", "sql.py"} <= found.keys()
