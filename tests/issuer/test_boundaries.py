"""Module boundaries: the issuer never imports another service or the clients (the CLI and the
agent live in acmezone_clients), and its domain never imports grpc (only the servicer, the app and
the registry client in solvers/dns01 do)."""

from __future__ import annotations

import ast
from pathlib import Path

import acmezone_issuer

PACKAGE = Path(acmezone_issuer.__file__).parent
OTHERS = ("acmezone_registry", "acmezone_dns", "acmezone_clients")
GRPC_ALLOWED = {"servicer.py", "app.py", "solvers/dns01.py"}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_no_other_service_and_no_grpc_in_the_domain() -> None:
    checked = 0
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        modules = imports(path)
        assert not {m for m in modules if m.startswith(OTHERS)}, relative
        if relative not in GRPC_ALLOWED:
            assert not {m for m in modules if m == "grpc" or m.startswith("grpc.")}, relative
        checked += 1
    assert checked > 20
