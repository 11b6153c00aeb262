"""Domain errors shared by every acmezone service.

Domain code raises these and never imports grpc; the server interceptor
(`acmezone_common.interceptors`) turns each into a canonical gRPC status carrying a
`google.rpc.ErrorInfo` (and `google.rpc.BadRequest` field violations), and an HTTP front end can
map the same objects to its own bodies. The hierarchy::

    AcmezoneError                  a code, an UPPER_SNAKE reason and a message for people
    ├── InvalidArgumentError       INVALID_ARGUMENT, with the offending fields
    ├── NotFoundError              NOT_FOUND
    ├── AlreadyExistsError         ALREADY_EXISTS
    ├── UnauthenticatedError       UNAUTHENTICATED
    ├── PermissionDeniedError      PERMISSION_DENIED
    ├── FailedPreconditionError    FAILED_PRECONDITION
    ├── AbortedError               ABORTED
    ├── OutOfRangeError            OUT_OF_RANGE
    ├── ResourceExhaustedError     RESOURCE_EXHAUSTED
    └── UnavailableError           UNAVAILABLE
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class ErrorCode(enum.Enum):
    """The canonical status codes domain errors may carry; names match `grpc.StatusCode`."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"


# Reasons every service raises alike (AIP-158 paging, AIP-122 resource names); a service's own
# reasons are constants in its `errors.py`.
INVALID_PAGE_SIZE = "INVALID_PAGE_SIZE"
INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"
INVALID_NAME = "INVALID_NAME"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: `field` is a dotted path such as `registration.allowed_cidrs`."""

    field: str
    description: str


class AcmezoneError(Exception):
    """A failure the caller can understand and act on, as opposed to a bug.

    `reason` is a stable UPPER_SNAKE identifier clients may branch on; `message` is for people
    and may change; `metadata` adds machine-readable context (never secrets).
    """

    code: ErrorCode = ErrorCode.FAILED_PRECONDITION

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations: tuple[FieldViolation, ...] = tuple(field_violations)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, {self.message!r})"


class InvalidArgumentError(AcmezoneError):
    """The request itself is wrong; retrying it unchanged will fail again."""

    code = ErrorCode.INVALID_ARGUMENT

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        field: str | None = None,
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
    ) -> None:
        violations = list(field_violations)
        if field is not None:
            violations.insert(0, FieldViolation(field, message))
        super().__init__(reason, message, metadata=metadata, field_violations=violations)


class NotFoundError(AcmezoneError):
    """The named resource does not exist (or the caller may not know that it does)."""

    code = ErrorCode.NOT_FOUND


class AlreadyExistsError(AcmezoneError):
    """A resource with that identity exists already."""

    code = ErrorCode.ALREADY_EXISTS


class UnauthenticatedError(AcmezoneError):
    """Credentials are missing or wrong."""

    code = ErrorCode.UNAUTHENTICATED


class PermissionDeniedError(AcmezoneError):
    """The caller is known but may not do this."""

    code = ErrorCode.PERMISSION_DENIED


class FailedPreconditionError(AcmezoneError):
    """The system is not in a state that allows the request."""

    code = ErrorCode.FAILED_PRECONDITION


class AbortedError(AcmezoneError):
    """A concurrency conflict; the caller may retry the whole read-modify-write."""

    code = ErrorCode.ABORTED


class OutOfRangeError(AcmezoneError):
    """A position (revision, page) is outside what the server holds."""

    code = ErrorCode.OUT_OF_RANGE


class ResourceExhaustedError(AcmezoneError):
    """A quota or size limit was hit."""

    code = ErrorCode.RESOURCE_EXHAUSTED


class DeadlineExceededError(AcmezoneError):
    """A wait the caller asked for ran out before its condition held."""

    code = ErrorCode.DEADLINE_EXCEEDED


class UnavailableError(AcmezoneError):
    """A dependency (database, upstream service) is down; retrying later may succeed."""

    code = ErrorCode.UNAVAILABLE
