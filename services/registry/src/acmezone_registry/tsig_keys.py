"""TSIG key use cases: create (the secret shown once), get, list, delete.

Keys are managed by the operator or by the registration itself (the same rule as reading or
deleting the registration); a registration has at most `MAX_KEYS_PER_REGISTRATION` keys.
"""

from __future__ import annotations

import base64
import logging
import secrets
from dataclasses import dataclass

from acmezone_common import paging
from acmezone_common.errors import InvalidArgumentError
from acmezone_registry import errors, validation
from acmezone_registry.access import Caller
from acmezone_registry.authorization import Authorizer
from acmezone_registry.model import ALIAS_OWNER, TsigKeyInfo, TsigKeyWithSecret
from acmezone_registry.storage.tsig_keys import TsigKeyRepository

logger = logging.getLogger(__name__)

MAX_KEYS_PER_REGISTRATION = 10

ALGORITHMS: dict[str, int] = {
    # DNS algorithm name -> secret length in bytes (the HMAC's output size, RFC 2104 advice).
    "hmac-sha256.": 32,
    "hmac-sha512.": 64,
    "hmac-sha1.": 20,
    "hmac-md5.sig-alg.reg.int.": 16,
}


@dataclass(frozen=True)
class TsigKeyPage:
    """One page of a key listing and the token for the next (empty on the last page)."""

    keys: tuple[TsigKeyInfo, ...]
    next_page_token: str


class TsigKeys:
    """Create, read, list and delete the TSIG keys of registrations."""

    def __init__(self, keys: TsigKeyRepository, authorizer: Authorizer, zone: str) -> None:
        self._keys = keys
        self._authorizer = authorizer
        self._zone = zone.rstrip(".").lower()

    def allowed_names(self, subdomain: str) -> tuple[str, str]:
        """The two names a registration's keys may change TXT records at."""
        fqdn = f"{subdomain}.{self._zone}."
        return fqdn, f"{ALIAS_OWNER}.{fqdn}"

    async def create(
        self, caller: Caller, subdomain: str, *, algorithm: str, key_id: str = ""
    ) -> TsigKeyWithSecret:
        """A new key with a fresh random secret of the algorithm's natural length."""
        stored = await self._authorizer.self_or_operator(caller, subdomain)
        if algorithm not in ALGORITHMS:
            raise InvalidArgumentError(
                errors.INVALID_TSIG_ALGORITHM,
                f"algorithm must be one of {', '.join(ALGORITHMS)}",
                field="tsig_key.algorithm",
            )
        if key_id:
            try:
                label = validation.subdomain_label(key_id, field="tsig_key_id")
            except InvalidArgumentError as exc:
                raise InvalidArgumentError(
                    errors.INVALID_TSIG_KEY_ID, exc.message, field="tsig_key_id"
                ) from None
        else:
            label = f"k{secrets.token_hex(4)}"
        secret = base64.b64encode(secrets.token_bytes(ALGORITHMS[algorithm])).decode()
        info = await self._keys.create_tsig_key(
            stored.registration.subdomain,
            label,
            algorithm,
            secret,
            max_keys=MAX_KEYS_PER_REGISTRATION,
        )
        logger.info(
            "TSIG key created",
            extra={"subdomain": info.subdomain, "key_name": info.key_name, "algorithm": algorithm},
        )
        return TsigKeyWithSecret(info, secret)

    async def get(self, caller: Caller, subdomain: str, key_id: str) -> TsigKeyInfo:
        """One key, without its secret."""
        stored = await self._authorizer.self_or_operator(caller, subdomain)
        return await self._keys.get_tsig_key(stored.registration.subdomain, key_id)

    async def list(
        self, caller: Caller, subdomain: str, *, page_size: int, page_token: str
    ) -> TsigKeyPage:
        """A page of a registration's keys, oldest first."""
        stored = await self._authorizer.self_or_operator(caller, subdomain)
        size = paging.page_size(page_size)
        keys = await self._keys.list_tsig_keys(
            stored.registration.subdomain,
            after=paging.time_key_after(page_token),
            limit=paging.fetch_limit(size),
        )
        page = paging.page_of(keys, size, lambda k: paging.time_key(k.create_time, k.key_id))
        return TsigKeyPage(tuple(page.items), page.next_page_token)

    async def delete(self, caller: Caller, subdomain: str, key_id: str) -> None:
        """Delete a key; updates signed with it are refused from now on."""
        stored = await self._authorizer.self_or_operator(caller, subdomain)
        await self._keys.delete_tsig_key(stored.registration.subdomain, key_id)
        logger.info("TSIG key deleted", extra={"subdomain": subdomain, "tsig_key_id": key_id})
