"""The registry's domain objects: plain frozen dataclasses, free of gRPC, HTTP and SQL."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Registration:
    """A delegated challenge subdomain; the password is never part of it."""

    subdomain: str
    username: str
    fulldomain: str
    allowed_cidrs: tuple[str, ...]
    description: str
    max_txt_values: int
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True)
class IssuedCredentials:
    """A registration together with a password just generated for it (create or rotate)."""

    registration: Registration
    password: str


@dataclass(frozen=True)
class RegistrationChanges:
    """The fields an update may change; None means leave as is."""

    allowed_cidrs: tuple[str, ...] | None = None
    description: str | None = None
    max_txt_values: int | None = None


@dataclass(frozen=True)
class TxtValue:
    """One published TXT value."""

    value: str
    create_time: datetime
    expire_time: datetime | None
    persistent: bool = False


@dataclass(frozen=True)
class TxtRecord:
    """The TXT values of one registration, newest first, as of a feed revision."""

    subdomain: str
    fqdn: str
    values: tuple[TxtValue, ...]
    revision: int


@dataclass(frozen=True)
class RegistrationPage:
    """One page of a listing and the token for the next (empty on the last page)."""

    registrations: tuple[Registration, ...]
    next_page_token: str


class ChangeType(enum.Enum):
    """PUT: the record set now holds exactly these values (maybe none). DELETE: the name is gone."""

    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True)
class RecordSet:
    """The TXT values at one fully qualified name (lower case, trailing dot), newest first."""

    fqdn: str
    txt_values: tuple[str, ...]


@dataclass(frozen=True)
class RecordChange:
    """One change to one record set, stamped with its transaction's revision."""

    revision: int
    type: ChangeType
    record_set: RecordSet
    commit_time: datetime


@dataclass(frozen=True)
class FeedStatus:
    """The feed's identity and revision bounds."""

    feed_id: str
    revision: int
    compacted_revision: int
    zone: str


@dataclass(frozen=True)
class SnapshotPart:
    """Part of the full state at `revision`; `last` marks the final part."""

    record_sets: tuple[RecordSet, ...]
    revision: int
    last: bool
    feed_id: str
    zone: str


@dataclass(frozen=True)
class ChangeBatch:
    """Whole transactions' changes in revision order."""

    changes: tuple[RecordChange, ...]


@dataclass(frozen=True)
class Bookmark:
    """Nothing new: the watcher is up to date to `revision`."""

    revision: int
    time: datetime
    feed_id: str


WatchEvent = SnapshotPart | ChangeBatch | Bookmark


ALIAS_OWNER = "_acme-challenge"
"""The one extra owner name a registration has: `_acme-challenge.<fulldomain>`, written only by
RFC 2136 updates (clients that follow the CNAME, or use acme.sh's --challenge-alias, put the
record there)."""


@dataclass(frozen=True)
class TsigKeyInfo:
    """A TSIG key without its secret."""

    subdomain: str
    key_id: str
    key_name: str
    algorithm: str
    create_time: datetime


@dataclass(frozen=True)
class TsigKeyWithSecret:
    """A TSIG key with its base64 secret (create response, and signature checks)."""

    key: TsigKeyInfo
    secret: str


class PrerequisiteKind(enum.Enum):
    """RFC 2136 section 2.4 prerequisite kinds."""

    NAME_IN_USE = "NAME_IN_USE"
    NAME_NOT_IN_USE = "NAME_NOT_IN_USE"
    RRSET_EXISTS = "RRSET_EXISTS"
    RRSET_DOES_NOT_EXIST = "RRSET_DOES_NOT_EXIST"
    RRSET_EQUALS = "RRSET_EQUALS"


@dataclass(frozen=True)
class Prerequisite:
    """One prerequisite on a registration's owner name ("" or ALIAS_OWNER). `is_txt` False means
    the prerequisite is about another type, of which these names never hold any records."""

    kind: PrerequisiteKind
    owner: str
    is_txt: bool = True
    values: frozenset[str] = frozenset()


class UpdateKind(enum.Enum):
    """RFC 2136 section 2.5 update kinds, as they apply to TXT-only names."""

    ADD = "ADD"
    DELETE_RRSET = "DELETE_RRSET"
    DELETE_VALUE = "DELETE_VALUE"


@dataclass(frozen=True)
class UpdateOperation:
    """One change at a registration's owner name; `value` is None for DELETE_RRSET."""

    kind: UpdateKind
    owner: str
    value: str | None = None


class PrerequisiteFailure(enum.Enum):
    """The response codes of failed prerequisites (RFC 2136 section 3.2)."""

    YXDOMAIN = "YXDOMAIN"
    NXDOMAIN = "NXDOMAIN"
    YXRRSET = "YXRRSET"
    NXRRSET = "NXRRSET"


@dataclass(frozen=True)
class UpdateOutcome:
    """What applying an update did: a prerequisite failure (nothing changed), or the revision
    holding the change (0 when the update changed nothing)."""

    failure: PrerequisiteFailure | None
    revision: int
