"""Batched UDP I/O (recvmmsg/sendmmsg in the C extension, every datagram handed to Python) with
real loopback sockets: every reply reaches its own sender, in IPv4 and IPv6, whatever the batch
and flush sizes; refused and oversized replies are counted, never sent to the wrong peer."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import pytest

from acmezone_dns import datagram_batch
from acmezone_dns.datagram_batch import NativeDatagramBatch

pytestmark = pytest.mark.skipif(
    not datagram_batch.native_available(), reason="the C extension was not built (Linux only)"
)

LOOPBACK = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}

Batch = type[NativeDatagramBatch]


@pytest.fixture
def batch_class() -> Batch:
    """The batch (one implementation since the ctypes copy went)."""
    return NativeDatagramBatch


@pytest.fixture(params=[socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def server(request: pytest.FixtureRequest) -> Iterator[socket.socket]:
    """A non-blocking UDP socket on a free loopback port of either family."""
    family = request.param
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK[family], 0))
        sock.setblocking(False)
        yield sock


def clients(server: socket.socket, count: int) -> list[socket.socket]:
    """`count` client sockets of the server's family, each bound to its own port."""
    made = []
    for _ in range(count):
        sock = socket.socket(server.family, socket.SOCK_DGRAM)
        sock.bind((LOOPBACK[server.family], 0))
        sock.settimeout(2)
        made.append(sock)
    return made


def wait_readable(sock: socket.socket) -> None:
    """Wait until datagrams are queued on `sock`. Loopback delivers within the sender's own
    sendto, so once the first is there the rest are; the short sleep is a margin."""
    readable, _, _ = select.select([sock], [], [], 2)
    assert readable, "no datagram arrived"
    time.sleep(0.05)


def test_each_reply_goes_back_to_its_own_sender(server: socket.socket, batch_class: Batch) -> None:
    senders = clients(server, 5)
    try:
        for n, client in enumerate(senders):
            client.sendto(f"query-{n}".encode(), server.getsockname())
        wait_readable(server)
        batch = batch_class(server.family, capacity=8, slot=512)
        seen: list[tuple[int, bytes, tuple[object, ...]]] = []

        def handle(index: int, data: bytes) -> bytes:
            seen.append((index, data, batch.peer(index)))
            return b"reply-to-" + data

        count, lost = batch.exchange(server.fileno(), handle)
        assert (count, lost) == (5, 0)
        assert [data for _, data, _ in seen] == [f"query-{n}".encode() for n in range(5)]
        for (_, _, peer), client in zip(seen, senders, strict=True):
            assert peer[:2] == client.getsockname()[:2]  # host and port, as recvfrom gives
            assert len(peer) == (2 if server.family == socket.AF_INET else 4)
        for n, client in enumerate(senders):
            reply, source = client.recvfrom(512)
            assert reply == f"reply-to-query-{n}".encode()
            assert source[:2] == server.getsockname()[:2]
    finally:
        for client in senders:
            client.close()


def test_skipped_replies_and_mid_batch_flushes_keep_replies_with_their_senders(
    server: socket.socket, batch_class: Batch
) -> None:
    """With a flush every 2 replies and every third datagram unanswered, the send slots no
    longer line up with the read slots: each reply must still go to its own sender."""
    senders = clients(server, 9)
    try:
        for n, client in enumerate(senders):
            client.sendto(bytes([n]) * (n + 1), server.getsockname())
        wait_readable(server)
        batch = batch_class(server.family, capacity=16, slot=512, flush_every=2)
        count, lost = batch.exchange(
            server.fileno(), lambda index, data: None if index % 3 == 1 else data * 2
        )
        assert (count, lost) == (9, 0)
        for n, client in enumerate(senders):
            if n % 3 == 1:
                client.settimeout(0.2)
                with pytest.raises(TimeoutError):
                    client.recv(512)
            else:
                assert client.recv(512) == bytes([n]) * (2 * (n + 1))
    finally:
        for client in senders:
            client.close()


def test_a_full_socket_is_drained_batch_by_batch(server: socket.socket, batch_class: Batch) -> None:
    (client,) = clients(server, 1)
    with client:
        for n in range(10):
            client.sendto(n.to_bytes(2, "big"), server.getsockname())
        wait_readable(server)
        batch = batch_class(server.family, capacity=4, slot=64)
        counts = []
        while True:
            count, _ = batch.exchange(server.fileno(), lambda index, data: data)
            if not count:
                break
            counts.append(count)
        assert counts == [4, 4, 2]
        replies = [int.from_bytes(client.recv(64), "big") for _ in range(10)]
        assert replies == list(range(10))


def test_an_empty_socket_reads_nothing(server: socket.socket, batch_class: Batch) -> None:
    batch = batch_class(server.family)
    assert batch.exchange(server.fileno(), lambda index, data: data) == (0, 0)


def test_a_long_datagram_is_cut_to_the_slot_and_a_long_reply_is_lost(
    server: socket.socket, batch_class: Batch
) -> None:
    (client,) = clients(server, 1)
    with client:
        client.sendto(b"a" * 100, server.getsockname())
        client.sendto(b"b" * 10, server.getsockname())
        wait_readable(server)
        batch = batch_class(server.family, capacity=4, slot=64)
        received = []

        def handle(index: int, data: bytes) -> bytes:
            received.append(data)
            return data * 6  # the first reply (384 bytes) does not fit a 64-byte slot

        assert batch.exchange(server.fileno(), handle) == (2, 1)
        assert received == [b"a" * 64, b"b" * 10]
        assert client.recv(1024) == b"b" * 60  # only the reply that fits was sent


def test_a_reply_the_kernel_refuses_is_counted_and_the_rest_still_go(
    server: socket.socket, batch_class: Batch
) -> None:
    senders = clients(server, 3)
    try:
        for client in senders:
            client.sendto(b"q", server.getsockname())
        wait_readable(server)
        batch = batch_class(server.family, capacity=4, slot=64)

        def handle(index: int, data: bytes) -> bytes:
            if index == 1:
                # Fault injection: make the second sender's address port 0, which sendmmsg
                # refuses with EINVAL (loopback offers no natural way to fail one send).
                start = index * 28 + 2
                batch._names[start : start + 2] = b"\x00\x00"
            return b"r%d" % index

        assert batch.exchange(server.fileno(), handle) == (3, 1)
        assert senders[0].recv(64) == b"r0"
        assert senders[2].recv(64) == b"r2"
        senders[1].settimeout(0.2)
        with pytest.raises(TimeoutError):
            senders[1].recv(64)
    finally:
        for client in senders:
            client.close()


def test_a_failing_read_raises_oserror(batch_class: Batch) -> None:
    batch = batch_class(socket.AF_INET)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as stream:
        stream.setblocking(False)
        # An unconnected TCP socket: recvmmsg fails with ENOTCONN, not "nothing waiting".
        with pytest.raises(OSError, match="recvmmsg"):
            batch.exchange(stream.fileno(), lambda index, data: data)
