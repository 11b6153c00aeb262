"""Process lifecycle shared by every service: start, wait for SIGTERM or SIGINT, stop gracefully.

Kubernetes sends SIGTERM and waits `terminationGracePeriodSeconds`; the app's `stop` flips health
to NOT_SERVING and gives in-flight RPCs the configured grace before cancelling them.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger(__name__)


class Service(Protocol):
    """An application that can be started and stopped; built by each service's `app.py`."""

    async def start(self) -> None:
        """Bind ports and start background work; return once serving."""

    async def stop(self, grace: float) -> None:
        """Stop accepting work, finish in-flight work within `grace` seconds, release resources."""


async def serve_until_signalled(service: Service, grace: float) -> None:
    """Run `service` until SIGTERM or SIGINT, then stop it with `grace` seconds to drain."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    await service.start()
    try:
        await stop_requested.wait()
        logger.info("shutting down", extra={"grace_seconds": grace})
    finally:
        await service.stop(grace)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run(
    build: Callable[[], Service],
    grace: float,
    *,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> None:
    """Build the service inside a fresh event loop and serve it until signalled."""

    async def main() -> None:
        await serve_until_signalled(build(), grace)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
