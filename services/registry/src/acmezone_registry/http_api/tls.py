"""HTTPS for the acme-dns API from certificate files that are reloaded when they change.

acme-dns serves its API over HTTPS with a certificate it obtains itself; here the certificate
and key are files, so whatever renews them (acmezone's own delivery agent, cert-manager, certbot)
only has to write new files: the server notices within `interval` seconds and new connections
get the new certificate, without a restart and without dropping open connections.

A pair that does not load (a half-written renewal, a key that does not match) is never put in
service: it is first loaded into a scratch context, and only when that works into the live
one; until then the old certificate keeps serving and the failure is logged once per change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from pathlib import Path

logger = logging.getLogger(__name__)

Stamp = tuple[tuple[int, int, int], tuple[int, int, int]]


def _stamp(cert_file: Path, key_file: Path) -> Stamp:
    """What changes when either file is rewritten or replaced (inode, size, mtime)."""
    stats = [os.stat(p) for p in (cert_file, key_file)]
    return (
        (stats[0].st_ino, stats[0].st_size, stats[0].st_mtime_ns),
        (stats[1].st_ino, stats[1].st_size, stats[1].st_mtime_ns),
    )


def _context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class ReloadingCertificate:
    """A server `ssl.SSLContext` whose certificate follows `cert_file` and `key_file`."""

    def __init__(self, cert_file: Path, key_file: Path, *, interval: float) -> None:
        """Loads the pair now: a missing or bad file is a `ValueError` naming it, at start."""
        self._cert_file = cert_file
        self._key_file = key_file
        self._interval = interval
        self.context = _context()
        try:
            stamp = _stamp(cert_file, key_file)
            self.context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"cannot load the HTTPS certificate {cert_file} with key {key_file}: {exc}"
            ) from exc
        self._loaded = stamp
        self._failed: Stamp | None = None
        self.reloads = 0
        self.reloaded = asyncio.Event()
        """Set after each reload (tests and the log wait on it; clear it to wait again)."""
        self._task: asyncio.Task[None] | None = None

    def reload_if_changed(self) -> bool:
        """Load the files again when they changed since the last load; True when a new
        certificate is now in service."""
        try:
            stamp = _stamp(self._cert_file, self._key_file)
        except OSError:
            return False  # mid-replacement: look again next time
        if stamp in (self._loaded, self._failed):
            return False
        try:
            _context().load_cert_chain(self._cert_file, self._key_file)
            self.context.load_cert_chain(self._cert_file, self._key_file)
        except (OSError, ssl.SSLError) as exc:
            self._failed = stamp
            logger.warning(
                "new HTTPS certificate files do not load; the old certificate stays",
                extra={"cert_file": str(self._cert_file), "error": str(exc)},
            )
            return False
        self._loaded, self._failed = stamp, None
        self.reloads += 1
        self.reloaded.set()
        logger.info("HTTPS certificate reloaded", extra={"cert_file": str(self._cert_file)})
        return True

    def start(self) -> None:
        """Look at the files every `interval` seconds in the background."""
        self._task = asyncio.create_task(self._watch(), name="https-certificate-reload")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.reload_if_changed()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
