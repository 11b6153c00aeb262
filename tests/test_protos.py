"""The gRPC contract: buf lint passes, and `buf breaking` against the last release both passes
for the current protos and catches a real breaking change."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUF = ROOT / ".tools" / "node" / "node_modules" / ".bin" / "buf"
RELEASE = "releases/v0.1.0.binpb"


def buf(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert BUF.exists(), "buf is installed by `make test` (npm @bufbuild/buf)"
    return subprocess.run([str(BUF), *args], cwd=cwd, capture_output=True, text=True, check=False)


def test_lint_and_no_breaking_change_since_the_release() -> None:
    lint = buf("lint", cwd=ROOT / "protos")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    breaking = buf("breaking", "--against", RELEASE, cwd=ROOT / "protos")
    assert breaking.returncode == 0, breaking.stdout + breaking.stderr


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("  string description = 7;", "  string note = 7;", "description"),
        ("  int32 max_txt_values = 8;", "  int64 max_txt_values = 8;", "max_txt_values"),
        (
            "  rpc DeleteRegistration(DeleteRegistrationRequest)",
            "  rpc RemoveRegistration(DeleteRegistrationRequest)",
            "DeleteRegistration",
        ),
    ],
)
def test_breaking_changes_are_caught(tmp_path: Path, old: str, new: str, expected: str) -> None:
    copy = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", copy)
    proto = copy / "acmezone" / "registry" / "v1" / "registration_service.proto"
    text = proto.read_text()
    assert old in text
    proto.write_text(text.replace(old, new))
    breaking = buf("breaking", "--against", RELEASE, cwd=copy)
    assert breaking.returncode != 0
    assert expected in breaking.stdout + breaking.stderr
