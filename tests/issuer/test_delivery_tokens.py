"""Delivery tokens: stored as a SHA-256 only (SQLite and PostgreSQL), and, against a running
issuer, allowed to get, watch and export exactly their certificates; refused for another
certificate and for every other RPC of the issuer (its four services); refused once deleted."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

from acmezone.issuer.v1 import (
    account_service_pb2,
    certificate_service_pb2,
    delivery_target_service_pb2,
    delivery_token_service_pb2_grpc,
)
from acmezone.issuer.v1 import certificate_service_pb2 as pb
from acmezone.issuer.v1 import delivery_token_service_pb2 as dpb
from acmezone_common.errors import AlreadyExistsError, NotFoundError, UnauthenticatedError
from acmezone_common.testing import error_info_reason
from acmezone_issuer.delivery import DeliveryTokens
from acmezone_issuer.storage.repository import Repository
from tests.issuer.conftest import AUTH, CA, Client, running_issuer
from tests.issuer.test_repository import account, certificate

ALLOWED = {
    "/acmezone.issuer.v1.CertificateService/GetCertificate",
    "/acmezone.issuer.v1.CertificateService/WatchCertificate",
    "/acmezone.issuer.v1.CertificateService/ExportCertificate",
    "/acmezone.issuer.v1.DeliveryTargetService/ReportDeliveryTarget",
}
SERVICES = [
    account_service_pb2.DESCRIPTOR.services_by_name["AccountService"],
    certificate_service_pb2.DESCRIPTOR.services_by_name["CertificateService"],
    dpb.DESCRIPTOR.services_by_name["DeliveryTokenService"],
    delivery_target_service_pb2.DESCRIPTOR.services_by_name["DeliveryTargetService"],
]


async def test_tokens_are_stored_hashed_and_authenticate(repository: Repository) -> None:
    await repository.insert_account(account())
    await repository.insert_certificate(certificate("web"))
    await repository.insert_certificate(certificate("api"))
    tokens = DeliveryTokens(repository)
    row, token = await tokens.create("fra1", ["certificates/web", "certificates/api"], "fra1")
    assert token.startswith("azdt_fra1_")
    secret = token.removeprefix("azdt_fra1_")
    assert len(secret) >= 43  # 256 bits, base64url
    stored = await repository.get_delivery_token("fra1")
    assert stored.secret_sha256 == hashlib.sha256(secret.encode()).digest()
    assert stored.certificate_ids == ["web", "api"]
    scope = await tokens.authenticate(token)
    assert scope.certificate_ids == {"web", "api"}

    for wrong in (token[:-1] + ("A" if token[-1] != "A" else "B"), "azdt_fra1_", "azdt_x_y"):
        with pytest.raises(UnauthenticatedError, match="not valid") as refused:
            await tokens.authenticate(wrong)
        assert refused.value.reason == "DELIVERY_TOKEN_INVALID"
    with pytest.raises(AlreadyExistsError):
        await tokens.create("fra1", ["certificates/web"], "")
    with pytest.raises(NotFoundError):
        await tokens.create("other", ["certificates/nope"], "")
    second, _ = await tokens.create("", ["certificates/web"], "")
    page = await repository.list_delivery_tokens("", 1)
    assert [r.id for r in page.items] == ["fra1"]
    page = await repository.list_delivery_tokens(page.next_page_token, 10)
    assert [r.id for r in page.items] == [second.id]
    assert page.next_page_token == ""
    await repository.delete_delivery_token("fra1")
    with pytest.raises(UnauthenticatedError, match="not valid"):
        await tokens.authenticate(token)
    with pytest.raises(NotFoundError):
        await repository.delete_delivery_token("fra1")
    assert row.id == "fra1"


def _request_class(method: MethodDescriptor) -> Any:
    return message_factory.GetMessageClass(method.input_type)


async def _call(channel: grpc.aio.Channel, path: str, method: MethodDescriptor, token: str) -> None:
    """Call any method with an empty (or named) request and the token; raise its error."""
    request_class = _request_class(method)
    request = request_class()
    for field in ("name", "parent"):
        if field in request_class.DESCRIPTOR.fields_by_name:
            setattr(request, field, "certificates/other")
    metadata = (("authorization", f"Bearer {token}"),)
    if method.server_streaming:
        stream = channel.unary_stream(
            path, request_serializer=request_class.SerializeToString, response_deserializer=None
        )(request, metadata=metadata, timeout=10)
        async for _ in stream:
            break
        stream.cancel()
    else:
        await channel.unary_unary(
            path, request_serializer=request_class.SerializeToString, response_deserializer=None
        )(request, metadata=metadata, timeout=10)


def channel_of(client: Client) -> grpc.aio.Channel:
    assert client.channel is not None
    return client.channel


async def _issuer_with_token(client: Client) -> tuple[str, pb.Certificate]:
    acct = await client.create_account()
    web = await client.create_certificate(
        "web",
        dns_names=["web.scope.example.test"],
        account=acct.name,
        challenge_type=pb.CHALLENGE_TYPE_HTTP_01,
    )
    await client.create_certificate(
        "other",
        dns_names=["other.scope.example.test"],
        account=acct.name,
        challenge_type=pb.CHALLENGE_TYPE_HTTP_01,
    )
    stub = delivery_token_service_pb2_grpc.DeliveryTokenServiceStub(channel_of(client))
    created = await stub.CreateDeliveryToken(
        dpb.CreateDeliveryTokenRequest(
            delivery_token=dpb.DeliveryToken(certificates=["certificates/web"], description="t"),
            delivery_token_id="web-agents",
        ),
        metadata=AUTH,
    )
    assert created.name == "deliveryTokens/web-agents"
    assert created.secret.startswith("azdt_web-agents_")
    listed = await stub.ListDeliveryTokens(dpb.ListDeliveryTokensRequest(), metadata=AUTH)
    assert [t.secret for t in listed.delivery_tokens] == [""]
    return created.secret, web


async def test_a_delivery_token_reaches_its_certificate_and_nothing_else(
    tmp_path: Path, ca: CA
) -> None:
    async with running_issuer(tmp_path, ca) as client:
        token, web = await _issuer_with_token(client)
        issued = await client.wait_for(web.name, lambda c: c.state == pb.STATE_ISSUED)
        metadata = (("authorization", f"Bearer {token}"),)
        certs = client.certificates
        got = await certs.GetCertificate(pb.GetCertificateRequest(name=web.name), metadata=metadata)
        assert got.serial_number == issued.serial_number
        bundle = await certs.ExportCertificate(
            pb.ExportCertificateRequest(name=web.name), metadata=metadata
        )
        assert "PRIVATE KEY" in bundle.private_key_pem
        stream = certs.WatchCertificate(
            pb.WatchCertificateRequest(name=web.name), metadata=metadata
        )
        async for message in stream:
            assert message.certificate.serial_number == issued.serial_number
            break
        stream.cancel()

        channel = channel_of(client)
        checked = 0
        for service in SERVICES:
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await _call(channel, path, method, token)
                assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, path
                expected = (
                    "CERTIFICATE_NOT_IN_SCOPE" if path in ALLOWED else "DELIVERY_TOKEN_NOT_ALLOWED"
                )
                assert error_info_reason(refused.value) == expected, path
                checked += 1
        assert checked == 20  # 4 account, 9 certificate, 4 delivery token, 3 delivery target

        stub = delivery_token_service_pb2_grpc.DeliveryTokenServiceStub(channel)
        await stub.DeleteDeliveryToken(
            dpb.DeleteDeliveryTokenRequest(name="deliveryTokens/web-agents"), metadata=AUTH
        )
        with pytest.raises(grpc.aio.AioRpcError) as revoked:
            await certs.ExportCertificate(
                pb.ExportCertificateRequest(name=web.name), metadata=metadata
            )
        assert revoked.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_info_reason(revoked.value) == "DELIVERY_TOKEN_INVALID"
        # The secret is nowhere in the database, only its digest.
        database = (tmp_path / "issuer.db").read_bytes()
        assert token.split("_", 2)[2].encode() not in database


async def test_delivery_tokens_need_the_operator(tmp_path: Path, ca: CA) -> None:
    async with running_issuer(tmp_path, ca) as client:
        stub = delivery_token_service_pb2_grpc.DeliveryTokenServiceStub(channel_of(client))
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await stub.ListDeliveryTokens(dpb.ListDeliveryTokensRequest())
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.CreateDeliveryToken(
                dpb.CreateDeliveryTokenRequest(delivery_token=dpb.DeliveryToken()), metadata=AUTH
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info_reason(bad.value) == "INVALID_CERTIFICATES"
    async with running_issuer(tmp_path / "open", ca, operator_token=None) as client:
        stub = delivery_token_service_pb2_grpc.DeliveryTokenServiceStub(channel_of(client))
        with pytest.raises(grpc.aio.AioRpcError) as unset:
            await stub.ListDeliveryTokens(dpb.ListDeliveryTokensRequest())
        assert unset.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info_reason(unset.value) == "OPERATOR_TOKEN_NOT_SET"
