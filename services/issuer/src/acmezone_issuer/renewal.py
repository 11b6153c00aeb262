"""When to renew, and when to retry: the renewal plan (ARI windows, or two thirds of the
lifetime), and backoff.

Kept apart from the reconciler so the arithmetic can be tested on its own: a renewal planned too
late lets a certificate expire, and retries without backoff burn the CA's rate limits. Nothing
here does I/O; the attempt asks ARI and hands the answer in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

from acmezone_issuer.states import RenewalSource

# Never re-ask ARI more often than this, whatever Retry-After says.
ARI_MIN_RECHECK = timedelta(seconds=1)
# A certificate just issued keeps at least this long (or a third of its life, if shorter).
FRESH_MIN_LIFE = timedelta(hours=1)


@dataclass(frozen=True)
class LeafInfo:
    """What the issuer keeps about an issued leaf certificate."""

    serial_number: str
    not_before: datetime
    not_after: datetime


def leaf_info(chain_pem: str) -> LeafInfo:
    """Serial and validity of the first certificate of a PEM chain."""
    leaf = x509.load_pem_x509_certificate(chain_pem.encode())
    return LeafInfo(
        serial_number=format(leaf.serial_number, "x"),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
    )


def lifetime_renewal_time(
    not_before: datetime, not_after: datetime, jitter_fraction: float, rng: random.Random
) -> datetime:
    """Two thirds into the lifetime, moved by up to `jitter_fraction` of the lifetime either way
    (so a fleet issued at once does not renew at once), never after the certificate expires."""
    lifetime = not_after - not_before
    jitter = lifetime * rng.uniform(-jitter_fraction, jitter_fraction)
    when = not_before + lifetime * 2 / 3 + jitter
    return min(when, not_after - lifetime / 10)


def retry_delay(
    failed_attempts: int, base_seconds: float, max_seconds: float, rng: random.Random
) -> timedelta:
    """Exponential backoff with full jitter in its upper half: base * 2^(n-1), capped."""
    exponent = max(failed_attempts - 1, 0)
    ceiling = min(base_seconds * (2 ** min(exponent, 30)), max_seconds)
    return timedelta(seconds=rng.uniform(ceiling / 2, ceiling))


@dataclass(frozen=True)
class RenewalPlan:
    """When to renew, where that time came from, and when to work on the certificate next
    (for ARI, when to ask again: the CA may move the window, e.g. before a mass revocation)."""

    renewal_time: datetime
    source: RenewalSource
    next_check: datetime


def plan_renewal(
    *,
    suggested: datetime | None,
    next_check: datetime | None,
    not_before: datetime,
    not_after: datetime,
    fresh: bool,
    now: datetime,
    jitter_fraction: float,
    rng: random.Random,
) -> RenewalPlan:
    """ARI's suggestion (`suggested`, re-asked at `next_check`) when the CA offered one;
    otherwise two thirds of the lifetime with jitter. `fresh` is for a certificate just
    issued: a window already past would renew it in a loop, so it is moved to the floor."""
    if suggested is not None:
        if fresh:
            floor = now + min(FRESH_MIN_LIFE, (not_after - not_before) / 3)
            suggested = max(suggested, floor)
        recheck = max(next_check or now, now + ARI_MIN_RECHECK)
        return RenewalPlan(suggested, RenewalSource.ARI, min(suggested, recheck))
    when = lifetime_renewal_time(not_before, not_after, jitter_fraction, rng)
    return RenewalPlan(when, RenewalSource.LIFETIME, when)
