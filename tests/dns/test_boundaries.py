"""Module boundaries of the dns service: it never imports another service or the clients, and
its domain (zone snapshots, the responder, the UDP/TCP servers) never imports grpc; only
servicers, the composition root and the two registry clients (the feed, RFC 2136 forwarding)
do."""

from __future__ import annotations

import acmezone_dns
from tests.boundaries import check_service


def test_no_other_service_and_no_grpc_in_the_domain() -> None:
    check_service(
        acmezone_dns, {"feed_client.py", "update_forwarding.py"}, sees="feed_client.py", at_least=11
    )
