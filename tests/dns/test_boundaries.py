"""Module boundaries of the dns service: it never imports another service or the clients, and
its domain (zone snapshots, the responder, the UDP/TCP servers) never imports grpc; only
servicers, the composition root and the two registry clients (the feed, RFC 2136 forwarding)
do."""

from __future__ import annotations

import acmezone_dns
from tests.boundaries import (
    from_packages,
    grpc_users,
    may_use_grpc,
    others_than,
    package_imports,
)

OTHERS = others_than("acmezone_dns")
GRPC_CLIENTS = {"feed_client.py", "updates.py"}


def test_no_other_service_and_no_grpc_in_the_domain() -> None:
    found = package_imports(acmezone_dns)
    for relative, modules in found.items():
        assert not from_packages(modules, OTHERS), relative
    assert {r for r in grpc_users(found) if not may_use_grpc(r, GRPC_CLIENTS)} == set()
    assert "feed_client.py" in grpc_users(found)  # the check does see grpc imports
    assert len(found) > 10
