"""The registry's use cases: registrations and their TXT values, with who-may-do-what.

Both front ends (gRPC servicer, acme-dns HTTP API) call these methods with a `Caller`; who may
do what is decided by `authorization.Authorizer`, the same for every use case.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from acmezone_common import paging
from acmezone_common.errors import InvalidArgumentError
from acmezone_registry import credentials, validation
from acmezone_registry.access import Caller
from acmezone_registry.authorization import Authorizer
from acmezone_registry.metrics import RegistryMetrics
from acmezone_registry.model import (
    IssuedCredentials,
    Registration,
    RegistrationChanges,
    RegistrationPage,
    TxtRecord,
)
from acmezone_registry.rate_limits import AbuseLimits, rate_limited, source_network
from acmezone_registry.storage.registrations import NewRegistration, RegistrationRepository
from acmezone_registry.storage.txt_values import TxtValueRepository

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistrationPolicy:
    """The settings the use cases need, gathered so the class does not depend on settings."""

    zone: str
    operator_token: str | None
    reserved_subdomains: tuple[str, ...]
    default_max_txt_values: int
    strict_txt_values: bool
    txt_value_lifetime: timedelta | None
    # Keys the fast password hash (see `credentials`): 32 bytes, the same on every replica.
    credential_key: bytes


class Registrations:
    """Registration and TXT-value use cases over their repositories."""

    def __init__(
        self,
        registrations: RegistrationRepository,
        txt_values: TxtValueRepository,
        policy: RegistrationPolicy,
        metrics: RegistryMetrics,
        limits: AbuseLimits | None = None,
    ) -> None:
        self._stored = registrations
        self._txt_values = txt_values
        self._policy = policy
        self._metrics = metrics
        self._limits = limits or AbuseLimits.unlimited()
        self._hasher = credentials.PasswordHasher(policy.credential_key)
        self.authorizer = Authorizer(
            registrations,
            metrics,
            operator_token=policy.operator_token,
            hasher=self._hasher,
            limits=self._limits,
        )

    # -- management ---------------------------------------------------------------------------

    async def create(
        self,
        caller: Caller,
        *,
        allowed_cidrs: Sequence[str] = (),
        description: str = "",
        max_txt_values: int = 0,
        subdomain: str | None = None,
    ) -> IssuedCredentials:
        """Create a registration with fresh credentials; the password is returned only here."""
        self.authorizer.require_operator(caller)
        label = (
            validation.subdomain_label(
                subdomain, field="registration_id", reserved=self._policy.reserved_subdomains
            )
            if subdomain
            else None
        )
        networks = validation.cidrs(allowed_cidrs, field="registration.allowed_cidrs")
        note = validation.description(description, field="registration.description")
        limit = validation.max_txt_values(
            max_txt_values,
            field="registration.max_txt_values",
            default=self._policy.default_max_txt_values,
        )
        if self._policy.operator_token is None:
            self._take_open_registration(caller)
        password = credentials.new_password()
        registration = await self._stored.create_registration(
            NewRegistration(
                subdomain=label,
                username=credentials.new_username(),
                password_hash=self._hasher.hash(password),
                allowed_cidrs=networks,
                description=note,
                max_txt_values=limit,
            )
        )
        self._metrics.registrations_created.inc()
        logger.info(
            "registration created",
            extra={"subdomain": registration.subdomain, "username": registration.username},
        )
        return IssuedCredentials(registration, password)

    def _take_open_registration(self, caller: Caller) -> None:
        """Open registration (no operator token) has quotas per source network and in all."""
        source = source_network(caller.address)
        by_source = self._limits.open_registrations_by_source.wait(source)
        overall = self._limits.open_registrations.wait("")
        if by_source or overall:
            limit = "registration_source" if by_source else "registration_global"
            self._metrics.rate_limited.labels(limit).inc()
            what = "registrations from this network" if by_source else "registrations"
            raise rate_limited(limit, what, max(by_source, overall))
        self._limits.open_registrations_by_source.take(source)
        self._limits.open_registrations.take("")

    async def get(self, caller: Caller, subdomain: str) -> Registration:
        """One registration, for the operator or the registration itself."""
        stored = await self.authorizer.self_or_operator(caller, subdomain)
        return stored.registration

    async def list(self, caller: Caller, *, page_size: int, page_token: str) -> RegistrationPage:
        """A page of registrations, oldest first."""
        self.authorizer.require_operator(caller)
        size = paging.page_size(page_size)
        rows = await self._stored.list_registrations(
            after=paging.time_key_after(page_token), limit=paging.fetch_limit(size)
        )
        page = paging.page_of(rows, size, lambda r: paging.time_key(r.create_time, r.subdomain))
        return RegistrationPage(tuple(page.items), page.next_page_token)

    async def update(
        self, caller: Caller, subdomain: str, changes: RegistrationChanges
    ) -> Registration:
        """Change description, allowed CIDRs or max TXT values; validated before any write."""
        self.authorizer.require_operator(caller)
        label = self.authorizer.existing_label(subdomain)
        checked = RegistrationChanges(
            allowed_cidrs=None
            if changes.allowed_cidrs is None
            else validation.cidrs(changes.allowed_cidrs, field="registration.allowed_cidrs"),
            description=None
            if changes.description is None
            else validation.description(changes.description, field="registration.description"),
            max_txt_values=None
            if changes.max_txt_values is None
            else validation.max_txt_values(
                changes.max_txt_values,
                field="registration.max_txt_values",
                default=self._policy.default_max_txt_values,
            ),
        )
        return await self._stored.update_registration(label, checked)

    async def delete(self, caller: Caller, subdomain: str) -> None:
        """Delete a registration and its values."""
        stored = await self.authorizer.self_or_operator(caller, subdomain)
        await self._stored.delete_registration(stored.registration.subdomain)
        self._metrics.registrations_deleted.inc()
        logger.info("registration deleted", extra={"subdomain": stored.registration.subdomain})

    async def rotate_password(self, caller: Caller, subdomain: str) -> IssuedCredentials:
        """Replace the password; the old one stops working with this commit."""
        stored = await self.authorizer.self_or_operator(caller, subdomain)
        password = credentials.new_password()
        registration = await self._stored.set_password_hash(
            stored.registration.subdomain, self._hasher.hash(password)
        )
        logger.info("password rotated", extra={"subdomain": registration.subdomain})
        return IssuedCredentials(registration, password)

    # -- TXT values ---------------------------------------------------------------------------

    async def get_txt_record(self, caller: Caller, subdomain: str) -> TxtRecord:
        """The values currently published for the caller's own registration."""
        stored = await self.authorizer.owner(caller, subdomain, operation="get")
        return await self._txt_values.get_txt_record(stored.registration.subdomain)

    async def add_txt_value(
        self, caller: Caller, subdomain: str, value: str, *, persistent: bool = False
    ) -> TxtRecord:
        """Publish a value (newest first, dropping the oldest beyond the registration's limit);
        a persistent one is kept until removed."""
        stored = await self.authorizer.owner(caller, subdomain, operation="add")
        try:
            checked = (
                validation.persistent_txt_value(value, field="value")
                if persistent
                else validation.txt_value(
                    value, field="value", strict=self._policy.strict_txt_values
                )
            )
        except InvalidArgumentError:
            self._metrics.txt_updates.labels("add", "invalid").inc()
            raise
        now = datetime.now(UTC)
        lifetime = self._policy.txt_value_lifetime
        record = await self._txt_values.add_txt_value(
            stored.registration.subdomain,
            checked,
            now=now,
            expire_time=now + lifetime if lifetime else None,
            persistent=persistent,
        )
        self._metrics.txt_updates.labels("add", "ok").inc()
        return record

    async def remove_txt_value(self, caller: Caller, subdomain: str, value: str) -> TxtRecord:
        """Stop publishing one value (a no-op when it is not published)."""
        stored = await self.authorizer.owner(caller, subdomain, operation="remove")
        # Same rule as for adding: a value that could never have been published is an error,
        # not something to look up (and a NUL byte must never reach the database).
        try:
            checked = validation.txt_value(
                value, field="value", strict=self._policy.strict_txt_values
            )
        except InvalidArgumentError:
            # It may be a persistent value, which is not held to the strict form.
            checked = validation.persistent_txt_value(value, field="value")
        record = await self._txt_values.remove_txt_values(stored.registration.subdomain, checked)
        self._metrics.txt_updates.labels("remove", "ok").inc()
        return record

    async def clear_txt_values(self, caller: Caller, subdomain: str) -> TxtRecord:
        """Stop publishing every value of the registration."""
        stored = await self.authorizer.owner(caller, subdomain, operation="clear")
        record = await self._txt_values.remove_txt_values(stored.registration.subdomain, None)
        self._metrics.txt_updates.labels("clear", "ok").inc()
        return record
