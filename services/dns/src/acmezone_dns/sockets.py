"""Listening sockets for DNS, made by hand so IPv4 and IPv6 listeners on the same port coexist.

An IPv6 socket is made IPv6-only: `[::]:53` and `0.0.0.0:53` can then both be configured, as
operators expect from other name servers, instead of the v6 one silently taking v4 traffic too.
"""

from __future__ import annotations

import socket

from acmezone_common.addresses import HostPort

_UDP_BUFFER_BYTES = 4 * 1024 * 1024


def bind(address: HostPort, kind: socket.SocketKind) -> socket.socket:
    """A non-blocking socket of `kind` (SOCK_DGRAM or SOCK_STREAM) bound to `address`."""
    infos = socket.getaddrinfo(
        address.host, address.port, type=kind, flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV
    )
    family, _, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        else:
            # Room for bursts while the loop is busy elsewhere (the kernel caps these at its
            # rmem_max/wmem_max; a smaller buffer just drops sooner).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_BUFFER_BYTES)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _UDP_BUFFER_BYTES)
        sock.setblocking(False)
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def bound_address(sock: socket.socket) -> HostPort:
    """The address a socket is bound to (the real port after binding port 0)."""
    host, port = sock.getsockname()[:2]
    return HostPort(host, port)
