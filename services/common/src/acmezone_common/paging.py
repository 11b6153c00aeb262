"""The page-size rule every List method shares (AIP-158): 0 means the default, larger values
are capped rather than refused, and only a negative size is an error."""

from __future__ import annotations

from acmezone_common.errors import InvalidArgumentError

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(
    value: int,
    *,
    field: str = "page_size",
    default: int = DEFAULT_PAGE_SIZE,
    limit: int = MAX_PAGE_SIZE,
) -> int:
    """The number of items to return for a request's page_size."""
    if value < 0:
        raise InvalidArgumentError(
            "INVALID_PAGE_SIZE", f"page_size must not be negative, got {value}", field=field
        )
    return min(value or default, limit)
