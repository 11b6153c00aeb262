"""The HTTP-01 responder: every replica answers a token any replica presented."""

from __future__ import annotations

import aiohttp

from acmezone_common.addresses import HostPort
from acmezone_issuer.solvers.http01 import Http01Solver
from acmezone_issuer.storage.repository import Repository


async def test_a_token_presented_on_one_replica_is_answered_by_another(
    repository: Repository,
) -> None:
    a = Http01Solver(HostPort("127.0.0.1", 0), repository)
    b = Http01Solver(HostPort("127.0.0.1", 0), repository)
    await a.start()
    await b.start()
    try:
        await a.present("tok-1", "tok-1.thumbprint", "cert")
        async with aiohttp.ClientSession() as http:
            for solver in (a, b):
                url = f"http://{solver.address}/.well-known/acme-challenge/tok-1"
                async with http.get(url) as response:
                    assert response.status == 200
                    assert await response.text() == "tok-1.thumbprint"
            await a.cleanup("tok-1")
            async with http.get(f"http://{b.address}/.well-known/acme-challenge/tok-1") as gone:
                assert gone.status == 404
            async with http.get(f"http://{a.address}/.well-known/acme-challenge/x/y") as other:
                assert other.status == 404
    finally:
        await a.stop()
        await b.stop()
