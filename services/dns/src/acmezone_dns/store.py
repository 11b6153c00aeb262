"""The zone store: the served tables, changed in place by feed revisions and replaced whole by a
re-list.

The cost of a revision is proportional to the names it touches, never to the zone: a revision
rewrites the table entries of the changed names, the empty non-terminals above them that
appeared or vanished, and the static CNAMEs whose chains end at them, in place, in one
synchronous call. Queries run on the same event loop (the C loop's batches included) and never
across an await, so a query sees a revision wholly or not at all without taking a lock or copying
a table. (Until this design every revision copied three tables of about 3N entries: 8 ms a
revision at 50k names, growing faster than linearly.)

A re-list (the first snapshot, or one after OUT_OF_RANGE) builds fresh tables aside with a
`Relist`, fed batch by batch as the snapshot streams in, and swaps them in at the end: until then
queries are answered from the current tables, and a cancelled re-list leaves them untouched.

Memory is budgeted per name (about 0.5 KB for a challenge name with one value; NSD needs 0.3):
a feed name is two table entries (its TXT answer under `answers`, the shared NODATA body of every
name of its length under `defaults`) and its entry in the feed map; no dnspython object is kept
for it. The slow path, which needs RRsets, gets them made on demand by `NodeIndex`. ANY for a
feed name is answered by the slow path (it is never pre-packed and never answered from
`defaults`): CAs do not ask it, and a third table entry per name would cost a third more memory.
The three big tables are `ShardedTable`s (shards.py): no insertion ever copies more than a
sliver of the zone, so neither a re-list nor the registration that tips a table over its size
stalls the queries for the tens of ms a million-entry dict takes to grow.

The store is written only from the event loop that runs the DNS servers and the feed client, so
its own bookkeeping needs no lock either.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol, TypeVar

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT

from acmezone_dns import metrics
from acmezone_dns.shards import SHARD_MASK, ShardedTable
from acmezone_dns.static_zones import StaticZone
from acmezone_dns.wire import (
    AA,
    Packed,
    answer_count,
    answer_rdatas,
    folds_with_case,
    name_suffixes,
    pack_answer,
    txt_answer,
)
from acmezone_dns.zone import (
    NOERROR,
    NXDOMAIN,
    REFUSED,
    SERVFAIL,
    TYPE_ANY,
    TYPE_DNSKEY,
    TYPE_NONE,
    TYPE_SOA,
    TYPE_TXT,
    Node,
    ZoneInfo,
    ZoneSource,
    ZoneView,
    wire_key,
)

if TYPE_CHECKING:
    from acmezone_dns.dnssec.keys import ZoneKey
    from acmezone_dns.dnssec.signer import Signer

logger = logging.getLogger(__name__)

_CLASS_IN = b"\x00\x01"
_TXT_IN = TYPE_TXT.to_bytes(2, "big") + _CLASS_IN
_MAX_CHARACTER_STRING = 255
_MAX_NAME = 255
_RR_HEADER = 12  # a pointer to the question name, type, class, TTL, RDLENGTH
_PLAIN_LABELS = re.compile(r"[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*")
_ONE_PLAIN_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
"""Feed names in this form (the registry's are: UUIDs and `_acme-challenge`) are turned into
keys without dnspython; anything else takes dnspython's parser."""

StaticNames = dict[bytes, tuple[dns.name.Name, dict[int, dns.rdataset.Rdataset]]]

FeedBefore = dict[bytes, tuple[bool, Packed | None]]
"""What a revision changed, as it was before: feed key -> (whether the name was a feed name,
its packed TXT answer then or None)."""


class ChangeObserver(Protocol):
    """Told of every change to the feed zone, in the same synchronous call (zone transfers keep
    their journal and the SOA serial with it)."""

    def changed(self, revision: int, before: FeedBefore) -> None:
        """Revisions up to `revision` were applied in place; `before` holds the touched names'
        previous state."""

    def relisted(self, revision: int) -> None:
        """A re-list at `revision` replaced the whole feed."""


class Snapshot:
    """Everything a query needs: the zone view and its pre-packed answers.

    `answers` maps name key + qtype + class IN (wire bytes) to the exact answer; `defaults` maps
    a name key to the answer for any other type (NODATA, or the CNAME chain's); `fallbacks` maps
    a zone apex key to the answer for names that don't exist in it (NXDOMAIN, or SERVFAIL while
    the feed zone is not ready); `refused` answers names outside every zone.

    Revisions change the tables in place (see the module docstring); a re-list makes a new
    Snapshot, so a reader that keeps tables across a re-list (the C loop's `FastTables`) can
    tell by identity.
    """

    __slots__ = (
        "answers",
        "defaults",
        "fallbacks",
        "feed_id",
        "ready",
        "refused",
        "revision",
        "signed",
        "view",
        "zone_record_counts",
    )

    def __init__(
        self,
        view: ZoneView,
        answers: ShardedTable[Packed],
        defaults: ShardedTable[Packed],
        fallbacks: dict[bytes, Packed],
        refused: Packed,
        *,
        revision: int,
        feed_id: str,
        ready: bool,
        zone_record_counts: dict[bytes, int],
        signed: ShardedTable[Packed] | None = None,
    ) -> None:
        """`signed` holds the signed answers for DO=1 queries when DNSSEC signing is on
        (`dnssec.signer.Signer.answers`), else None."""
        self.view = view
        self.signed = signed
        self.answers = answers
        self.defaults = defaults
        self.fallbacks = fallbacks
        self.refused = refused
        self.revision = revision
        self.feed_id = feed_id
        self.ready = ready
        self.zone_record_counts = zone_record_counts

    @property
    def record_count(self) -> int:
        """Resource records served, over every zone."""
        return sum(self.zone_record_counts.values())


@dataclass(frozen=True, slots=True)
class TxtChange:
    """One feed change to one name: `values` None deletes the name, an empty tuple keeps it
    with no TXT data (NODATA)."""

    fqdn: str
    values: tuple[str, ...] | None


def txt_rdataset(values: Iterable[str], ttl: int) -> dns.rdataset.Rdataset | None:
    """A TXT RRset with one record per value, each split into 255-byte character-strings."""
    rdatas = []
    for value in values:
        raw = value.encode("utf-8")
        chunks = [
            raw[i : i + _MAX_CHARACTER_STRING] for i in range(0, len(raw), _MAX_CHARACTER_STRING)
        ] or [b""]
        rdatas.append(dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks))
    if not rdatas:
        return None
    return dns.rdataset.from_rdata_list(ttl, rdatas)


def _txt_from_answer(packed: Packed) -> dns.rdataset.Rdataset:
    """The TXT RRset a packed feed answer carries, read back from its bytes (slow path only)."""
    ttl, wires = answer_rdatas(packed.body)
    rdatas = [
        dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.TXT, wire, 0, len(wire))
        for wire in wires
    ]
    return dns.rdataset.from_rdata_list(ttl, rdatas)


class NodeIndex(Mapping[bytes, Node]):
    """The existing names of one generation of the store, as `ZoneView.nodes`: static names,
    feed names (with the TXT RRset read back from their packed answer) and empty non-terminals.
    Nodes are made when asked for; only the slow path, CNAME packing and the tests ask."""

    def __init__(
        self,
        static: StaticNames,
        feed: ShardedTable[Packed | None],
        below: Counter[bytes],
        apex: tuple[bytes, Callable[[], None]] | None = None,
    ) -> None:
        self._static = static
        self._feed = feed
        self._below = below
        # The feed zone's apex and what brings its SOA up to the served serial (made lazily:
        # see ZoneStore.set_feed_serial).
        self._apex = apex[0] if apex else b""
        self._refresh_apex: Callable[[], None] | None = apex[1] if apex else None

    def get(self, key: bytes, default: Node | None = None) -> Node | None:  # type: ignore[override]
        if key == self._apex and self._refresh_apex is not None:
            self._refresh_apex()
        static = self._static.get(key)
        if key in self._feed:
            txt = self._feed[key]
            rrsets = dict(static[1]) if static else {}
            if txt is None:
                rrsets.pop(TYPE_TXT, None)
            else:
                rrsets[TYPE_TXT] = _txt_from_answer(txt)
            name = static[0] if static else dns.name.from_wire(key, 0)[0]
            return Node(name, rrsets)
        if static is not None:
            return Node(static[0], static[1])
        if self._below.get(key, 0) > 0:
            return Node(dns.name.from_wire(key, 0)[0], {})
        return default

    def __getitem__(self, key: bytes) -> Node:
        node = self.get(key)
        if node is None:
            raise KeyError(key)
        return node

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, bytes):
            return False
        return key in self._feed or key in self._static or self._below.get(key, 0) > 0

    def __iter__(self) -> Iterator[bytes]:
        yield from self._feed
        yield from (k for k in self._static if k not in self._feed)
        yield from (k for k in self._below if k not in self._feed and k not in self._static)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _Tables:
    """One generation of the store: the bookkeeping and the tables built from it. The live one
    is changed in place by revisions; a re-list fills a new one."""

    def __init__(self, store: ZoneStore, zones: dict[bytes, ZoneInfo]) -> None:
        self.store = store
        # The three big tables are sharded (see shards.py): at a million names a single dict's
        # growth stalled every query for 30-170 ms.
        self.feed: ShardedTable[Packed | None] = ShardedTable()
        # How many explicit names sit below each name: > 0 makes it exist (RFC 4592 ENT).
        self.below: Counter[bytes] = Counter()
        for key in store.static:
            self.count_ancestors(key, +1)
        self.view = ZoneView(
            zones,
            NodeIndex(
                store.static, self.feed, self.below, (store.feed_zone, store.refresh_feed_soa)
            ),
        )
        self.answers: ShardedTable[Packed] = ShardedTable()
        self.defaults: ShardedTable[Packed] = ShardedTable()
        # The answer keys packed for each generically packed name, to drop them on a re-pack.
        self.answer_keys: dict[bytes, list[bytes]] = {}
        self.counts: dict[bytes, int] = dict.fromkeys(zones, 0)

    # -- bookkeeping ------------------------------------------------------------------------

    def count_ancestors(self, key: bytes, delta: int) -> list[bytes]:
        """Adjust the explicit-descendant count of every ancestor inside the zone; returns the
        ancestors whose existence changed (an empty non-terminal appeared or vanished)."""
        changed: list[bytes] = []
        zones = self.store.zone_info
        if key in zones:
            return changed
        below = self.below
        for ancestor in name_suffixes(key)[1:]:
            if ancestor in zones:
                break
            before = below[ancestor]
            after = before + delta
            if (before == 0) != (after == 0):
                changed.append(ancestor)
            if after:
                below[ancestor] = after
            else:
                del below[ancestor]
        return changed

    def put(self, key: bytes, values: Iterable[str]) -> list[bytes]:
        """Set a feed name's values; returns the names whose existence changed besides it."""
        new = key not in self.feed
        self.feed[key] = self.store.txt_answer(values)
        if new and key not in self.store.static and not self.store.is_child(key):
            return self.count_ancestors(key, +1)
        return []

    def delete(self, key: bytes) -> list[bytes] | None:
        """Remove a feed name; None when it was not there, else the names whose existence
        changed besides it."""
        if key not in self.feed:
            return None
        del self.feed[key]
        if key in self.store.static:
            return []
        return self.count_ancestors(key, -1)

    def record_count(self, key: bytes) -> int:
        """Resource records held at `key` now."""
        static = self.store.static.get(key)
        count = sum(len(r) for t, r in static[1].items() if t != TYPE_TXT) if static else 0
        if key in self.feed:
            txt = self.feed[key]
            return count + (answer_count(txt) if txt is not None else 0)
        if static is not None and TYPE_TXT in static[1]:
            count += len(static[1][TYPE_TXT])
        return count

    # -- packing ----------------------------------------------------------------------------

    def pack(self, key: bytes) -> None:
        """(Re-)pack every answer of one name, or drop them when it no longer exists."""
        answers = self.answers
        for answer_key in self.answer_keys.pop(key, ()):
            del answers[answer_key]
        if key in self.feed and key not in self.store.static:
            # A plain feed name: its TXT answer as made by `put`, and the NODATA body every
            # name of its length shares.
            txt = self.feed[key]
            if txt is None:
                answers.pop(key + _TXT_IN, None)
            else:
                answers[key + _TXT_IN] = txt
            self.defaults[key] = self.store.nodata(self.view, key)
        elif key in self.view.nodes:
            self.pack_generic(key)
        else:
            answers.pop(key + _TXT_IN, None)
            self.defaults.pop(key, None)

    def pack_generic(self, key: bytes) -> None:
        """Pre-pack every answer of a static, mixed or empty name: each type it (or its CNAME
        chain's end) holds, ANY, and the default for all other types."""
        view = self.view
        node = view.nodes[key]
        types = {*node.rrsets, TYPE_ANY}
        chain = view.cname_chain(key)
        if chain:
            end = view.nodes.get(chain[-1])
            if end is not None:
                types |= set(end.rrsets)
        keys = []
        answers = self.answers
        answers.pop(key + _TXT_IN, None)
        for qtype in sorted(types):
            if folds_with_case(qtype):
                continue  # answered by the responder's slow path (see folds_with_case)
            packed = _pack(view, key, qtype)
            packed.stat = metrics.slot(metrics.qtype_index(qtype), packed.rcode)
            answer_key = key + qtype.to_bytes(2, "big") + _CLASS_IN
            answers[answer_key] = packed
            keys.append(answer_key)
        self.answer_keys[key] = keys
        default = _pack(view, key, TYPE_NONE)
        default.stat = metrics.slot(0, default.rcode)  # qtype part added per query
        self.defaults[key] = default

    def snapshot(self, *, revision: int, feed_id: str, ready: bool) -> Snapshot:
        """A Snapshot over these tables."""
        fallbacks = {}
        for key, info in self.view.zones.items():
            if info.ready:
                packed = pack_answer(NXDOMAIN, True, (), [(key, info.negative_soa)], (), qname=None)
            else:
                packed = pack_answer(SERVFAIL, False, (), (), (), qname=None)
            packed.stat = metrics.slot(0, packed.rcode)
            fallbacks[key] = packed
        refused = pack_answer(REFUSED, False, (), (), (), qname=None)
        refused.stat = metrics.slot(0, REFUSED)
        return Snapshot(
            self.view,
            self.answers,
            self.defaults,
            fallbacks,
            refused,
            revision=revision,
            feed_id=feed_id,
            ready=ready,
            zone_record_counts=self.counts,
            signed=self.store.signer.answers if self.store.signer is not None else None,
        )

    def plain_txt(self, key: bytes) -> Packed | None:
        """The unsigned TXT answer of a plain feed name (one no static data shares)."""
        return None if key in self.store.static else self.feed.get(key)


class ZoneStore:
    """Holds the current Snapshot, applies feed changes to it and swaps in re-lists."""

    def __init__(
        self,
        zones: list[StaticZone],
        *,
        feed_zone: str,
        txt_ttl: int,
        freeze_gc: bool = False,
        signer: Signer | None = None,
    ) -> None:
        """`signer` signs the zones it has keys for (DNSSEC, off when None): their DNSKEY
        RRsets are added to the static data here and on every `replace_static`."""
        self.signer = signer
        if signer is not None:
            zones = signer.with_dnskeys(zones)
        self._txt_ttl = txt_ttl
        self._freeze_gc = freeze_gc
        self._feed_zone = wire_key(dns.name.from_text(feed_zone))
        self._feed_suffix = "." + dns.name.from_text(feed_zone).canonicalize().to_text()
        self.feed_zone_length = len(self._feed_zone)
        self.static: StaticNames = {}
        self.zone_info: dict[bytes, ZoneInfo] = {}
        for zone in zones:
            key = wire_key(zone.name)
            self.zone_info[key] = ZoneInfo(
                key, zone.name, zone.source, zone.soa, ready=zone.source is ZoneSource.STATIC
            )
            self.static.update(zone.records)
        if self._feed_zone not in self.zone_info:
            raise ValueError(f"feed zone {feed_zone} is not among the static zones")
        self._nodata: dict[int, Packed] = {}
        self._freeing: set[asyncio.Task[None]] = set()
        self._txt_stat = metrics.slot(metrics.qtype_index(TYPE_TXT), NOERROR)
        # What every one-value TXT answer shares: its header variants and the record's fixed
        # part up to RDLENGTH (the pointer to the question, type, class, TTL).
        one = Packed(AA, NOERROR, 1, 0, 0, b"")
        self._txt_heads = (one.heads, one.heads_edns)
        self._txt_fixed = txt_answer(["x"], txt_ttl)[0][:-4]
        self.observer: ChangeObserver | None = None
        """Told of every revision and re-list (set by the composition root)."""
        self._feed_serial: int | None = None
        self._feed_soa_stale = False
        self._tables = _Tables(self, self.zone_info)
        # Which names' answers embed which other names' data, through static CNAME chains.
        # Only static names hold CNAMEs, so the chains (missing targets included) are fixed by
        # the static data alone.
        self.dependents: dict[bytes, set[bytes]] = {}
        self._find_dependents()
        self.static_generation = 0
        """Bumped by every `replace_static`: a re-list started before one recounts at the end."""
        self._finish(self._tables)
        self.snapshot = self._tables.snapshot(revision=0, feed_id="", ready=False)

    @property
    def feed_zone(self) -> bytes:
        """The key of the zone the feed fills."""
        return self._feed_zone

    # -- names ------------------------------------------------------------------------------

    def feed_key(self, fqdn: str) -> bytes | None:
        """The key of a feed name, or None when it is not a name strictly inside the challenge
        zone (such names are ignored)."""
        text = fqdn.lower()
        suffix = self._feed_suffix
        if text.endswith(suffix) and text.isascii():
            prefix = text[: -len(suffix)]
            if _PLAIN_LABELS.fullmatch(prefix):
                if "." not in prefix:
                    key = bytes((len(prefix),)) + prefix.encode() + self._feed_zone
                else:
                    key = (
                        b"".join(bytes((len(p),)) + p.encode() for p in prefix.split("."))
                        + self._feed_zone
                    )
                return key if len(key) <= _MAX_NAME else None
        try:
            key = wire_key(dns.name.from_text(fqdn))
        except dns.exception.DNSException:
            return None
        zone = self._feed_zone
        if key != zone and key.endswith(zone) and key[len(key) - len(zone) :] in name_suffixes(key):
            return key
        return None

    def is_child(self, key: bytes) -> bool:
        """Whether a feed name is one label below the zone apex: it has no ancestor that could
        be an empty non-terminal (the commonest case by far: `<uuid>.<zone>`)."""
        return key[0] + 1 + self.feed_zone_length == len(key)

    # -- shared answers ---------------------------------------------------------------------

    def txt_answer(self, values: Iterable[str]) -> Packed | None:
        """The packed TXT answer of a feed name holding `values`; None for no values."""
        body, count = txt_answer(values, self._txt_ttl)
        if not count:
            return None
        packed = Packed(AA, NOERROR, count, 0, 0, body)
        packed.stat = self._txt_stat
        return packed

    def nodata(self, view: ZoneView, key: bytes) -> Packed:
        """The default answer of a plain feed name: NODATA with the zone's SOA, whose owner is
        a pointer into the question, so one body serves every name of the same length."""
        packed = self._nodata.get(len(key))
        if packed is None:
            packed = _pack(view, key, TYPE_NONE)
            packed.stat = metrics.slot(0, packed.rcode)
            if packed.rcode == NOERROR:  # not the SERVFAIL of a zone that is not ready yet
                self._nodata[len(key)] = packed
        return packed

    # -- revisions --------------------------------------------------------------------------

    def apply_changes(self, changes: Iterable[TxtChange], revision: int) -> None:
        """Apply one or more whole transactions to the live tables, in place, and move the
        snapshot to `revision`. The work is proportional to the names the changes touch."""
        tables = self._tables
        touched: dict[bytes, int] = {}  # key -> its record count before
        observer = self.observer
        before: FeedBefore = {}
        for change in changes:
            key = self.feed_key(change.fqdn)
            if key is None:
                logger.warning("feed name outside the zone ignored", extra={"fqdn": change.fqdn})
                continue
            if key not in touched:
                touched[key] = tables.record_count(key)
                if observer is not None:
                    before[key] = (key in tables.feed, tables.feed.get(key))
            if change.values is None:
                appeared = tables.delete(key)
                if appeared is None:
                    continue
            else:
                appeared = tables.put(key, change.values)
            for ancestor in appeared:
                # Whether a name is an empty non-terminal changes no record count.
                touched.setdefault(ancestor, tables.record_count(ancestor))
        affected = set(touched)
        for key in touched:
            affected |= self.dependents.get(key, set())
        counts = tables.counts
        for key in affected:
            zone_key = self._zone_key(key)
            counts[zone_key] += tables.record_count(key) - touched.get(
                key, tables.record_count(key)
            )
            tables.pack(key)
        if self.signer is not None:
            self.signer.changed(affected, tables.plain_txt)
        self.snapshot.revision = revision
        if observer is not None:
            observer.changed(revision, before)

    def set_feed_serial(self, serial: int) -> None:
        """Serve `serial` in the challenge zone's SOA record (zone transfers: the serial follows
        the feed), on every revision, so it must be cheap: the pre-packed SOA answer gets the
        four serial bytes patched in a copy, and the SOA RRset the slow path and transfers
        read is rebuilt only when one of them asks (`refresh_feed_soa`; dnspython takes
        about 150 µs to make one). The SOA that negative answers carry keeps the configured
        serial: re-packing every shared NODATA body on each revision would cost the hot path,
        and resolvers read only its TTL and minimum."""
        if serial == self._feed_serial:
            return
        self._feed_serial = serial
        self._feed_soa_stale = True
        tables = self._tables
        apex = self._feed_zone
        answer_key = apex + TYPE_SOA.to_bytes(2, "big") + _CLASS_IN
        packed = tables.answers.get(answer_key)
        if packed is not None and packed.body[:2] == b"\xc0\x0c":
            tables.answers[answer_key] = _with_serial(packed, serial)
        else:
            tables.pack(apex)
        for key in self.dependents.get(apex, ()):
            tables.pack(key)  # static CNAMEs to the apex (rare)
        if self.signer is not None:
            # The signed SOA is made again on the next DO query for it.
            self.signer.dropped(answer_key)
            self.signer.changed(self.dependents.get(apex, ()), tables.plain_txt)

    def refresh_feed_soa(self) -> None:
        """Bring the challenge zone's SOA RRset to the served serial, if it moved since."""
        if not self._feed_soa_stale or self._feed_serial is None:
            return
        self._feed_soa_stale = False
        _, rrsets = self.static[self._feed_zone]
        soa = rrsets[TYPE_SOA]
        rdata = next(iter(soa))
        assert isinstance(rdata, dns.rdtypes.ANY.SOA.SOA)
        if rdata.serial != self._feed_serial:
            rrsets[TYPE_SOA] = dns.rdataset.from_rdata(
                soa.ttl, rdata.replace(serial=self._feed_serial)
            )

    def feed_zone_state(
        self, *, copy: bool
    ) -> tuple[list[tuple[bytes, dns.rdataset.Rdataset]], Mapping[bytes, Packed | None]]:
        """The challenge zone as it is now, for a zone transfer: its static RRsets (the apex
        SOA first, TXT left out where the feed holds the name) and the feed map, copied when
        asked (a full transfer outlives the call; packed answers are never changed in place,
        so a copy is a consistent picture), else the live map for synchronous use.

        With DNSSEC signing the DNSKEY RRset is left out: a transfer carries the zone's data
        unsigned, and a secondary that served our DNSKEY without our signatures would be bogus
        to every validator (README, "DNSSEC")."""
        self.refresh_feed_soa()
        live = self._tables.feed
        feed: Mapping[bytes, Packed | None] = live.copy() if copy else live
        zone = self._feed_zone
        apex_rrsets = self.static[zone][1]
        records: list[tuple[bytes, dns.rdataset.Rdataset]] = [(zone, apex_rrsets[TYPE_SOA])]
        for key, (_, rrsets) in self.static.items():
            if self._zone_key(key) != zone:
                continue
            for rdtype, rdataset in sorted(rrsets.items()):
                if (key == zone and rdtype in (TYPE_SOA, TYPE_DNSKEY)) or (
                    rdtype == TYPE_TXT and key in feed
                ):
                    continue
                records.append((key, rdataset))
        return records, feed

    def static_txt(self, key: bytes) -> dns.rdataset.Rdataset | None:
        """The static TXT RRset of a name, served when the feed does not hold the name."""
        static = self.static.get(key)
        return static[1].get(TYPE_TXT) if static else None

    def _find_dependents(self) -> None:
        self.dependents.clear()
        for key in self.static:
            for target in self._tables.view.cname_chain(key):
                self.dependents.setdefault(target, set()).add(key)

    def replace_static(
        self, zones: list[StaticZone], keys: dict[dns.name.Name, list[ZoneKey]] | None = None
    ) -> None:
        """Swap in a whole new set of static zones (a zone file reloaded), keeping every feed
        name, in one synchronous call: queries see the old set or the new one, never a mix.

        The work is proportional to the static data, never to the feed: the static names'
        ancestor counts are moved over and the CNAME dependents recomputed; re-packed are only
        the names whose records changed, the CNAMEs whose chains pass through them, the empty
        non-terminals that appeared or vanished, and every name of a zone whose SOA changed
        (its negative answers carry it: a serial bump costs the zone's names, about 0.25 ms
        each). The challenge zone itself (first in `zones`, from settings) keeps its
        readiness; its feed names are left as they are.

        With DNSSEC, `keys` (read again from the key directory) replace the signer's, and
        every signed answer is made afresh from the new data and keys on demand.
        """
        if self.signer is not None:
            if keys is not None:
                self.signer.set_keys(keys)  # checked against `zones` by the caller
            zones = self.signer.with_dnskeys(zones)
            self._retire_signed()
        tables = self._tables
        old_static = dict(self.static)
        zones_view = tables.view.zones
        assert isinstance(zones_view, dict)
        feed_zone = self._feed_zone
        feed_zone_static = sum(
            tables.record_count(k) for k in old_static if self._zone_key(k) == feed_zone
        )
        # Empty non-terminals that vanish while the old names are taken out, and those that
        # appear as the new ones go in: one in both sets exists before and after.
        vanished: set[bytes] = set()
        appeared: set[bytes] = set()
        for key in old_static:
            if key not in tables.feed:
                vanished.update(tables.count_ancestors(key, -1))
        new_info: dict[bytes, ZoneInfo] = {}
        new_static: StaticNames = {}
        for zone in zones:
            key = wire_key(zone.name)
            current = zones_view.get(key)
            ready = current.ready if key == self._feed_zone and current else True
            new_info[key] = ZoneInfo(key, zone.name, zone.source, zone.soa, ready=ready)
            new_static.update(zone.records)
        if self._feed_zone not in new_info:
            raise ValueError("the feed zone is not among the static zones")
        old_zone_keys = set(zones_view)
        old_zone_info = dict(zones_view)
        old_dependents = {target: set(keys) for target, keys in self.dependents.items()}
        # The dicts are shared with the view and the node index: change them in place.
        self.static.clear()
        self.static.update(new_static)
        zones_view.clear()
        zones_view.update(new_info)
        self.zone_info = dict(new_info)
        for key in new_static:
            if key not in tables.feed:
                appeared.update(tables.count_ancestors(key, +1))
        changed = vanished ^ appeared
        self._find_dependents()
        # The challenge zone came back with the configured serial: the served one is made
        # again when the apex is packed below.
        self._feed_soa_stale = self._feed_serial is not None
        repack = {
            key
            for key in old_static.keys() | new_static.keys()
            if _signature(old_static.get(key)) != _signature(new_static.get(key))
        }
        zones_changed = {
            key
            for key in old_zone_keys | set(new_info)
            if _soa_signature(old_zone_info.get(key)) != _soa_signature(new_info.get(key))
        }
        if zones_changed:
            for key in {*new_static, *tables.below}:
                if self._zone_key_or_none(key) in zones_changed:
                    repack.add(key)
        repack |= changed
        # Only static names hold CNAMEs; a chain's answer embeds every name it passes.
        for key in list(repack):
            repack |= old_dependents.get(key, set()) | self.dependents.get(key, set())
        for key in repack:
            tables.pack(key)
        # Record counts: static zones recounted whole, the feed zone's static part adjusted.
        counts = tables.counts
        for key in old_zone_keys - set(new_info):
            counts.pop(key, None)
        for key in new_info:
            if key != self._feed_zone:
                counts[key] = 0
        for key in new_static:
            zone_key = self._zone_key(key)
            if zone_key == feed_zone:
                feed_zone_static -= tables.record_count(key)
            else:
                counts[zone_key] += tables.record_count(key)
        counts[feed_zone] -= feed_zone_static
        self.static_generation += 1
        snapshot = self.snapshot
        self.snapshot = tables.snapshot(
            revision=snapshot.revision, feed_id=snapshot.feed_id, ready=snapshot.ready
        )

    def _recount(self, tables: _Tables) -> None:
        """Redo a re-list's bookkeeping that depends on the static set, after a static reload
        raced with it: the ancestor counts and the zones' record counts (walks the feed once,
        a rare case). `_finish` then packs and counts the static names."""
        zones = tables.view.zones
        assert isinstance(zones, dict)  # the Relist's own, shared with its node index
        zones.clear()
        zones.update(self._ready_zones())
        tables.below.clear()
        tables.counts.clear()
        tables.counts.update(dict.fromkeys(self.zone_info, 0))
        for key in self.static:
            tables.count_ancestors(key, +1)
        for key, txt in tables.feed.pairs():
            if key in self.static:
                tables.counts[self._zone_key(key)] += tables.record_count(key)
                continue
            if not self.is_child(key):
                tables.count_ancestors(key, +1)
            if txt is not None:
                tables.counts[self._feed_zone] += answer_count(txt)
        for key in [k for k in tables.answer_keys if k not in self.static]:
            tables.pack(key)  # was a mixed name when the re-list packed it

    def relist(self) -> Relist:
        """Start building a full snapshot aside; the live tables stay as they are until
        `Relist.finish`."""
        return Relist(self)

    def apply_snapshot(self, txt_sets: Iterable[TxtChange], revision: int, feed_id: str) -> None:
        """Replace every feed record with a full snapshot's (one go, for tests and tools)."""
        relist = self.relist()
        for change in txt_sets:
            relist.add(change.fqdn, change.values or ())
        relist.finish(revision, feed_id)

    def _finish(self, tables: _Tables) -> None:
        """Pack the names a re-list leaves to the end: static names (the CNAMEs into feed names
        among them), mixed and empty non-terminal names; then count their records."""
        for key in {*self.static, *tables.below}:
            tables.pack(key)
        for key in {*self.static, *tables.below}:
            if key not in tables.feed:
                tables.counts[self._zone_key(key)] += tables.record_count(key)

    def _retire_signed(self) -> None:
        """Start the signer afresh (its signed answers were made from the data being
        replaced); the old table is taken apart in the background like retired tables."""
        assert self.signer is not None
        retired = self.signer.reset()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(_take_apart_sharded(retired), name="signed-answers-free")
        self._freeing.add(task)
        task.add_done_callback(self._freeing.discard)

    def _swap(self, tables: _Tables, revision: int, feed_id: str) -> None:
        if self.signer is not None:
            self._retire_signed()
        retired = self._tables
        self._tables = tables
        self.snapshot = tables.snapshot(revision=revision, feed_id=feed_id, ready=True)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a tool or test): reference counting frees them now
        # Freeing a million names' objects in one go stalls the loop for a few hundred ms
        # (measured: 150-390 ms at 1M); take them apart a slice at a time instead.
        task = loop.create_task(_take_apart(retired), name="zone-tables-free")
        self._freeing.add(task)
        task.add_done_callback(self._freeing.discard)

    def _zone_key_or_none(self, key: bytes) -> bytes | None:
        for suffix in name_suffixes(key):
            if suffix in self.zone_info:
                return suffix
        return None

    def _zone_key(self, key: bytes) -> bytes:
        for suffix in name_suffixes(key):
            if suffix in self.zone_info:
                return suffix
        raise KeyError(key)

    def _ready_zones(self) -> dict[bytes, ZoneInfo]:
        return {
            key: (replace(info, ready=True) if key == self._feed_zone else info)
            for key, info in self.zone_info.items()
        }


class Relist:
    """A full snapshot being built aside, a batch at a time, while the live tables go on
    answering. `finish` swaps it in; dropping it (a cancelled or failed re-list) leaves the
    store exactly as it was.

    With `freeze_gc` (the service), the cyclic GC waits from the first `add` to `finish`: a
    million-name build allocates millions of tracked, acyclic objects, and the full
    collections they would trigger stall the loop for hundreds of ms at a time. At the end the
    new zone is moved out of the collector's sight (`gc.freeze`); replaced tables are still
    freed by reference counting.
    """

    def __init__(self, store: ZoneStore) -> None:
        self._store = store
        self._tables = _Tables(store, store._ready_zones())
        self._generation = store.static_generation
        self._holding_gc = False
        self.names = 0

    def add(self, fqdn: str, values: Iterable[str]) -> None:
        """One record set of the snapshot."""
        store = self._store
        self._hold_gc()
        key = store.feed_key(fqdn)
        if key is None:
            logger.warning("feed name outside the zone ignored", extra={"fqdn": fqdn})
            return
        tables = self._tables
        self.names += 1
        # The general bookkeeping (a repeat replaces what came before); `add_many` builds
        # the plain names of a whole batch itself.
        if key in tables.feed:
            tables.counts[store.feed_zone] -= tables.record_count(key)
        tables.put(key, values)
        tables.counts[store.feed_zone] += tables.record_count(key)
        tables.pack(key)

    def add_many(self, record_sets: Iterable[tuple[str, Sequence[str]]]) -> None:
        """`add` for every (fqdn, values) of a snapshot batch. The commonest record set by
        far, a `<label>.<zone>` name with one short value, is built right here with every
        lookup bound once and put straight into its shards: a cold start is a million of
        them, and this loop is most of its time. Anything else (a repeat of a name included)
        goes through `add`. No table grows by more than a shard at a time (shards.py), so a
        batch of a few thousand names is a few ms on the loop whatever the zone's size.

        A name whose answer the live tables already hold byte for byte (most of them, in a
        re-list after OUT_OF_RANGE) shares the live `Packed`: answers are never changed in
        place, and while both generations are alive each unchanged name then costs its table
        entries and keys only, not a second answer."""
        store = self._store
        tables = self._tables
        static = store.static
        feed_shards = tables.feed.shards
        answer_shards = tables.answers.shards
        default_shards = tables.defaults.shards
        live_answer_shards = store._tables.answers.shards
        mask = SHARD_MASK
        suffix = store._feed_suffix
        cut = -len(suffix)
        zone = store.feed_zone
        plain = _ONE_PLAIN_LABEL.fullmatch
        fixed = store._txt_fixed
        heads, heads_edns = store._txt_heads
        stat = store._txt_stat
        nodata = store._nodata
        make = Packed.made
        built = 0
        self._hold_gc()
        for fqdn, values in record_sets:
            if fqdn.endswith(suffix) and len(values) == 1:
                label = fqdn[:cut]
                if plain(label):
                    key = bytes((len(label),)) + label.encode() + zone
                    raw = values[0].encode()
                    default = nodata.get(len(key))
                    shard = hash(key) & mask  # feed and defaults share the key
                    feed_shard = feed_shards[shard]
                    if (
                        len(raw) <= _MAX_CHARACTER_STRING
                        and default is not None
                        and key not in feed_shard
                        and key not in static
                    ):
                        rdata = bytes((len(raw),)) + raw
                        body = fixed + len(rdata).to_bytes(2, "big") + rdata
                        answer_key = key + _TXT_IN
                        answer_shard = hash(answer_key) & mask
                        packed = live_answer_shards[answer_shard].get(answer_key)
                        if packed is None or packed.body != body or packed.stat != stat:
                            packed = make(heads, heads_edns, body, stat)
                        feed_shard[key] = packed
                        default_shards[shard][key] = default
                        answer_shards[answer_shard][answer_key] = packed
                        built += 1
                        continue
            self.add(fqdn, values)
        tables.counts[zone] += built
        self.names += built

    def _hold_gc(self) -> None:
        if self._store._freeze_gc and not self._holding_gc and gc.isenabled():
            gc.disable()
            self._holding_gc = True

    def finish(self, revision: int, feed_id: str) -> None:
        """Swap the built tables in at `revision`."""
        try:
            store = self._store
            tables = self._tables
            if self._generation != store.static_generation:
                store._recount(tables)
            # Feed names counted above are all inside the feed zone; _finish adds the rest.
            store._finish(tables)
            store._swap(tables, revision, feed_id)
            store.zone_info = dict(tables.view.zones)
        finally:
            self.release()
        if store.observer is not None:
            store.observer.relisted(revision)
        if self._store._freeze_gc:
            gc.freeze()

    def release(self) -> None:
        """Give the cyclic GC back (idempotent): after `finish`, or when the re-list is
        abandoned."""
        if self._holding_gc:
            self._holding_gc = False
            gc.enable()


_FREED_PER_STEP = 20_000
_V = TypeVar("_V")


async def _take_apart(tables: _Tables) -> None:
    """Empty a replaced generation's tables a shard or slice at a time, giving the loop back
    in between: freeing a million names' objects in one go stalls it for a few hundred ms.
    Nothing reads them any more: queries run on the current snapshot, and a C-loop batch
    reads its tables within one call."""
    await _take_apart_sharded(tables.answers)
    await _take_apart_sharded(tables.defaults)
    await _take_apart_sharded(tables.feed)
    await _take_apart_table(tables.answer_keys)
    tables.below.clear()


async def _take_apart_sharded(table: ShardedTable[_V]) -> None:
    """Empty one retired sharded table, a shard per loop turn (see `_take_apart`)."""
    for shard in table.shards:
        if shard:
            shard.clear()
            await asyncio.sleep(0)


class _Emptiable(Protocol):
    def popitem(self) -> object: ...

    def __len__(self) -> int: ...


async def _take_apart_table(table: _Emptiable) -> None:
    """Empty one retired plain table a slice at a time (see `_take_apart`)."""
    while table:
        for _ in range(min(_FREED_PER_STEP, len(table))):
            table.popitem()
        await asyncio.sleep(0)


def _signature(
    entry: tuple[dns.name.Name, dict[int, dns.rdataset.Rdataset]] | None,
) -> dict[int, tuple[int, dns.rdataset.Rdataset]] | None:
    """What a static name serves, comparable (rdataset equality ignores the TTL)."""
    if entry is None:
        return None
    return {rdtype: (rdataset.ttl, rdataset) for rdtype, rdataset in entry[1].items()}


def _soa_signature(info: ZoneInfo | None) -> tuple[int, dns.rdataset.Rdataset, bool] | None:
    return None if info is None else (info.soa.ttl, info.soa, info.ready)


def _with_serial(packed: Packed, serial: int) -> Packed:
    """A copy of a packed SOA answer (owner a pointer to the question, names uncompressed)
    with another serial."""
    body = packed.body
    i = _RR_HEADER
    for _ in range(2):  # MNAME, RNAME
        while body[i]:
            i += body[i] + 1
        i += 1
    copy = Packed.__new__(Packed)
    copy.heads, copy.heads_edns = packed.heads, packed.heads_edns
    copy.rcode, copy.size, copy.stat = packed.rcode, packed.size, packed.stat
    copy.body = body[:i] + serial.to_bytes(4, "big") + body[i + 4 :]
    return copy


def _pack(view: ZoneView, key: bytes, qtype: int) -> Packed:
    resolution = view.resolve(key, qtype)
    return pack_answer(
        resolution.rcode,
        resolution.authoritative,
        resolution.answer,
        resolution.authority,
        resolution.additional,
        qname=key,
    )
