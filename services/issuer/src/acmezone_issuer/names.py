"""Validation of what callers name: DNS names for certificates, resource ids, e-mail contacts.

Checked before anything is stored, so the CA never sees a name it would refuse for its form (and
charge a failed order against the rate limit).
"""

from __future__ import annotations

import re

from acmezone_common.errors import FieldViolation, InvalidArgumentError

MAX_DNS_NAMES = 100
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_EMAIL = re.compile(r"^[^@\s,:<>]+@[^@\s,:<>]+\.[^@\s,:<>]+$")


def normalise_dns_names(names: list[str], field: str) -> list[str]:
    """Lower-case, validate and de-duplicate-check a certificate's names, keeping their order.

    Raises INVALID_ARGUMENT naming the offending element, e.g. `certificate.dns_names[1]`.
    """
    if not names:
        raise InvalidArgumentError(
            "EMPTY_DNS_NAMES", "at least one DNS name is required", field=field
        )
    if len(names) > MAX_DNS_NAMES:
        raise InvalidArgumentError(
            "TOO_MANY_DNS_NAMES", f"at most {MAX_DNS_NAMES} DNS names", field=field
        )
    result: list[str] = []
    violations: list[FieldViolation] = []
    reason = "INVALID_DNS_NAME"
    for index, raw in enumerate(names):
        name = raw.strip().lower().rstrip(".")
        problem = dns_name_problem(name)
        if problem is not None:
            if "wildcard" in problem:
                reason = "INVALID_WILDCARD"
            violations.append(FieldViolation(f"{field}[{index}]", f"{raw!r}: {problem}"))
            continue
        if name in result:
            violations.append(FieldViolation(f"{field}[{index}]", f"{raw!r} is listed twice"))
            reason = "DUPLICATE_DNS_NAME"
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
        if not _LABEL.match(label):
            return f"label {label!r} is not 1-63 characters of a-z, 0-9 and inner hyphens"
    if labels[-1].isdigit():
        return "IP addresses are not DNS names"
    return None


def base_domain(name: str) -> str:
    """The name a DNS-01 challenge is published for: `*.example.com` -> `example.com`."""
    return name[2:] if name.startswith("*.") else name


def check_id(value: str, field: str) -> None:
    """A resource id chosen by the caller: 1-63 of [a-z0-9-], starting with a letter."""
    if not _ID.match(value):
        raise InvalidArgumentError(
            "INVALID_NAME",
            f"{value!r}: 1 to 63 characters of a-z, 0-9 and '-', starting with a letter",
            field=field,
        )


def parse_name(name: str, collection: str, field: str) -> str:
    """`certificates/abc` -> `abc`, or INVALID_ARGUMENT naming `field`."""
    prefix = f"{collection}/"
    if not name.startswith(prefix) or not _ID.match(name[len(prefix) :]):
        raise InvalidArgumentError(
            "INVALID_NAME", f"{name!r}: expected {collection}/{{id}}", field=field
        )
    return name[len(prefix) :]


def check_emails(emails: list[str], field: str) -> list[str]:
    """Plain e-mail addresses (no `mailto:`), at most 10."""
    if len(emails) > 10:
        raise InvalidArgumentError("INVALID_CONTACT", "at most 10 contacts", field=field)
    for index, email in enumerate(emails):
        if not _EMAIL.match(email):
            raise InvalidArgumentError(
                "INVALID_CONTACT", f"{email!r} is not an e-mail address", field=f"{field}[{index}]"
            )
    return list(emails)
