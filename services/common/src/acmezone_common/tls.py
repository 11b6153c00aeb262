"""TLS for gRPC from PEM files: server credentials (optionally requiring client certificates)
that follow their files, and the matching channel credentials for clients.

A server's certificate is renewed by whatever writes new files (acmezone's delivery agent,
cert-manager, certbot), so the server side reads its files again when they change: gRPC asks
a certificate configuration fetcher at every new TLS handshake, and `ReloadingServerFiles`
answers it with the files' current contents when they differ from what it last loaded, and
"no change" otherwise. New connections then get the new certificate (and client CA); open
connections keep theirs, and nothing restarts. A renewal that does not load (a half-written
file, a key that does not match its certificate) is never put in service: the old pair keeps
serving and the failure is logged once per version of the files.

Channel credentials are read once, when the channel is made: gRPC Python has no fetcher on the
client side, so a component that reconnects makes a new channel (`transport.ChannelFactory`).
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import cast

import grpc

logger = logging.getLogger(__name__)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {path}: {exc}") from None


Contents = tuple[bytes, bytes, bytes | None]
"""A server's certificate chain, key and client CA bundle (None: no client certificates)."""


class ReloadingServerFiles:
    """The PEM files of one TLS listener, loaded and checked, and loaded again when they
    change (`fetch`, gRPC's certificate configuration fetcher)."""

    def __init__(self, cert_file: Path, key_file: Path, client_ca_file: Path | None) -> None:
        """Loads the files now: a missing, unreadable or mismatched file is a `ValueError`
        naming it, before any port is bound."""
        self._cert_file = cert_file
        self._key_file = key_file
        self._client_ca_file = client_ca_file
        self._loaded = self._load()
        self._refused: Contents | None = None
        self._lock = threading.Lock()  # gRPC may call the fetcher from several core threads
        self.reloads = 0
        """How many times changed files were put in service (tests and metrics read it)."""

    def _read_all(self) -> Contents:
        return (
            _read(self._cert_file, "TLS certificate"),
            _read(self._key_file, "TLS key"),
            _read(self._client_ca_file, "client CA") if self._client_ca_file else None,
        )

    def _load(self) -> Contents:
        """The files' contents, checked by loading them into a scratch `ssl` context (which
        proves the key matches the certificate); the files are read before and after, so a
        pair rewritten in between is never what gets loaded."""
        before = self._read_all()
        scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            scratch.load_cert_chain(self._cert_file, self._key_file)
            if self._client_ca_file is not None:
                scratch.load_verify_locations(cafile=self._client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"cannot load the TLS certificate {self._cert_file} with key {self._key_file}"
                f"{f' and client CA {self._client_ca_file}' if self._client_ca_file else ''}: "
                f"{exc}"
            ) from None
        if self._read_all() != before:
            raise ValueError(f"the TLS files changed while being loaded ({self._cert_file})")
        return before

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        """The gRPC certificate configuration of the files as last loaded."""
        chain, key, client_ca = self._loaded
        return grpc.ssl_server_certificate_configuration([(key, chain)], client_ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """The new configuration when the files changed and load, else None ("keep the
        current one", as gRPC reads it). Never raises: a failure here would fail the
        handshake of a client that did nothing wrong."""
        with self._lock:
            try:
                current = self._read_all()
            except ValueError:
                return None  # mid-replacement: look again at the next handshake
            if current in (self._loaded, self._refused):
                return None
            try:
                loaded = self._load()
            except ValueError as exc:
                self._refused = current
                logger.warning(
                    "new TLS certificate files do not load; the old certificate stays",
                    extra={"cert_file": str(self._cert_file), "error": str(exc)},
                )
                return None
            self._loaded, self._refused = loaded, None
            self.reloads += 1
        logger.info("TLS certificate reloaded", extra={"cert_file": str(self._cert_file)})
        return self.configuration()

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that ask `fetch` at every new handshake; with a client CA,
        clients must present a certificate it issued (mutual TLS)."""
        # gRPC documents None from the fetcher as "no change"; its type stubs leave None out.
        fetcher = cast("Callable[[], grpc.ServerCertificateConfiguration]", self.fetch)
        return grpc.dynamic_ssl_server_credentials(
            self.configuration(),
            fetcher,
            require_client_authentication=self._client_ca_file is not None,
        )


def server_credentials(
    cert_file: Path, key_file: Path, client_ca_file: Path | None = None
) -> grpc.ServerCredentials:
    """The listener's chain and key, reloaded when the files change; with `client_ca_file`,
    clients must present a certificate issued by that CA (mutual TLS)."""
    return ReloadingServerFiles(cert_file, key_file, client_ca_file).credentials()


def channel_credentials(
    ca_file: Path | None = None,
    client_cert_file: Path | None = None,
    client_key_file: Path | None = None,
) -> grpc.ChannelCredentials:
    """Verify the server against `ca_file` (the system roots when None) and, when given,
    present a client certificate."""
    if (client_cert_file is None) != (client_key_file is None):
        raise ValueError("a client certificate needs its key, and the key its certificate")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file, "CA bundle") if ca_file else None,
        private_key=_read(client_key_file, "client key") if client_key_file else None,
        certificate_chain=_read(client_cert_file, "client certificate")
        if client_cert_file
        else None,
    )
