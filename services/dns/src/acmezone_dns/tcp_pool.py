"""Who may hold a DNS-over-TCP connection: a pool with a global and a per-source cap, and
eviction of the connection idle the longest when a cap is reached (RFC 7766 section 6.2.3).

Without eviction a few hundred idle sockets from one address fill every slot and every other
client's TCP query (truncated answers, UPDATE, TSIG) is refused until they time out. With it, a
new connection takes the slot of the oldest idle one: its own source's when that source is at
its cap, anyone's when the whole pool is full. A connection busy with a query is never evicted,
so a new connection is refused only when every slot is answering at that very moment.

Sources are IPv4 addresses and IPv6 /64 prefixes (one host usually holds a whole /64). No
asyncio here: the server tells the pool when a connection opens, turns idle or busy, and
closes, and the pool calls each connection's `evict` callback.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

_IPV6_SOURCE_PREFIX = 64


def source_of(host: str) -> str:
    """The key a peer address is limited under: the IPv4 address, or the IPv6 /64 (an
    IPv4-mapped IPv6 address counts as its IPv4 address)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, _IPV6_SOURCE_PREFIX), strict=False))
    return str(address)


@dataclass(eq=False)
class Connection:
    """One open connection as the pool sees it."""

    source: str
    evict: Callable[[], None]
    idle: bool = field(default=True)


class TcpPool:
    """Admission and eviction of TCP connections; counts what it refused and evicted."""

    def __init__(self, *, max_connections: int, max_per_source: int) -> None:
        self._max = max_connections
        self._max_per_source = max_per_source
        self._open: dict[Connection, None] = {}
        self._idle: OrderedDict[Connection, None] = OrderedDict()  # oldest idle first
        self._per_source: dict[str, OrderedDict[Connection, None]] = {}  # by last turning idle
        self.evicted = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, source: str, evict: Callable[[], None]) -> Connection | None:
        """A slot for a new connection from `source` (idle until it reads a query), making room
        by evicting the oldest idle connection of that source when it is at its cap, else the
        oldest idle one of all when the pool is full; None (refused) when nothing can go."""
        mine = self._per_source.get(source)
        if mine is not None and len(mine) >= self._max_per_source:
            victim = next((c for c in mine if c.idle), None)
            if victim is None:
                self.refused += 1
                return None
            self._evict(victim)
        if len(self._open) >= self._max:
            if not self._idle:
                self.refused += 1
                return None
            self._evict(next(iter(self._idle)))
        connection = Connection(source, evict)
        self._open[connection] = None
        self._idle[connection] = None
        self._per_source.setdefault(source, OrderedDict())[connection] = None
        return connection

    def busy(self, connection: Connection) -> None:
        """The connection has started reading a query: it may not be evicted until answered."""
        if connection.idle and connection in self._open:
            connection.idle = False
            self._idle.pop(connection, None)

    def idle(self, connection: Connection) -> None:
        """The connection waits for its next query: the newest idle one now."""
        if not connection.idle and connection in self._open:
            connection.idle = True
            self._idle[connection] = None
            self._per_source[connection.source].move_to_end(connection)

    def release(self, connection: Connection) -> None:
        """The connection closed (by either side); its slot is free."""
        if connection in self._open:
            del self._open[connection]
            self._idle.pop(connection, None)
            mine = self._per_source.get(connection.source)
            if mine is not None:
                mine.pop(connection, None)
                if not mine:
                    del self._per_source[connection.source]

    def _evict(self, connection: Connection) -> None:
        self.release(connection)
        self.evicted += 1
        connection.evict()
