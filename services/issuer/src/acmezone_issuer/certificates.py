"""Certificate resources: validating requests and the operations callers ask for directly.

The work of issuing belongs to the reconciler; this module accepts a certificate, asks the
reconciler to look at it, and handles the requests that are answered at once: forced renewal,
revocation, deletion and export.
"""

from __future__ import annotations

import contextlib
import logging
import secrets

from acmezone_common.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from acmezone_common.names import check_resource_id
from acmezone_common.sql import utcnow
from acmezone_issuer import errors
from acmezone_issuer.accounts import AccountManager
from acmezone_issuer.challenges import ChallengeType
from acmezone_issuer.conditions import revoked_conditions
from acmezone_issuer.errors import AcmeProblemError, IssuanceError
from acmezone_issuer.events import CertificateEvents
from acmezone_issuer.keys import KeySealer, check_key_type, key_to_pem
from acmezone_issuer.metrics import IssuerMetrics
from acmezone_issuer.names import normalise_dns_names
from acmezone_issuer.reconciler import Reconciler
from acmezone_issuer.states import CertificateState, RenewalSource, Stage
from acmezone_issuer.storage.repository import CertificateUpdate, Repository
from acmezone_issuer.storage.tables import CertificateRow

logger = logging.getLogger(__name__)

# RFC 5280 reason codes ACME accepts.
REVOCATION_REASONS = {
    "none_given": 0,
    "key_compromise": 1,
    "affiliation_changed": 3,
    "superseded": 4,
    "cessation_of_operation": 5,
}


class CertificateManager:
    """Create, renew, revoke, delete and export certificates."""

    def __init__(
        self,
        repository: Repository,
        sealer: KeySealer,
        accounts: AccountManager,
        reconciler: Reconciler,
        events: CertificateEvents,
        metrics: IssuerMetrics,
    ) -> None:
        self._repository = repository
        self._sealer = sealer
        self._accounts = accounts
        self._reconciler = reconciler
        self._events = events
        self._metrics = metrics

    async def create(
        self,
        *,
        certificate_id: str,
        dns_names: list[str],
        account_id: str | None,
        key_type: str,
        challenge_type: str,
        profile: str,
    ) -> CertificateRow:
        """Validate and store a certificate in PENDING, and wake the reconciler."""
        if certificate_id:
            check_resource_id(certificate_id, "certificate_id")
        else:
            certificate_id = "cert-" + secrets.token_hex(4)
        names = normalise_dns_names(dns_names, "certificate.dns_names")
        if account_id is None:
            raise InvalidArgumentError(
                errors.INVALID_ACCOUNT, "account must be accounts/{id}", field="certificate.account"
            )
        check_key_type(key_type, "certificate.key_type")
        if challenge_type not in set(ChallengeType):
            raise InvalidArgumentError(
                errors.INVALID_CHALLENGE_TYPE,
                f"unknown challenge type {challenge_type!r}",
                field="certificate.challenge_type",
            )
        if challenge_type == ChallengeType.HTTP01:
            for index, name in enumerate(names):
                if name.startswith("*."):
                    raise InvalidArgumentError(
                        errors.INVALID_CHALLENGE_TYPE,
                        f"{name!r}: wildcard names can only be validated with DNS-01",
                        field=f"certificate.dns_names[{index}]",
                    )
        try:
            account = await self._repository.get_account(account_id)
        except NotFoundError as exc:
            raise InvalidArgumentError(
                errors.INVALID_ACCOUNT,
                f"accounts/{account_id} does not exist",
                field="certificate.account",
            ) from exc
        if profile:
            try:
                offered = await self._accounts.client_for(account).profiles()
            except IssuanceError:
                offered = {}
            if profile not in offered:
                raise InvalidArgumentError(
                    errors.INVALID_PROFILE,
                    f"the CA does not offer profile {profile!r} "
                    f"(offered: {', '.join(sorted(offered)) or 'none'})",
                    field="certificate.profile",
                )
        now = utcnow()
        row = CertificateRow(
            id=certificate_id,
            dns_names=names,
            account_id=account_id,
            key_type=key_type,
            profile=profile,
            challenge_type=challenge_type,
            state=CertificateState.PENDING,
            stage=Stage.NONE,
            conditions=[],
            delegations=[],
            failed_attempts=0,
            last_failure=None,
            next_attempt_time=now,
            order_url="",
            chain_pem="",
            serial_number="",
            renewal_source=RenewalSource.NONE,
            renew_requested=False,
            revision=1,
            lease_owner="",
            create_time=now,
            update_time=now,
        )
        row = await self._repository.insert_certificate(row)
        logger.info("certificate created", extra={"certificate": certificate_id, "names": names})
        self._events.changed()
        self._reconciler.wake()
        return row

    async def renew(self, certificate_id: str) -> CertificateRow:
        """Ask for a new certificate now."""
        await self._repository.get_certificate(certificate_id)
        row = await self._repository.update_certificate(
            certificate_id, CertificateUpdate(renew_requested=True, next_attempt_time=utcnow())
        )
        if row is None:
            raise errors.certificate_not_found(certificate_id)
        self._events.changed()
        self._reconciler.wake()
        return row

    async def revoke(self, certificate_id: str, reason: int) -> CertificateRow:
        """Revoke the issued certificate at the CA and stop renewing it."""
        row = await self._repository.get_certificate(certificate_id)
        if row.state == CertificateState.REVOKED:
            raise FailedPreconditionError(
                errors.ALREADY_REVOKED, f"certificates/{certificate_id} is revoked already"
            )
        if not row.chain_pem:
            raise FailedPreconditionError(
                errors.NOT_ISSUED,
                f"certificates/{certificate_id} has no issued certificate to revoke",
            )
        account = await self._repository.get_account(row.account_id)
        try:
            await self._accounts.client_for(account).revoke(row.chain_pem, reason)
        except AcmeProblemError as exc:
            raise FailedPreconditionError(
                errors.REVOCATION_REJECTED,
                f"the CA refused the revocation: {exc.message}",
                metadata={"acme_problem_type": exc.problem_type},
            ) from exc
        except IssuanceError as exc:
            raise UnavailableError(errors.ACME_SERVER_UNAVAILABLE, exc.message) from exc
        updated = await self._repository.update_certificate(
            certificate_id,
            CertificateUpdate(
                state=CertificateState.REVOKED,
                stage=Stage.NONE,
                revoke_time=utcnow(),
                next_attempt_time=None,
                renew_requested=False,
                order_url="",
                conditions=revoked_conditions(row, utcnow()),
            ),
        )
        if updated is None:
            raise errors.certificate_not_found(certificate_id)
        with contextlib.suppress(KeyError):
            self._metrics.renewal.remove(f"certificates/{certificate_id}")
        logger.info("certificate revoked", extra={"certificate": certificate_id})
        self._events.changed()
        return updated

    async def delete(self, certificate_id: str) -> None:
        """Forget a certificate (not revoked)."""
        await self._repository.delete_certificate(certificate_id)
        self._metrics.forget_certificate(f"certificates/{certificate_id}")
        self._events.changed()

    async def export(self, certificate_id: str) -> tuple[CertificateRow, str]:
        """The row and its private key in PEM; FAILED_PRECONDITION before the first issuance."""
        row = await self._repository.get_certificate(certificate_id)
        if not row.chain_pem or row.sealed_key is None:
            raise FailedPreconditionError(
                errors.NOT_ISSUED, f"certificates/{certificate_id} has not been issued yet"
            )
        key = self._sealer.open_key(row.sealed_key, f"certificate/{certificate_id}")
        return row, key_to_pem(key).decode()
