"""DNS COOKIE (RFC 7873) with interoperable server cookies (RFC 9018).

A client that sends a COOKIE option gets its client cookie back with a server cookie: version 1,
three reserved zero bytes, a 32-bit timestamp and SipHash-2-4 over the client cookie, those eight
bytes and the client's IP address, keyed with a 128-bit server secret. Replicas that share the
secret (settings) issue and accept each other's cookies, as RFC 9018 intends for anycast.

This server does not demand cookies: a missing, stale or wrong server cookie still gets a normal
answer carrying a fresh one (RFC 7873 section 5.2.3 and 5.2.4 allow it; NSD and Knot do the same
by default), so no client that ignores cookies breaks. What a client gains is an answer it can
check came from the server it asked (off-path spoofing), and a resolver gains the signal that the
server speaks cookies. A malformed COOKIE option is FORMERR (section 5.2.2).

Replies are always built with the current time, so a cookie is never older than the answer
carrying it; `validate` tells whether a received cookie was ours and still within its hour.
"""

from __future__ import annotations

import functools
import os
import secrets
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

COOKIE_OPTION = 10
CLIENT_COOKIE_LEN = 8
SERVER_COOKIE_LEN = 16  # RFC 9018: version, reserved, timestamp, hash
SECRET_LEN = 16
_MIN_SERVER_COOKIE, _MAX_SERVER_COOKIE = 8, 32  # RFC 7873 section 4
_VERSION = b"\x01\x00\x00\x00"
_LIFETIME = 3600  # RFC 9018 section 4.3: accepted for an hour...
_FUTURE = 300  # ... and up to five minutes ahead of our clock

_M64 = 0xFFFFFFFFFFFFFFFF
_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"


class MalformedCookieError(ValueError):
    """A COOKIE option whose length no cookie can have: FORMERR."""


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64


def python_siphash24(key: bytes, message: bytes) -> bytes:
    """SipHash-2-4 (Aumasson and Bernstein) of `message` under a 16-byte key, as the eight
    little-endian bytes RFC 9018 puts in the cookie. Pure Python (about 20 us): `siphash24` is
    the C accelerator's (about 0.1 us) wherever it was built."""
    k0, k1 = struct.unpack("<QQ", key)
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573
    n = len(message)
    tail_start = n - n % 8
    words = list(struct.unpack_from(f"<{tail_start // 8}Q", message))
    last = (n & 0xFF) << 56
    for i, byte in enumerate(message[tail_start:]):
        last |= byte << (8 * i)
    words.append(last)
    for index, m in enumerate(words):
        v3 ^= m
        for _ in range(2):
            v0 = (v0 + v1) & _M64
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _M64
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _M64
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _M64
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)
        v0 ^= m
        if index == len(words) - 1:
            v2 ^= 0xFF
            for _ in range(4):
                v0 = (v0 + v1) & _M64
                v1 = _rotl(v1, 13) ^ v0
                v0 = _rotl(v0, 32)
                v2 = (v2 + v3) & _M64
                v3 = _rotl(v3, 16) ^ v2
                v0 = (v0 + v3) & _M64
                v3 = _rotl(v3, 21) ^ v0
                v2 = (v2 + v1) & _M64
                v1 = _rotl(v1, 17) ^ v2
                v2 = _rotl(v2, 32)
    return struct.pack("<Q", v0 ^ v1 ^ v2 ^ v3)


try:
    from acmezone_dns._native_batch import siphash24
except ImportError:  # pragma: no cover - the accelerator is optional (no compiler at install)
    siphash24 = python_siphash24


def load_secret(secret_hex: str | None, secret_file: Path | None) -> bytes:
    """The 16-byte server secret: from settings (hex), else from `secret_file` (hex, generated
    0600 when it does not exist yet, so replicas given the same file agree), else random for
    this process only (a client moving between such replicas just learns a new cookie)."""
    if secret_hex:
        return _parse_secret(secret_hex, "the cookie secret setting")
    if secret_file is not None:
        try:
            return _parse_secret(secret_file.read_text().strip(), str(secret_file))
        except FileNotFoundError:
            secret = secrets.token_bytes(SECRET_LEN)
            secret_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secret.hex() + "\n")
            return secret
    return secrets.token_bytes(SECRET_LEN)


def _parse_secret(text: str, where: str) -> bytes:
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{where} is not hexadecimal") from None
    if len(secret) != SECRET_LEN:
        raise ValueError(f"{where} must be {SECRET_LEN} bytes ({2 * SECRET_LEN} hex digits)")
    return secret


class CookieJar:
    """Makes and checks server cookies with one secret; `clock` gives Unix seconds."""

    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        if len(secret) != SECRET_LEN:
            raise ValueError(f"a cookie secret is {SECRET_LEN} bytes")
        self._secret = secret
        self._clock = clock

    @property
    def secret(self) -> bytes:
        """The server secret (the C loop makes cookies with it too)."""
        return self._secret

    def now(self) -> int:
        """The cookie timestamp now: Unix seconds, 32 bits."""
        return int(self._clock()) & 0xFFFFFFFF

    def server_cookie(
        self, client_cookie: bytes, client_ip: bytes, now: int | None = None
    ) -> bytes:
        """RFC 9018 section 4.2: version, reserved, timestamp, SipHash-2-4."""
        stamp = (int(self._clock()) if now is None else now) & 0xFFFFFFFF
        head = _VERSION + stamp.to_bytes(4, "big")
        return head + siphash24(self._secret, client_cookie + head + client_ip)

    def validate(self, client_cookie: bytes, server_cookie: bytes, client_ip: bytes) -> bool:
        """Whether `server_cookie` is one we made for this client and is at most an hour old
        (and at most five minutes ahead), RFC 9018 section 4.3."""
        if len(server_cookie) != SERVER_COOKIE_LEN or server_cookie[:4] != _VERSION:
            return False
        stamp = int.from_bytes(server_cookie[4:8], "big")
        age = (int(self._clock()) - stamp) & 0xFFFFFFFF  # serial arithmetic (RFC 1982)
        if age > _LIFETIME and (-age) & 0xFFFFFFFF > _FUTURE:
            return False
        expected = self.server_cookie(client_cookie, client_ip, now=stamp)
        return secrets.compare_digest(expected, server_cookie)

    def option(self, cookie: bytes, client_host: str) -> bytes:
        """The COOKIE option (code, length, data) answering a received option's data; raises
        `MalformedCookieError` for a length RFC 7873 section 5.2.2 calls FORMERR."""
        size = len(cookie)
        if size < CLIENT_COOKIE_LEN or (
            size > CLIENT_COOKIE_LEN
            and not _MIN_SERVER_COOKIE <= size - CLIENT_COOKIE_LEN <= _MAX_SERVER_COOKIE
        ):
            raise MalformedCookieError(f"a COOKIE option of {size} bytes")
        client = cookie[:CLIENT_COOKIE_LEN]
        data = client + self.server_cookie(client, client_ip(client_host))
        return struct.pack("!HH", COOKIE_OPTION, len(data)) + data


@functools.lru_cache(maxsize=4096)
def client_ip(host: str) -> bytes:
    """A peer's address as the bytes the hash covers (4 for IPv4, 16 for IPv6; an IPv4-mapped
    IPv6 peer counts as IPv4); empty when the peer is unknown. Cached: resolvers come back."""
    try:
        return socket.inet_pton(socket.AF_INET, host)
    except OSError:
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
    except OSError:
        return b""
    return packed[12:] if packed[:12] == _V4_MAPPED else packed


def find_cookie(options: bytes) -> bytes | None:
    """The data of the one COOKIE option among EDNS `options` (code, length, data, ...), None
    when there is none; `MalformedCookieError` when the options overrun or a second COOKIE follows.
    Every other option is skipped (RFC 6891 section 6.1.2)."""
    found: bytes | None = None
    i, n = 0, len(options)
    while i < n:
        if i + 4 > n:
            raise MalformedCookieError("a truncated EDNS option")
        code, length = struct.unpack_from("!HH", options, i)
        end = i + 4 + length
        if end > n:
            raise MalformedCookieError("an EDNS option longer than the OPT record")
        if code == COOKIE_OPTION:
            if found is not None:
                raise MalformedCookieError("two COOKIE options")
            found = options[i + 4 : end]
        i = end
    return found
