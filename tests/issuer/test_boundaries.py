"""Module boundaries: the issuer never imports another service or the clients (the CLI and the
agent live in acmezone_clients), and its domain never imports grpc (only the servicer, the app and
the registry client in solvers/dns01 do)."""

from __future__ import annotations

import acmezone_issuer
from tests.boundaries import check_service


def test_no_other_service_and_no_grpc_in_the_domain() -> None:
    check_service(acmezone_issuer, {"solvers/dns01.py"}, sees="servicer.py", at_least=21)
