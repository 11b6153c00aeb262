"""NOTIFY (RFC 1996): tell the configured secondaries that the challenge zone changed, so they
transfer at once instead of waiting for the SOA refresh.

Changes are coalesced: a burst of revisions within `delay` seconds costs one NOTIFY per
secondary, and changes that arrive while one round is being sent start exactly one more round.
Each NOTIFY goes over UDP from an ephemeral port and is retried a few times when no answer
comes; a secondary that never answers is logged and counted, never waited for by anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from acmezone_common.addresses import HostPort
from acmezone_dns.metrics import TransferStats

logger = logging.getLogger(__name__)

_ATTEMPTS = 3
_TIMEOUT_SECONDS = 1.0


class Notifier:
    """Sends coalesced NOTIFY rounds to every secondary."""

    def __init__(
        self, zone: str, targets: list[HostPort], stats: TransferStats, *, delay: float
    ) -> None:
        self._zone = dns.name.from_text(zone)
        self._targets = list(targets)
        self._stats = stats
        self._delay = delay
        self._pending = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0
        """NOTIFY rounds completed (tests wait on `wait_rounds`)."""
        self._round_done = asyncio.Condition()

    async def start(self) -> None:
        """Start sending in the background (nothing to do without targets)."""
        if self._targets:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop; a round in progress is abandoned (the secondaries refresh on their own)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def changed(self) -> None:
        """The zone changed: a round will follow within `delay` (called synchronously by the
        journal on every revision; costs setting an event)."""
        self._pending.set()

    async def wait_rounds(self, rounds: int) -> None:
        """Until at least `rounds` rounds were sent."""
        async with self._round_done:
            await self._round_done.wait_for(lambda: self.rounds >= rounds)

    async def _run(self) -> None:
        while True:
            await self._pending.wait()
            await asyncio.sleep(self._delay)  # coalesce a burst into one round
            self._pending.clear()
            results = await asyncio.gather(
                *(self._notify(t) for t in self._targets), return_exceptions=True
            )
            for target, result in zip(self._targets, results, strict=True):
                if isinstance(result, Exception):  # a bug must not end the notifying
                    self._stats.notifies["failed"] += 1
                    logger.error(
                        "NOTIFY failed", extra={"target": str(target), "error": repr(result)}
                    )
            async with self._round_done:
                self.rounds += 1
                self._round_done.notify_all()

    async def _notify(self, target: HostPort) -> None:
        message = dns.message.make_query(self._zone, dns.rdatatype.SOA, dns.rdataclass.IN)
        message.flags = dns.flags.AA  # clears RD; the opcode lives in the flags too, so after
        message.set_opcode(dns.opcode.NOTIFY)
        for attempt in range(_ATTEMPTS):
            try:
                response = await dns.asyncquery.udp(
                    message, target.host, timeout=_TIMEOUT_SECONDS, port=target.port
                )
            except (dns.exception.DNSException, OSError) as exc:
                if attempt == _ATTEMPTS - 1:
                    logger.warning(
                        "NOTIFY not answered", extra={"target": str(target), "error": str(exc)}
                    )
                continue
            if response.rcode() == dns.rcode.NOERROR:
                self._stats.notifies["ok"] += 1
                return
            logger.warning(
                "NOTIFY refused",
                extra={"target": str(target), "rcode": dns.rcode.to_text(response.rcode())},
            )
            break
        self._stats.notifies["failed"] += 1
