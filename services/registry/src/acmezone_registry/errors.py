"""The registry's error reasons, and shortcuts that raise them with consistent messages.

Every failure a caller can cause is one of the `acmezone_common.errors` classes with one of the
reasons below (the same list stands in the header of each proto file)::

    InvalidArgumentError   INVALID_NAME, INVALID_SUBDOMAIN, INVALID_CIDR, INVALID_DESCRIPTION,
                           INVALID_MAX_TXT_VALUES, INVALID_PAGE_SIZE, INVALID_PAGE_TOKEN,
                           INVALID_UPDATE_MASK, INVALID_TXT_VALUE, INVALID_START_REVISION,
                           INVALID_TSIG_KEY_ID, INVALID_TSIG_ALGORITHM, INVALID_DNS_MESSAGE,
                           INVALID_CLIENT_ADDRESS, INVALID_REPLICA, INVALID_REVISION,
                           INVALID_TIMEOUT, TOO_MANY_CIDRS
    UnauthenticatedError   OPERATOR_TOKEN_REQUIRED, OPERATOR_TOKEN_INVALID,
                           CREDENTIALS_REQUIRED, CREDENTIALS_INVALID
    PermissionDeniedError  SOURCE_ADDRESS_NOT_ALLOWED, SUBDOMAIN_MISMATCH
    NotFoundError          REGISTRATION_NOT_FOUND, TSIG_KEY_NOT_FOUND
    AlreadyExistsError     SUBDOMAIN_TAKEN, TSIG_KEY_EXISTS
    ResourceExhaustedError TOO_MANY_TSIG_KEYS, RATE_LIMITED
    OutOfRangeError        REVISION_COMPACTED, REVISION_IN_FUTURE, FEED_ID_MISMATCH
    UnavailableError       STORAGE_UNAVAILABLE, SHUTTING_DOWN
    DeadlineExceededError  REPLICAS_LAGGING
"""

from __future__ import annotations

from acmezone_common.errors import AlreadyExistsError, NotFoundError, OutOfRangeError

ERROR_DOMAIN = "registry.acmezone.dev"

INVALID_NAME = "INVALID_NAME"
INVALID_SUBDOMAIN = "INVALID_SUBDOMAIN"
INVALID_CIDR = "INVALID_CIDR"
TOO_MANY_CIDRS = "TOO_MANY_CIDRS"
INVALID_DESCRIPTION = "INVALID_DESCRIPTION"
INVALID_MAX_TXT_VALUES = "INVALID_MAX_TXT_VALUES"
INVALID_PAGE_SIZE = "INVALID_PAGE_SIZE"
INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"
INVALID_UPDATE_MASK = "INVALID_UPDATE_MASK"
INVALID_TXT_VALUE = "INVALID_TXT_VALUE"
INVALID_START_REVISION = "INVALID_START_REVISION"
INVALID_TSIG_KEY_ID = "INVALID_TSIG_KEY_ID"
INVALID_TSIG_ALGORITHM = "INVALID_TSIG_ALGORITHM"
INVALID_DNS_MESSAGE = "INVALID_DNS_MESSAGE"
INVALID_CLIENT_ADDRESS = "INVALID_CLIENT_ADDRESS"
TSIG_KEY_NOT_FOUND = "TSIG_KEY_NOT_FOUND"
TSIG_KEY_EXISTS = "TSIG_KEY_EXISTS"
TOO_MANY_TSIG_KEYS = "TOO_MANY_TSIG_KEYS"
RATE_LIMITED = "RATE_LIMITED"
OPERATOR_TOKEN_REQUIRED = "OPERATOR_TOKEN_REQUIRED"
OPERATOR_TOKEN_INVALID = "OPERATOR_TOKEN_INVALID"
CREDENTIALS_REQUIRED = "CREDENTIALS_REQUIRED"
CREDENTIALS_INVALID = "CREDENTIALS_INVALID"
SOURCE_ADDRESS_NOT_ALLOWED = "SOURCE_ADDRESS_NOT_ALLOWED"
SUBDOMAIN_MISMATCH = "SUBDOMAIN_MISMATCH"
REGISTRATION_NOT_FOUND = "REGISTRATION_NOT_FOUND"
SUBDOMAIN_TAKEN = "SUBDOMAIN_TAKEN"
REVISION_COMPACTED = "REVISION_COMPACTED"
REVISION_IN_FUTURE = "REVISION_IN_FUTURE"
FEED_ID_MISMATCH = "FEED_ID_MISMATCH"
STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"
SHUTTING_DOWN = "SHUTTING_DOWN"
INVALID_REPLICA = "INVALID_REPLICA"
INVALID_REVISION = "INVALID_REVISION"
INVALID_TIMEOUT = "INVALID_TIMEOUT"
REPLICAS_LAGGING = "REPLICAS_LAGGING"


def registration_not_found(subdomain: str) -> NotFoundError:
    """The error for a registration that does not exist."""
    return NotFoundError(
        REGISTRATION_NOT_FOUND,
        f"registration {subdomain!r} does not exist",
        metadata={"subdomain": subdomain},
    )


def subdomain_taken(subdomain: str) -> AlreadyExistsError:
    """The error for creating a registration whose subdomain is registered already."""
    return AlreadyExistsError(
        SUBDOMAIN_TAKEN,
        f"subdomain {subdomain!r} is already registered",
        metadata={"subdomain": subdomain},
    )


def tsig_key_exists(key_id: str) -> AlreadyExistsError:
    """The error for creating a TSIG key whose id the registration uses already."""
    return AlreadyExistsError(
        TSIG_KEY_EXISTS,
        f"TSIG key {key_id!r} already exists for this registration",
        metadata={"tsig_key_id": key_id},
    )


def tsig_key_not_found(subdomain: str, key_id: str) -> NotFoundError:
    """The error for a TSIG key that does not exist."""
    return NotFoundError(
        TSIG_KEY_NOT_FOUND,
        f"TSIG key {key_id!r} of registration {subdomain!r} does not exist",
        metadata={"subdomain": subdomain, "tsig_key_id": key_id},
    )


def revision_compacted(start_revision: int, compacted_revision: int) -> OutOfRangeError:
    """The error for resuming the feed from a revision that has been compacted away."""
    return OutOfRangeError(
        REVISION_COMPACTED,
        f"revision {start_revision} has been compacted (history starts after "
        f"{compacted_revision}); start again from revision 0",
        metadata={"compacted_revision": str(compacted_revision)},
    )
