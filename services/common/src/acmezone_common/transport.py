"""How acmezone's gRPC connections are secured between hosts, in one place for every service.

Server side: a gRPC port serves TLS when given a certificate and key, and with a client CA it
also requires a client certificate signed by that CA (mutual TLS: the registry then knows a dns
replica or issuer by certificate before any token is read). Client side: a channel to another
service uses TLS when given a CA (or told to use the system roots), presents a client
certificate when given one, and can add `authorization: Bearer <token>` to every call (the feed
credential, `guard`). Without any of this everything stays plaintext on loopback, as before.

The credentials themselves come from `acmezone_common.tls`; this module holds what settings
describe and how a channel is opened. A server's files are read again when they change, so a
renewed certificate (or client CA) reaches new connections without a restart; a channel's files
are read when the channel is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc

from acmezone_common import tls

ChannelOptions = Sequence[tuple[str, Any]]


class ChannelFactory(Protocol):
    """Opens a channel to one service, secured as configured, with the caller's options (a
    component that reconnects gets the factory, not a target and a pile of TLS settings)."""

    def __call__(self, *, options: ChannelOptions = ()) -> grpc.aio.Channel: ...


@dataclass(frozen=True)
class ServerTls:
    """A gRPC port's certificate chain and key (PEM files), and the CA client certificates
    must chain to (None: no client certificate asked for)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """The server credentials these files make (`acmezone_common.tls`), following the
        files as they are renewed; a missing, unreadable or mismatched file is a `ValueError`
        naming it, before any port is bound."""
        return tls.server_credentials(self.cert_file, self.key_file, self.client_ca_file)


def server_credentials(server_tls: ServerTls | None) -> grpc.ServerCredentials | None:
    """A gRPC port's TLS credentials (files read now and again when they change), or None
    for plaintext."""
    return server_tls.credentials() if server_tls else None


@dataclass(frozen=True)
class ClientTls:
    """How a channel verifies the server (a CA file, or the system roots when None) and the
    client certificate it presents (both files, or neither). `server_name` overrides the name
    checked against the server's certificate (an address dialled by IP, say)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs both its certificate and key file")

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials these files make (`ValueError` naming a file that fails)."""
        return tls.channel_credentials(self.ca_file, self.cert_file, self.key_file)


def client_tls(
    enabled: bool,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    server_name: str | None,
) -> ClientTls | None:
    """A `ClientTls` from a service's settings: TLS when enabled or any file is given."""
    if not (enabled or ca_file or cert_file or key_file):
        return None
    return ClientTls(ca_file, cert_file, key_file, server_name or None)


def open_channel(
    target: str,
    *,
    tls: ClientTls | None = None,
    token: str | None = None,
    options: ChannelOptions = (),
) -> grpc.aio.Channel:
    """A grpc.aio channel to `target`: TLS when `tls` is given, and `token` as a bearer token
    on every call when given (calls that bring an `authorization` entry keep theirs)."""
    opts = list(options)
    interceptors = _bearer_interceptors(token) if token else None
    if tls is None:
        return grpc.aio.insecure_channel(target, options=opts, interceptors=interceptors)
    if tls.server_name:
        opts.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(
        target, tls.credentials(), options=opts, interceptors=interceptors
    )


def channel_to(target: str | ChannelFactory, *, options: ChannelOptions = ()) -> grpc.aio.Channel:
    """A channel with the caller's options, to a bare target (plaintext: tests and tools) or
    through a configured `ChannelFactory` (the services)."""
    if isinstance(target, str):
        return open_channel(target, options=options)
    return target(options=options)


def _with_token(details: grpc.aio.ClientCallDetails, token: str) -> grpc.aio.ClientCallDetails:
    metadata = list(details.metadata or ())
    if not any(key.lower() == "authorization" for key, _ in metadata):
        metadata.append(("authorization", f"Bearer {token}"))
    return grpc.aio.ClientCallDetails(
        details.method,
        details.timeout,
        grpc.aio.Metadata(*metadata),
        details.credentials,
        details.wait_for_ready,
    )


def _bearer_interceptors(token: str) -> list[grpc.aio.ClientInterceptor]:
    class UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(
            self, continuation: Any, client_call_details: Any, request: Any
        ) -> Any:
            return await continuation(_with_token(client_call_details, token), request)

    class UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
        async def intercept_unary_stream(
            self, continuation: Any, client_call_details: Any, request: Any
        ) -> Any:
            return await continuation(_with_token(client_call_details, token), request)

    class StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
        async def intercept_stream_unary(
            self, continuation: Any, client_call_details: Any, request_iterator: Any
        ) -> Any:
            return await continuation(_with_token(client_call_details, token), request_iterator)

    class StreamStream(grpc.aio.StreamStreamClientInterceptor):
        async def intercept_stream_stream(
            self, continuation: Any, client_call_details: Any, request_iterator: Any
        ) -> Any:
            return await continuation(_with_token(client_call_details, token), request_iterator)

    return [UnaryUnary(), UnaryStream(), StreamUnary(), StreamStream()]
