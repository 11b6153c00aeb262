"""What the agent tells the issuer after an install (the fleet view), and remembers on disk.

The last report of each target is kept next to its sets (`.acmezone/last-report.json`, written
atomically), so an agent restarted without a new install can report again what it installed and
how the hook ended, instead of claiming it knows nothing.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from acmezone_clients.agent.files import STATE_DIR
from acmezone_clients.agent.hooks import HookResult

_NOT_ID = re.compile(r"[^a-z0-9-]+")


def target_id(host: str, directory: Path) -> str:
    """A stable resource id for one host and directory: `<host label>-<8 hex of the path>`."""
    label = _NOT_ID.sub("-", host.lower()).strip("-")[:50] or "host"
    if not label[0].isalpha():
        label = "h" + label
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:8]
    return f"{label}-{digest}"


@dataclass(frozen=True)
class InstallReport:
    """One install as reported: serial, validity end, when, and the hook's last run."""

    serial: str
    not_after: float
    install_time: float
    hook_result: str  # none, success, failure, timeout
    hook_exit_code: int
    hook_output_tail: str

    @classmethod
    def of(cls, serial: str, not_after: datetime.datetime, runs: list[HookResult]) -> InstallReport:
        """The report of an install whose hook ran `runs` (empty: no hook)."""
        last = runs[-1] if runs else None
        return cls(
            serial=serial,
            not_after=not_after.timestamp(),
            install_time=datetime.datetime.now(datetime.UTC).timestamp(),
            hook_result=last.outcome if last else "none",
            hook_exit_code=(last.exit_code or 0) if last else 0,
            hook_output_tail=last.output_tail[-1024:] if last else "",
        )


def _path(directory: Path) -> Path:
    return directory / STATE_DIR / "last-report.json"


def save(directory: Path, report: InstallReport) -> None:
    """Write the report atomically (temp file, fsync, rename)."""
    path = _path(directory)
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(report), handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def load(directory: Path) -> InstallReport | None:
    """The last saved report, or None when there is none or it cannot be read."""
    try:
        data = json.loads(_path(directory).read_text())
        return InstallReport(**data)
    except (OSError, ValueError, TypeError):
        return None
