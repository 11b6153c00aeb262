"""RFC 2136 UPDATE through the dns service's real UDP and TCP ports to a real registry.

The dns service forwards every UPDATE to the registry (which verifies TSIG and applies it) and
answers with the registry's signed response. Messages are built and signed by dnspython as a
client would; replies are verified with the key. Two dns replicas follow one registry to show a
deleted key stops working on every replica within a second.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import dns.asyncquery
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.update
import grpc
import pytest
from prometheus_client import CollectorRegistry

from acmezone.registry.v1 import tsig_key_service_pb2 as key_pb2
from acmezone.registry.v1 import tsig_key_service_pb2_grpc as key_grpc
from acmezone_common.addresses import HostPort
from acmezone_common.testing import wait_for_serving
from acmezone_dns.app import DnsApp
from acmezone_registry.app import RegistryApp
from tests.dns.conftest import ZONE, query_tcp, query_udp, raw_udp, running_dns, v4
from tests.registry.conftest import running_registry
from tests.registry.test_dns_updates import Client, new_client
from tests.registry.values import acme_digest


async def send(
    address: HostPort, message: dns.message.Message, *, tcp: bool = False
) -> dns.message.Message:
    """Send a signed message; the reply's TSIG is verified by dnspython (it raises otherwise)."""
    if tcp:
        return await dns.asyncquery.tcp(message, address.host, port=address.port, timeout=5)
    return await dns.asyncquery.udp(message, address.host, port=address.port, timeout=5)


async def txt(address: HostPort, name: str) -> tuple[str, ...]:
    reply = await query_udp(address, name)
    return tuple(b"".join(rdata.strings).decode() for rrset in reply.answer for rdata in rrset)


class Replicas:
    """One registry and `count` dns replicas fed by it."""

    def __init__(
        self,
        registry: RegistryApp,
        apps: list[DnsApp],
        channel: grpc.aio.Channel,
        metrics: list[CollectorRegistry],
    ):
        self.registry = registry
        self.apps = apps
        self.channel = channel
        self.metrics = metrics


async def start_system(stack: AsyncExitStack, tmp_path: Path, count: int) -> Replicas:
    registry = await stack.enter_async_context(running_registry(tmp_path))
    apps = []
    registries = []
    for i in range(count):
        workdir = tmp_path / f"dns{i}"
        workdir.mkdir()
        registries.append(CollectorRegistry())
        app = await stack.enter_async_context(
            running_dns(
                workdir,
                registries[-1],
                dns_addresses=["127.0.0.1:0"],
                registry_target=str(registry.grpc_address),
                txt_ttl=0,
            )
        )
        await wait_for_serving(str(app.grpc_address))
        apps.append(app)
    channel = await stack.enter_async_context(grpc.aio.insecure_channel(str(registry.grpc_address)))
    return Replicas(registry, apps, channel, registries)


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[Replicas]:
    async with AsyncExitStack() as stack:
        yield await start_system(stack, tmp_path, 1)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_update_adds_and_deletes_and_the_same_replica_answers_at_once(
    system: Replicas, tcp: bool
) -> None:
    app = system.apps[0]
    client = await new_client(system.channel)
    value = acme_digest("add")
    add = client.update()
    add.add(f"_acme-challenge.{client.fqdn}", 60, "TXT", f'"{value}"')
    reply = await send(v4(app), add, tcp=tcp)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.had_tsig
    # Answered only once this replica serves the change.
    assert await txt(v4(app), f"_acme-challenge.{client.fqdn}") == (value,)
    delete = client.update()
    delete.delete(f"_acme-challenge.{client.fqdn}", "TXT", f'"{value}"')
    assert (await send(v4(app), delete, tcp=tcp)).rcode() == dns.rcode.NOERROR
    assert await txt(v4(app), f"_acme-challenge.{client.fqdn}") == ()
    transport = "tcp" if tcp else "udp"
    metrics = system.metrics[0]
    for t in ("udp", "tcp"):
        for rcode in ("NOERROR", "REFUSED", "NOTAUTH", "SERVFAIL", "OTHER"):
            # Every series exists from the start; only this transport's NOERROR moved.
            expected = 2.0 if (t, rcode) == (transport, "NOERROR") else 0.0
            labels = {"transport": t, "rcode": rcode}
            assert metrics.get_sample_value("acmezone_dns_updates_total", labels) == expected
    assert app.update_stats.counts == [
        2 if (t == transport and rcode == "NOERROR") else 0
        for t in ("udp", "tcp")
        for rcode in (
            "NOERROR",
            "FORMERR",
            "SERVFAIL",
            "NXDOMAIN",
            "NOTIMP",
            "REFUSED",
            "YXDOMAIN",
            "YXRRSET",
            "NXRRSET",
            "NOTAUTH",
            "NOTZONE",
            "OTHER",
        )
    ]


async def test_soa_of_the_zone_is_authoritative(system: Replicas) -> None:
    """Clients (nsupdate, lego) find the zone to update by asking for the SOA."""
    for query in (query_udp, query_tcp):
        reply = await query(v4(system.apps[0]), ZONE, "SOA")
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.flags & dns.flags.AA
        assert reply.answer[0].rdtype == dns.rdatatype.SOA
        assert reply.answer[0].name.to_text() == f"{ZONE}."


async def test_replayed_update_is_rejected_through_the_udp_port(system: Replicas) -> None:
    app = system.apps[0]
    client = await new_client(system.channel)
    message = client.update()
    message.add(client.fqdn, 60, "TXT", f'"{acme_digest("once")}"')
    wire = message.to_wire()
    first = await raw_udp(v4(app), wire, wait=5)
    assert first is not None
    reply = dns.message.from_wire(first, keyring=client.keyring(), request_mac=message.mac)
    assert reply.rcode() == dns.rcode.NOERROR
    clear = client.update()
    clear.delete(client.fqdn, "TXT")
    assert (await send(v4(app), clear)).rcode() == dns.rcode.NOERROR
    # The recording sent again after the original went through (and its effect was undone):
    # the guard keys on the signature, so no waiting is needed for it to be seen as a replay.
    again = await raw_udp(v4(app), wire, wait=5)
    assert again is not None
    replay = dns.message.from_wire(again, keyring=False)
    assert (replay.rcode(), replay.tsig_error) == (dns.rcode.NOTAUTH, dns.rcode.BADTIME)
    assert await txt(v4(app), client.fqdn) == ()
    assert app.update_stats.counts[9] == 1  # one NOTAUTH over UDP


async def test_update_for_another_registrations_name_is_refused(system: Replicas) -> None:
    app = system.apps[0]
    mallory = await new_client(system.channel)
    victim = await new_client(system.channel)
    for name in (victim.fqdn, f"_acme-challenge.{victim.fqdn}"):
        message = mallory.update()
        message.add(name, 60, "TXT", f'"{acme_digest("evil")}"')
        reply = await send(v4(app), message)
        assert reply.rcode() == dns.rcode.REFUSED
        assert await txt(v4(app), name) == ()
    # Signing with the victim's key name but Mallory's secret does not verify.
    forged = Client(mallory.channel, victim.registration, mallory.key)
    forged.key = key_pb2.TsigKey()
    forged.key.CopyFrom(mallory.key)
    forged.key.key_name = victim.key.key_name
    message = forged.update()
    message.add(victim.fqdn, 60, "TXT", f'"{acme_digest("evil")}"')
    raw = await raw_udp(v4(app), message.to_wire(), wait=5)
    assert raw is not None
    response = dns.message.from_wire(raw, keyring=False)
    assert (response.rcode(), response.tsig_error) == (dns.rcode.NOTAUTH, dns.rcode.BADSIG)
    assert await txt(v4(app), victim.fqdn) == ()


async def test_deleted_key_stops_working_within_a_second_on_every_replica(
    tmp_path: Path,
) -> None:
    async with AsyncExitStack() as stack:
        system = await start_system(stack, tmp_path, 2)
        client = await new_client(system.channel)
        for app in system.apps:
            message = client.update()
            message.add(client.fqdn, 60, "TXT", f'"{acme_digest(str(app.grpc_address))}"')
            assert (await send(v4(app), message)).rcode() == dns.rcode.NOERROR
        await key_grpc.TsigKeyServiceStub(system.channel).DeleteTsigKey(
            key_pb2.DeleteTsigKeyRequest(name=client.key.name)
        )
        deleted_at = time.monotonic()
        for app in system.apps:
            message = client.update()
            message.add(client.fqdn, 60, "TXT", f'"{acme_digest("after")}"')
            raw = await raw_udp(v4(app), message.to_wire(), wait=5)
            assert raw is not None
            response = dns.message.from_wire(raw, keyring=False)
            assert (response.rcode(), response.tsig_error) == (dns.rcode.NOTAUTH, dns.rcode.BADKEY)
        assert time.monotonic() - deleted_at < 1.0
        for app in system.apps:
            assert acme_digest("after") not in await txt(v4(app), client.fqdn)


async def test_unreachable_registry_gets_servfail_not_a_hang(tmp_path: Path) -> None:
    """Nothing listens at the registry target (UNAVAILABLE), or something accepts TCP and never
    speaks (the deadline): SERVFAIL either way, over UDP and TCP, and queries keep working."""
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen()
        silent = f"127.0.0.1:{black_hole.getsockname()[1]}"
        for target in ("127.0.0.1:1", silent):
            workdir = tmp_path / target.replace(":", "_")
            workdir.mkdir()
            async with running_dns(
                workdir,
                registry_target=target,
                dns_addresses=["127.0.0.1:0"],
                update_timeout_seconds=0.5,
            ) as app:
                message = dns.update.UpdateMessage(ZONE)
                message.add("x", 60, "TXT", "v")
                udp = await raw_udp(v4(app), message.to_wire(), wait=5)
                assert udp is not None
                assert dns.message.from_wire(udp).rcode() == dns.rcode.SERVFAIL
                tcp = await dns.asyncquery.tcp(message, v4(app).host, port=v4(app).port, timeout=5)
                assert tcp.rcode() == dns.rcode.SERVFAIL
                assert (await query_udp(v4(app), "www.example.test", "A")).answer
                assert app.update_stats.counts[2] == 1  # SERVFAIL over UDP


async def test_registry_calling_the_message_invalid_gets_formerr(tmp_path: Path) -> None:
    """INVALID_ARGUMENT from the registry becomes FORMERR. The real registry only says that for
    messages the dns service never forwards (under 12 bytes), so a bare gRPC server standing in
    for a registry that answers every call with INVALID_ARGUMENT plays its part."""

    async def refuse(_request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "invalid")
        return b""

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "acmezone.registry.v1.DnsUpdateService",
                {"ApplyDnsUpdate": grpc.unary_unary_rpc_method_handler(refuse)},
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with running_dns(
            tmp_path, registry_target=f"127.0.0.1:{port}", dns_addresses=["127.0.0.1:0"]
        ) as app:
            message = dns.update.UpdateMessage(ZONE)
            message.add("x", 60, "TXT", "v")
            raw = await raw_udp(v4(app), message.to_wire(), wait=5)
            assert raw is not None
            assert dns.message.from_wire(raw).rcode() == dns.rcode.FORMERR
    finally:
        await server.stop(0)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_signed_soa_query_gets_a_signed_authoritative_answer(
    system: Replicas, tcp: bool
) -> None:
    """certbot-dns-rfc2136 finds the zone as `_query_soa` does: an SOA query with RD cleared,
    signed with the key (hmac-md5 by default), over TCP then UDP; it needs NOERROR, the SOA in
    the answer and AA, and dnspython refuses an unsigned answer to a signed query."""
    client = await new_client(system.channel, key_pb2.TSIG_ALGORITHM_HMAC_MD5)
    address = v4(system.apps[0])
    for name, expect in ((ZONE, dns.rcode.NOERROR), (client.fqdn, dns.rcode.NOERROR)):
        query = dns.message.make_query(name, "SOA")
        query.flags ^= dns.flags.RD
        query.use_tsig(client.keyring(), algorithm=dns.tsig.HMAC_MD5)
        reply = await send(address, query, tcp=tcp)  # the TSIG is verified by dnspython
        assert reply.had_tsig
        assert reply.rcode() == expect
        assert reply.flags & dns.flags.AA
        if name == ZONE:
            assert reply.get_rrset(
                reply.answer, dns.name.from_text(ZONE), dns.rdataclass.IN, dns.rdatatype.SOA
            )
    # A key the registry does not know: NOTAUTH with BADKEY, unsigned.
    stranger = Client(client.channel, client.registration, key_pb2.TsigKey())
    stranger.key.CopyFrom(client.key)
    stranger.key.key_name = "nobody.acme.example.test."
    query = dns.message.make_query(ZONE, "SOA")
    query.use_tsig(stranger.keyring(), algorithm=dns.tsig.HMAC_MD5)
    raw = await raw_udp(address, query.to_wire(), wait=5)
    assert raw is not None
    response = dns.message.from_wire(raw, keyring=False)
    assert (response.rcode(), response.tsig_error) == (dns.rcode.NOTAUTH, dns.rcode.BADKEY)
    # Unsigned queries are answered as before, unsigned.
    plain = await query_udp(address, ZONE, "SOA")
    assert not plain.had_tsig
    assert plain.flags & dns.flags.AA


@pytest.mark.parametrize(
    "algorithm",
    [
        key_pb2.TSIG_ALGORITHM_HMAC_SHA256,
        key_pb2.TSIG_ALGORITHM_HMAC_SHA512,
        key_pb2.TSIG_ALGORITHM_HMAC_SHA1,
        key_pb2.TSIG_ALGORITHM_HMAC_MD5,
    ],
    ids=["sha256", "sha512", "sha1", "md5"],
)
async def test_every_algorithm_through_the_udp_port(system: Replicas, algorithm: int) -> None:
    client = await new_client(system.channel, algorithm)
    message = client.update()
    message.add(client.fqdn, 60, "TXT", f'"{acme_digest(str(algorithm))}"')
    reply = await send(v4(system.apps[0]), message)  # signed reply verified with the key
    assert reply.rcode() == dns.rcode.NOERROR
    assert await txt(v4(system.apps[0]), client.fqdn) == (acme_digest(str(algorithm)),)


async def test_clock_skew_gets_a_signed_badtime_and_changes_nothing(system: Replicas) -> None:
    client = await new_client(system.channel)
    message = client.update()
    message.add(client.fqdn, 60, "TXT", f'"{acme_digest("skewed")}"')
    original = time.time
    try:
        time.time = lambda: original() - 600  # type: ignore[assignment]
        wire = message.to_wire()
    finally:
        time.time = original  # type: ignore[assignment]
    raw = await raw_udp(v4(system.apps[0]), wire, wait=5)
    assert raw is not None
    response = dns.message.from_wire(raw, keyring=False)
    assert (response.rcode(), response.tsig_error) == (dns.rcode.NOTAUTH, dns.rcode.BADTIME)
    # Signed with the key (RFC 8945 section 5.2.3): dnspython verifies it, then reports BADTIME.
    with pytest.raises(dns.tsig.PeerBadTime):
        dns.message.from_wire(raw, keyring=client.keyring(), request_mac=message.mac)
    assert await txt(v4(system.apps[0]), client.fqdn) == ()
