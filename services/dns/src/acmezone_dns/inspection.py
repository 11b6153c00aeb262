"""What the ZoneService API reports: the served zones with their feed state, and how a question
would be answered. Domain code, no grpc: the servicer only translates.

A lookup runs the real responder on a real query message built for the purpose (UDP with EDNS at
our advertised size), so what it shows is exactly what a resolver would get, fast path included.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from acmezone_common.errors import InvalidArgumentError, NotFoundError
from acmezone_common.paging import decode_page_token, fetch_limit, page_of, page_size
from acmezone_dns.feed_client import FeedClient, FeedState
from acmezone_dns.metrics import QueryStats
from acmezone_dns.responder import Responder
from acmezone_dns.store import ZoneStore
from acmezone_dns.wire import opt_record
from acmezone_dns.zone import ZoneInfo, ZoneSource, wire_key

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


@dataclass(frozen=True)
class ZoneStatus:
    """One served zone as the API shows it."""

    apex: str
    source: ZoneSource
    revision: int
    record_count: int
    feed_state: FeedState | None
    last_sync_time: datetime | None
    feed_id: str
    serial: int


@dataclass(frozen=True)
class Record:
    """One resource record in presentation form."""

    name: str
    type: str
    ttl: int
    data: str


@dataclass(frozen=True)
class LookupResult:
    """The answer the server would send."""

    rcode: str
    authoritative: bool
    answer: list[Record]
    authority: list[Record]
    additional: list[Record]
    revision: int
    truncated_over_udp: bool


@dataclass(frozen=True)
class ZonePage:
    """One page of zones."""

    zones: list[ZoneStatus]
    next_page_token: str


class ZoneInspector:
    """Reads the store's current snapshot and the feed client's state for the API."""

    def __init__(self, store: ZoneStore, feed: FeedClient, *, edns_udp_size: int) -> None:
        self._store = store
        self._feed = feed
        self._udp_size = edns_udp_size
        # A responder of its own so API lookups don't count as DNS queries.
        self._responder = Responder(store, QueryStats(), edns_udp_size=edns_udp_size)

    def get_zone(self, apex: str) -> ZoneStatus:
        """One zone by apex (`acme.example.test`, trailing dot optional)."""
        try:
            key = wire_key(dns.name.from_text(apex))
        except dns.exception.DNSException as exc:
            raise NotFoundError("ZONE_NOT_FOUND", f"no zone {apex!r}") from exc
        info = self._store.snapshot.view.zones.get(key)
        if info is None:
            raise NotFoundError("ZONE_NOT_FOUND", f"no zone {apex!r} is served here")
        return self._status(key, info)

    def list_zones(self, size: int, page_token: str) -> ZonePage:
        """Zones ordered by apex text, a page at a time; the token (acmezone_common.paging's
        format) holds the last apex returned."""
        limit = page_size(size, default=DEFAULT_PAGE_SIZE, limit=MAX_PAGE_SIZE)
        key = decode_page_token(page_token, (str,))
        after = "" if key is None else str(key[0])
        zones = self._store.snapshot.view.zones
        ordered = sorted(zones.items(), key=lambda item: item[1].name.to_text())
        remaining = [(k, z) for k, z in ordered if z.name.to_text() > after]
        page = page_of(
            [self._status(k, z) for k, z in remaining[: fetch_limit(limit)]],
            limit,
            lambda status: (status.apex,),
        )
        return ZonePage(page.items, page.next_page_token)

    def lookup(self, domain_name: str, record_type: str) -> LookupResult:
        """The answer to `domain_name`/`record_type` right now, as a resolver would see it."""
        try:
            name = dns.name.from_text(domain_name.strip() or "?")
            if len(name.to_text()) > 254:
                raise ValueError("longer than 253 characters")
        except (dns.exception.DNSException, ValueError) as exc:
            raise InvalidArgumentError(
                "INVALID_NAME", f"domain_name: {exc}", field="domain_name"
            ) from exc
        try:
            rdtype = int(dns.rdatatype.from_text(record_type.strip().upper()))
        except (dns.exception.DNSException, ValueError) as exc:
            raise InvalidArgumentError(
                "INVALID_RECORD_TYPE",
                f"record_type {record_type!r} is unknown",
                field="record_type",
            ) from exc
        wire = name.to_wire()
        assert wire is not None
        query = (
            struct.pack("!HHHHHH", 0, 0, 1, 0, 0, 1)
            + wire
            + struct.pack("!HH", rdtype, 1)
            + opt_record(self._udp_size, do=False)
        )
        revision = self._store.snapshot.revision
        full = self._responder.answer(query, True)
        assert full is not None
        udp = self._responder.answer(query, False)
        assert udp is not None
        message = dns.message.from_wire(full)
        truncated = bool(dns.message.from_wire(udp).flags & dns.flags.TC)
        return LookupResult(
            rcode=dns.rcode.to_text(message.rcode()),
            authoritative=bool(message.flags & dns.flags.AA),
            answer=_records(message.answer),
            authority=_records(message.authority),
            additional=_records(message.additional),
            revision=revision,
            truncated_over_udp=truncated,
        )

    def _status(self, key: bytes, info: ZoneInfo) -> ZoneStatus:
        snapshot = self._store.snapshot
        fed = info.source is ZoneSource.FEED
        return ZoneStatus(
            apex=info.name.to_text(),
            source=info.source,
            revision=snapshot.revision if fed else 0,
            record_count=snapshot.zone_record_counts.get(key, 0),
            feed_state=self._feed.state if fed else None,
            last_sync_time=self._feed.last_sync_time if fed else None,
            feed_id=self._feed.feed_id if fed else "",
            serial=info.serial,
        )


def _records(section: list[dns.rrset.RRset]) -> list[Record]:
    return [
        Record(rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), rrset.ttl, rd.to_text())
        for rrset in section
        for rd in rrset
    ]
