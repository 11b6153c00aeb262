"""Delivery tokens: credentials that let an agent fetch only the certificates they name.

A token reads `azdt_<id>_<secret>`: the id finds the row, the 256-bit secret is checked against
the stored SHA-256 with a constant-time comparison. A plain hash (no HMAC key, no slow KDF) is
enough for a random secret of that size: there is no dictionary to try and no key to keep. The
`azdt_` prefix lets the authorizer refuse a delivery token on operator methods without a query,
and lets secret scanners recognise a leaked one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass

from acmezone_common.errors import InvalidArgumentError, NotFoundError, UnauthenticatedError
from acmezone_common.names import check_resource_id, parse_resource_name
from acmezone_common.sql import utcnow
from acmezone_issuer import errors
from acmezone_issuer.storage.repository import Repository
from acmezone_issuer.storage.tables import DeliveryTokenRow

logger = logging.getLogger(__name__)

PREFIX = "azdt_"
MAX_CERTIFICATES = 100
MAX_DESCRIPTION = 256


def is_delivery_token(token: str) -> bool:
    """Whether a presented bearer token has the delivery token form (not whether it is valid)."""
    return token.startswith(PREFIX)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True)
class DeliveryScope:
    """What an authenticated delivery token may reach."""

    token_id: str
    certificate_ids: frozenset[str]


class DeliveryTokens:
    """Creates, authenticates and revokes delivery tokens."""

    def __init__(self, repository: Repository) -> None:
        self._repository = repository

    async def create(
        self, token_id: str, certificate_names: list[str], description: str
    ) -> tuple[DeliveryTokenRow, str]:
        """Store a token for existing certificates; (row, the token to hand out once)."""
        if token_id:
            check_resource_id(token_id, "delivery_token_id")
        else:
            token_id = "dt-" + secrets.token_hex(4)
        field = "delivery_token.certificates"
        if not certificate_names or len(certificate_names) > MAX_CERTIFICATES:
            raise InvalidArgumentError(
                errors.INVALID_CERTIFICATES,
                f"1 to {MAX_CERTIFICATES} certificates are required",
                field=field,
            )
        ids: list[str] = []
        for index, name in enumerate(certificate_names):
            try:
                certificate_id = parse_resource_name(name, "certificates", f"{field}[{index}]")
            except InvalidArgumentError as exc:
                raise InvalidArgumentError(
                    errors.INVALID_CERTIFICATES, exc.message, field=f"{field}[{index}]"
                ) from None
            if certificate_id in ids:
                raise InvalidArgumentError(
                    errors.INVALID_CERTIFICATES,
                    f"{name!r} is listed twice",
                    field=f"{field}[{index}]",
                )
            if await self._repository.find_certificate(certificate_id) is None:
                raise NotFoundError(errors.CERTIFICATE_NOT_FOUND, f"{name} does not exist")
            ids.append(certificate_id)
        if len(description) > MAX_DESCRIPTION:
            raise InvalidArgumentError(
                errors.INVALID_DESCRIPTION,
                f"at most {MAX_DESCRIPTION} characters",
                field="delivery_token.description",
            )
        secret = secrets.token_urlsafe(32)
        row = await self._repository.insert_delivery_token(
            DeliveryTokenRow(
                id=token_id,
                secret_sha256=_digest(secret),
                certificate_ids=ids,
                description=description,
                create_time=utcnow(),
            )
        )
        logger.info("delivery token created", extra={"token": token_id, "certificates": ids})
        return row, f"{PREFIX}{token_id}_{secret}"

    async def authenticate(self, token: str) -> DeliveryScope:
        """The scope of a presented token; UNAUTHENTICATED, DELIVERY_TOKEN_INVALID otherwise
        (unknown id, wrong secret and revoked token read the same)."""
        token_id, _, secret = token.removeprefix(PREFIX).partition("_")
        invalid = UnauthenticatedError(
            errors.DELIVERY_TOKEN_INVALID, "the delivery token is not valid"
        )
        if not token_id or not secret:
            raise invalid
        row = await self._repository.find_delivery_token(token_id)
        # Compare even for an unknown id, so the time taken does not tell ids apart.
        expected = row.secret_sha256 if row is not None else b"\0" * 32
        if not hmac.compare_digest(_digest(secret), expected) or row is None:
            raise invalid
        return DeliveryScope(row.id, frozenset(row.certificate_ids))
