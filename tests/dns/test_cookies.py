"""DNS COOKIE (RFC 7873) with RFC 9018 server cookies, over real UDP and TCP sockets, through
the C loop, the Python loop and TCP, with dnspython and with BIND's `dig +cookie`."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import stat
from pathlib import Path

import dns.asyncquery
import dns.edns
import dns.message
import dns.rcode
import pydantic
import pytest

from acmezone_common.addresses import HostPort
from acmezone_dns.app import DnsApp
from acmezone_dns.cookies import (
    CookieJar,
    client_ip,
    find_cookie,
    load_secret,
    python_siphash24,
    siphash24,
)
from acmezone_dns.settings import DnsSettings
from tests.dns.conftest import SNAPSHOT, running_dns, v4

CLIENT_COOKIE = bytes.fromhex("2464c4abcf10c957")


def test_siphash_and_the_rfc_9018_example() -> None:
    key = bytes(range(16))
    for implementation in (siphash24, python_siphash24):  # C (when built) and Python agree
        assert implementation(key, b"")[::-1].hex() == "726fdb47dd0e0e31"  # the paper's vectors
        assert implementation(key, bytes(range(15)))[::-1].hex() == "a129ca6149be45e5"
    rng = random.Random(5)
    for size in range(64):
        message = rng.randbytes(size)
        assert siphash24(key, message) == python_siphash24(key, message)
    assert client_ip("::ffff:198.51.100.100") == client_ip("198.51.100.100")
    assert client_ip("not an address") == b""
    jar = CookieJar(bytes.fromhex("e5e973e5a6b2a43f48e7dc849e37bfcf"), clock=lambda: 1559731985)
    ip = client_ip("198.51.100.100")
    cookie = jar.server_cookie(CLIENT_COOKIE, ip)
    assert cookie.hex() == "010000005cf79f111f8130c3eee29480"  # RFC 9018 appendix A.1
    assert jar.validate(CLIENT_COOKIE, cookie, ip)
    assert not jar.validate(CLIENT_COOKIE, cookie, client_ip("198.51.100.101"))
    assert not jar.validate(b"\x00" * 8, cookie, ip)
    later = CookieJar(bytes.fromhex("e5e973e5a6b2a43f48e7dc849e37bfcf"), lambda: 1559735586)
    assert not later.validate(CLIENT_COOKIE, cookie, ip)  # an hour and a second old


def test_options_are_walked_and_malformed_ones_named() -> None:
    cookie = b"\x00\x0a\x00\x08" + CLIENT_COOKIE
    assert find_cookie(b"\xfd\xe9\x00\x01x" + cookie) == CLIENT_COOKIE
    assert find_cookie(b"\xfd\xe9\x00\x00") is None
    for bad in (cookie + cookie, b"\x00\x0a\x00\x09" + CLIENT_COOKIE, b"\x00\x0a"):
        with pytest.raises(ValueError, match=r"COOKIE|option"):
            find_cookie(bad)


def test_the_secret_comes_from_settings_or_a_generated_private_file(tmp_path: Path) -> None:
    path = tmp_path / "dns" / "cookie.secret"
    first = load_secret(None, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_secret(None, path) == first
    assert load_secret("00" * 16, path) == bytes(16)
    path.write_text("zz")
    with pytest.raises(ValueError, match="not hexadecimal"):
        load_secret(None, path)
    with pytest.raises(pydantic.ValidationError, match="32 hex digits"):
        DnsSettings(cookie_secret="abcd")


async def cookie_query(
    address: HostPort,
    name: str,
    options: list[dns.edns.Option],
    *,
    tcp: bool = False,
    rdtype: str = "TXT",
    edns: int = 0,
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=edns, payload=1232, options=options)
    send = dns.asyncquery.tcp if tcp else dns.asyncquery.udp
    return await send(query, address.host, port=address.port, timeout=2)


def server_cookie_of(reply: dns.message.Message) -> bytes:
    cookies = [o for o in reply.options if o.otype == dns.edns.COOKIE]
    assert len(cookies) == 1
    data = cookies[0].to_wire()
    assert data[:8] == CLIENT_COOKIE
    assert len(data) == 24
    return data[8:]


@pytest.mark.parametrize(
    "overrides",
    [{}, {"udp_native": False}, {"udp_batch_size": 1}],
    ids=["native", "python-batched", "recvfrom"],
)
async def test_every_answer_path_returns_a_valid_server_cookie(
    tmp_path: Path, overrides: dict[str, object]
) -> None:
    async with running_dns(tmp_path, cookie_secret="ab" * 16, **overrides) as app:
        app.store.apply_snapshot(SNAPSHOT, 1, "f")
        jar = app.responder.cookies
        client = dns.edns.GenericOption(dns.edns.COOKIE, CLIENT_COOKIE)
        cases = [
            ("one.acme.example.test", "TXT", dns.rcode.NOERROR),  # pre-packed
            ("nobody.acme.example.test", "TXT", dns.rcode.NXDOMAIN),  # negative
            ("one.acme.example.test", "HTTPS", dns.rcode.NOERROR),  # the dnslib slow path
            ("big.acme.example.test", "TXT", dns.rcode.NOERROR),  # truncated over UDP
            ("elsewhere.test", "A", dns.rcode.REFUSED),
        ]
        for address in app.dns_addresses:  # IPv4 and IPv6
            for tcp in (False, True):
                for name, rdtype, rcode in cases:
                    reply = await cookie_query(address, name, [client], tcp=tcp, rdtype=rdtype)
                    assert reply.rcode() == rcode, (name, rdtype, tcp)
                    cookie = server_cookie_of(reply)
                    assert jar.validate(CLIENT_COOKIE, cookie, client_ip(address.host))
                    # Sent back, it is accepted and answered with a cookie again.
                    both = dns.edns.GenericOption(dns.edns.COOKIE, CLIENT_COOKIE + cookie)
                    again = await cookie_query(address, name, [both], tcp=tcp, rdtype=rdtype)
                    assert again.rcode() == rcode
                    assert jar.validate(
                        CLIENT_COOKIE, server_cookie_of(again), client_ip(address.host)
                    )
        # BADVERS keeps the cookie too.
        reply = await cookie_query(v4(app), "one.acme.example.test", [client], edns=1)
        assert reply.rcode() == dns.rcode.BADVERS
        assert jar.validate(CLIENT_COOKIE, server_cookie_of(reply), client_ip("127.0.0.1"))


async def test_malformed_cookies_are_formerr_and_unknown_options_ignored(dns_app: DnsApp) -> None:
    address = v4(dns_app)
    for data in (b"1234567", b"123456789", CLIENT_COOKIE + b"s" * 33):
        reply = await cookie_query(
            address, "one.acme.example.test", [dns.edns.GenericOption(dns.edns.COOKIE, data)]
        )
        assert reply.rcode() == dns.rcode.FORMERR
    twice = [dns.edns.GenericOption(dns.edns.COOKIE, CLIENT_COOKIE)] * 2
    assert (await cookie_query(address, "one.acme.example.test", twice)).rcode() == (
        dns.rcode.FORMERR
    )
    unknown = [dns.edns.GenericOption(65001, b"whatever")]
    reply = await cookie_query(address, "one.acme.example.test", unknown)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.options == ()
    assert reply.answer


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig (bind9-dnsutils) not installed")
async def test_dig_finds_the_server_cookie_good(tmp_path: Path) -> None:
    async with running_dns(tmp_path, cookie_secret="cd" * 16) as app:
        app.store.apply_snapshot(SNAPSHOT, 1, "f")
        address = v4(app)
        for transport in ("+notcp", "+tcp"):
            process = await asyncio.create_subprocess_exec(
                "dig", "+cookie", transport, "+tries=1", "+time=2", "-p", str(address.port),
                "@" + address.host, "one.acme.example.test", "TXT",
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await process.communicate()
            text = out.decode()
            assert process.returncode == 0, text
            assert "status: NOERROR" in text
            cookie_lines = [line for line in text.splitlines() if "; COOKIE:" in line]
            assert len(cookie_lines) == 1, text
            assert cookie_lines[0].endswith("(good)"), cookie_lines
            assert "value-one-newest" in text
