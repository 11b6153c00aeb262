"""gRPC servicers: translate protobuf to domain calls and domain rows back to protobuf.

Nothing here decides anything about ACME; errors are the domain's `AcmezoneError`s, which the
shared interceptor turns into statuses with ErrorInfo.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from datetime import UTC
from typing import Any

import grpc
from google.protobuf import empty_pb2
from typing_extensions import override

from acmezone.issuer.v1 import (
    account_service_pb2,
    account_service_pb2_grpc,
    certificate_service_pb2,
    certificate_service_pb2_grpc,
    delivery_target_service_pb2,
    delivery_target_service_pb2_grpc,
    delivery_token_service_pb2,
    delivery_token_service_pb2_grpc,
)
from acmezone_common.errors import (
    INVALID_NAME,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
)
from acmezone_common.names import check_resource_id, parse_resource_name
from acmezone_common.paging import page_size
from acmezone_common.sql import utcnow
from acmezone_common.timestamps import optional_timestamp
from acmezone_issuer import errors
from acmezone_issuer.accounts import AccountManager
from acmezone_issuer.acme_client import AcmeStatus
from acmezone_issuer.certificates import REVOCATION_REASONS, CertificateManager
from acmezone_issuer.challenges import DNS_METHODS, ChallengeType, dns_account_label
from acmezone_issuer.conditions import ConditionStatus
from acmezone_issuer.delivery import DeliveryTokens, is_delivery_token
from acmezone_issuer.errors import IssuanceError
from acmezone_issuer.events import CertificateEvents
from acmezone_issuer.fleet import DeliveryTargets, Report
from acmezone_issuer.keys import DEFAULT_KEY_TYPE, KeyType
from acmezone_issuer.names import base_domain, dns_name_problem
from acmezone_issuer.solvers.dns01 import Dns01Solver
from acmezone_issuer.states import CertificateState, Stage
from acmezone_issuer.storage.repository import Repository
from acmezone_issuer.storage.tables import (
    AccountRow,
    CertificateRow,
    DeliveryTargetRow,
    DeliveryTokenRow,
)

logger = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]

_KEY_TYPES = {
    account_service_pb2.KEY_TYPE_ECDSA_P256: KeyType.ECDSA_P256,
    account_service_pb2.KEY_TYPE_ECDSA_P384: KeyType.ECDSA_P384,
    account_service_pb2.KEY_TYPE_RSA_2048: KeyType.RSA_2048,
    account_service_pb2.KEY_TYPE_RSA_4096: KeyType.RSA_4096,
}
_KEY_TYPE_ENUM = {v: k for k, v in _KEY_TYPES.items()}
_CHALLENGES = {
    certificate_service_pb2.CHALLENGE_TYPE_DNS_01: ChallengeType.DNS01,
    certificate_service_pb2.CHALLENGE_TYPE_HTTP_01: ChallengeType.HTTP01,
    certificate_service_pb2.CHALLENGE_TYPE_DNS_ACCOUNT_01: ChallengeType.DNS_ACCOUNT01,
    certificate_service_pb2.CHALLENGE_TYPE_AUTO: ChallengeType.AUTO,
    certificate_service_pb2.CHALLENGE_TYPE_DNS_PERSIST_01: ChallengeType.DNS_PERSIST01,
}
_CHALLENGE_ENUM = {v: k for k, v in _CHALLENGES.items()}
_ACCOUNT_STATUS: dict[str, account_service_pb2.AccountStatus.ValueType] = {
    AcmeStatus.VALID: account_service_pb2.ACCOUNT_STATUS_VALID,
    AcmeStatus.DEACTIVATED: account_service_pb2.ACCOUNT_STATUS_DEACTIVATED,
    AcmeStatus.REVOKED: account_service_pb2.ACCOUNT_STATUS_REVOKED,
}
_REVOCATION = {
    certificate_service_pb2.REVOCATION_REASON_NONE_GIVEN: "none_given",
    certificate_service_pb2.REVOCATION_REASON_KEY_COMPROMISE: "key_compromise",
    certificate_service_pb2.REVOCATION_REASON_AFFILIATION_CHANGED: "affiliation_changed",
    certificate_service_pb2.REVOCATION_REASON_SUPERSEDED: "superseded",
    certificate_service_pb2.REVOCATION_REASON_CESSATION_OF_OPERATION: "cessation_of_operation",
}
_CONDITION_STATUS: dict[str, certificate_service_pb2.ConditionStatus.ValueType] = {
    ConditionStatus.TRUE: certificate_service_pb2.CONDITION_STATUS_TRUE,
    ConditionStatus.FALSE: certificate_service_pb2.CONDITION_STATUS_FALSE,
}
_WATCH_RECHECK_SECONDS = 1.0


# The stored states and stages are the proto names without their prefix (see `states`); an
# enum member without a proto value fails here, at import, rather than in a response.
_STATE = {
    state: certificate_service_pb2.State.Value(f"STATE_{state.name}") for state in CertificateState
}
_STAGE = {
    stage: certificate_service_pb2.Stage.Value(f"STAGE_{stage.name}")
    for stage in Stage
    if stage != Stage.NONE
} | {Stage.NONE: certificate_service_pb2.STAGE_UNSPECIFIED}


class Authorizer:
    """Checks `authorization: Bearer <token>`: the operator token on every method when one is
    configured, and delivery tokens (`azdt_...`), scoped to certificates, on the few methods a
    delivery agent needs (`check_certificate`); a delivery token anywhere else is
    PERMISSION_DENIED, without a database query."""

    def __init__(self, token: str | None, delivery: DeliveryTokens | None = None) -> None:
        self._token = token.encode() if token else None
        self._delivery = delivery

    @property
    def configured(self) -> bool:
        """Whether an operator token is configured."""
        return self._token is not None

    @staticmethod
    def _presented(context: Context) -> str:
        presented = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                presented = value
        return presented

    @staticmethod
    def _bearer(presented: str) -> str | None:
        scheme, _, token = presented.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None

    def check(self, context: Context) -> None:
        """Raise UNAUTHENTICATED unless the call carries the operator token (or none is
        configured), PERMISSION_DENIED for a delivery token."""
        presented = self._presented(context)
        bearer = self._bearer(presented)
        if bearer is not None and is_delivery_token(bearer):
            raise PermissionDeniedError(
                errors.DELIVERY_TOKEN_NOT_ALLOWED,
                "a delivery token may only get, watch and export its certificates",
            )
        if self._token is None:
            return
        if not presented:
            raise UnauthenticatedError(
                errors.OPERATOR_TOKEN_REQUIRED, "this issuer needs `authorization: Bearer <token>`"
            )
        if bearer is None or not hmac.compare_digest(bearer.encode(), self._token):
            raise UnauthenticatedError(errors.OPERATOR_TOKEN_INVALID, "the operator token is wrong")

    async def check_certificate(self, context: Context, certificate_id: str) -> None:
        """Like `check`, but a delivery token whose scope holds the certificate passes too."""
        bearer = self._bearer(self._presented(context))
        if bearer is None or not is_delivery_token(bearer) or self._delivery is None:
            self.check(context)
            return
        scope = await self._delivery.authenticate(bearer)
        if certificate_id not in scope.certificate_ids:
            raise PermissionDeniedError(
                errors.CERTIFICATE_NOT_IN_SCOPE,
                f"delivery token {scope.token_id} does not cover certificates/{certificate_id}",
            )


def account_to_proto(row: AccountRow) -> account_service_pb2.Account:
    """The Account message for a stored account (no secrets)."""
    account = account_service_pb2.Account(
        name=f"accounts/{row.id}",
        directory_url=row.directory_url,
        contact_emails=row.contact_emails,
        terms_of_service_agreed=row.terms_agreed,
        terms_of_service_url=row.terms_url,
        key_type=_KEY_TYPE_ENUM[KeyType(row.key_type)],
        account_url=row.account_url,
        dns_account_label=dns_account_label(row.account_url) if row.account_url else "",
        status=_ACCOUNT_STATUS.get(row.status, account_service_pb2.ACCOUNT_STATUS_UNSPECIFIED),
        create_time=optional_timestamp(row.create_time),
    )
    if row.eab_key_id:
        account.external_account_binding.key_id = row.eab_key_id
    return account


def certificate_to_proto(row: CertificateRow) -> certificate_service_pb2.Certificate:
    """The Certificate message for a stored certificate (no key material)."""
    pb = certificate_service_pb2
    cert = pb.Certificate(
        name=f"certificates/{row.id}",
        dns_names=row.dns_names,
        account=f"accounts/{row.account_id}",
        key_type=_KEY_TYPE_ENUM[KeyType(row.key_type)],
        profile=row.profile,
        challenge_type=_CHALLENGE_ENUM[ChallengeType(row.challenge_type)],
        state=_STATE[CertificateState(row.state)],
        stage=_STAGE[Stage(row.stage)],
        failed_attempts=row.failed_attempts,
        next_attempt_time=optional_timestamp(row.next_attempt_time),
        order_url=row.order_url,
        serial_number=row.serial_number,
        not_before_time=optional_timestamp(row.not_before),
        not_after_time=optional_timestamp(row.not_after),
        renewal_time=optional_timestamp(row.renewal_time),
        renewal_time_source=row.renewal_source,
        issue_time=optional_timestamp(row.issue_time),
        revoke_time=optional_timestamp(row.revoke_time),
        revision=row.revision,
        create_time=optional_timestamp(row.create_time),
        update_time=optional_timestamp(row.update_time),
    )
    for condition in row.conditions or []:
        cert.conditions.append(
            pb.Condition(
                type=condition["type"],
                status=_CONDITION_STATUS.get(condition["status"], pb.CONDITION_STATUS_UNKNOWN),
                reason=condition["reason"],
                message=condition["message"],
                last_transition_time=optional_timestamp(condition["last_transition_time"]),
            )
        )
    for delegation in row.delegations or []:
        cert.delegations.append(
            pb.Delegation(
                domain=delegation["domain"],
                cname_name=delegation["cname_name"],
                cname_target=delegation["cname_target"],
                ready=delegation["ready"],
                detail=delegation["detail"],
                check_time=optional_timestamp(delegation["check_time"]),
                challenge_type=_CHALLENGE_ENUM[
                    ChallengeType(delegation.get("challenge_type", ChallengeType.DNS01))
                ],
                txt_value=delegation.get("txt_value", ""),
                persist_until_time=optional_timestamp(delegation.get("persist_until")),
            )
        )
    if row.last_failure:
        failure = row.last_failure
        cert.last_failure.CopyFrom(
            pb.Failure(
                time=optional_timestamp(failure["time"]),
                stage=_STAGE[Stage(failure.get("stage", ""))],
                reason=failure["reason"],
                message=failure["message"],
                acme_problem_type=failure.get("acme_problem_type", ""),
            )
        )
    return cert


class AccountServicer(account_service_pb2_grpc.AccountServiceServicer):
    """acmezone.issuer.v1.AccountService."""

    def __init__(self, repository: Repository, accounts: AccountManager, auth: Authorizer) -> None:
        self._repository = repository
        self._accounts = accounts
        self._auth = auth

    @override
    async def CreateAccount(
        self, request: account_service_pb2.CreateAccountRequest, context: Context
    ) -> account_service_pb2.Account:
        self._auth.check(context)
        account = request.account
        key_type = (
            DEFAULT_KEY_TYPE
            if account.key_type == account_service_pb2.KEY_TYPE_UNSPECIFIED
            else _KEY_TYPES.get(account.key_type)
        )
        if key_type is None:
            raise InvalidArgumentError(
                errors.INVALID_KEY_TYPE,
                f"unknown key type {account.key_type}",
                field="account.key_type",
            )
        row = await self._accounts.create(
            account_id=request.account_id,
            directory_url=account.directory_url,
            emails=list(account.contact_emails),
            terms_agreed=account.terms_of_service_agreed,
            key_type=key_type,
            eab_key_id=account.external_account_binding.key_id,
            eab_hmac_key=account.external_account_binding.hmac_key,
        )
        return account_to_proto(row)

    @override
    async def GetAccount(
        self, request: account_service_pb2.GetAccountRequest, context: Context
    ) -> account_service_pb2.Account:
        self._auth.check(context)
        account_id = parse_resource_name(request.name, "accounts", "name")
        return account_to_proto(await self._repository.get_account(account_id))

    @override
    async def ListAccounts(
        self, request: account_service_pb2.ListAccountsRequest, context: Context
    ) -> account_service_pb2.ListAccountsResponse:
        self._auth.check(context)
        limit = page_size(request.page_size)
        page = await self._repository.list_accounts(request.page_token, limit)
        return account_service_pb2.ListAccountsResponse(
            accounts=[account_to_proto(r) for r in page.items],
            next_page_token=page.next_page_token,
        )

    @override
    async def DeleteAccount(
        self, request: account_service_pb2.DeleteAccountRequest, context: Context
    ) -> empty_pb2.Empty:
        self._auth.check(context)
        account_id = parse_resource_name(request.name, "accounts", "name")
        await self._repository.delete_account(account_id)
        self._accounts.forget(account_id)
        return empty_pb2.Empty()


class CertificateServicer(certificate_service_pb2_grpc.CertificateServiceServicer):
    """acmezone.issuer.v1.CertificateService."""

    def __init__(
        self,
        repository: Repository,
        certificates: CertificateManager,
        dns01: Dns01Solver,
        events: CertificateEvents,
        auth: Authorizer,
    ) -> None:
        self._repository = repository
        self._certificates = certificates
        self._dns01 = dns01
        self._events = events
        self._auth = auth

    @override
    async def CreateCertificate(
        self, request: certificate_service_pb2.CreateCertificateRequest, context: Context
    ) -> certificate_service_pb2.Certificate:
        self._auth.check(context)
        cert = request.certificate
        account_id: str | None
        try:
            account_id = parse_resource_name(cert.account, "accounts", "certificate.account")
        except InvalidArgumentError:
            account_id = None
        key_type = (
            DEFAULT_KEY_TYPE
            if cert.key_type == account_service_pb2.KEY_TYPE_UNSPECIFIED
            else _KEY_TYPES.get(cert.key_type, f"unknown({cert.key_type})")
        )
        challenge = (
            ChallengeType.DNS01
            if cert.challenge_type == certificate_service_pb2.CHALLENGE_TYPE_UNSPECIFIED
            else _CHALLENGES.get(cert.challenge_type, f"unknown({cert.challenge_type})")
        )
        row = await self._certificates.create(
            certificate_id=request.certificate_id,
            dns_names=list(cert.dns_names),
            account_id=account_id,
            key_type=key_type,
            challenge_type=challenge,
            profile=cert.profile,
        )
        return certificate_to_proto(row)

    @override
    async def GetCertificate(
        self, request: certificate_service_pb2.GetCertificateRequest, context: Context
    ) -> certificate_service_pb2.Certificate:
        certificate_id = parse_resource_name(request.name, "certificates", "name")
        await self._auth.check_certificate(context, certificate_id)
        return certificate_to_proto(await self._repository.get_certificate(certificate_id))

    @override
    async def ListCertificates(
        self, request: certificate_service_pb2.ListCertificatesRequest, context: Context
    ) -> certificate_service_pb2.ListCertificatesResponse:
        self._auth.check(context)
        limit = page_size(request.page_size)
        page = await self._repository.list_certificates(request.page_token, limit)
        return certificate_service_pb2.ListCertificatesResponse(
            certificates=[certificate_to_proto(r) for r in page.items],
            next_page_token=page.next_page_token,
        )

    @override
    async def DeleteCertificate(
        self, request: certificate_service_pb2.DeleteCertificateRequest, context: Context
    ) -> empty_pb2.Empty:
        self._auth.check(context)
        await self._certificates.delete(parse_resource_name(request.name, "certificates", "name"))
        return empty_pb2.Empty()

    @override
    async def RenewCertificate(
        self, request: certificate_service_pb2.RenewCertificateRequest, context: Context
    ) -> certificate_service_pb2.Certificate:
        self._auth.check(context)
        row = await self._certificates.renew(
            parse_resource_name(request.name, "certificates", "name")
        )
        return certificate_to_proto(row)

    @override
    async def RevokeCertificate(
        self, request: certificate_service_pb2.RevokeCertificateRequest, context: Context
    ) -> certificate_service_pb2.Certificate:
        self._auth.check(context)
        certificate_id = parse_resource_name(request.name, "certificates", "name")
        reason = _REVOCATION.get(request.reason)
        if reason is None:
            raise InvalidArgumentError(
                errors.INVALID_REVOCATION_REASON, "a revocation reason is required", field="reason"
            )
        row = await self._certificates.revoke(certificate_id, REVOCATION_REASONS[reason])
        return certificate_to_proto(row)

    @override
    async def WatchCertificate(
        self, request: certificate_service_pb2.WatchCertificateRequest, context: Context
    ) -> AsyncIterator[certificate_service_pb2.WatchCertificateResponse]:
        certificate_id = parse_resource_name(request.name, "certificates", "name")
        await self._auth.check_certificate(context, certificate_id)
        last_revision = -1
        while True:
            row = await self._repository.find_certificate(certificate_id)
            if row is None:
                raise errors.certificate_not_found(certificate_id)
            if row.revision != last_revision:
                if last_revision != -1:
                    # A delivery token revoked mid-stream stops the stream at the next change.
                    await self._auth.check_certificate(context, certificate_id)
                last_revision = row.revision
                yield certificate_service_pb2.WatchCertificateResponse(
                    certificate=certificate_to_proto(row)
                )
            await self._events.wait(_WATCH_RECHECK_SECONDS)

    @override
    async def ExportCertificate(
        self, request: certificate_service_pb2.ExportCertificateRequest, context: Context
    ) -> certificate_service_pb2.CertificateBundle:
        if not self._auth.configured:
            raise FailedPreconditionError(
                errors.EXPORT_DISABLED,
                "exporting private keys needs an operator token configured on the issuer",
            )
        certificate_id = parse_resource_name(request.name, "certificates", "name")
        await self._auth.check_certificate(context, certificate_id)
        row, key_pem = await self._certificates.export(certificate_id)
        logger.info("certificate exported", extra={"certificate": certificate_id})
        return certificate_service_pb2.CertificateBundle(
            name=f"certificates/{certificate_id}",
            certificate_chain_pem=row.chain_pem,
            private_key_pem=key_pem,
            not_after_time=optional_timestamp(row.not_after),
        )

    @override
    async def CheckDelegation(
        self, request: certificate_service_pb2.CheckDelegationRequest, context: Context
    ) -> certificate_service_pb2.Delegation:
        self._auth.check(context)
        domain = base_domain(request.domain.strip().lower().rstrip("."))
        problem = dns_name_problem(domain)
        if problem is not None:
            raise InvalidArgumentError(
                errors.INVALID_DOMAIN, f"{request.domain!r}: {problem}", field="domain"
            )
        method = (
            ChallengeType.DNS01
            if request.challenge_type == certificate_service_pb2.CHALLENGE_TYPE_UNSPECIFIED
            else _CHALLENGES.get(request.challenge_type)
        )
        if method not in DNS_METHODS:
            raise InvalidArgumentError(
                errors.INVALID_CHALLENGE_TYPE,
                "only dns-01 and dns-account-01 are checked here (a dns-persist-01 "
                "certificate shows its record in its delegations)",
                field="challenge_type",
            )
        account_url = ""
        if method == ChallengeType.DNS_ACCOUNT01:
            account_id = parse_resource_name(request.account, "accounts", "account")
            try:
                account_url = (await self._repository.get_account(account_id)).account_url
            except NotFoundError as exc:
                raise InvalidArgumentError(
                    errors.INVALID_ACCOUNT, f"{request.account} does not exist", field="account"
                ) from exc
        try:
            check = await self._dns01.check(domain, method, account_url)
        except IssuanceError as exc:
            raise UnavailableError(errors.REGISTRY_UNAVAILABLE, exc.message) from exc
        return certificate_service_pb2.Delegation(
            domain=check.domain,
            cname_name=check.cname_name,
            cname_target=check.cname_target,
            ready=check.ready,
            detail=check.detail,
            challenge_type=_CHALLENGE_ENUM[check.method],
            check_time=optional_timestamp(utcnow()),
        )


def delivery_token_to_proto(
    row: DeliveryTokenRow, secret: str = ""
) -> delivery_token_service_pb2.DeliveryToken:
    """The DeliveryToken message; `secret` only in CreateDeliveryToken's response."""
    return delivery_token_service_pb2.DeliveryToken(
        name=f"deliveryTokens/{row.id}",
        certificates=[f"certificates/{c}" for c in row.certificate_ids],
        description=row.description,
        secret=secret,
        create_time=optional_timestamp(row.create_time),
    )


class DeliveryTokenServicer(delivery_token_service_pb2_grpc.DeliveryTokenServiceServicer):
    """DeliveryTokenService: operator-only management of delivery tokens."""

    def __init__(self, repository: Repository, tokens: DeliveryTokens, auth: Authorizer) -> None:
        self._repository = repository
        self._tokens = tokens
        self._auth = auth

    def _check(self, context: Context) -> None:
        if not self._auth.configured:
            raise FailedPreconditionError(
                errors.OPERATOR_TOKEN_NOT_SET,
                "delivery tokens need an operator token configured on the issuer",
            )
        self._auth.check(context)

    @override
    async def CreateDeliveryToken(
        self, request: delivery_token_service_pb2.CreateDeliveryTokenRequest, context: Context
    ) -> delivery_token_service_pb2.DeliveryToken:
        self._check(context)
        token = request.delivery_token
        row, secret = await self._tokens.create(
            request.delivery_token_id, list(token.certificates), token.description
        )
        return delivery_token_to_proto(row, secret)

    @override
    async def GetDeliveryToken(
        self, request: delivery_token_service_pb2.GetDeliveryTokenRequest, context: Context
    ) -> delivery_token_service_pb2.DeliveryToken:
        self._check(context)
        token_id = parse_resource_name(request.name, "deliveryTokens", "name")
        return delivery_token_to_proto(await self._repository.get_delivery_token(token_id))

    @override
    async def ListDeliveryTokens(
        self, request: delivery_token_service_pb2.ListDeliveryTokensRequest, context: Context
    ) -> delivery_token_service_pb2.ListDeliveryTokensResponse:
        self._check(context)
        limit = page_size(request.page_size)
        page = await self._repository.list_delivery_tokens(request.page_token, limit)
        return delivery_token_service_pb2.ListDeliveryTokensResponse(
            delivery_tokens=[delivery_token_to_proto(r) for r in page.items],
            next_page_token=page.next_page_token,
        )

    @override
    async def DeleteDeliveryToken(
        self, request: delivery_token_service_pb2.DeleteDeliveryTokenRequest, context: Context
    ) -> empty_pb2.Empty:
        self._check(context)
        token_id = parse_resource_name(request.name, "deliveryTokens", "name")
        await self._repository.delete_delivery_token(token_id)
        logger.info("delivery token deleted", extra={"token": token_id})
        return empty_pb2.Empty()


_HOOK_RESULTS = {
    delivery_target_service_pb2.HOOK_RESULT_NONE: "none",
    delivery_target_service_pb2.HOOK_RESULT_SUCCEEDED: "success",
    delivery_target_service_pb2.HOOK_RESULT_FAILED: "failure",
    delivery_target_service_pb2.HOOK_RESULT_TIMED_OUT: "timeout",
}
_HOOK_RESULT_ENUM = {v: k for k, v in _HOOK_RESULTS.items()}


def delivery_target_to_proto(
    row: DeliveryTargetRow, current_serial: str
) -> delivery_target_service_pb2.DeliveryTarget:
    """The DeliveryTarget message, `current` against the certificate's serial."""
    return delivery_target_service_pb2.DeliveryTarget(
        name=f"certificates/{row.certificate_id}/deliveryTargets/{row.target_id}",
        host=row.host,
        directory=row.directory,
        serial_number=row.serial_number,
        not_after_time=optional_timestamp(row.not_after),
        install_time=optional_timestamp(row.install_time),
        hook_result=_HOOK_RESULT_ENUM.get(
            row.hook_result, delivery_target_service_pb2.HOOK_RESULT_UNSPECIFIED
        ),
        hook_exit_code=row.hook_exit_code,
        hook_output_tail=row.hook_output_tail,
        report_time=optional_timestamp(row.report_time),
        current=bool(current_serial) and row.serial_number == current_serial,
    )


class DeliveryTargetServicer(delivery_target_service_pb2_grpc.DeliveryTargetServiceServicer):
    """DeliveryTargetService: agents report installs, operators list them."""

    def __init__(self, repository: Repository, targets: DeliveryTargets, auth: Authorizer) -> None:
        self._repository = repository
        self._targets = targets
        self._auth = auth

    @override
    async def ReportDeliveryTarget(
        self, request: delivery_target_service_pb2.ReportDeliveryTargetRequest, context: Context
    ) -> delivery_target_service_pb2.DeliveryTarget:
        certificate_id = parse_resource_name(request.parent, "certificates", "parent")
        await self._auth.check_certificate(context, certificate_id)
        target = request.delivery_target
        row, current = await self._targets.report(
            Report(
                certificate_id=certificate_id,
                target_id=request.delivery_target_id,
                host=target.host,
                directory=target.directory,
                serial_number=target.serial_number,
                not_after=target.not_after_time.ToDatetime(UTC)
                if target.HasField("not_after_time")
                else None,
                install_time=target.install_time.ToDatetime(UTC)
                if target.HasField("install_time")
                else None,
                hook_result=_HOOK_RESULTS.get(target.hook_result),
                hook_exit_code=target.hook_exit_code,
                hook_output_tail=target.hook_output_tail,
            )
        )
        return delivery_target_to_proto(row, row.serial_number if current else "")

    @override
    async def ListDeliveryTargets(
        self, request: delivery_target_service_pb2.ListDeliveryTargetsRequest, context: Context
    ) -> delivery_target_service_pb2.ListDeliveryTargetsResponse:
        self._auth.check(context)
        certificate_id = parse_resource_name(request.parent, "certificates", "parent")
        certificate = await self._repository.get_certificate(certificate_id)
        limit = page_size(request.page_size)
        page = await self._repository.list_delivery_targets(
            certificate_id, request.page_token, limit
        )
        return delivery_target_service_pb2.ListDeliveryTargetsResponse(
            delivery_targets=[
                delivery_target_to_proto(r, certificate.serial_number) for r in page.items
            ],
            next_page_token=page.next_page_token,
        )

    @override
    async def DeleteDeliveryTarget(
        self, request: delivery_target_service_pb2.DeleteDeliveryTargetRequest, context: Context
    ) -> empty_pb2.Empty:
        self._auth.check(context)
        certificate_id, target_id = parse_target_name(request.name)
        await self._repository.delete_delivery_target(certificate_id, target_id)
        logger.info(
            "delivery target deleted", extra={"certificate": certificate_id, "target": target_id}
        )
        return empty_pb2.Empty()


def parse_target_name(name: str) -> tuple[str, str]:
    """`certificates/a/deliveryTargets/b` -> ("a", "b"), or INVALID_ARGUMENT."""
    parent, sep, target = name.partition("/deliveryTargets/")
    if not sep:
        raise InvalidArgumentError(
            INVALID_NAME,
            f"{name!r}: expected certificates/{{id}}/deliveryTargets/{{id}}",
            field="name",
        )
    certificate_id = parse_resource_name(parent, "certificates", "name")
    check_resource_id(target, "name")
    return certificate_id, target
