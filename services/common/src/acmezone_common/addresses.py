"""Listen and dial addresses written as `host:port`, `[v6]:port` or `:port`.

Settings hold addresses as strings operators already know from other servers; this module is the
one place that splits and re-joins them, so IPv6 brackets are handled the same everywhere.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class HostPort:
    """A host (name or literal address, without brackets) and a TCP/UDP port (0 = any free)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> HostPort:
        """Parse `127.0.0.1:53`, `[::1]:53`, `localhost:53` or `:53` (all IPv4 addresses)."""
        text = text.strip()
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep or not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected [ipv6-address]:port")
            port_text = rest[1:]
            try:
                ipaddress.IPv6Address(host)
            except ValueError as exc:
                raise ValueError(f"{text!r}: {host!r} is not an IPv6 address") from exc
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep:
                raise ValueError(f"{text!r}: expected host:port")
            if ":" in host:
                raise ValueError(f"{text!r}: write IPv6 addresses in brackets, [addr]:port")
            host = host or "0.0.0.0"
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ValueError(f"{text!r}: port must be a number from 0 to 65535")
        return cls(host, int(port_text))

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    def with_port(self, port: int) -> HostPort:
        """The same host with another port, e.g. the one the kernel picked for port 0."""
        return HostPort(self.host, port)
