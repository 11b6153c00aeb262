"""Module boundaries of the registry: it never imports another service or the clients, and its
domain (storage, feed, credentials, validation, ...) never imports grpc; only servicers and the
composition root do."""

from __future__ import annotations

import acmezone_registry
from tests.boundaries import check_service


def test_no_other_service_and_no_grpc_in_the_domain() -> None:
    check_service(acmezone_registry, set(), sees="servicer.py", at_least=21)
