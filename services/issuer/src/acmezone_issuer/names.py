"""Validation of what callers name: DNS names for certificates and e-mail contacts (resource
ids and names follow `acmezone_common.names`).

Checked before anything is stored, so the CA never sees a name it would refuse for its form (and
charge a failed order against the rate limit).
"""

from __future__ import annotations

import re

from acmezone_common.errors import FieldViolation, InvalidArgumentError
from acmezone_common.names import is_dns_label
from acmezone_issuer import errors

MAX_DNS_NAMES = 100
_EMAIL = re.compile(r"^[^@\s,:<>]+@[^@\s,:<>]+\.[^@\s,:<>]+$")


def normalise_dns_names(names: list[str], field: str) -> list[str]:
    """Lower-case, validate and de-duplicate-check a certificate's names, keeping their order.

    Raises INVALID_ARGUMENT naming the offending element, e.g. `certificate.dns_names[1]`.
    """
    if not names:
        raise InvalidArgumentError(
            errors.EMPTY_DNS_NAMES, "at least one DNS name is required", field=field
        )
    if len(names) > MAX_DNS_NAMES:
        raise InvalidArgumentError(
            errors.TOO_MANY_DNS_NAMES, f"at most {MAX_DNS_NAMES} DNS names", field=field
        )
    result: list[str] = []
    violations: list[FieldViolation] = []
    reason = errors.INVALID_DNS_NAME
    for index, raw in enumerate(names):
        name = raw.strip().lower().rstrip(".")
        problem = dns_name_problem(name)
        if problem is not None:
            if "wildcard" in problem:
                reason = errors.INVALID_WILDCARD
            violations.append(FieldViolation(f"{field}[{index}]", f"{raw!r}: {problem}"))
            continue
        if name in result:
            violations.append(FieldViolation(f"{field}[{index}]", f"{raw!r} is listed twice"))
            reason = errors.DUPLICATE_DNS_NAME
            continue
        result.append(name)
    if violations:
        raise InvalidArgumentError(
            reason, "; ".join(v.description for v in violations), field_violations=violations
        )
    return result


def dns_name_problem(name: str) -> str | None:
    """Why `name` (lower case, no trailing dot) is not a valid certificate name, or None."""
    if not name:
        return "empty name"
    if len(name) > 253:
        return "longer than 253 characters"
    labels = name.split(".")
    if len(labels) < 2:
        return "must have at least two labels"
    for position, label in enumerate(labels):
        if label == "*":
            if position != 0:
                return "a wildcard must be the whole left-most label"
            if len(labels) < 3:
                return "a wildcard needs at least two labels after it"
            continue
        if "*" in label:
            return "a wildcard must be the whole left-most label"
        if not is_dns_label(label):
            return f"label {label!r} is not 1-63 characters of a-z, 0-9 and inner hyphens"
    if labels[-1].isdigit():
        return "IP addresses are not DNS names"
    return None


def base_domain(name: str) -> str:
    """The name a DNS-01 challenge is published for: `*.example.com` -> `example.com`."""
    return name[2:] if name.startswith("*.") else name


def check_emails(emails: list[str], field: str) -> list[str]:
    """Plain e-mail addresses (no `mailto:`), at most 10."""
    if len(emails) > 10:
        raise InvalidArgumentError(errors.INVALID_CONTACT, "at most 10 contacts", field=field)
    for index, email in enumerate(emails):
        if not _EMAIL.match(email):
            raise InvalidArgumentError(
                errors.INVALID_CONTACT,
                f"{email!r} is not an e-mail address",
                field=f"{field}[{index}]",
            )
    return list(emails)
