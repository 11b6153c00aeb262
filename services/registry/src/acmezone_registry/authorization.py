"""Who may do what, in one place for every use case and both front ends.

- Management (create, list, update): the operator token when one is configured; open otherwise.
- Reading, rotating, deleting one registration and managing its TSIG keys: the operator rule
  above, or the registration's own credentials.
- TXT values: the registration's own credentials, from an address inside its allowed CIDRs.

Failed authentication is limited per source network and per username (`rate_limits`): a source
whose bucket is empty is refused before any lookup, and a username whose bucket is empty is
refused before a slow (imported) hash is verified, so a flood costs next to nothing. A correct
password from a clean source always passes, so a flood aimed at one username does not lock its
owner out.

Passwords are checked against the keyed fast hash in microseconds; an unknown username is
checked against a decoy fast hash, so response time does not reveal which usernames exist. A
slow hash imported from elsewhere (bcrypt, or this registry's old scrypt) is verified in a thread
and replaced by the fast form on its first success. Every refusal is counted by reason.
"""

from __future__ import annotations

import asyncio
import logging

from acmezone_common.errors import PermissionDeniedError, UnauthenticatedError
from acmezone_registry import credentials, errors, validation
from acmezone_registry.access import Caller, address_allowed
from acmezone_registry.metrics import RegistryMetrics
from acmezone_registry.rate_limits import AbuseLimits, rate_limited, source_network
from acmezone_registry.storage.registrations import RegistrationRepository, StoredRegistration

logger = logging.getLogger(__name__)


class Authorizer:
    """Checks callers against the operator token and registrations' credentials."""

    def __init__(
        self,
        registrations: RegistrationRepository,
        metrics: RegistryMetrics,
        *,
        operator_token: str | None,
        hasher: credentials.PasswordHasher,
        limits: AbuseLimits,
    ) -> None:
        self._registrations = registrations
        self._metrics = metrics
        self._limits = limits
        self._operator_token = operator_token
        self._hasher = hasher
        # A hash to verify against when the username is unknown: equal timing for both paths.
        self._decoy_hash = hasher.hash(credentials.new_password())

    @staticmethod
    def existing_label(subdomain: str) -> str:
        """A syntactically valid label; anything else cannot name a registration."""
        return validation.subdomain_label(subdomain, field="name")

    def _operator_check(self, caller: Caller) -> UnauthenticatedError | None:
        """None when the caller passes the operator rule, else the error to raise."""
        expected = self._operator_token
        if expected is None:
            return None
        if not caller.operator_token:
            return UnauthenticatedError(
                errors.OPERATOR_TOKEN_REQUIRED,
                "this registry requires the operator token (authorization: Bearer <token>)",
            )
        if not credentials.tokens_equal(caller.operator_token, expected):
            return UnauthenticatedError(
                errors.OPERATOR_TOKEN_INVALID, "operator token is not valid"
            )
        return None

    def require_operator(self, caller: Caller) -> None:
        source = source_network(caller.address)
        if self._operator_token is not None and caller.operator_token:
            self._check_source(source)
        failure = self._operator_check(caller)
        if failure is not None:
            self._metrics.auth_failures.labels(failure.reason.lower()).inc()
            if failure.reason == errors.OPERATOR_TOKEN_INVALID:
                self._limits.failed_auth_by_source.take(source)
            raise failure

    def _check_source(self, source: str) -> None:
        wait = self._limits.failed_auth_by_source.wait(source)
        if wait:
            self._metrics.rate_limited.labels("auth_source").inc()
            raise rate_limited("auth_source", "failed authentications from this network", wait)

    async def self_or_operator(self, caller: Caller, subdomain: str) -> StoredRegistration:
        label = self.existing_label(subdomain)
        if caller.username is not None or caller.password is not None:
            return await self.owner(caller, label, operation=None)
        self.require_operator(caller)
        stored = await self._registrations.get_registration(label)
        if stored is None:
            raise errors.registration_not_found(label)
        return stored

    async def owner(
        self, caller: Caller, subdomain: str, *, operation: str | None
    ) -> StoredRegistration:
        """The caller's own registration, after checking credentials, ownership and source."""
        label = self.existing_label(subdomain)

        def deny(error: UnauthenticatedError | PermissionDeniedError) -> None:
            self._metrics.auth_failures.labels(error.reason.lower()).inc()
            if operation is not None:
                self._metrics.txt_updates.labels(operation, "denied").inc()
            raise error

        if not caller.username or not caller.password:
            deny(
                UnauthenticatedError(
                    errors.CREDENTIALS_REQUIRED,
                    "the registration's username and password are required "
                    "(x-api-user and x-api-key)",
                )
            )
        assert caller.username is not None
        assert caller.password is not None
        source = source_network(caller.address)
        self._check_source(source)
        plausible = credentials.plausible_username(caller.username)
        stored = (
            await self._registrations.get_registration_by_username(caller.username)
            if plausible
            else None
        )
        if stored is not None and not credentials.is_fast_hash(stored.password_hash):
            wait = self._limits.failed_auth_by_username.wait(caller.username)
            if wait:  # a slow hash under attack: refuse before spending the CPU
                self._metrics.rate_limited.labels("auth_username").inc()
                raise rate_limited("auth_username", "failed authentications for this user", wait)
        valid = await self._check_password(caller.password, stored)
        if stored is None or not valid:
            self._limits.failed_auth_by_source.take(source)
            if plausible:
                wait = self._limits.failed_auth_by_username.wait(caller.username)
                self._limits.failed_auth_by_username.take(caller.username)
                if wait:
                    self._metrics.auth_failures.labels(errors.CREDENTIALS_INVALID.lower()).inc()
                    self._metrics.rate_limited.labels("auth_username").inc()
                    raise rate_limited(
                        "auth_username", "failed authentications for this user", wait
                    )
            deny(UnauthenticatedError(errors.CREDENTIALS_INVALID, "username or password is wrong"))
        assert stored is not None
        if stored.registration.subdomain != label:
            deny(
                PermissionDeniedError(
                    errors.SUBDOMAIN_MISMATCH,
                    f"these credentials do not belong to subdomain {label!r}",
                )
            )
        if not address_allowed(caller.address, stored.registration.allowed_cidrs):
            deny(
                PermissionDeniedError(
                    errors.SOURCE_ADDRESS_NOT_ALLOWED,
                    f"source address {caller.address} is not in the registration's allowed CIDRs",
                    metadata={"source_address": str(caller.address)},
                )
            )
        return stored

    async def _check_password(self, password: str, stored: StoredRegistration | None) -> bool:
        encoded = stored.password_hash if stored else self._decoy_hash
        if credentials.is_fast_hash(encoded):
            return self._hasher.verify_fast(password, encoded)
        verification = await asyncio.to_thread(self._hasher.verify, password, encoded)
        if stored is not None and verification.needs_rehash:
            upgraded = await self._registrations.upgrade_password_hash(
                stored.registration.subdomain, encoded, self._hasher.hash(password)
            )
            if upgraded:
                self._metrics.password_rehashes.inc()
                logger.info(
                    "password hash upgraded to the fast form",
                    extra={"subdomain": stored.registration.subdomain},
                )
        return verification.valid
