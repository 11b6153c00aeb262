"""What each package's modules import, read from their source with `ast`, for the boundary tests
under tests/<package>/test_boundaries.py: services talk only through gRPC stubs (they never
import each other or the clients), and domain modules never import grpc."""

from __future__ import annotations

import ast
from pathlib import Path
from types import ModuleType

SERVICES = ("acmezone_registry", "acmezone_dns", "acmezone_issuer")
CLIENTS = "acmezone_clients"


def imports(path: Path) -> set[str]:
    """Every module a file imports (absolute names; relative imports are not used here)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def package_imports(package: ModuleType) -> dict[str, set[str]]:
    """For every module of `package` (by path relative to it, e.g. `storage/tables.py`), the
    modules it imports."""
    assert package.__file__ is not None
    root = Path(package.__file__).parent
    return {path.relative_to(root).as_posix(): imports(path) for path in sorted(root.rglob("*.py"))}


def from_packages(modules: set[str], packages: tuple[str, ...]) -> set[str]:
    """The imported modules that belong to one of `packages`."""
    return {m for m in modules if m.split(".")[0] in packages}


def uses_grpc(modules: set[str]) -> bool:
    """Whether grpc itself or one of its companions (grpc_health, grpc_status, ...) is imported."""
    return any(m.split(".")[0] == "grpc" or m.startswith("grpc_") for m in modules)


def grpc_users(found: dict[str, set[str]]) -> set[str]:
    """The modules (relative paths) that import grpc."""
    return {relative for relative, modules in found.items() if uses_grpc(modules)}


def may_use_grpc(relative: str, clients: set[str]) -> bool:
    """Servicers (they translate) and the composition root (it builds the server) may import
    grpc, and so may the modules in `clients` that call another service through its stubs."""
    name = relative.rsplit("/", 1)[-1]
    return name.endswith("servicer.py") or name == "app.py" or relative in clients


def others_than(package: str) -> tuple[str, ...]:
    """The packages a service must not import: the other services and the clients."""
    return (*(s for s in SERVICES if s != package), CLIENTS)


def check_service(package: ModuleType, grpc_clients: set[str], sees: str, at_least: int) -> None:
    """The two rules for a service's package: no other service or the clients imported, and
    grpc only where `may_use_grpc` allows. `sees` is a module known to import grpc, so a reader
    that found no imports at all cannot pass; `at_least` how many modules there are."""
    found = package_imports(package)
    for relative, modules in found.items():
        assert not from_packages(modules, others_than(package.__name__)), relative
    assert {r for r in grpc_users(found) if not may_use_grpc(r, grpc_clients)} == set()
    assert sees in grpc_users(found)
    assert len(found) >= at_least
