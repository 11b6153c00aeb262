"""Change notification for Watch: wakes watchers in this process at once.

Changes made by another replica are seen by the watchers' periodic re-read, so a Watch on any
replica follows a certificate whichever replica works on it.
"""

from __future__ import annotations

import asyncio


class CertificateEvents:
    """A broadcast "something changed" signal for certificates."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def changed(self) -> None:
        """Wake every current waiter."""
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, seconds: float) -> None:
        """Return on the next change, or after `seconds`."""
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            return
