"""The gRPC contract: bad input is INVALID_ARGUMENT naming the field, auth, accounts, paging."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from acmezone.issuer.v1 import account_service_pb2 as apb
from acmezone.issuer.v1 import certificate_service_pb2 as pb
from acmezone_common.testing import error_info_reason
from tests.issuer.conftest import AUTH, CA, EAB_HMAC, EAB_KID, Client, running_issuer


def violations(error: grpc.aio.AioRpcError) -> list[str]:
    """The BadRequest field paths an error names."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    fields: list[str] = []
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return fields


@pytest.fixture
async def client(tmp_path: Path, ca: CA) -> AsyncIterator[Client]:
    async with running_issuer(tmp_path, ca) as running:
        yield running


@pytest.fixture
async def account(client: Client) -> apb.Account:
    return await client.create_account(contact_emails=["a@example.com"])


@pytest.mark.parametrize(
    ("fields", "reason", "field"),
    [
        ({"dns_names": []}, "EMPTY_DNS_NAMES", "certificate.dns_names"),
        ({"dns_names": ["bad name.example.test"]}, "INVALID_DNS_NAME", "certificate.dns_names[0]"),
        (
            {"dns_names": ["ok.example.test", "a.*.example.test"]},
            "INVALID_WILDCARD",
            "certificate.dns_names[1]",
        ),
        ({"dns_names": ["*x.example.test"]}, "INVALID_WILDCARD", "certificate.dns_names[0]"),
        ({"dns_names": ["localhost"]}, "INVALID_DNS_NAME", "certificate.dns_names[0]"),
        ({"dns_names": ["-a.example.test"]}, "INVALID_DNS_NAME", "certificate.dns_names[0]"),
        (
            {"dns_names": ["a" * 64 + ".example.test"]},
            "INVALID_DNS_NAME",
            "certificate.dns_names[0]",
        ),
        (
            {"dns_names": ["a.example.test", "A.example.test"]},
            "DUPLICATE_DNS_NAME",
            "certificate.dns_names[1]",
        ),
        (
            {"dns_names": ["*.w.example.test"], "challenge_type": pb.CHALLENGE_TYPE_HTTP_01},
            "INVALID_CHALLENGE_TYPE",
            "certificate.dns_names[0]",
        ),
        (
            {"dns_names": ["a.example.test"], "key_type": 99},
            "INVALID_KEY_TYPE",
            "certificate.key_type",
        ),
        (
            {"dns_names": ["a.example.test"], "challenge_type": 99},
            "INVALID_CHALLENGE_TYPE",
            "certificate.challenge_type",
        ),
        (
            {"dns_names": ["a.example.test"], "profile": "nonexistent"},
            "INVALID_PROFILE",
            "certificate.profile",
        ),
    ],
)
async def test_bad_certificate_is_invalid_argument_naming_the_field(
    client: Client, account: apb.Account, fields: dict[str, Any], reason: str, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.create_certificate(account=account.name, **fields)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info_reason(caught.value) == reason
    assert field in violations(caught.value)
    listed = await client.certificates.ListCertificates(pb.ListCertificatesRequest(), metadata=AUTH)
    assert list(listed.certificates) == []


@pytest.mark.parametrize("account_name", ["accounts/nobody", "nonsense", ""])
async def test_unknown_account_is_invalid_argument(client: Client, account_name: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.create_certificate(dns_names=["a.example.test"], account=account_name)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info_reason(caught.value) == "INVALID_ACCOUNT"
    assert violations(caught.value) == ["certificate.account"]


async def test_names_ids_and_paging(client: Client, account: apb.Account) -> None:
    for bad in ("certificates/", "certs/x", "certificates/UPPER"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.get(bad)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violations(caught.value) == ["name"]
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await client.get("certificates/absent")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad_id:
        await client.create_certificate(
            "Bad_Id", dns_names=["a.example.test"], account=account.name
        )
    assert violations(bad_id.value) == ["certificate_id"]

    names = []
    for index in range(5):
        created = await client.create_certificate(
            f"c{index}", dns_names=[f"c{index}.example.test"], account=account.name
        )
        names.append(created.name)
    with pytest.raises(grpc.aio.AioRpcError) as dup:
        await client.create_certificate("c0", dns_names=["x.example.test"], account=account.name)
    assert dup.value.code() == grpc.StatusCode.ALREADY_EXISTS

    seen: list[str] = []
    token = ""
    while True:
        page = await client.certificates.ListCertificates(
            pb.ListCertificatesRequest(page_size=2, page_token=token), metadata=AUTH
        )
        seen += [c.name for c in page.certificates]
        token = page.next_page_token
        if not token:
            break
    assert seen == names
    for request in (
        pb.ListCertificatesRequest(page_size=-1),
        pb.ListCertificatesRequest(page_token="garbage!"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.certificates.ListCertificates(request, metadata=AUTH)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # Accounts in use cannot be deleted; certificates can.
    with pytest.raises(grpc.aio.AioRpcError) as in_use:
        await client.accounts.DeleteAccount(
            apb.DeleteAccountRequest(name=account.name), metadata=AUTH
        )
    assert error_info_reason(in_use.value) == "ACCOUNT_IN_USE"
    for name in names:
        await client.certificates.DeleteCertificate(
            pb.DeleteCertificateRequest(name=name), metadata=AUTH
        )
    await client.accounts.DeleteAccount(apb.DeleteAccountRequest(name=account.name), metadata=AUTH)


async def test_operator_token_is_required(client: Client) -> None:
    for metadata in ((), (("authorization", "Bearer wrong"),)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.accounts.ListAccounts(apb.ListAccountsRequest(), metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_export_is_disabled_without_a_token(tmp_path: Path, ca: CA) -> None:
    async with running_issuer(tmp_path, ca, operator_token=None) as client:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.certificates.ExportCertificate(
                pb.ExportCertificateRequest(name="certificates/any")
            )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info_reason(caught.value) == "EXPORT_DISABLED"


async def test_account_options(client: Client, ca: CA) -> None:
    rsa = await client.create_account(
        key_type=apb.KEY_TYPE_RSA_2048, contact_emails=["r@example.com"]
    )
    assert rsa.key_type == apb.KEY_TYPE_RSA_2048
    assert rsa.status == apb.ACCOUNT_STATUS_VALID
    assert rsa.directory_url == ca.directory_url
    fetched = await client.accounts.GetAccount(apb.GetAccountRequest(name=rsa.name), metadata=AUTH)
    assert fetched == rsa
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"contact_emails": ["not-an-email"]}, "INVALID_CONTACT", "account.contact_emails[0]"),
        (
            {"directory_url": "http://insecure.example/dir"},
            "INVALID_DIRECTORY_URL",
            "account.directory_url",
        ),
        ({"terms_of_service_agreed": False}, "TERMS_NOT_AGREED", "account.terms_of_service_agreed"),
        (
            {"external_account_binding": apb.ExternalAccountBinding(key_id="k")},
            "INVALID_EXTERNAL_ACCOUNT_BINDING",
            "account.external_account_binding",
        ),
    ]
    for fields, reason, field in cases:
        account = apb.Account(terms_of_service_agreed=True)
        account.MergeFrom(apb.Account(**fields))
        if fields.get("terms_of_service_agreed") is False:
            account.terms_of_service_agreed = False
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.accounts.CreateAccount(
                apb.CreateAccountRequest(account=account), metadata=AUTH
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, fields
        assert error_info_reason(caught.value) == reason
        assert field in violations(caught.value)


async def test_external_account_binding(tmp_path: Path, ca: CA, eab_ca: CA) -> None:
    async with running_issuer(tmp_path, ca) as client:
        request = apb.CreateAccountRequest(
            account=apb.Account(directory_url=eab_ca.directory_url, terms_of_service_agreed=True)
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.accounts.CreateAccount(request, metadata=AUTH)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info_reason(caught.value) == "EXTERNAL_ACCOUNT_BINDING_REQUIRED"

        request.account.external_account_binding.CopyFrom(
            apb.ExternalAccountBinding(key_id=EAB_KID, hmac_key=EAB_HMAC)
        )
        account = await client.accounts.CreateAccount(request, metadata=AUTH)
        assert account.status == apb.ACCOUNT_STATUS_VALID
        assert account.external_account_binding.key_id == EAB_KID
        assert account.external_account_binding.hmac_key == ""

        request.account.external_account_binding.hmac_key = (
            "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmc"
        )
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await client.accounts.CreateAccount(request, metadata=AUTH)
        assert wrong.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info_reason(wrong.value) == "ACME_REGISTRATION_REJECTED"


async def test_watch_ends_with_not_found_when_deleted(client: Client, account: apb.Account) -> None:
    created = await client.create_certificate(
        "gone", dns_names=["gone.example.test"], account=account.name
    )
    stream = client.certificates.WatchCertificate(
        pb.WatchCertificateRequest(name=created.name), metadata=AUTH
    )
    first = await stream.read()
    assert isinstance(first, pb.WatchCertificateResponse)
    assert first.certificate.name == created.name
    await client.certificates.DeleteCertificate(
        pb.DeleteCertificateRequest(name=created.name), metadata=AUTH
    )

    async def drain() -> None:
        while await stream.read() is not grpc.aio.EOF:
            pass

    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await drain()
    assert ended.value.code() == grpc.StatusCode.NOT_FOUND


async def test_revocation_needs_a_reason_and_an_issued_certificate(
    client: Client, account: apb.Account
) -> None:
    created = await client.create_certificate(
        "unissued", dns_names=["unissued.example.test"], account=account.name
    )
    with pytest.raises(grpc.aio.AioRpcError) as no_reason:
        await client.certificates.RevokeCertificate(
            pb.RevokeCertificateRequest(name=created.name), metadata=AUTH
        )
    assert no_reason.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(no_reason.value) == ["reason"]
    with pytest.raises(grpc.aio.AioRpcError) as not_issued:
        await client.certificates.RevokeCertificate(
            pb.RevokeCertificateRequest(name=created.name, reason=pb.REVOCATION_REASON_SUPERSEDED),
            metadata=AUTH,
        )
    assert not_issued.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info_reason(not_issued.value) == "NOT_ISSUED"
    with pytest.raises(grpc.aio.AioRpcError) as no_export:
        await client.certificates.ExportCertificate(
            pb.ExportCertificateRequest(name=created.name), metadata=AUTH
        )
    assert error_info_reason(no_export.value) == "NOT_ISSUED"
    with pytest.raises(grpc.aio.AioRpcError) as bad_challenge:
        await client.create_certificate(
            dns_names=["x.example.test"], account=account.name, challenge_type=7
        )
    assert violations(bad_challenge.value) == ["certificate.challenge_type"]


@pytest.mark.parametrize(
    ("request_fields", "reason", "field"),
    [
        ({"challenge_type": pb.CHALLENGE_TYPE_HTTP_01}, "INVALID_CHALLENGE_TYPE", "challenge_type"),
        ({"challenge_type": pb.CHALLENGE_TYPE_AUTO}, "INVALID_CHALLENGE_TYPE", "challenge_type"),
        ({"challenge_type": pb.CHALLENGE_TYPE_DNS_ACCOUNT_01}, "INVALID_NAME", "account"),
        (
            {"challenge_type": pb.CHALLENGE_TYPE_DNS_ACCOUNT_01, "account": "accounts/nobody"},
            "INVALID_ACCOUNT",
            "account",
        ),
    ],
)
async def test_bad_delegation_checks_are_invalid_argument(
    client: Client, request_fields: dict[str, Any], reason: str, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.certificates.CheckDelegation(
            pb.CheckDelegationRequest(domain="example.test", **request_fields), metadata=AUTH
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info_reason(caught.value) == reason
    assert violations(caught.value) == [field]
