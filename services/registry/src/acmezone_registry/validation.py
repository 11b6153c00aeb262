"""Checks on everything a caller sends, each raising InvalidArgumentError naming the field.

Validation happens before any storage call so that bad input never half-writes anything.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from acmezone_common.errors import InvalidArgumentError
from acmezone_common.names import is_dns_label
from acmezone_registry import errors

MAX_CIDRS = 64
MAX_DESCRIPTION_CHARS = 256
MAX_TXT_VALUES_LIMIT = 10
_ACME_DIGEST = re.compile(r"^[A-Za-z0-9_-]{43}$")
_PRINTABLE_ASCII = re.compile(r"^[\x20-\x7e]{1,255}$")


def subdomain_label(value: str, *, field: str, reserved: Iterable[str] = ()) -> str:
    """A DNS label of [a-z0-9-] (upper case folded), 1-63 chars, no leading/trailing hyphen."""
    label = label_id(value)
    if label is None:
        raise InvalidArgumentError(
            errors.INVALID_SUBDOMAIN,
            f"{value!r} is not a valid subdomain label: use 1 to 63 characters of a-z, 0-9 "
            "and '-', not starting or ending with '-'",
            field=field,
        )
    if label in set(reserved):
        raise InvalidArgumentError(
            errors.INVALID_SUBDOMAIN, f"subdomain {label!r} is reserved", field=field
        )
    return label


def label_id(value: str) -> str | None:
    """`value` as a subdomain label (case folded, surrounding space dropped), or None when it
    is not one; names (`registrations/{subdomain}`) take the same ids as requests."""
    label = value.strip().lower()
    return label if is_dns_label(label) else None


def cidrs(values: Iterable[str], *, field: str) -> tuple[str, ...]:
    """IPv4/IPv6 networks or single addresses, normalised (`192.0.2.7` -> `192.0.2.7/32`)."""
    networks: list[str] = []
    for index, raw in enumerate(values):
        try:
            network = ipaddress.ip_network(raw.strip(), strict=False)
        except ValueError:
            raise InvalidArgumentError(
                errors.INVALID_CIDR,
                f"{raw!r} is not an IPv4 or IPv6 network (e.g. 192.0.2.0/24, 2001:db8::/32)",
                field=f"{field}[{index}]",
            ) from None
        if str(network) not in networks:
            networks.append(str(network))
    if len(networks) > MAX_CIDRS:
        raise InvalidArgumentError(
            errors.TOO_MANY_CIDRS,
            f"{len(networks)} networks given; at most {MAX_CIDRS} are allowed",
            field=field,
        )
    return tuple(networks)


def description(value: str, *, field: str) -> str:
    """Free text up to 256 characters, without control characters."""
    if len(value) > MAX_DESCRIPTION_CHARS or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidArgumentError(
            errors.INVALID_DESCRIPTION,
            f"description must be at most {MAX_DESCRIPTION_CHARS} characters without control "
            "characters",
            field=field,
        )
    return value


def max_txt_values(value: int, *, field: str, default: int) -> int:
    """0 means the registry default; otherwise 1 to 10."""
    if value == 0:
        return default
    if not 1 <= value <= MAX_TXT_VALUES_LIMIT:
        raise InvalidArgumentError(
            errors.INVALID_MAX_TXT_VALUES,
            f"max_txt_values must be from 1 to {MAX_TXT_VALUES_LIMIT} (0 for the default), "
            f"not {value}",
            field=field,
        )
    return value


def persistent_txt_value(value: str, *, field: str) -> str:
    """A persistent record's value, e.g. dns-persist-01's `<issuer>; accounturi=<url>`: 1 to 255
    printable ASCII characters with at least one `;`, whatever the strictness."""
    if not _PRINTABLE_ASCII.fullmatch(value) or ";" not in value:
        raise InvalidArgumentError(
            errors.INVALID_TXT_VALUE,
            "a persistent TXT value must be 1 to 255 printable ASCII characters with a ';' "
            "(e.g. 'ca.example; accounturi=https://ca.example/acct/1')",
            field=field,
        )
    return value


def txt_value(value: str, *, field: str, strict: bool) -> str:
    """An ACME digest (43 chars of base64url) or, when not strict, 1-255 printable ASCII."""
    if strict and not _ACME_DIGEST.fullmatch(value):
        raise InvalidArgumentError(
            errors.INVALID_TXT_VALUE,
            "TXT value must be exactly 43 characters of [A-Za-z0-9_-] (an ACME DNS-01 digest)",
            field=field,
        )
    if not strict and not _PRINTABLE_ASCII.fullmatch(value):
        raise InvalidArgumentError(
            errors.INVALID_TXT_VALUE,
            "TXT value must be 1 to 255 printable ASCII characters",
            field=field,
        )
    return value
