"""Paging for every List method (AIP-158): the page-size rule, one opaque page-token format, and
the "fetch one more than asked, keep `limit`, continue after the last" step.

A token is the sort key of the last item returned, as a JSON array in unpadded base64url: a
listing resumes exactly after that item even while items are added or deleted between pages,
and a client cannot mistake it for anything it should build itself. Every service reads and
writes the same format, so one decoder decides what a malformed token is.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from acmezone_common.errors import INVALID_PAGE_SIZE, INVALID_PAGE_TOKEN, InvalidArgumentError

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

T = TypeVar("T")
PageKey = tuple[str | int, ...]


def page_size(
    value: int,
    *,
    field: str = "page_size",
    default: int = DEFAULT_PAGE_SIZE,
    limit: int = MAX_PAGE_SIZE,
) -> int:
    """The number of items to return for a request's page_size: 0 means the default, larger
    values are capped rather than refused, and only a negative size is an error."""
    if value < 0:
        raise InvalidArgumentError(
            INVALID_PAGE_SIZE, f"page_size must not be negative, got {value}", field=field
        )
    return min(value or default, limit)


def _not_a_token(field: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        INVALID_PAGE_TOKEN, f"{field} is not a token from a previous response", field=field
    )


def encode_page_token(key: PageKey) -> str:
    """The token that resumes a listing after the item with this sort key."""
    payload = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_page_token(
    token: str, shape: tuple[type[str] | type[int], ...], *, field: str = "page_token"
) -> PageKey | None:
    """The sort key in `token` (None for the first page), each part of the type `shape` names;
    INVALID_PAGE_TOKEN for anything that is not a token this listing returned."""
    if not token:
        return None
    try:
        parts = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        parts = None
    if (
        not isinstance(parts, list)
        or len(parts) != len(shape)
        or not all(type(p) is kind for p, kind in zip(parts, shape, strict=True))
    ):
        raise _not_a_token(field)
    return tuple(parts)


def seq_after(token: str, *, field: str = "page_token") -> int:
    """For listings ordered by an integer sequence (or an offset): the seq a token continues
    after, 0 for the first page; a negative one was never returned, so it is INVALID_PAGE_TOKEN."""
    key = decode_page_token(token, (int,), field=field)
    if key is None:
        return 0
    seq = key[0]
    if not isinstance(seq, int) or seq < 0:
        raise _not_a_token(field)
    return seq


def time_key(moment: datetime, key: str) -> PageKey:
    """For listings ordered by (create_time, id): the sort key of one item."""
    return (moment.isoformat(), key)


def time_key_after(token: str, *, field: str = "page_token") -> tuple[datetime, str] | None:
    """For listings ordered by (create_time, id): the (aware) time and id a token continues
    after, None for the first page."""
    key = decode_page_token(token, (str, str), field=field)
    if key is None:
        return None
    moment, item = key
    assert isinstance(moment, str)
    assert isinstance(item, str)
    try:
        after = datetime.fromisoformat(moment)
    except ValueError:
        raise _not_a_token(field) from None
    if after.tzinfo is None:
        raise _not_a_token(field)
    return after, item


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing and the token for the next ("" on the last page)."""

    items: list[T]
    next_page_token: str


def fetch_limit(limit: int) -> int:
    """How many rows to fetch for a page of `limit`: one more tells whether another follows."""
    return limit + 1


def page_of(rows: Sequence[T], limit: int, key: Callable[[T], PageKey]) -> Page[T]:
    """A page from rows fetched with `fetch_limit(limit)`: the first `limit`, and a token
    after the last of them when there were more."""
    items = list(rows[:limit])
    more = len(rows) > limit
    return Page(items, encode_page_token(key(items[-1])) if more and items else "")
