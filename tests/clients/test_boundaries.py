"""Module boundaries of the clients: they talk to the services only through gRPC stubs, so they
never import a service's package (acmezone_common and the generated `acmezone.*` stubs are
shared code, not services)."""

from __future__ import annotations

import ast
from pathlib import Path

import acmezone_clients

PACKAGE = Path(acmezone_clients.__file__).parent
SERVICES = ("acmezone_registry", "acmezone_dns", "acmezone_issuer")


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_no_service_package_is_imported() -> None:
    checked = 0
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        assert not {m for m in imports(path) if m.startswith(SERVICES)}, relative
        checked += 1
    assert checked >= 5
