"""Abuse limits: token buckets per source network, per username and for the whole registry.

A bucket holds up to `burst` tokens and refills at `rate` per second; an event takes one token
and is refused while the bucket is empty, with the time until the next token as Retry-After.
Memory is bounded: at most `max_keys` buckets are kept and the least recently touched is
forgotten first (a forgotten bucket is a full one, so eviction only ever forgives).

Sources are grouped by network (IPv4 /24, IPv6 /56): one host rarely attacks alone, and an
attacker with a whole IPv6 /64 would otherwise get a fresh bucket per address.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from acmezone_common.errors import ResourceExhaustedError
from acmezone_registry.errors import RATE_LIMITED

IPV4_PREFIX = 24
IPV6_PREFIX = 56


@functools.lru_cache(maxsize=4096)
def source_network(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> str:
    """The bucket key of a client address ("unknown" when there is none). Asked for every
    request, so recent answers are kept: building the network costs more than the rest of
    the rate-limit check."""
    if address is None:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = IPV4_PREFIX if address.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


class TokenBuckets:
    """One token bucket per key; a rate of 0 means no limit."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate
        self._burst = max(burst, 1.0)
        self._max_keys = max_keys
        self._clock = clock
        # key -> (tokens, when they were counted)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def _tokens(self, key: str, now: float) -> float:
        tokens, then = self._buckets.get(key, (self._burst, now))
        return min(self._burst, tokens + (now - then) * self._rate)

    def wait(self, key: str) -> float:
        """Seconds until `key` may act again; 0 when it may now (nothing is taken)."""
        if not self.enabled:
            return 0.0
        tokens = self._tokens(key, self._clock())
        return 0.0 if tokens >= 1 else (1 - tokens) / self._rate

    def take(self, key: str) -> float:
        """Take a token for `key`: 0 when it was available, else the wait (nothing taken)."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        tokens = self._tokens(key, now)
        if tokens < 1:
            return (1 - tokens) / self._rate
        self._buckets[key] = (tokens - 1, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return 0.0


def rate_limited(limit: str, what: str, wait: float) -> ResourceExhaustedError:
    """The error for a refused event; `retry_after_seconds` is a whole number, at least 1."""
    seconds = max(1, math.ceil(wait))
    return ResourceExhaustedError(
        RATE_LIMITED,
        f"too many {what}; retry after {seconds} s",
        metadata={"retry_after_seconds": str(seconds), "limit": limit},
    )


@dataclass(frozen=True)
class AbuseLimits:
    """Every limit the registry applies, built once by the composition root."""

    failed_auth_by_source: TokenBuckets
    failed_auth_by_username: TokenBuckets
    open_registrations_by_source: TokenBuckets
    open_registrations: TokenBuckets

    @classmethod
    def unlimited(cls) -> AbuseLimits:
        """No limits (tests of other behaviour, tools)."""
        return cls(*(TokenBuckets(0, 1) for _ in range(4)))

    @classmethod
    def from_quotas(
        cls,
        *,
        auth_failures_per_minute_per_source: float,
        auth_failures_per_minute_per_username: float,
        open_registrations_per_hour_per_source: float,
        open_registrations_per_hour: float,
    ) -> AbuseLimits:
        """Each quota is a bucket of that many events refilling over its period; 0 is none."""
        return cls(
            TokenBuckets(
                auth_failures_per_minute_per_source / 60, auth_failures_per_minute_per_source
            ),
            TokenBuckets(
                auth_failures_per_minute_per_username / 60, auth_failures_per_minute_per_username
            ),
            TokenBuckets(
                open_registrations_per_hour_per_source / 3600,
                open_registrations_per_hour_per_source,
            ),
            TokenBuckets(open_registrations_per_hour / 3600, open_registrations_per_hour),
        )
