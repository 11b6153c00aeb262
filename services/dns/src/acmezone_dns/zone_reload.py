"""Live static zones: zone files are re-read when they change, and on demand (SIGHUP, the API).

Changes are found by polling each file's (mtime, size) at a short interval and, when those moved,
its SHA-256: polling needs no inotify (absent on some container file systems, and blind to the
symlink swap a Kubernetes ConfigMap update makes), and the hash keeps a `touch` from costing a
reload. A reload parses every zone file again in a worker thread, validates the whole set as at
start, and only then swaps it into the store in one synchronous call (`ZoneStore.replace_static`):
queries see the old zones or the new ones, never a mix. A file that does not parse or validate
is refused whole: the old zones keep being served, the error is logged with the file and line,
and `acmezone_dns_zone_reloads_total{result="error"}` counts it.

DNSSEC key files are watched the same way (their names, mtimes and sizes): a rollover step
written with `acmezone-dns dnssec` reaches every replica without a restart, swapped in with the
zones in the same synchronous call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable
from typing import Protocol

import dns.name

from acmezone_dns.dnssec.keys import KeyFileError, ZoneKey
from acmezone_dns.dnssec.signer import check_served
from acmezone_dns.errors import ZoneConfigError
from acmezone_dns.metrics import ReloadStats
from acmezone_dns.static_zones import StaticZone
from acmezone_dns.store import ZoneStore
from acmezone_dns.zone import wire_key

logger = logging.getLogger(__name__)


class KeySource(Protocol):
    """The DNSSEC key directory, as the reloader sees it."""

    def fingerprint(self) -> object:
        """Something that changes when any key file does (cheap: no file is read)."""

    def load(self) -> dict[dns.name.Name, list[ZoneKey]]:
        """Every key, read and checked (`KeyFileError` when one cannot be used)."""


_MAX_ZONE_FILE_BYTES = 64 * 1024 * 1024
"""A zone file larger than this is refused rather than read into memory."""


def _fingerprint(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _digest(path: str) -> str | None:
    try:
        with open(path, "rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest()
    except OSError:
        return None


class ZoneReloader:
    """Watches the zone files and swaps a freshly loaded static set into the store."""

    def __init__(
        self,
        paths: list[str],
        load: Callable[[], list[StaticZone]],
        store: ZoneStore,
        stats: ReloadStats,
        *,
        interval: float,
        keys: KeySource | None = None,
    ) -> None:
        """`keys` (with DNSSEC signing) reads the key directory again on every reload."""
        self._keys = keys
        self._key_fingerprint = keys.fingerprint() if keys is not None else None
        self._paths = list(paths)
        self._load = load
        self._store = store
        self._stats = stats
        self._interval = interval
        self._fingerprints = {p: _fingerprint(p) for p in self._paths}
        self._digests = {p: _digest(p) for p in self._paths}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._attempted = asyncio.Condition()
        self.generation = 0
        """Reloads applied so far."""
        self.attempts = 0
        """Reloads tried so far, applied or refused (`wait_attempts` waits on it)."""

    async def start(self) -> None:
        """Start polling in the background (no-op without zone files or with interval 0)."""
        if (self._paths or self._keys is not None) and self._interval > 0:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def trigger(self) -> None:
        """Reload at once, changed or not (SIGHUP)."""
        self._wake.set()
        if self._task is None:
            asyncio.get_running_loop().create_task(self.reload())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            forced = self._wake.is_set()
            self._wake.clear()
            try:
                if forced or self.changed():
                    await self.reload()
            except Exception:  # a bug here must not stop the watching for good
                logger.exception("zone file reload failed")

    def changed(self) -> bool:
        """Whether any file's content changed since it was last read; cheap when none did."""
        changed = False
        if self._keys is not None:
            fingerprint = self._keys.fingerprint()
            if fingerprint != self._key_fingerprint:
                self._key_fingerprint = fingerprint
                changed = True
        for path in self._paths:
            fingerprint = _fingerprint(path)
            if fingerprint == self._fingerprints[path]:
                continue
            self._fingerprints[path] = fingerprint
            digest = _digest(path)
            if digest != self._digests[path]:
                changed = True
        return changed

    async def wait_attempts(self, attempts: int) -> None:
        """Until at least `attempts` reloads were tried (for tests and tools)."""
        async with self._attempted:
            await self._attempted.wait_for(lambda: self.attempts >= attempts)

    async def reload(self) -> bool:
        """Load every zone file again and swap the set in; False (old zones kept, error logged
        and counted) when any file is refused."""
        try:
            return await self._reload()
        finally:
            async with self._attempted:
                self.attempts += 1
                self._attempted.notify_all()

    def _read(
        self,
    ) -> tuple[
        dict[str, tuple[int, int] | None],
        dict[str, str | None],
        list[StaticZone],
        dict[dns.name.Name, list[ZoneKey]] | None,
    ]:
        """Fingerprints, digests and the parsed, validated zones (in a worker thread: parsing
        is slow). Fingerprints first: a write racing with the read shows as a later change."""
        fingerprints = {p: _fingerprint(p) for p in self._paths}
        digests = {p: _digest(p) for p in self._paths}
        for path in self._paths:
            with contextlib.suppress(OSError):
                if os.path.getsize(path) > _MAX_ZONE_FILE_BYTES:
                    raise ZoneConfigError(
                        f"zone file {path}: larger than {_MAX_ZONE_FILE_BYTES} bytes"
                    )
        zones = self._load()
        keys = None
        if self._keys is not None:
            try:
                keys = self._keys.load()
                check_served(map(wire_key, keys), zones)
            except KeyFileError as exc:
                raise ZoneConfigError(str(exc)) from None
        return fingerprints, digests, zones, keys

    async def _reload(self) -> bool:
        async with self._lock:
            try:
                fingerprints, digests, zones, keys = await asyncio.to_thread(self._read)
            except ZoneConfigError as exc:
                self._stats.error += 1
                logger.error(
                    "zone files refused, the old zones are kept", extra={"error": str(exc)}
                )
                return False
            self._store.replace_static(zones, keys)
            self._digests = digests
            self._fingerprints = fingerprints
            self._stats.ok += 1
            self._stats.last_success_time = time.time()
            self.generation += 1
            logger.info(
                "zone files reloaded",
                extra={"zones": ",".join(str(z.name) for z in zones[1:])},
            )
            return True
