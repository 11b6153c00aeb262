"""Server keys: from a setting, or generated once into a 0600 file inside a 0700 data dir.

A service that keys hashes or seals secrets needs the same key on every start (and on every
replica sharing a database). Operators can configure one; otherwise the first start writes 32
random bytes, base64url, to a file only the service's user can read, and later starts read it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from pathlib import Path

KEY_BYTES = 32


def decode_key(text: str, *, what: str) -> bytes:
    """32 bytes from their base64url text (padding optional); ValueError naming `what`."""
    try:
        key = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except ValueError as exc:
        raise ValueError(f"{what} is not base64url") from exc
    if len(key) != KEY_BYTES:
        raise ValueError(f"{what} must be {KEY_BYTES} bytes, base64url encoded")
    return key


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) readable only by this user; an existing dir is left as is."""
    if not path.exists():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is filtered by the umask; say it once more, exactly.
        os.chmod(path, 0o700)
    return path


def load_or_create_key(configured: str | None, path: Path) -> bytes:
    """The configured key, or the one stored at `path`, generating it there the first time."""
    if configured:
        return decode_key(configured, what="the configured key")
    if not path.exists():
        private_dir(path.parent)
        # Written aside, then linked into place: a concurrent start sees no file or a whole one.
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode())
                handle.write("\n")
            # Another process of the same service may have won the race: then use its key.
            with contextlib.suppress(FileExistsError):
                os.link(draft, path)
        finally:
            draft.unlink()
    return decode_key(path.read_text(), what=str(path))
