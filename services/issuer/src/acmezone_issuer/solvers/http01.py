"""HTTP-01: serve `/.well-known/acme-challenge/<token>` on the issuer's own HTTP port.

Key authorizations are written to the database as well as kept in memory, so when several replicas
share one address the CA's request is answered whichever replica it reaches; after a restart the
reconciler presents the pending ones again before it answers anything.
"""

from __future__ import annotations

import logging

from aiohttp import web

from acmezone_common.addresses import HostPort
from acmezone_issuer.storage.repository import Repository

logger = logging.getLogger(__name__)

PATH_PREFIX = "/.well-known/acme-challenge/"


class Http01Solver:
    """A tiny aiohttp server answering key authorizations by token."""

    def __init__(self, address: HostPort, repository: Repository) -> None:
        self._address = address
        self._repository = repository
        self._tokens: dict[str, str] = {}
        self._runner: web.AppRunner | None = None
        self._bound: HostPort | None = None

    @property
    def address(self) -> HostPort:
        """The bound address once started."""
        return self._bound or self._address

    async def start(self) -> HostPort:
        """Bind and serve."""
        app = web.Application()
        app.router.add_get(PATH_PREFIX + "{token}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._address.host, self._address.port)
        await site.start()
        self._runner = runner
        port = int(runner.addresses[0][1]) if runner.addresses else self._address.port
        self._bound = self._address.with_port(port)
        logger.info("HTTP-01 listening", extra={"address": str(self._bound)})
        return self._bound

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def present(self, token: str, key_authorization: str, certificate_id: str) -> None:
        """Answer `token` with `key_authorization` from now on, on every replica."""
        self._tokens[token] = key_authorization
        await self._repository.put_http01_token(token, key_authorization, certificate_id)

    async def cleanup(self, token: str) -> None:
        """Stop answering `token`."""
        self._tokens.pop(token, None)
        await self._repository.delete_http01_token(token)

    async def _handle(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        value = self._tokens.get(token)
        if value is None:
            value = await self._repository.get_http01_token(token)
        if value is None:
            return web.Response(status=404, text="unknown token\n")
        return web.Response(text=value, content_type="application/octet-stream")
