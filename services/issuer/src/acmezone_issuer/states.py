"""The words a certificate's record is written in: its state, its stage, where its renewal time
came from.

Stored as the proto enum names without their prefix, in lower case (`STATE_ISSUED` -> `issued`),
so the servicer maps them by name and a stored row reads the same in SQL as in the API. One enum
each, so the reconciler, the metrics, the servicer and the repository cannot drift apart on a
spelling.
"""

from __future__ import annotations

from enum import StrEnum


class CertificateState(StrEnum):
    """Where a certificate stands (`acmezone.issuer.v1.Certificate.State`)."""

    PENDING = "pending"
    WAITING_FOR_DELEGATION = "waiting_for_delegation"
    ISSUING = "issuing"
    ISSUED = "issued"
    RENEWING = "renewing"
    FAILED = "failed"
    REVOKED = "revoked"


class Stage(StrEnum):
    """The ACME step an attempt is at (`Certificate.Stage`); `NONE` between attempts."""

    NONE = ""
    CHECKING_DELEGATION = "checking_delegation"
    ORDERING = "ordering"
    PRESENTING = "presenting"
    PROPAGATING = "propagating"
    VALIDATING = "validating"
    FINALIZING = "finalizing"
    DOWNLOADING = "downloading"


class RenewalSource(StrEnum):
    """Where the planned renewal time came from (`Certificate.renewal_time_source`)."""

    NONE = ""
    ARI = "ari"
    LIFETIME = "lifetime"
