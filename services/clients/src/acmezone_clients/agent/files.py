"""Installing a certificate as one complete set of files, switched in a single rename.

Web servers read several files (chain, key) that must belong together, and renaming them one by
one leaves a moment, or after a crash a state, where the key of one certificate sits beside the
chain of another. So each set is written into a directory of its own and the live names point
into it through one symlink that is replaced atomically (the way Kubernetes' AtomicWriter
updates projected volumes, and certbot's live/ links point into archive/)::

    <dir>/fullchain.pem      -> .acmezone/current/fullchain.pem   (made once, never rewritten)
    <dir>/.acmezone/current  -> sets/<serial>-<ns>               (swapped by rename(2))
    <dir>/.acmezone/previous -> sets/<older serial>-<ns>         (kept for one rollback)
    <dir>/.acmezone/sets/<serial>-<ns>/{fullchain,privkey,cert,chain}.pem

Every file is written to a temporary name in its set directory, fsynced and renamed; the set
directory is fsynced before the swap and the parent after it. A process killed at any point
leaves `current` on the old complete set or on the new complete set; a set directory left
unreferenced by a crash is removed by the next install.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from acmezone_clients.agent.bundle import CheckedBundle
from acmezone_clients.agent.errors import ConfigError, InstallError

logger = logging.getLogger(__name__)

STATE_DIR = ".acmezone"


@dataclass(frozen=True)
class FileNames:
    """The names of the files in a target directory; `combined` (key then chain, as HAProxy
    reads it) is written only when named."""

    fullchain: str = "fullchain.pem"
    privkey: str = "privkey.pem"
    cert: str = "cert.pem"
    chain: str = "chain.pem"
    combined: str | None = None

    def all(self) -> list[str]:
        names = [self.fullchain, self.privkey, self.cert, self.chain]
        return names + ([self.combined] if self.combined else [])


@dataclass(frozen=True)
class Ownership:
    """Owner, group and modes of the installed files; None keeps the agent's own user/group."""

    owner: str | int | None = None
    group: str | int | None = None
    key_mode: int = 0o600
    cert_mode: int = 0o644

    def ids(self) -> tuple[int, int]:
        """(uid, gid) for fchown, -1 for "leave as is"."""
        return _uid(self.owner), _gid(self.group)


def _uid(owner: str | int | None) -> int:
    if owner is None:
        return -1
    if isinstance(owner, int):
        return owner
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise ConfigError(f"no such user {owner!r}") from None


def _gid(group: str | int | None) -> int:
    if group is None:
        return -1
    if isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"no such group {group!r}") from None


@dataclass
class CrashPoint:
    """Signals the process after `after` writes (renames), to test crash and shutdown safety:
    SIGKILL (again at every later write) or SIGTERM (once, the agent then stops as on any
    SIGTERM).

    Set only through the agent's settings (`ACMEZONE_AGENT_CRASH_AFTER_WRITES`,
    `..._CRASH_SIGNAL`); None in production, where `tick` does nothing.
    """

    after: int | None = None
    signal_name: str = "KILL"
    count: int = field(default=0)

    def tick(self) -> None:
        self.count += 1
        if self.after is None:
            return
        if self.signal_name == "TERM":
            if self.count == self.after:
                os.kill(os.getpid(), signal.SIGTERM)
        elif self.count >= self.after:
            os.kill(os.getpid(), signal.SIGKILL)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _serial_of_set(set_name: str) -> str:
    return set_name.rsplit("-", 1)[0]


class Installer:
    """Installs checked bundles into one target directory, and rolls back once."""

    def __init__(
        self,
        directory: Path,
        names: FileNames | None = None,
        ownership: Ownership | None = None,
        crash: CrashPoint | None = None,
    ) -> None:
        self.directory = directory
        self.names = names or FileNames()
        self.ownership = ownership or Ownership()
        self._crash = crash or CrashPoint()
        self._state = directory / STATE_DIR
        self._sets = self._state / "sets"

    def _link(self, which: str) -> str | None:
        try:
            return os.readlink(self._state / which)
        except FileNotFoundError:
            return None

    def installed_serial(self) -> str | None:
        """The serial of the set `current` points at, or None before the first install."""
        target = self._link("current")
        return _serial_of_set(Path(target).name) if target else None

    def previous_serial(self) -> str | None:
        """The serial of the set kept for rollback, or None."""
        target = self._link("previous")
        return _serial_of_set(Path(target).name) if target else None

    def installed_leaf_pem(self) -> str | None:
        """The current set's cert.pem, or None before the first install."""
        try:
            return (self._state / "current" / self.names.cert).read_text()
        except OSError:
            return None

    def live_path(self, name: str) -> Path:
        """The path a server is configured with, e.g. `<dir>/fullchain.pem`."""
        return self.directory / name

    def install(self, bundle: CheckedBundle) -> Path:
        """Write `bundle` as a new set and make it current; return the set directory."""
        try:
            return self._install(bundle)
        except OSError as exc:
            raise InstallError(f"installing into {self.directory} failed: {exc}") from exc

    def _install(self, bundle: CheckedBundle) -> Path:
        self._sets.mkdir(parents=True, exist_ok=True)
        self._remove_unreferenced()
        set_dir = self._sets / f"{bundle.serial}-{time.time_ns()}"
        set_dir.mkdir(mode=0o755)
        uid, gid = self.ownership.ids()
        for name, content, mode in self._contents(bundle):
            self._write(set_dir / name, content.encode(), mode, uid, gid)
        _fsync_dir(set_dir)
        old = self._link("current")
        if old is not None:
            self._replace_link(self._state / "previous", old)
        self._replace_link(self._state / "current", os.path.relpath(set_dir, self._state))
        _fsync_dir(self._state)
        self._ensure_live_links()
        self._remove_unreferenced()
        logger.info(
            "certificate installed",
            extra={"directory": str(self.directory), "serial": bundle.serial},
        )
        return set_dir

    def rollback(self) -> str:
        """Make the previous set current again (and the current one previous); its serial."""
        old, previous = self._link("current"), self._link("previous")
        if old is None or previous is None:
            raise InstallError(f"{self.directory} has no previous set to roll back to")
        self._replace_link(self._state / "previous", old)
        self._replace_link(self._state / "current", previous)
        _fsync_dir(self._state)
        return _serial_of_set(Path(previous).name)

    def _contents(self, bundle: CheckedBundle) -> Iterator[tuple[str, str, int]]:
        n, o = self.names, self.ownership
        yield n.cert, bundle.leaf_pem, o.cert_mode
        yield n.chain, bundle.chain_pem, o.cert_mode
        yield n.fullchain, bundle.fullchain_pem, o.cert_mode
        yield n.privkey, bundle.key_pem, o.key_mode
        if n.combined:
            yield n.combined, bundle.key_pem + bundle.fullchain_pem, o.key_mode

    def _write(self, path: Path, data: bytes, mode: int, uid: int, gid: int) -> None:
        """temp file in the same directory, fsync, rename; created with `mode` from the start
        so a key is never readable by others, not even for a moment."""
        temp = path.with_name(f".{path.name}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        try:
            os.fchmod(fd, mode)
            if uid != -1 or gid != -1:
                os.fchown(fd, uid, gid)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
        self._crash.tick()

    def _replace_link(self, link: Path, target: str) -> None:
        temp = link.with_name(f".{link.name}.tmp")
        temp.unlink(missing_ok=True)
        os.symlink(target, temp)
        os.replace(temp, link)
        self._crash.tick()

    def _ensure_live_links(self) -> None:
        for name in self.names.all():
            live = self.directory / name
            target = f"{STATE_DIR}/current/{name}"
            if live.is_symlink() and os.readlink(live) == target:
                continue
            self._replace_link(live, target)
        _fsync_dir(self.directory)

    def _remove_unreferenced(self) -> None:
        keep = {Path(t).name for t in (self._link("current"), self._link("previous")) if t}
        for entry in self._sets.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)
