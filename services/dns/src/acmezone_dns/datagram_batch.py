"""Batched UDP reads and writes through Linux's recvmmsg(2) and sendmmsg(2), in the C extension
`_native_batch.c`.

Why: once answers are pre-packed, a Python DNS server spends most of each query in two system
calls and in CPython's wrapping of them (a fresh bytes object per read, a sockaddr turned into a
`(str, int)` tuple and back per write). On the 2-core bench host one recvfrom + sendto pair per
query cost about 11.8 µs of CPU; reading up to 64 datagrams with one recvmmsg and answering them
with one sendmmsg brought that to 8.7-10.7 µs in the same runs (then through ctypes), and doing
the loop in C, which also answers plain queries from the pre-packed table without calling back
into Python, took the rest of the per-datagram Python work away.

How: every buffer is allocated once. The kernel writes datagrams into fixed slots and the peer
addresses into a sockaddr table; the reply to datagram i is staged in a send slot whose header
points at that same sockaddr entry, so peer addresses never become Python objects on the hot path.
Only the rare paths (UPDATE, TSIG signing) ask for `peer(i)` as a tuple.

One implementation: given no tables, `exchange` hands every datagram to Python (UDP_NATIVE=false);
where the extension was not built (no compiler at install time, not Linux) the UDP server reads
with recvfrom instead. An earlier ctypes version of the same batch was a third copy of this I/O.
Not thread-safe: one batch belongs to one socket's reader on one event loop.
"""

from __future__ import annotations

import errno
import socket
import sys
from typing import Any

try:
    from acmezone_dns import _native_batch
except ImportError:  # built by `make install`; absent elsewhere
    _native_batch = None  # type: ignore[assignment]

Peer = tuple[Any, ...]
"""A socket address as Python's socket module spells it: (host, port[, flowinfo, scope_id])."""


def decode_peer(family: socket.AddressFamily, raw: bytes) -> Peer:
    """A sockaddr_in or sockaddr_in6 as `socket.recvfrom` gives it: (host, port) for IPv4,
    (host, port, flowinfo, scope_id) for IPv6."""
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    flowinfo = int.from_bytes(raw[4:8], "big")
    scope_id = int.from_bytes(raw[24:28], sys.byteorder)
    return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flowinfo, scope_id


class NativeDatagramBatch:
    """The C batch (`_native_batch.c`): `exchange(fd, handle)` reads up to `capacity`
    datagrams, calls `handle(index, data)` for each and sends the replies it returns (None: no
    reply now); given the responder's `FastTables` as well, it answers the plain queries its
    shortcuts settle (pre-packed answers, NODATA, NXDOMAIN, REFUSED) itself, without calling
    `handle`. Returns (datagrams read, replies the kernel refused)."""

    def __init__(
        self,
        family: socket.AddressFamily,
        capacity: int = 64,
        slot: int = 4096,
        flush_every: int = 16,
    ) -> None:
        if _native_batch is None:
            raise OSError(errno.ENOSYS, "the C accelerator was not built")
        self._native = _native_batch.NativeBatch(int(family), capacity, slot, flush_every)
        self._family = family
        self.capacity = capacity
        # The C method itself, not a Python method around it: called once per batch.
        self.exchange = self._native.exchange

    @property
    def _names(self) -> memoryview:
        """The peer table (28 bytes per datagram), writable: for fault-injection tests."""
        return memoryview(self._native)

    def peer(self, index: int) -> Peer:
        """The sender of datagram `index`, as `socket.recvfrom` gives it."""
        return decode_peer(self._family, self._native.raw_peer(index))


def native_available() -> bool:
    """Whether the C accelerator was built (an optional extension: it needs a compiler at
    install time) and this is Linux, where it reads and writes with recvmmsg/sendmmsg."""
    return _native_batch is not None
