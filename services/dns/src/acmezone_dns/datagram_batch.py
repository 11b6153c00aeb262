"""Batched UDP reads and writes through Linux's recvmmsg(2) and sendmmsg(2), called with ctypes.

Why: once answers are pre-packed, a Python DNS server spends most of each query in two system
calls and in CPython's wrapping of them (a fresh bytes object per read, a sockaddr turned into a
`(str, int)` tuple and back per write). On the 2-core bench host one recvfrom + sendto pair per
query cost about 11.8 µs of CPU; reading up to 64 datagrams with one recvmmsg and answering them
with one sendmmsg brought that to 8.7-10.7 µs in the same runs, the difference between missing
and meeting the target of 75% of NSD's throughput (bench/dns_bench.py prints both).

How: every buffer is allocated once. The kernel writes datagrams into fixed slots and the peer
addresses into a sockaddr table; the reply to datagram i is staged in a send slot whose header
points at that same sockaddr entry, so peer addresses never become Python objects on the hot path.
Only the rare paths (UPDATE, TSIG signing) ask for `peer(i)` as a tuple.

Linux only (glibc or musl expose both calls); `available()` says whether this process can use
it, and the UDP server falls back to recvfrom/sendto elsewhere. Not thread-safe: one batch belongs
to one socket's reader on one event loop.

`NativeDatagramBatch` is the same batch in C (`_native_batch.c`, an optional extension), which
also answers plain queries from the pre-packed table without calling back into Python: the
ctypes calls and the per-datagram Python work were most of what a query cost at moderate load.
The UDP server prefers it when it was built; `DatagramBatch` stays as the fallback.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import sys
from array import array
from collections.abc import Callable
from typing import Any

_MSG_DONTWAIT = 0x40
_SOCKADDR_SIZE = 28  # sizeof(struct sockaddr_in6), the larger of the two families we bind
_RETRY_ERRNOS = frozenset({errno.EINTR})
_EMPTY_ERRNOS = frozenset({errno.EAGAIN, errno.EWOULDBLOCK})

Peer = tuple[Any, ...]
"""A socket address as Python's socket module spells it: (host, port[, flowinfo, scope_id])."""


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    # The kernel's layout (size_t iovlen and controllen); musl's int-plus-padding fields have
    # the same size and offsets on the 64-bit targets it shares with us.
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("length", ctypes.c_uint32)]


_HDR_SIZE = ctypes.sizeof(_MMsgHdr)


def _load_calls() -> tuple[Callable[..., int], Callable[..., int]] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        # PyDLL keeps the GIL across the call: both calls are non-blocking here, and
        # releasing and re-taking the GIL twice per batch would be pure overhead.
        libc = ctypes.PyDLL(None, use_errno=True)
        recvmmsg = libc.recvmmsg
        sendmmsg = libc.sendmmsg
    except (OSError, AttributeError):
        return None
    # No argtypes: converting arguments through them cost 0.6-1 µs a call here, as much as
    # the system call itself. Callers pass Python ints where C takes an int (fd, vlen, flags),
    # a c_void_p made once for the header array, and None for the NULL timeout.
    recvmmsg.restype = ctypes.c_int
    sendmmsg.restype = ctypes.c_int
    return recvmmsg, sendmmsg


_CALLS = _load_calls()

try:
    from acmezone_dns import _native_batch
except ImportError:  # built without a compiler, or not Linux: the ctypes batch still works
    _native_batch = None  # type: ignore[assignment]


def available() -> bool:
    """Whether recvmmsg and sendmmsg can be called in this process."""
    return _CALLS is not None


class DatagramBatch:
    """Up to `capacity` datagrams read in one call and their replies written in one call.

    One call, `exchange`, reads a batch and answers it.
    """

    def __init__(
        self,
        family: socket.AddressFamily,
        capacity: int = 64,
        slot: int = 4096,
        flush_every: int = 16,
    ) -> None:
        """`slot` bytes per datagram: a longer datagram is cut to it, as `recvfrom(slot)`
        would cut it, and a longer reply is not sent."""
        if _CALLS is None:
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg are not available here")
        self._recvmmsg, self._sendmmsg = _CALLS
        self.capacity = capacity
        self._slot = slot
        self._flush_every = max(1, min(flush_every, capacity))
        self._family = family
        self._in = bytearray(capacity * slot)
        self._out = bytearray(capacity * slot)
        self._names = bytearray(capacity * _SOCKADDR_SIZE)
        in_buf = (ctypes.c_char * len(self._in)).from_buffer(self._in)
        out_buf = (ctypes.c_char * len(self._out)).from_buffer(self._out)
        names_buf = (ctypes.c_char * len(self._names)).from_buffer(self._names)
        self._names_address = ctypes.addressof(names_buf)
        self._in_iov = (_IoVec * capacity)()
        self._out_iov = (_IoVec * capacity)()
        self._in_hdrs = (_MMsgHdr * capacity)()
        self._out_hdrs = (_MMsgHdr * capacity)()
        send_namelen = 16 if family == socket.AF_INET else _SOCKADDR_SIZE  # sockaddr_in: 16
        for i in range(capacity):
            self._in_iov[i].base = ctypes.addressof(in_buf) + i * slot
            self._in_iov[i].length = slot
            self._out_iov[i].base = ctypes.addressof(out_buf) + i * slot
            hdr = self._in_hdrs[i].hdr
            hdr.name = self._names_address + i * _SOCKADDR_SIZE
            hdr.namelen = _SOCKADDR_SIZE
            hdr.iov = ctypes.addressof(self._in_iov[i])
            hdr.iovlen = 1
            out = self._out_hdrs[i].hdr
            out.name = hdr.name
            out.namelen = send_namelen
            out.iov = ctypes.addressof(self._out_iov[i])
            out.iovlen = 1
        # Flat views of the header arrays, so the hot path indexes plain memory instead of
        # building ctypes objects: strided views of the one field each step touches.
        words = _HDR_SIZE // 4
        pointers = _HDR_SIZE // ctypes.sizeof(ctypes.c_void_p)
        in_words = memoryview(self._in_hdrs).cast("B").cast("I")
        self._lengths = in_words[_MMsgHdr.length.offset // 4 :: words]
        self._namelens = in_words[_MsgHdr.namelen.offset // 4 :: words]
        self._namelen_reset = memoryview(array("I", [_SOCKADDR_SIZE] * capacity))
        out_pointers = memoryview(self._out_hdrs).cast("B").cast("P")
        self._out_names = out_pointers[
            _MsgHdr.name.offset // ctypes.sizeof(ctypes.c_void_p) :: pointers
        ]
        iov_pointers = memoryview(self._out_iov).cast("B").cast("P")
        self._out_sizes = iov_pointers[1::2]  # each iovec: base, length
        self._name_addresses = [self._names_address + i * _SOCKADDR_SIZE for i in range(capacity)]
        self._starts = [i * slot for i in range(capacity)]
        self._in_view = memoryview(self._in)
        self._out_view = memoryview(self._out)
        self._in_pointer = ctypes.c_void_p(ctypes.addressof(self._in_hdrs))
        self._out_address = ctypes.addressof(self._out_hdrs)
        self._out_pointer = ctypes.c_void_p(self._out_address)

    def exchange(self, fd: int, handle: Callable[[int, bytes], bytes | None]) -> tuple[int, int]:
        """Read up to `capacity` waiting datagrams without blocking, call `handle(index, data)`
        for each in order and send each reply it returns (None: no reply) to that datagram's
        sender. Replies go out `flush_every` at a time, so the first queries of a big batch do
        not wait for the last. Returns (datagrams read, replies lost): 0 read when none were
        waiting; a reply is lost when the kernel refuses it (full send buffer, unreachable
        peer) or when it is longer than a slot, which no UDP answer is (they stop at the EDNS
        size, at most 4096 bytes). Raises OSError when the read itself fails."""
        count = self._receive(fd)
        if not count:
            return 0, 0
        lengths = self._lengths
        starts = self._starts
        in_view = self._in_view
        out_view = self._out_view
        out_sizes = self._out_sizes
        out_names = self._out_names
        names = self._name_addresses
        slot = self._slot
        flush_every = self._flush_every
        staged = 0
        lost = 0
        for i in range(count):
            start = starts[i]
            reply = handle(i, in_view[start : start + lengths[i]].tobytes())
            if reply is None:
                continue
            size = len(reply)
            if size > slot:
                lost += 1
                continue
            start = starts[staged]
            out_view[start : start + size] = reply
            out_sizes[staged] = size
            out_names[staged] = names[i]
            staged += 1
            if staged == flush_every:
                lost += self._send(fd, staged)
                staged = 0
        if staged:
            lost += self._send(fd, staged)
        return count, lost

    def _receive(self, fd: int) -> int:
        self._namelens[:] = self._namelen_reset
        while True:
            count: int = self._recvmmsg(fd, self._in_pointer, self.capacity, _MSG_DONTWAIT, None)
            if count >= 0:
                return count
            code = ctypes.get_errno()
            if code in _RETRY_ERRNOS:
                continue
            if code in _EMPTY_ERRNOS:
                return 0
            raise OSError(code, f"recvmmsg: {errno.errorcode.get(code, code)}")

    def _send(self, fd: int, staged: int) -> int:
        """Write the first `staged` replies; how many the kernel refused. A refused datagram
        is skipped, as a lost UDP packet, and the rest still go."""
        sent = 0
        failed = 0
        while sent < staged:
            first = (
                self._out_pointer
                if sent == 0
                else ctypes.c_void_p(self._out_address + sent * _HDR_SIZE)
            )
            count: int = self._sendmmsg(fd, first, staged - sent, 0)
            if count > 0:
                sent += count
                continue
            code = ctypes.get_errno()
            if code in _RETRY_ERRNOS:
                continue
            if code in _EMPTY_ERRNOS:
                # The send buffer is full: the rest would fail the same way right now.
                return failed + staged - sent
            sent += 1
            failed += 1
        return failed

    def peer(self, index: int) -> Peer:
        """The sender of datagram `index` as `socket.recvfrom` gives it. For the rare paths
        that need it."""
        start = index * _SOCKADDR_SIZE
        return decode_peer(self._family, bytes(self._names[start : start + _SOCKADDR_SIZE]))


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
    """The C accelerator (`_native_batch.c`): the same reads, replies and counts as
    `DatagramBatch`, and given the responder's `FastTables`, `exchange` answers the plain
    queries its shortcuts settle (pre-packed answers, NODATA, NXDOMAIN, REFUSED) itself,
    without calling `handle`."""

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
        """The sender of datagram `index`, as `DatagramBatch.peer` gives it."""
        return decode_peer(self._family, self._native.raw_peer(index))


def native_available() -> bool:
    """Whether the C accelerator was built (an optional extension: it needs a compiler at
    install time) and this is Linux, where it reads and writes with recvmmsg/sendmmsg."""
    return _native_batch is not None
