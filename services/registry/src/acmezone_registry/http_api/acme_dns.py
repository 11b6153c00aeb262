"""acme-dns's wire format: how its request bodies are read and its responses are written.

Clients (lego, cert-manager, certbot's acme-dns hook, acme.sh, Traefik) were written against
acme-dns, so these rules follow what acme-dns does rather than what would be tidier:

- Bodies are JSON objects whose keys match case-insensitively (acme-dns decodes them with Go's
  encoding/json, which does; lego sends `SubDomain` and `Txt`). A repeated key: the last wins.
- /register reads `allowfrom`, a list of strings; an empty body or `null` means all defaults.
  Anything else that is not that shape is `malformed_json_payload`.
- /update reads `subdomain` and `txt`; a value of the wrong type counts as missing (the empty
  string), as Go does when it skips a field it cannot convert.
- Error bodies are `{"error": "<name>"}`, with acme-dns's exact spacing; the register body is
  compact JSON in acme-dns's field order; everything is `Content-Type: application/json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from aiohttp import web

from acmezone_registry.model import Registration

CONTENT_TYPE = "application/json"

# The error names acme-dns uses, and the few we add for failures acme-dns answers in plain text.
FORBIDDEN = "forbidden"
BAD_TXT = "bad_txt"
BAD_SUBDOMAIN = "bad_subdomain"
MALFORMED_JSON_PAYLOAD = "malformed_json_payload"
INVALID_ALLOWFROM_CIDR = "invalid_allowfrom_cidr"
TOO_MANY_ALLOWFROM_CIDRS = "too_many_allowfrom_cidrs"
DB_ERROR = "db_error"
NOT_FOUND = "not_found"
METHOD_NOT_ALLOWED = "method_not_allowed"
PAYLOAD_TOO_LARGE = "payload_too_large"
STORAGE_UNAVAILABLE = "storage_unavailable"
INTERNAL_ERROR = "internal_error"
RATE_LIMITED = "rate_limited"
REQUEST_TIMEOUT = "request_timeout"


class MalformedBodyError(ValueError):
    """The request body is not the JSON acme-dns expects."""


@dataclass(frozen=True)
class RegisterRequest:
    """What a /register body asks for."""

    allowfrom: tuple[str, ...] = ()


@dataclass(frozen=True)
class UpdateRequest:
    """What an /update body asks for; a missing or non-string field is the empty string."""

    subdomain: str
    txt: str


def _reject_constant(name: str) -> object:
    raise MalformedBodyError(f"{name} is not JSON")


def _object(body: bytes) -> dict[str, object] | None:
    """The body's top-level JSON object with lower-cased keys, or None for `null`."""
    try:
        value = json.loads(
            body.decode("utf-8"),
            object_pairs_hook=lambda pairs: {key.lower(): item for key, item in pairs},
            parse_constant=_reject_constant,
        )
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise MalformedBodyError(str(exc)) from None
    if value is None or isinstance(value, dict):
        return value
    raise MalformedBodyError("the body must be a JSON object")


def parse_register(body: bytes) -> RegisterRequest:
    """A /register body: empty, `null`, or an object with an optional `allowfrom` list."""
    if not body:
        return RegisterRequest()
    fields = _object(body)
    allowfrom = fields.get("allowfrom") if fields else None
    if allowfrom is None:
        return RegisterRequest()
    if not isinstance(allowfrom, list) or not all(isinstance(item, str) for item in allowfrom):
        raise MalformedBodyError("allowfrom must be a list of strings")
    return RegisterRequest(tuple(allowfrom))


def parse_update(body: bytes) -> UpdateRequest:
    """An /update body: an object with `subdomain` and `txt` strings."""
    fields = _object(body)
    if fields is None:
        raise MalformedBodyError("the body must be a JSON object")
    subdomain = fields.get("subdomain")
    txt = fields.get("txt")
    return UpdateRequest(
        subdomain=subdomain if isinstance(subdomain, str) else "",
        txt=txt if isinstance(txt, str) else "",
    )


def respond(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    """A response with acme-dns's bare `application/json` content type (no charset)."""
    return web.Response(status=status, body=body, content_type=CONTENT_TYPE, headers=headers)


def error(status: int, name: str, headers: dict[str, str] | None = None) -> web.Response:
    """`{"error": "<name>"}`, spaced exactly as acme-dns writes it."""
    return respond(status, ('{"error": ' + json.dumps(name) + "}").encode(), headers)


def registered(registration: Registration, password: str) -> web.Response:
    """201 with the new account, one line of compact JSON in acme-dns's field order."""
    body = {
        "username": registration.username,
        "password": password,
        "fulldomain": registration.fulldomain,
        "subdomain": registration.subdomain,
        "allowfrom": list(registration.allowed_cidrs),
    }
    return respond(201, json.dumps(body, separators=(",", ":")).encode())


def updated(txt: str) -> web.Response:
    """200 `{"txt": "<value>"}`, spaced exactly as acme-dns writes it."""
    return respond(200, ('{"txt": ' + json.dumps(txt) + "}").encode())
