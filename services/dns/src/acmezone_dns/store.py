"""The zone store: applies record-feed revisions by building a new immutable `Snapshot` and
swapping it in with one attribute assignment.

Queries read `store.snapshot` once and use that object to the end, so they never take a lock and
never see half a revision. Building a snapshot copies the name and answer tables (a flat dict
copy, a few ms for 100k names) and re-packs only the names a revision touched: the changed names,
the empty non-terminals above them that appeared or vanished, and every static CNAME whose chain
passes through any of those. The first snapshot (and a re-list) re-packs everything, in steps
that give the event loop back every few names, so answers go on during a large re-list.

The store is written only from the event loop that runs the DNS servers and the feed client, so
its own bookkeeping needs no lock either.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections import Counter
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.TXT

from acmezone_dns import metrics
from acmezone_dns.static_zones import StaticZone
from acmezone_dns.wire import Packed, folds_with_case, name_suffixes, pack_answer
from acmezone_dns.zone import (
    NXDOMAIN,
    REFUSED,
    SERVFAIL,
    TYPE_ANY,
    TYPE_NONE,
    TYPE_TXT,
    Node,
    ZoneInfo,
    ZoneSource,
    ZoneView,
    wire_key,
)

logger = logging.getLogger(__name__)

_CLASS_IN = b"\x00\x01"
_MAX_CHARACTER_STRING = 255


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a query needs, immutable: the zone view and its pre-packed answers.

    `answers` maps name key + qtype + class IN (wire bytes) to the exact answer; `defaults` maps a
    name key to the answer for any other type (NODATA, or the CNAME chain's); `fallbacks` maps a
    zone apex key to the answer for names that don't exist in it (NXDOMAIN, or SERVFAIL while the
    feed zone is not ready); `refused` answers names outside every zone.
    """

    view: ZoneView
    answers: dict[bytes, Packed]
    defaults: dict[bytes, Packed]
    fallbacks: Mapping[bytes, Packed]
    refused: Packed
    revision: int = 0
    feed_id: str = ""
    ready: bool = False
    record_count: int = 0
    zone_record_counts: Mapping[bytes, int] = field(default_factory=dict)


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


_NAMES_PER_STEP = 16
"""Names put or packed per step of a cooperative build: a few milliseconds of work."""
_CHEAP_PER_STEP = 256
"""Names per step in the build's cheaper passes (nodes, CNAME dependents, record counts)."""

_T = TypeVar("_T")


def _drain(steps: Generator[None, None, _T]) -> _T:
    """Run a stepwise build to the end in one go; its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: _T = done.value
            return result


class ZoneStore:
    """Holds the current Snapshot and turns feed snapshots and changes into new ones."""

    def __init__(
        self, zones: list[StaticZone], *, feed_zone: str, txt_ttl: int, freeze_gc: bool = False
    ) -> None:
        self._txt_ttl = txt_ttl
        self._freeze_gc = freeze_gc
        self._feed_zone = wire_key(dns.name.from_text(feed_zone))
        self._static: dict[bytes, tuple[dns.name.Name, dict[int, dns.rdataset.Rdataset]]] = {}
        self._zone_info: dict[bytes, ZoneInfo] = {}
        for zone in zones:
            key = wire_key(zone.name)
            self._zone_info[key] = ZoneInfo(
                key, zone.name, zone.source, zone.soa, ready=zone.source is ZoneSource.STATIC
            )
            self._static.update(zone.records)
        if self._feed_zone not in self._zone_info:
            raise ValueError(f"feed zone {feed_zone} is not among the static zones")
        # The feed's names: key -> (name, TXT rdataset or None for "exists, no values").
        self._txt: dict[bytes, tuple[dns.name.Name, dns.rdataset.Rdataset | None]] = {}
        # How many explicit names sit below each name: > 0 makes it exist (RFC 4592 ENT).
        self._below: Counter[bytes] = Counter()
        for key in self._static:
            self._count_ancestors(key, +1)
        # Which names' answers embed which other names' data, through static CNAME chains.
        self._dependents: dict[bytes, set[bytes]] = {}
        # The answer keys packed for each name, to drop them when it is re-packed.
        self._answer_keys: dict[bytes, list[bytes]] = {}
        self.snapshot = _drain(self._build_steps(revision=0, feed_id="", ready=False))

    @property
    def feed_zone(self) -> bytes:
        """The key of the zone the feed fills."""
        return self._feed_zone

    def in_feed_zone(self, fqdn: str) -> bool:
        """Whether a feed name lies inside the challenge zone (others are ignored)."""
        try:
            key = wire_key(dns.name.from_text(fqdn))
        except dns.exception.DNSException:
            return False
        return (
            key != self._feed_zone
            and key.endswith(self._feed_zone)
            and (key[len(key) - len(self._feed_zone) :] in name_suffixes(key))
        )

    def apply_snapshot(self, txt_sets: Iterable[TxtChange], revision: int, feed_id: str) -> None:
        """Replace every feed record with a full snapshot's and re-pack everything."""
        _drain(self._snapshot_steps(txt_sets, revision, feed_id))

    async def apply_snapshot_cooperatively(
        self, txt_sets: Iterable[TxtChange], revision: int, feed_id: str
    ) -> None:
        """`apply_snapshot`, giving the event loop back every few names. A re-list costs
        about 250 µs of CPU per name (2.5 s at 10k names); built in one go, it would stop
        every DNS answer for that long. Built in steps, queries go on being answered from the
        current snapshot until the new one is swapped in. Cancelled half-way, the store is
        left exactly as before the call."""
        saved = (self._txt, self._below, self._dependents, self._answer_keys, self._zone_info)
        # With freeze_gc (the service), the cyclic GC also waits for the build: the build
        # allocates hundreds of thousands of tracked, acyclic objects, and the full
        # collections they trigger stalled the loop for ~100 ms at a time at 10k names.
        pause_gc = self._freeze_gc and gc.isenabled()
        if pause_gc:
            gc.disable()
        try:
            for _ in self._snapshot_steps(txt_sets, revision, feed_id):
                await asyncio.sleep(0)
        except BaseException:
            self._txt, self._below, self._dependents, self._answer_keys, self._zone_info = saved
            raise
        finally:
            if pause_gc:
                gc.enable()

    def _snapshot_steps(
        self, txt_sets: Iterable[TxtChange], revision: int, feed_id: str
    ) -> Generator[None, None, None]:
        """Builds the snapshot, yielding between steps; swaps it in at the very end. Every
        bookkeeping structure is replaced, never changed in place, so the caller can put the
        old ones back."""
        self._txt = {}
        self._below = Counter()
        for key in self._static:
            self._count_ancestors(key, +1)
        for n, change in enumerate(txt_sets, 1):
            if not self.in_feed_zone(change.fqdn):
                logger.warning("feed name outside the zone ignored", extra={"fqdn": change.fqdn})
                continue
            self._put(change)
            if n % _NAMES_PER_STEP == 0:
                yield
        snapshot = yield from self._build_steps(revision=revision, feed_id=feed_id, ready=True)
        self.snapshot = snapshot
        if self._freeze_gc:
            # Move the (large, long-lived, acyclic) zone out of the cyclic GC's sight: a full
            # collection over 50k names takes ~0.5 s, a pause no DNS answer should wait for.
            # Replaced snapshots are still freed by reference counting. Process-wide, so only
            # the `acmezone-dns` command asks for it, never a test process.
            gc.freeze()

    def apply_changes(self, changes: Iterable[TxtChange], revision: int) -> None:
        """Apply one or more whole transactions and swap in the snapshot at `revision`."""
        touched: set[bytes] = set()
        for change in changes:
            if not self.in_feed_zone(change.fqdn):
                logger.warning("feed name outside the zone ignored", extra={"fqdn": change.fqdn})
                continue
            touched |= self._put(change) if change.values is not None else self._delete(change)
        old = self.snapshot
        affected = set(touched)
        for key in touched:
            affected |= self._dependents.get(key, set())
        # dict.copy() clones the hash table in one go (dict(d) re-inserts when the table is
        # sparse), and overwriting entries that stay instead of deleting and re-adding them
        # keeps the table free of holes, which that fast path needs.
        nodes = old.view.nodes.copy()
        counts = dict(old.zone_record_counts)
        for key in affected:
            previous = nodes.get(key)
            node = self._node(key)
            zone_key = self._zone_key(key)
            if previous is not None:
                counts[zone_key] -= previous.record_count
            if node is not None:
                nodes[key] = node
                counts[zone_key] += node.record_count
            elif previous is not None:
                del nodes[key]
        view = ZoneView(old.view.zones, nodes)
        answers = old.answers.copy()
        defaults = old.defaults.copy()
        for key in affected:
            stale = self._answer_keys.pop(key, [])
            if key in nodes:
                self._pack_name(view, key, answers, defaults)
                kept = set(self._answer_keys[key])
                stale = [k for k in stale if k not in kept]
            elif key in defaults:
                del defaults[key]
            for answer_key in stale:
                del answers[answer_key]
        self.snapshot = replace(
            old,
            view=view,
            answers=answers,
            defaults=defaults,
            revision=revision,
            record_count=sum(counts.values()),
            zone_record_counts=counts,
        )

    # -- bookkeeping ------------------------------------------------------------------------

    def _put(self, change: TxtChange) -> set[bytes]:
        name = dns.name.from_text(change.fqdn).canonicalize()
        key = name.to_wire()
        assert key is not None
        touched = {key}
        if key not in self._txt and key not in self._static:
            touched |= self._count_ancestors(key, +1)
        self._txt[key] = (name, txt_rdataset(change.values or (), self._txt_ttl))
        return touched

    def _delete(self, change: TxtChange) -> set[bytes]:
        key = wire_key(dns.name.from_text(change.fqdn))
        if self._txt.pop(key, None) is None:
            return set()
        touched = {key}
        if key not in self._static:
            touched |= self._count_ancestors(key, -1)
        return touched

    def _count_ancestors(self, key: bytes, delta: int) -> set[bytes]:
        """Adjust the explicit-descendant count of every ancestor inside the zone; returns the
        ancestors whose existence changed (an empty non-terminal appeared or vanished)."""
        changed: set[bytes] = set()
        if key in self._zone_info:
            return changed
        for ancestor in name_suffixes(key)[1:]:
            if ancestor in self._zone_info:
                break
            before = self._below[ancestor]
            self._below[ancestor] = before + delta
            if (before == 0) != (before + delta == 0):
                changed.add(ancestor)
            if self._below[ancestor] == 0:
                del self._below[ancestor]
        return changed

    def _zone_key(self, key: bytes) -> bytes:
        for suffix in name_suffixes(key):
            if suffix in self._zone_info:
                return suffix
        raise KeyError(key)

    def _node(self, key: bytes) -> Node | None:
        """The current node at `key`, or None when the name does not exist."""
        static = self._static.get(key)
        txt = self._txt.get(key)
        if static is None and txt is None:
            if self._below.get(key, 0) > 0:
                return Node(dns.name.from_wire(key, 0)[0], {})
            return None
        rrsets: dict[int, dns.rdataset.Rdataset] = dict(static[1]) if static else {}
        name = static[0] if static else txt[0]  # type: ignore[index]
        if txt is not None:
            if txt[1] is not None:
                rrsets[TYPE_TXT] = txt[1]
            else:
                rrsets.pop(TYPE_TXT, None)
        return Node(name, rrsets)

    # -- building and packing ---------------------------------------------------------------

    def _build_steps(
        self, *, revision: int, feed_id: str, ready: bool
    ) -> Generator[None, None, Snapshot]:
        """Every node and pre-packed answer from the bookkeeping, yielding between steps."""
        zones = {
            key: (replace(info, ready=True) if key == self._feed_zone and ready else info)
            for key, info in self._zone_info.items()
        }
        self._zone_info = zones
        nodes: dict[bytes, Node] = {}
        for n, key in enumerate({*self._static, *self._txt, *self._below}, 1):
            node = self._node(key)
            if node is not None:
                nodes[key] = node
            if n % _CHEAP_PER_STEP == 0:
                yield
        view = ZoneView(zones, nodes)
        self._dependents = {}
        for n, key in enumerate(nodes, 1):
            for target in view.cname_chain(key):
                self._dependents.setdefault(target, set()).add(key)
            if n % _CHEAP_PER_STEP == 0:
                yield
        answers: dict[bytes, Packed] = {}
        defaults: dict[bytes, Packed] = {}
        self._answer_keys = {}
        for n, key in enumerate(nodes, 1):
            self._pack_name(view, key, answers, defaults)
            if n % _NAMES_PER_STEP == 0:
                yield
        fallbacks = {}
        counts = dict.fromkeys(zones, 0)
        for n, (key, node) in enumerate(nodes.items(), 1):
            counts[self._zone_key(key)] += node.record_count
            if n % _CHEAP_PER_STEP == 0:
                yield
        for key, info in zones.items():
            if info.ready:
                packed = pack_answer(NXDOMAIN, True, (), [(key, info.negative_soa)], (), qname=None)
            else:
                packed = pack_answer(SERVFAIL, False, (), (), (), qname=None)
            packed.stat = metrics.slot(0, packed.rcode)
            fallbacks[key] = packed
        refused = pack_answer(REFUSED, False, (), (), (), qname=None)
        refused.stat = metrics.slot(0, REFUSED)
        return Snapshot(
            view=view,
            answers=answers,
            defaults=defaults,
            fallbacks=fallbacks,
            refused=refused,
            revision=revision,
            feed_id=feed_id,
            ready=ready,
            record_count=sum(counts.values()),
            zone_record_counts=counts,
        )

    def _pack_name(
        self,
        view: ZoneView,
        key: bytes,
        answers: dict[bytes, Packed],
        defaults: dict[bytes, Packed],
    ) -> None:
        """Pre-pack every answer of one name: each type it (or its CNAME chain's end) holds,
        ANY, and the default for all other types."""
        node = view.nodes[key]
        types = {*node.rrsets, TYPE_ANY}
        chain = view.cname_chain(key)
        if chain:
            end = view.nodes.get(chain[-1])
            if end is not None:
                types |= set(end.rrsets)
        keys = []
        for qtype in sorted(types):
            if folds_with_case(qtype):
                continue  # answered by the responder's slow path (see folds_with_case)
            packed = _pack(view, key, qtype)
            packed.stat = metrics.slot(metrics.qtype_index(qtype), packed.rcode)
            answer_key = key + qtype.to_bytes(2, "big") + _CLASS_IN
            answers[answer_key] = packed
            keys.append(answer_key)
        self._answer_keys[key] = keys
        default = _pack(view, key, TYPE_NONE)
        default.stat = metrics.slot(0, default.rcode)  # qtype part added per query
        defaults[key] = default


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
