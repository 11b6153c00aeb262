"""TLS for gRPC from PEM files: server credentials (optionally requiring client certificates)
and the matching channel credentials for clients.

Files are read once, at start; a rotated certificate takes a restart (the agent's own
certificates are what renews often, not the issuer's listener).
"""

from __future__ import annotations

from pathlib import Path

import grpc


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {path}: {exc}") from None


def server_credentials(
    cert_file: Path, key_file: Path, client_ca_file: Path | None = None
) -> grpc.ServerCredentials:
    """The listener's chain and key; with `client_ca_file`, clients must present a certificate
    issued by that CA (mutual TLS)."""
    chain = _read(cert_file, "TLS certificate")
    key = _read(key_file, "TLS key")
    if client_ca_file is None:
        return grpc.ssl_server_credentials([(key, chain)])
    return grpc.ssl_server_credentials(
        [(key, chain)],
        root_certificates=_read(client_ca_file, "client CA"),
        require_client_auth=True,
    )


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
