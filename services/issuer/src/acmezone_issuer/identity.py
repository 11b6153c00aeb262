"""Which replica this issuer is, the same across restarts: leases name their owner, and a
replica that comes back under its old name takes its own leases over at once instead of waiting
for them to expire (60 s by default) before it resumes an order a kill -9 interrupted.

The name is the `REPLICA_ID` setting (the pod name, which Kubernetes keeps across container
restarts), else one generated once into `<data_dir>/replica-id` (0600), so a data dir, which
already holds one SQLite issuer's state, also holds its name. Two processes must never share a
name while both run: each would think the other's leases its own. Replicas sharing PostgreSQL
each have a data dir or a pod name of their own.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

_FILE = "replica-id"
_MAX_LEN = 255  # the lease_owner column


def replica_identity(setting: str | None, data_dir: Path) -> str:
    """The configured name, else the one kept in `data_dir` (made on first start)."""
    if setting:
        return setting
    path = data_dir / _FILE
    try:
        kept = path.read_text().strip()
    except FileNotFoundError:
        kept = ""
    if kept:
        return kept[:_MAX_LEN]
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = f"{socket.gethostname()}:{secrets.token_hex(4)}"[:_MAX_LEN]
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another start made it first: that one counts
        return path.read_text().strip()[:_MAX_LEN] or name
    with os.fdopen(fd, "w") as out:
        out.write(name + "\n")
    return name
