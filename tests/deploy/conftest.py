"""Fixtures of the deployment tests: rendered kustomize overlays and the repository's paths.

Rendering uses `kubectl kustomize` (kubectl ships on the project's machines; `make test` fails
with a clear message if it is missing). Each overlay is rendered once per session.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "production")


def kubectl() -> str:
    """The kubectl binary, or a test failure saying how to get one."""
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is needed to render deploy/k8s (kubectl kustomize); install kubectl")
    return path


def render(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize <directory>`, parsed into objects."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kustomize failed for {directory}:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


_RENDERED: dict[str, list[dict[str, Any]]] = {}


def rendered(overlay: str) -> list[dict[str, Any]]:
    """The objects of one overlay (`dev`, `production`) or `base`, rendered once."""
    if overlay not in _RENDERED:
        path = K8S / "base" if overlay == "base" else K8S / "overlays" / overlay
        _RENDERED[overlay] = render(path)
    return _RENDERED[overlay]


def objects(overlay: str, kind: str) -> list[dict[str, Any]]:
    """Every rendered object of one kind."""
    return [obj for obj in rendered(overlay) if obj["kind"] == kind]


def one(overlay: str, kind: str, name: str) -> dict[str, Any]:
    """The rendered object of that kind and name."""
    found = [obj for obj in objects(overlay, kind) if obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name} in {overlay}, found {len(found)}"
    return found[0]


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    """Each overlay in turn."""
    name: str = request.param
    return name
