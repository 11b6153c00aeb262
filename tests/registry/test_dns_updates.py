"""TSIG keys and RFC 2136 dynamic updates through a running registry, over real gRPC.

Update messages are built and signed by dnspython exactly as a client (nsupdate, lego, certbot)
would send them; responses are parsed and their TSIG signatures checked the same way.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update
import grpc
import pytest

from acmezone.registry.v1 import dns_update_service_pb2 as upd_pb2
from acmezone.registry.v1 import dns_update_service_pb2_grpc as upd_grpc
from acmezone.registry.v1 import record_feed_service_pb2 as feed_pb2
from acmezone.registry.v1 import record_feed_service_pb2_grpc as feed_grpc
from acmezone.registry.v1 import registration_service_pb2 as reg_pb2
from acmezone.registry.v1 import registration_service_pb2_grpc as reg_grpc
from acmezone.registry.v1 import tsig_key_service_pb2 as key_pb2
from acmezone.registry.v1 import tsig_key_service_pb2_grpc as key_grpc
from acmezone_common.testing import error_info_reason
from acmezone_registry.app import RegistryApp
from tests.registry.conftest import ZONE, running_registry
from tests.registry.values import acme_digest

ALGORITHMS = {
    key_pb2.TSIG_ALGORITHM_HMAC_SHA256: dns.tsig.HMAC_SHA256,
    key_pb2.TSIG_ALGORITHM_HMAC_SHA512: dns.tsig.HMAC_SHA512,
    key_pb2.TSIG_ALGORITHM_HMAC_SHA1: dns.tsig.HMAC_SHA1,
    key_pb2.TSIG_ALGORITHM_HMAC_MD5: dns.tsig.HMAC_MD5,
}


@dataclass
class Client:
    """A registration with a TSIG key, and the stubs to use them."""

    channel: grpc.aio.Channel
    registration: reg_pb2.Registration
    key: key_pb2.TsigKey

    @property
    def fqdn(self) -> str:
        return f"{self.registration.fulldomain}."

    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        name = dns.name.from_text(self.key.key_name)
        algorithm = ALGORITHMS[self.key.algorithm]
        return {name: dns.tsig.Key(name, base64.b64decode(self.key.secret), algorithm)}

    def update(self, *, zone: str = ZONE, **sign: object) -> dns.update.UpdateMessage:
        message = dns.update.UpdateMessage(zone)
        message.use_tsig(self.keyring(), **sign)  # type: ignore[arg-type]
        return message

    async def send(
        self,
        message: dns.message.Message,
        *,
        wire: bytes | None = None,
        source: str = "127.0.0.1",
        verify: bool = True,
    ) -> tuple[dns.message.Message, upd_pb2.ApplyDnsUpdateResponse]:
        """Send an update; the reply's signature is verified unless it carries a TSIG error
        (dnspython refuses to verify those: it raises the peer's error instead)."""
        wire = wire if wire is not None else message.to_wire()
        reply = await upd_grpc.DnsUpdateServiceStub(self.channel).ApplyDnsUpdate(
            upd_pb2.ApplyDnsUpdateRequest(message=wire, client_address=source)
        )
        response = dns.message.from_wire(
            reply.message,
            keyring=self.keyring() if verify else False,
            request_mac=message.mac or b"",
        )
        assert response.id == message.id
        assert response.rcode() == reply.rcode
        return response, reply

    async def values(self) -> dict[str, tuple[str, ...]]:
        """What the record feed now says, by name."""
        stream = feed_grpc.RecordFeedServiceStub(self.channel).WatchRecords(
            feed_pb2.WatchRecordsRequest(start_revision=0)
        )
        snapshot = await stream.read()
        stream.cancel()
        return {rs.fqdn: tuple(rs.txt_values) for rs in snapshot.snapshot.record_sets}


async def new_client(
    channel: grpc.aio.Channel,
    algorithm: int = key_pb2.TSIG_ALGORITHM_HMAC_SHA256,
    cidrs: tuple[str, ...] = (),
) -> Client:
    registration = await reg_grpc.RegistrationServiceStub(channel).CreateRegistration(
        reg_pb2.CreateRegistrationRequest(
            registration=reg_pb2.Registration(allowed_cidrs=list(cidrs))
        )
    )
    key = await key_grpc.TsigKeyServiceStub(channel).CreateTsigKey(
        key_pb2.CreateTsigKeyRequest(
            parent=registration.name, tsig_key=key_pb2.TsigKey(algorithm=algorithm)
        )
    )
    return Client(channel, registration, key)


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[RegistryApp]:
    async with running_registry(tmp_path) as app:
        yield app


@pytest.fixture
async def channel(registry: RegistryApp) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(str(registry.grpc_address)) as opened:
        yield opened


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
async def test_add_and_delete_with_every_algorithm(
    channel: grpc.aio.Channel, algorithm: int
) -> None:
    client = await new_client(channel, algorithm)
    assert len(base64.b64decode(client.key.secret)) in (16, 20, 32, 64)
    alias = f"_acme-challenge.{client.fqdn}"
    assert list(client.key.allowed_names) == [client.fqdn, alias]
    a, b = acme_digest("a"), acme_digest("b")
    add = client.update()
    add.add(client.fqdn, 60, "TXT", f'"{a}"')
    add.add(alias, 60, "TXT", f'"{b}"')
    response, reply = await client.send(add)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.had_tsig  # and the signature verified in from_wire
    assert reply.revision > 0
    assert (await client.values())[client.fqdn] == (a,)
    assert (await client.values())[alias] == (b,)
    remove = client.update()
    remove.delete(alias, "TXT", f'"{b}"')
    remove.delete(client.fqdn, "TXT")
    response, reply = await client.send(remove)
    assert response.rcode() == dns.rcode.NOERROR
    values = await client.values()
    assert values[client.fqdn] == ()
    assert alias not in values  # the alias name exists only while it holds values


async def test_prerequisites_are_checked_atomically(channel: grpc.aio.Channel) -> None:
    client = await new_client(channel)
    a, b = acme_digest(1), acme_digest(2)
    first = client.update()
    first.present(client.fqdn, "TXT")  # RRset exists: fails, nothing is applied
    first.add(client.fqdn, 60, "TXT", f'"{a}"')
    response, reply = await client.send(first)
    assert response.rcode() == dns.rcode.NXRRSET
    assert reply.revision == 0
    assert (await client.values())[client.fqdn] == ()
    second = client.update()
    second.absent(client.fqdn, "TXT")
    second.add(client.fqdn, 60, "TXT", f'"{a}"')
    assert (await client.send(second))[0].rcode() == dns.rcode.NOERROR
    third = client.update()
    third.present(client.fqdn, "TXT", f'"{b}"')  # value-dependent: wrong value
    third.delete(client.fqdn)
    assert (await client.send(third))[0].rcode() == dns.rcode.NXRRSET
    fourth = client.update()
    fourth.absent(client.fqdn)  # name not in use: it is
    assert (await client.send(fourth))[0].rcode() == dns.rcode.YXDOMAIN
    fifth = client.update()
    fifth.present(client.fqdn, "TXT", f'"{a}"')
    fifth.delete(client.fqdn, "TXT", f'"{a}"')
    fifth.add(client.fqdn, 60, "TXT", f'"{b}"')
    assert (await client.send(fifth))[0].rcode() == dns.rcode.NOERROR
    assert (await client.values())[client.fqdn] == (b,)


async def test_other_names_types_and_zones_are_refused(channel: grpc.aio.Channel) -> None:
    client = await new_client(channel)
    other = await new_client(channel)
    cases: list[tuple[dns.update.UpdateMessage, int]] = []
    foreign = client.update()
    foreign.add(other.fqdn, 60, "TXT", f'"{acme_digest(1)}"')
    cases.append((foreign, dns.rcode.REFUSED))
    apex = client.update()
    apex.add(f"{ZONE}.", 60, "TXT", f'"{acme_digest(1)}"')
    cases.append((apex, dns.rcode.REFUSED))
    a_record = client.update()
    a_record.add(client.fqdn, 60, "A", "192.0.2.1")
    cases.append((a_record, dns.rcode.REFUSED))
    bad_value = client.update()
    bad_value.add(client.fqdn, 60, "TXT", '"not a digest"')
    cases.append((bad_value, dns.rcode.REFUSED))
    outside = client.update()
    outside.add("www.example.org.", 60, "TXT", f'"{acme_digest(1)}"')
    cases.append((outside, dns.rcode.NOTZONE))
    wrong_zone = client.update(zone="example.org")
    wrong_zone.add("www.example.org.", 60, "TXT", f'"{acme_digest(1)}"')
    cases.append((wrong_zone, dns.rcode.NOTAUTH))
    # Half allowed, half refused: nothing at all is applied.
    mixed = client.update()
    mixed.add(client.fqdn, 60, "TXT", f'"{acme_digest(2)}"')
    mixed.add(other.fqdn, 60, "TXT", f'"{acme_digest(2)}"')
    cases.append((mixed, dns.rcode.REFUSED))
    for message, rcode in cases:
        response, reply = await client.send(message)
        assert response.rcode() == rcode, message
        assert response.had_tsig
        assert reply.revision == 0
    values = await client.values()
    assert values[client.fqdn] == ()
    assert values[other.fqdn] == ()


async def test_tsig_failures_change_nothing(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="acmezone_registry.dns_updates")
    client = await new_client(channel)
    value = f'"{acme_digest(1)}"'
    # Unknown key: BADKEY, unsigned TSIG in the reply.
    stranger = dns.update.UpdateMessage(ZONE)
    stranger.use_tsig(
        {dns.name.from_text("nobody.example."): base64.b64decode(client.key.secret)},
        algorithm=dns.tsig.HMAC_SHA256,
    )
    stranger.add(client.fqdn, 60, "TXT", value)
    reply = await upd_grpc.DnsUpdateServiceStub(channel).ApplyDnsUpdate(
        upd_pb2.ApplyDnsUpdateRequest(message=stranger.to_wire(), client_address="127.0.0.1")
    )
    response = dns.message.from_wire(reply.message, keyring=False)
    assert (response.rcode(), response.tsig_error) == (dns.rcode.NOTAUTH, dns.rcode.BADKEY)
    # Wrong secret under the right name: BADSIG.
    name = dns.name.from_text(client.key.key_name)
    forged = dns.update.UpdateMessage(ZONE)
    forged.use_tsig({name: b"0" * 32}, algorithm=dns.tsig.HMAC_SHA256)
    forged.add(client.fqdn, 60, "TXT", value)
    reply = await upd_grpc.DnsUpdateServiceStub(channel).ApplyDnsUpdate(
        upd_pb2.ApplyDnsUpdateRequest(message=forged.to_wire(), client_address="127.0.0.1")
    )
    response = dns.message.from_wire(reply.message, keyring=False)
    assert (response.rcode(), response.tsig_error) == (dns.rcode.NOTAUTH, dns.rcode.BADSIG)
    # Logged as BADSIG (TSIG error 16), not as BADVERS (EDNS's meaning of 16).
    logged = [getattr(r, "tsig_error", None) for r in caplog.records]
    assert logged[-2:] == ["BADKEY", "BADSIG"]
    # Signed ten minutes ago, past the 300 s fudge: BADTIME, a signed reply carrying our clock.
    old = client.update()
    old.add(client.fqdn, 60, "TXT", value)
    old_wire = _signed_at(old, client, time.time() - 600)
    response, _ = await client.send(old, wire=old_wire, verify=False)
    assert (response.rcode(), response.tsig_error) == (dns.rcode.NOTAUTH, dns.rcode.BADTIME)
    assert response.tsig is not None
    tsig = response.tsig[0]
    assert len(tsig.mac) == 32  # signed with the key, not an empty MAC
    assert abs(int.from_bytes(tsig.other, "big") - time.time()) < 60  # our clock, for the client
    # Unsigned: REFUSED.
    unsigned = dns.update.UpdateMessage(ZONE)
    unsigned.add(client.fqdn, 60, "TXT", value)
    reply = await upd_grpc.DnsUpdateServiceStub(channel).ApplyDnsUpdate(
        upd_pb2.ApplyDnsUpdateRequest(message=unsigned.to_wire(), client_address="127.0.0.1")
    )
    assert dns.message.from_wire(reply.message).rcode() == dns.rcode.REFUSED
    assert (await client.values())[client.fqdn] == ()


def _signed_at(message: dns.message.Message, client: Client, when: float) -> bytes:
    """`message` signed as if at `when` (a recording replayed later)."""
    original = time.time
    try:
        time.time = lambda: when  # type: ignore[assignment]
        return message.to_wire()
    finally:
        time.time = original  # type: ignore[assignment]


async def test_replayed_update_is_rejected(channel: grpc.aio.Channel) -> None:
    client = await new_client(channel)
    message = client.update()
    message.add(client.fqdn, 60, "TXT", f'"{acme_digest("once")}"')
    wire = message.to_wire()
    first, _ = await client.send(message, wire=wire)
    assert first.rcode() == dns.rcode.NOERROR
    clear = client.update()
    clear.delete(client.fqdn, "TXT")
    assert (await client.send(clear))[0].rcode() == dns.rcode.NOERROR
    replay, reply = await client.send(message, wire=wire, verify=False)
    assert (replay.rcode(), replay.tsig_error) == (dns.rcode.NOTAUTH, dns.rcode.BADTIME)
    assert reply.revision == 0
    assert (await client.values())[client.fqdn] == ()


async def test_source_address_outside_allowed_cidrs_is_refused(channel: grpc.aio.Channel) -> None:
    client = await new_client(channel, cidrs=("192.0.2.0/24",))
    message = client.update()
    message.add(client.fqdn, 60, "TXT", f'"{acme_digest(1)}"')
    assert (await client.send(message, source="198.51.100.7"))[0].rcode() == dns.rcode.REFUSED
    again = client.update()
    again.add(client.fqdn, 60, "TXT", f'"{acme_digest(1)}"')
    assert (await client.send(again, source="192.0.2.7"))[0].rcode() == dns.rcode.NOERROR


async def test_deleted_key_stops_working_at_once(channel: grpc.aio.Channel) -> None:
    client = await new_client(channel)
    await key_grpc.TsigKeyServiceStub(channel).DeleteTsigKey(
        key_pb2.DeleteTsigKeyRequest(name=client.key.name)
    )
    message = client.update()
    message.add(client.fqdn, 60, "TXT", f'"{acme_digest(1)}"')
    reply = await upd_grpc.DnsUpdateServiceStub(channel).ApplyDnsUpdate(
        upd_pb2.ApplyDnsUpdateRequest(message=message.to_wire(), client_address="127.0.0.1")
    )
    response = dns.message.from_wire(reply.message, keyring=False)
    assert response.tsig_error == dns.rcode.BADKEY


async def test_malformed_messages_get_formerr_or_invalid_argument(
    channel: grpc.aio.Channel,
) -> None:
    stub = upd_grpc.DnsUpdateServiceStub(channel)
    for wire in (b"", b"\x00" * 11, b"\x00" * 70000):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.ApplyDnsUpdate(
                upd_pb2.ApplyDnsUpdateRequest(message=wire, client_address="127.0.0.1")
            )
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    garbage = b"\x12\x34\x28\x00\x00\x01\x00\x00\x00\x05\x00\x00\xff\xff"
    reply = await stub.ApplyDnsUpdate(
        upd_pb2.ApplyDnsUpdateRequest(message=garbage, client_address="127.0.0.1")
    )
    assert reply.message[:2] == b"\x12\x34"
    assert reply.rcode == dns.rcode.FORMERR
    query = dns.message.make_query("example.org", "A")
    reply = await stub.ApplyDnsUpdate(
        upd_pb2.ApplyDnsUpdateRequest(message=query.to_wire(), client_address="127.0.0.1")
    )
    assert reply.rcode == dns.rcode.NOTIMP
    with pytest.raises(grpc.aio.AioRpcError) as no_address:
        await stub.ApplyDnsUpdate(
            upd_pb2.ApplyDnsUpdateRequest(message=query.to_wire(), client_address="nowhere")
        )
    assert error_info_reason(no_address.value) == "INVALID_CLIENT_ADDRESS"


async def test_tsig_key_management(channel: grpc.aio.Channel) -> None:
    client = await new_client(channel)
    stub = key_grpc.TsigKeyServiceStub(channel)
    named = await stub.CreateTsigKey(
        key_pb2.CreateTsigKeyRequest(
            parent=client.registration.name,
            tsig_key_id="Certbot",
            tsig_key=key_pb2.TsigKey(algorithm=key_pb2.TSIG_ALGORITHM_HMAC_MD5),
        )
    )
    assert named.key_name == f"certbot.{client.fqdn}"
    assert named.name == f"{client.registration.name}/tsigKeys/certbot"
    fetched = await stub.GetTsigKey(key_pb2.GetTsigKeyRequest(name=named.name))
    assert fetched.secret == ""
    assert fetched.algorithm == key_pb2.TSIG_ALGORITHM_HMAC_MD5
    listed = await stub.ListTsigKeys(
        key_pb2.ListTsigKeysRequest(parent=client.registration.name, page_size=1)
    )
    assert [k.name for k in listed.tsig_keys] == [client.key.name]
    rest = await stub.ListTsigKeys(
        key_pb2.ListTsigKeysRequest(
            parent=client.registration.name, page_token=listed.next_page_token
        )
    )
    assert [k.name for k in rest.tsig_keys] == [named.name]
    assert rest.next_page_token == ""
    bad_requests = [
        (
            stub.CreateTsigKey(
                key_pb2.CreateTsigKeyRequest(
                    parent=client.registration.name, tsig_key=key_pb2.TsigKey()
                )
            ),
            "INVALID_TSIG_ALGORITHM",
        ),
        (
            stub.CreateTsigKey(
                key_pb2.CreateTsigKeyRequest(
                    parent=client.registration.name,
                    tsig_key_id="certbot",
                    tsig_key=key_pb2.TsigKey(algorithm=key_pb2.TSIG_ALGORITHM_HMAC_SHA256),
                )
            ),
            "TSIG_KEY_EXISTS",
        ),
        (
            stub.CreateTsigKey(
                key_pb2.CreateTsigKeyRequest(
                    parent=client.registration.name,
                    tsig_key_id="no_underscores",
                    tsig_key=key_pb2.TsigKey(algorithm=key_pb2.TSIG_ALGORITHM_HMAC_SHA256),
                )
            ),
            "INVALID_TSIG_KEY_ID",
        ),
        (stub.GetTsigKey(key_pb2.GetTsigKeyRequest(name="registrations/x/keys/y")), "INVALID_NAME"),
        (
            stub.GetTsigKey(
                key_pb2.GetTsigKeyRequest(name=f"{client.registration.name}/tsigKeys/zz")
            ),
            "TSIG_KEY_NOT_FOUND",
        ),
        (
            stub.ListTsigKeys(
                key_pb2.ListTsigKeysRequest(parent=client.registration.name, page_size=-1)
            ),
            "INVALID_PAGE_SIZE",
        ),
    ]
    for call, reason in bad_requests:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call
        assert error_info_reason(failure.value) == reason
    for _ in range(8):
        await stub.CreateTsigKey(
            key_pb2.CreateTsigKeyRequest(
                parent=client.registration.name,
                tsig_key=key_pb2.TsigKey(algorithm=key_pb2.TSIG_ALGORITHM_HMAC_SHA256),
            )
        )
    with pytest.raises(grpc.aio.AioRpcError) as too_many:
        await stub.CreateTsigKey(
            key_pb2.CreateTsigKeyRequest(
                parent=client.registration.name,
                tsig_key=key_pb2.TsigKey(algorithm=key_pb2.TSIG_ALGORITHM_HMAC_SHA256),
            )
        )
    assert too_many.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Deleting the registration deletes its keys.
    await reg_grpc.RegistrationServiceStub(channel).DeleteRegistration(
        reg_pb2.DeleteRegistrationRequest(name=client.registration.name)
    )
    message = client.update()
    message.add(client.fqdn, 60, "TXT", f'"{acme_digest(1)}"')
    reply = await upd_grpc.DnsUpdateServiceStub(channel).ApplyDnsUpdate(
        upd_pb2.ApplyDnsUpdateRequest(message=message.to_wire(), client_address="127.0.0.1")
    )
    assert dns.message.from_wire(reply.message, keyring=False).tsig_error == dns.rcode.BADKEY
