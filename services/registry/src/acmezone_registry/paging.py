"""Opaque page tokens for List methods: the sort key of the last item returned.

Listings are ordered by (create_time, id), so a token holding the last pair resumes exactly
after it even while items are added or deleted between pages.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from acmezone_common.errors import InvalidArgumentError
from acmezone_registry import errors


def encode_page_token(create_time: datetime, key: str) -> str:
    """The token that resumes a listing after the item with this sort key."""
    payload = json.dumps({"t": create_time.isoformat(), "k": key})
    return base64.urlsafe_b64encode(payload.encode()).decode()


def decode_page_token(token: str, *, method: str) -> tuple[datetime, str] | None:
    """The sort key in `token`, None for the first page; INVALID_PAGE_TOKEN for anything that
    is not a token `method` returned."""
    if not token:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(token.encode()))
        return datetime.fromisoformat(payload["t"]), str(payload["k"])
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgumentError(
            errors.INVALID_PAGE_TOKEN,
            f"page_token is not a token returned by {method}",
            field="page_token",
        ) from None
