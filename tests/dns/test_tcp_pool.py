"""The TCP pool's source keys and eviction order (RFC 7766 section 6.2.3); the server side with
real sockets is in test_tcp_server."""

from __future__ import annotations

from acmezone_dns.tcp_pool import TcpPool, source_of


def test_sources_are_ipv4_addresses_and_ipv6_slash_64s() -> None:
    assert source_of("192.0.2.7") == "192.0.2.7"
    assert source_of("2001:db8:1:2::5") == source_of("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert source_of("2001:db8:1:3::5") != source_of("2001:db8:1:2::5")
    assert source_of("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_of("fe80::1%lo") == "fe80::/64"


def test_a_full_pool_evicts_the_connection_idle_longest_of_any_source() -> None:
    evicted: list[str] = []
    pool = TcpPool(max_connections=2, max_per_source=2)
    a = pool.admit("a", lambda: evicted.append("a"))
    b = pool.admit("b", lambda: evicted.append("b"))
    assert a is not None
    assert b is not None
    pool.busy(a)
    pool.idle(a)  # a answered a query after b went idle: b is the oldest idle now
    assert pool.admit("c", lambda: evicted.append("c")) is not None
    assert evicted == ["b"]
    assert len(pool) == 2
    pool.busy(a)
    d = pool.admit("d", lambda: evicted.append("d"))  # c goes, a is busy
    assert d is not None
    assert evicted == ["b", "c"]
    pool.busy(d)
    assert pool.admit("e", lambda: evicted.append("e")) is None  # both busy: refused
    assert (pool.refused, pool.evicted, len(pool)) == (1, 2, 2)
    pool.release(a)
    assert pool.admit("e", lambda: evicted.append("e")) is not None
    assert evicted == ["b", "c"]
