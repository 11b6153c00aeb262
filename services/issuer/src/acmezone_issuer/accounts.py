"""ACME accounts: validating a request, generating and sealing the key, registering at the CA.

Also hands out one `AcmeClient` per account, so the reconciler and the servicer share nonces and
the cached directory.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from acmezone_common.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    UnavailableError,
)
from acmezone_common.names import check_resource_id
from acmezone_common.sql import utcnow
from acmezone_issuer import errors
from acmezone_issuer.acme_client import AcmeClient, register_account, terms_of_service
from acmezone_issuer.errors import AcmeProblemError, AcmeUnavailableError
from acmezone_issuer.keys import KeySealer, check_key_type, generate_key
from acmezone_issuer.metrics import IssuerMetrics
from acmezone_issuer.names import check_emails
from acmezone_issuer.storage.repository import Repository
from acmezone_issuer.storage.tables import AccountRow

logger = logging.getLogger(__name__)


class AccountManager:
    """Creates accounts and builds ACME clients for them."""

    def __init__(
        self,
        repository: Repository,
        sealer: KeySealer,
        metrics: IssuerMetrics,
        *,
        default_directory_url: str,
        ca_bundle: Path | None,
    ) -> None:
        self._repository = repository
        self._sealer = sealer
        self._metrics = metrics
        self._default_directory_url = default_directory_url
        self._ca_bundle = ca_bundle
        self._clients: dict[str, AcmeClient] = {}

    async def create(
        self,
        *,
        account_id: str,
        directory_url: str,
        emails: list[str],
        terms_agreed: bool,
        key_type: str,
        eab_key_id: str,
        eab_hmac_key: str,
    ) -> AccountRow:
        """Validate, generate a key, register at the CA, and store the sealed key."""
        if account_id:
            check_resource_id(account_id, "account_id")
        else:
            account_id = "acct-" + secrets.token_hex(4)
        directory_url = directory_url or self._default_directory_url
        parts = urlsplit(directory_url)
        if parts.scheme != "https" or not parts.hostname:
            raise InvalidArgumentError(
                errors.INVALID_DIRECTORY_URL,
                f"{directory_url!r} is not an https URL",
                field="account.directory_url",
            )
        emails = check_emails(emails, "account.contact_emails")
        check_key_type(key_type, "account.key_type")
        if bool(eab_key_id) != bool(eab_hmac_key):
            raise InvalidArgumentError(
                errors.INVALID_EXTERNAL_ACCOUNT_BINDING,
                "an External Account Binding needs both key_id and hmac_key",
                field="account.external_account_binding",
            )
        if not terms_agreed:
            try:
                terms = await terms_of_service(directory_url, self._metrics, self._ca_bundle)
            except AcmeUnavailableError as exc:
                raise UnavailableError(errors.ACME_SERVER_UNAVAILABLE, exc.message) from exc
            if terms:
                raise InvalidArgumentError(
                    errors.TERMS_NOT_AGREED,
                    f"the ACME server's terms of service ({terms}) must be agreed to",
                    field="account.terms_of_service_agreed",
                )
        key = generate_key(key_type)
        try:
            registration = await register_account(
                directory_url,
                key,
                emails=emails,
                terms_agreed=terms_agreed,
                eab_key_id=eab_key_id,
                eab_hmac_key=eab_hmac_key,
                metrics=self._metrics,
                ca_bundle=self._ca_bundle,
            )
        except AcmeUnavailableError as exc:
            raise UnavailableError(errors.ACME_SERVER_UNAVAILABLE, exc.message) from exc
        except AcmeProblemError as exc:
            reason = (
                errors.EXTERNAL_ACCOUNT_BINDING_REQUIRED
                if exc.problem_type.endswith("externalAccountRequired")
                else errors.ACME_REGISTRATION_REJECTED
            )
            raise FailedPreconditionError(
                reason,
                f"the ACME server refused the account: {exc.message}",
                metadata={"acme_problem_type": exc.problem_type},
            ) from exc
        row = AccountRow(
            id=account_id,
            directory_url=directory_url,
            contact_emails=emails,
            terms_agreed=terms_agreed,
            terms_url=registration.terms_url,
            eab_key_id=eab_key_id,
            key_type=key_type,
            sealed_key=self._sealer.seal_key(key, f"account/{account_id}"),
            account_url=registration.account_url,
            status=registration.status,
            create_time=utcnow(),
        )
        logger.info(
            "account registered",
            extra={"account": account_id, "directory": directory_url, "url": row.account_url},
        )
        return await self._repository.insert_account(row)

    async def register_again(self, account: AccountRow) -> AccountRow:
        """Register an account's key once more, for a CA that forgot it (Pebble forgets every
        account when it restarts). Accounts bound with EAB cannot be: the HMAC key is not kept."""
        if account.eab_key_id:
            raise AcmeProblemError(
                "the CA no longer knows this account, and an account with an External Account "
                "Binding cannot be registered again: create a new account",
                problem_type="urn:ietf:params:acme:error:accountDoesNotExist",
            )
        key = self._sealer.open_key(account.sealed_key, f"account/{account.id}")
        registration = await register_account(
            account.directory_url,
            key,
            emails=list(account.contact_emails),
            terms_agreed=account.terms_agreed,
            eab_key_id="",
            eab_hmac_key="",
            metrics=self._metrics,
            ca_bundle=self._ca_bundle,
        )
        await self._repository.set_account_url(account.id, registration.account_url)
        self.forget(account.id)
        logger.warning(
            "account registered again: the CA did not know it",
            extra={"account": account.id, "url": registration.account_url},
        )
        return await self._repository.get_account(account.id)

    def client_for(self, account: AccountRow) -> AcmeClient:
        """The (cached) ACME client of an account."""
        client = self._clients.get(account.id)
        if client is None:
            key = self._sealer.open_key(account.sealed_key, f"account/{account.id}")
            client = AcmeClient(
                account.directory_url, key, account.account_url, self._metrics, self._ca_bundle
            )
            self._clients[account.id] = client
        return client

    def forget(self, account_id: str) -> None:
        """Drop a deleted account's client."""
        self._clients.pop(account_id, None)
