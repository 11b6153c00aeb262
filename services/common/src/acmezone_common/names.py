"""Resource names (AIP-122) and DNS labels: the rules every service and client shares.

A resource is named `collection/id` (`certificates/web`, `registrations/3f…`); callers may give
the bare id where a name is expected, which `resource_name` completes. Ids chosen by callers are
1-63 characters of a-z, 0-9 and '-', starting with a letter, so they are also DNS labels and
safe in file names, URLs and metric labels. One definition here, so a name the CLI builds is the
name the service parses.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from acmezone_common.errors import INVALID_NAME, InvalidArgumentError

# RFC 1035 letters-digits-hyphen label, lower case: 1-63 characters, no hyphen at either end.
DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
RESOURCE_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


def is_dns_label(label: str) -> bool:
    """Whether `label` (already lower case) is one LDH label of a DNS name."""
    return DNS_LABEL.fullmatch(label) is not None


def _dns_label_id(segment: str) -> str | None:
    return segment if is_dns_label(segment) else None


def resource_name(collection: str, value: str) -> str:
    """`web` or `certificates/web` -> `certificates/web` (for `collection` "certificates")."""
    prefix = f"{collection}/"
    return value if value.startswith(prefix) else prefix + value


def check_resource_id(value: str, field: str) -> None:
    """A resource id chosen by the caller: 1-63 of [a-z0-9-], starting with a letter."""
    if not RESOURCE_ID.match(value):
        raise InvalidArgumentError(
            INVALID_NAME,
            f"{value!r}: 1 to 63 characters of a-z, 0-9 and '-', starting with a letter",
            field=field,
        )


def parse_resource_name(name: str, collection: str, field: str) -> str:
    """`certificates/abc` -> `abc`, or INVALID_ARGUMENT (INVALID_NAME) naming `field`."""
    prefix = f"{collection}/"
    if not name.startswith(prefix) or not RESOURCE_ID.match(name[len(prefix) :]):
        raise InvalidArgumentError(
            INVALID_NAME, f"{name!r}: expected {collection}/{{id}}", field=field
        )
    return name[len(prefix) :]


def resource_ids(
    name: str,
    pattern: str,
    *,
    field: str,
    id_of: Callable[[str], str | None] = _dns_label_id,
) -> tuple[str, ...]:
    """The ids in `name` for a pattern such as `registrations/{subdomain}/tsigKeys/{key_id}`:
    each `{...}` segment is an id (`id_of` returns it, normalised, or None when it is not one),
    every other segment is literal. INVALID_ARGUMENT (INVALID_NAME) naming `field` otherwise."""
    segments = name.split("/")
    parts = pattern.split("/")
    ids: list[str] = []
    if len(segments) == len(parts):
        for segment, part in zip(segments, parts, strict=True):
            if part.startswith("{"):
                found = id_of(segment)
                if found is None:
                    break
                ids.append(found)
            elif segment != part:
                break
        else:
            return tuple(ids)
    raise InvalidArgumentError(
        INVALID_NAME, f"{name!r} is not a resource name of the form {pattern!r}", field=field
    )
