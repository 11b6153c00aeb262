"""The issuer's errors: request errors for callers, and issuance failures for the state machine.

Request errors reuse `acmezone_common.errors` so the shared interceptor turns them into statuses
with ErrorInfo. Issuance failures never reach a caller directly: the reconciler records them in
the certificate's `last_failure` and retries with backoff. The hierarchy::

    AcmezoneError (acmezone_common.errors)      request errors, mapped to gRPC statuses
    IssuanceError                               an attempt failed; `reason` names why
    ├── AcmeProblemError                        the CA answered with a problem document
    │   └── ValidationFailedError               the CA could not validate a challenge
    ├── AcmeUnavailableError                    the CA could not be reached
    ├── RegistryError                           the registry refused or was unreachable
    └── PropagationTimeoutError                 the dns service never answered the TXT value
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from acmezone_common.errors import NotFoundError

ERROR_DOMAIN = "issuer.acmezone.dev"

# Request-error reasons (`google.rpc.ErrorInfo.reason`): stable values clients may branch on.
ACCOUNT_EXISTS = "ACCOUNT_EXISTS"
ACCOUNT_IN_USE = "ACCOUNT_IN_USE"
ACCOUNT_NOT_FOUND = "ACCOUNT_NOT_FOUND"
ACME_REGISTRATION_REJECTED = "ACME_REGISTRATION_REJECTED"
ACME_SERVER_UNAVAILABLE = "ACME_SERVER_UNAVAILABLE"
ALREADY_REVOKED = "ALREADY_REVOKED"
CERTIFICATE_EXISTS = "CERTIFICATE_EXISTS"
CERTIFICATE_NOT_FOUND = "CERTIFICATE_NOT_FOUND"
CERTIFICATE_NOT_IN_SCOPE = "CERTIFICATE_NOT_IN_SCOPE"
DELIVERY_TARGET_CONFLICT = "DELIVERY_TARGET_CONFLICT"
DELIVERY_TARGET_NOT_FOUND = "DELIVERY_TARGET_NOT_FOUND"
DELIVERY_TOKEN_EXISTS = "DELIVERY_TOKEN_EXISTS"
DELIVERY_TOKEN_INVALID = "DELIVERY_TOKEN_INVALID"
DELIVERY_TOKEN_NOT_ALLOWED = "DELIVERY_TOKEN_NOT_ALLOWED"
DELIVERY_TOKEN_NOT_FOUND = "DELIVERY_TOKEN_NOT_FOUND"
DUPLICATE_DNS_NAME = "DUPLICATE_DNS_NAME"
EMPTY_DNS_NAMES = "EMPTY_DNS_NAMES"
EXPORT_DISABLED = "EXPORT_DISABLED"
EXTERNAL_ACCOUNT_BINDING_REQUIRED = "EXTERNAL_ACCOUNT_BINDING_REQUIRED"
INVALID_ACCOUNT = "INVALID_ACCOUNT"
INVALID_CERTIFICATES = "INVALID_CERTIFICATES"
INVALID_CHALLENGE_TYPE = "INVALID_CHALLENGE_TYPE"
INVALID_CONTACT = "INVALID_CONTACT"
INVALID_DELIVERY_TARGET = "INVALID_DELIVERY_TARGET"
INVALID_DESCRIPTION = "INVALID_DESCRIPTION"
INVALID_DIRECTORY_URL = "INVALID_DIRECTORY_URL"
INVALID_DNS_NAME = "INVALID_DNS_NAME"
INVALID_DOMAIN = "INVALID_DOMAIN"
INVALID_EXTERNAL_ACCOUNT_BINDING = "INVALID_EXTERNAL_ACCOUNT_BINDING"
INVALID_KEY_TYPE = "INVALID_KEY_TYPE"
INVALID_PROFILE = "INVALID_PROFILE"
INVALID_REVOCATION_REASON = "INVALID_REVOCATION_REASON"
INVALID_WILDCARD = "INVALID_WILDCARD"
NOT_ISSUED = "NOT_ISSUED"
OPERATOR_TOKEN_INVALID = "OPERATOR_TOKEN_INVALID"
OPERATOR_TOKEN_NOT_SET = "OPERATOR_TOKEN_NOT_SET"
OPERATOR_TOKEN_REQUIRED = "OPERATOR_TOKEN_REQUIRED"
REGISTRY_UNAVAILABLE = "REGISTRY_UNAVAILABLE"
REVOCATION_REJECTED = "REVOCATION_REJECTED"
TERMS_NOT_AGREED = "TERMS_NOT_AGREED"
TOO_MANY_DNS_NAMES = "TOO_MANY_DNS_NAMES"


def certificate_not_found(certificate_id: str) -> NotFoundError:
    """NOT_FOUND for `certificates/{certificate_id}`, worded alike wherever it is raised."""
    return NotFoundError(CERTIFICATE_NOT_FOUND, f"certificates/{certificate_id} does not exist")


def account_not_found(account_id: str) -> NotFoundError:
    """NOT_FOUND for `accounts/{account_id}`."""
    return NotFoundError(ACCOUNT_NOT_FOUND, f"accounts/{account_id} does not exist")


def delivery_token_not_found(token_id: str) -> NotFoundError:
    """NOT_FOUND for `deliveryTokens/{token_id}`."""
    return NotFoundError(DELIVERY_TOKEN_NOT_FOUND, f"deliveryTokens/{token_id} does not exist")


class FailureReason(StrEnum):
    """Why an attempt failed, as shown in `Failure.reason` and the failures counter's label.

    One member per `IssuanceError` class below, so the counter can start every series at 0.
    """

    ACME_ERROR = "ACME_ERROR"
    VALIDATION_FAILED = "VALIDATION_FAILED"
    ORDER_INVALID = "ORDER_INVALID"
    ACME_SERVER_UNAVAILABLE = "ACME_SERVER_UNAVAILABLE"
    REGISTRY_ERROR = "REGISTRY_ERROR"
    PROPAGATION_TIMEOUT = "PROPAGATION_TIMEOUT"
    TIMEOUT = "TIMEOUT"
    INTERNAL = "INTERNAL"


class IssuanceError(Exception):
    """One issuance attempt failed; retried later with backoff.

    `reason` is the stable UPPER_SNAKE value shown in `Failure.reason`; `message` is the whole
    story for people, including the CA's problem document when there is one.
    """

    reason: FailureReason = FailureReason.INTERNAL

    def __init__(
        self, message: str, *, problem_type: str = "", retry_after: datetime | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.problem_type = problem_type
        # When the CA said to come back (Retry-After on a rateLimited answer, for instance).
        self.retry_after = retry_after


class AcmeProblemError(IssuanceError):
    """The CA refused a request with an RFC 7807 problem document."""

    reason = FailureReason.ACME_ERROR


class ValidationFailedError(AcmeProblemError):
    """The CA tried a challenge and it failed (wrong TXT value, unreachable HTTP port, ...)."""

    reason = FailureReason.VALIDATION_FAILED


class OrderInvalidError(AcmeProblemError):
    """The CA marked the order invalid."""

    reason = FailureReason.ORDER_INVALID


class AcmeUnavailableError(IssuanceError):
    """The CA did not answer (connection refused, timeout, 5xx)."""

    reason = FailureReason.ACME_SERVER_UNAVAILABLE


class RegistryError(IssuanceError):
    """The registry refused a call or could not be reached."""

    reason = FailureReason.REGISTRY_ERROR


class PropagationTimeoutError(IssuanceError):
    """The published TXT values were not answered by DNS in time."""

    reason = FailureReason.PROPAGATION_TIMEOUT


class OrderTimeoutError(IssuanceError):
    """The CA did not finish validating or issuing within the configured time."""

    reason = FailureReason.TIMEOUT
