"""DnsUpdateService.SignDnsResponse over real gRPC: the dns service's answer to a TSIG-signed
query comes back signed with the query's key (verified by dnspython as a client would), bad
signatures get NOTAUTH with the TSIG error, and malformed input is INVALID_ARGUMENT."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.tsig
import grpc
import pytest

from acmezone.registry.v1 import dns_update_service_pb2 as upd_pb2
from acmezone.registry.v1 import dns_update_service_pb2_grpc as upd_grpc
from acmezone.registry.v1 import tsig_key_service_pb2 as key_pb2
from acmezone_common.testing import error_info_reason
from tests.registry.test_dns_updates import channel, new_client, registry

__all__ = ["channel", "registry"]


def answer_to(query: dns.message.Message) -> bytes:
    """An unsigned answer as the dns service would give it."""
    response = dns.message.Message(id=query.id)
    response.flags = dns.flags.QR | dns.flags.AA
    response.question = list(query.question)
    return response.to_wire()


async def sign(
    channel: grpc.aio.Channel, query: bytes, response: bytes
) -> upd_pb2.SignDnsResponseResponse:
    return await upd_grpc.DnsUpdateServiceStub(channel).SignDnsResponse(
        upd_pb2.SignDnsResponseRequest(query=query, response=response, client_address="::1")
    )


@pytest.mark.parametrize(
    "algorithm", [key_pb2.TSIG_ALGORITHM_HMAC_SHA256, key_pb2.TSIG_ALGORITHM_HMAC_MD5]
)
async def test_answer_to_a_signed_query_is_signed(
    channel: grpc.aio.Channel, algorithm: int
) -> None:
    client = await new_client(channel, algorithm)
    query = dns.message.make_query("acme.example.test", "SOA")
    query.use_tsig(client.keyring())
    wire = query.to_wire()
    reply = await sign(channel, wire, answer_to(query))
    signed = dns.message.from_wire(reply.message, keyring=client.keyring(), request_mac=query.mac)
    assert signed.had_tsig
    assert signed.id == query.id
    assert reply.rcode == dns.rcode.NOERROR
    # Tampered query: BADSIG, unsigned.
    tampered = bytearray(wire)
    tampered[-20] ^= 1
    reply = await sign(channel, bytes(tampered), answer_to(query))
    failed = dns.message.from_wire(reply.message, keyring=False)
    assert (failed.rcode(), failed.tsig_error) == (dns.rcode.NOTAUTH, dns.rcode.BADSIG)


async def test_unsigned_query_gets_its_answer_back_unchanged(channel: grpc.aio.Channel) -> None:
    query = dns.message.make_query("acme.example.test", "SOA")
    answer = answer_to(query)
    assert (await sign(channel, query.to_wire(), answer)).message == answer


async def test_malformed_input_is_invalid_argument(channel: grpc.aio.Channel) -> None:
    query = dns.message.make_query("acme.example.test", "SOA")
    other = dns.message.make_query("acme.example.test", "SOA")
    other.id = (query.id + 1) % 65536
    for response in (b"", b"\x00" * 11, b"\xff" * 40, answer_to(other)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sign(channel, query.to_wire(), response)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info_reason(caught.value) == "INVALID_DNS_MESSAGE"
