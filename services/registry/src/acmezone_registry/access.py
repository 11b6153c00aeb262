"""Who is calling: the caller's credentials and network address, as the front ends saw them.

The gRPC servicer and the HTTP API both build a `Caller` and hand it to the domain; the rules
about who may do what live in the domain (`registrations.py`), in one place for both front ends.
Proxy headers are believed only when the direct peer is a configured trusted proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Caller:
    """The credentials a request carried and the address it came from (None if unknown)."""

    address: IPAddress | None
    operator_token: str | None = None
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:  # never print secrets, even by accident
        return f"Caller(address={self.address}, username={self.username!r})"


def parse_address(text: str) -> IPAddress | None:
    """An IP address from text such as `192.0.2.1` or `[2001:db8::1]`; None if it is not one."""
    text = text.strip().strip("[]")
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientAddressResolver:
    """Finds the real client address behind trusted proxies.

    Walking X-Forwarded-For from the right, every hop that is itself a trusted proxy is skipped;
    the first untrusted hop is the client. With no trusted proxies the header is ignored, so a
    client cannot spoof its way into a registration's allowed CIDRs.
    """

    def __init__(self, trusted_proxies: Sequence[str]) -> None:
        self._trusted: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in trusted_proxies
        )

    def _is_trusted(self, address: IPAddress) -> bool:
        return any(address in network for network in self._trusted)

    def resolve(
        self, peer: IPAddress | None, forwarded_for: Sequence[str] = ()
    ) -> IPAddress | None:
        """The client address given the direct peer and the X-Forwarded-For header values."""
        if peer is None or not self._trusted or not self._is_trusted(peer):
            return peer
        hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
        client = peer
        for hop in reversed(hops):
            address = parse_address(hop)
            if address is None:
                return client  # a garbled hop: stop at the last address we could trust
            client = address
            if not self._is_trusted(address):
                return address
        return client


def address_allowed(address: IPAddress | None, allowed_cidrs: Sequence[str]) -> bool:
    """True when the list is empty (any source) or the address is inside one of the networks."""
    if not allowed_cidrs:
        return True
    if address is None:
        return False
    for cidr in allowed_cidrs:
        network = ipaddress.ip_network(cidr, strict=False)
        if address.version == network.version and address in network:
            return True
    return False
