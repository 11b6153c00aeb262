"""gRPC front end of dynamic updates: TsigKeyService and DnsUpdateService, translation only.

Resource names: `registrations/{subdomain}/tsigKeys/{tsig_key_id}`. Authentication and every
rule live in the domain (`tsig_keys.TsigKeys`, `dns_updates.DnsUpdates`).
"""

from __future__ import annotations

from collections.abc import Mapping

import dns.exception
import dns.name
from google.protobuf import empty_pb2
from typing_extensions import override

from acmezone.registry.v1 import (
    dns_update_service_pb2,
    dns_update_service_pb2_grpc,
    tsig_key_service_pb2,
    tsig_key_service_pb2_grpc,
)
from acmezone_common.errors import InvalidArgumentError
from acmezone_common.names import resource_ids
from acmezone_common.timestamps import timestamp
from acmezone_registry import errors, model, validation
from acmezone_registry.access import ClientAddressResolver, parse_address
from acmezone_registry.dns_updates import DnsUpdates
from acmezone_registry.servicer import Context, _caller, registration_subdomain
from acmezone_registry.tsig_keys import TsigKeys

ALGORITHM_NAMES = {
    tsig_key_service_pb2.TSIG_ALGORITHM_HMAC_SHA256: "hmac-sha256.",
    tsig_key_service_pb2.TSIG_ALGORITHM_HMAC_SHA512: "hmac-sha512.",
    tsig_key_service_pb2.TSIG_ALGORITHM_HMAC_SHA1: "hmac-sha1.",
    tsig_key_service_pb2.TSIG_ALGORITHM_HMAC_MD5: "hmac-md5.sig-alg.reg.int.",
}
_MAX_CNAME_TARGETS = 64
_ALGORITHM_ENUMS = {name: value for value, name in ALGORITHM_NAMES.items()}


def tsig_key_resource(name: str, *, field: str = "name") -> tuple[str, str]:
    """(subdomain, key id) from `registrations/{subdomain}/tsigKeys/{tsig_key_id}`."""
    subdomain, key_id = resource_ids(
        name,
        "registrations/{subdomain}/tsigKeys/{tsig_key_id}",
        field=field,
        id_of=validation.label_id,
    )
    return subdomain, key_id


def tsig_key_to_proto(
    key: model.TsigKeyInfo, allowed_names: tuple[str, str], secret: str = ""
) -> tsig_key_service_pb2.TsigKey:
    """The wire form of a key; the secret only in the create response."""
    return tsig_key_service_pb2.TsigKey(
        name=f"registrations/{key.subdomain}/tsigKeys/{key.key_id}",
        key_name=key.key_name,
        algorithm=_ALGORITHM_ENUMS[key.algorithm],
        secret=secret,
        allowed_names=list(allowed_names),
        create_time=timestamp(key.create_time),
    )


class TsigKeyServicer(tsig_key_service_pb2_grpc.TsigKeyServiceServicer):
    """acmezone.registry.v1.TsigKeyService over `TsigKeys`."""

    def __init__(self, keys: TsigKeys, resolver: ClientAddressResolver) -> None:
        self._keys = keys
        self._resolver = resolver

    @override
    async def CreateTsigKey(
        self, request: tsig_key_service_pb2.CreateTsigKeyRequest, context: Context
    ) -> tsig_key_service_pb2.TsigKey:
        subdomain = registration_subdomain(request.parent, field="parent")
        algorithm = ALGORITHM_NAMES.get(request.tsig_key.algorithm)
        if algorithm is None:
            raise InvalidArgumentError(
                errors.INVALID_TSIG_ALGORITHM,
                "tsig_key.algorithm must be one of TSIG_ALGORITHM_HMAC_SHA256, _HMAC_SHA512, "
                "_HMAC_SHA1, _HMAC_MD5",
                field="tsig_key.algorithm",
            )
        created = await self._keys.create(
            _caller(context, self._resolver),
            subdomain,
            algorithm=algorithm,
            key_id=request.tsig_key_id,
        )
        return tsig_key_to_proto(created.key, self._keys.allowed_names(subdomain), created.secret)

    @override
    async def GetTsigKey(
        self, request: tsig_key_service_pb2.GetTsigKeyRequest, context: Context
    ) -> tsig_key_service_pb2.TsigKey:
        subdomain, key_id = tsig_key_resource(request.name)
        key = await self._keys.get(_caller(context, self._resolver), subdomain, key_id)
        return tsig_key_to_proto(key, self._keys.allowed_names(subdomain))

    @override
    async def ListTsigKeys(
        self, request: tsig_key_service_pb2.ListTsigKeysRequest, context: Context
    ) -> tsig_key_service_pb2.ListTsigKeysResponse:
        subdomain = registration_subdomain(request.parent, field="parent")
        page = await self._keys.list(
            _caller(context, self._resolver),
            subdomain,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        names = self._keys.allowed_names(subdomain)
        return tsig_key_service_pb2.ListTsigKeysResponse(
            tsig_keys=[tsig_key_to_proto(key, names) for key in page.keys],
            next_page_token=page.next_page_token,
        )

    @override
    async def DeleteTsigKey(
        self, request: tsig_key_service_pb2.DeleteTsigKeyRequest, context: Context
    ) -> empty_pb2.Empty:
        subdomain, key_id = tsig_key_resource(request.name)
        await self._keys.delete(_caller(context, self._resolver), subdomain, key_id)
        return empty_pb2.Empty()


class DnsUpdateServicer(dns_update_service_pb2_grpc.DnsUpdateServiceServicer):
    """acmezone.registry.v1.DnsUpdateService over `DnsUpdates`."""

    def __init__(self, updates: DnsUpdates) -> None:
        self._updates = updates

    @override
    async def ApplyDnsUpdate(
        self, request: dns_update_service_pb2.ApplyDnsUpdateRequest, context: Context
    ) -> dns_update_service_pb2.ApplyDnsUpdateResponse:
        address = parse_address(request.client_address)
        if address is None:
            raise InvalidArgumentError(
                errors.INVALID_CLIENT_ADDRESS,
                f"{request.client_address!r} is not an IPv4 or IPv6 address",
                field="client_address",
            )
        cname_targets = self._cname_targets(request.cname_targets)
        result = await self._updates.apply(request.message, address, cname_targets)
        return dns_update_service_pb2.ApplyDnsUpdateResponse(
            message=result.message, rcode=result.rcode, revision=result.revision
        )

    @staticmethod
    def _cname_targets(given: Mapping[str, str]) -> dict[dns.name.Name, dns.name.Name]:
        if len(given) > _MAX_CNAME_TARGETS:
            raise InvalidArgumentError(
                errors.INVALID_DNS_MESSAGE,
                f"at most {_MAX_CNAME_TARGETS} cname_targets",
                field="cname_targets",
            )
        try:
            return {
                dns.name.from_text(k).canonicalize(): dns.name.from_text(v).canonicalize()
                for k, v in given.items()
            }
        except dns.exception.DNSException as exc:
            raise InvalidArgumentError(
                errors.INVALID_DNS_MESSAGE, f"cname_targets: {exc}", field="cname_targets"
            ) from exc

    @override
    async def SignDnsResponse(
        self, request: dns_update_service_pb2.SignDnsResponseRequest, context: Context
    ) -> dns_update_service_pb2.SignDnsResponseResponse:
        if parse_address(request.client_address) is None:
            raise InvalidArgumentError(
                errors.INVALID_CLIENT_ADDRESS,
                f"{request.client_address!r} is not an IPv4 or IPv6 address",
                field="client_address",
            )
        result = await self._updates.sign_response(request.query, request.response)
        return dns_update_service_pb2.SignDnsResponseResponse(
            message=result.message, rcode=result.rcode
        )
