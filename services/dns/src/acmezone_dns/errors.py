"""The dns service's errors.

Configuration problems stop the service at start; feed problems make the feed client reconnect;
API errors are the shared domain errors of `acmezone_common.errors`, which the gRPC interceptor
maps to statuses. The hierarchy::

    DnsError                     anything the dns service itself raises
    ├── ZoneConfigError          a static record or zone file can't be served (bad syntax,
    │                            wildcard, delegation, overlapping zones): fix the settings
    └── FeedProtocolError        the record feed broke its contract (a revision gap, a
                                 snapshot for another zone): drop the stream and reconnect

    acmezone_common.errors.InvalidArgumentError   ZoneService: bad name, type or page token
    acmezone_common.errors.NotFoundError          ZoneService: no such zone
"""

from __future__ import annotations


class DnsError(Exception):
    """Base of the dns service's own errors."""


class ZoneConfigError(DnsError):
    """Static zone data from settings or zone files can't be served as configured."""


class FeedProtocolError(DnsError):
    """The registry's record feed sent something the protocol does not allow."""
