"""The reconciler: the scheduler that drives every certificate to ISSUED and keeps it there.

A loop picks certificates whose `next_attempt_time` has come, takes each one's lease (renewed
while the attempt runs, released after), and runs one `attempt.CertificateAttempt`, at most
`_CONCURRENCY` at a time. Between passes it refreshes the gauges from the shared database, so
every replica exports the same figures. What an attempt does is in `attempt`; what a
certificate's conditions say is in `conditions`; when it renews is in `renewal`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from datetime import timedelta

from acmezone_common.sql import utcnow
from acmezone_issuer.accounts import AccountManager
from acmezone_issuer.attempt import (
    AttemptPolicy,
    AttemptServices,
    CertificateAttempt,
    LeaseLostError,
)
from acmezone_issuer.errors import IssuanceError
from acmezone_issuer.events import CertificateEvents
from acmezone_issuer.fleet import summarise
from acmezone_issuer.keys import KeySealer
from acmezone_issuer.metrics import IssuerMetrics
from acmezone_issuer.solvers.dns01 import Dns01Solver
from acmezone_issuer.solvers.http01 import Http01Solver
from acmezone_issuer.storage.repository import Repository

logger = logging.getLogger(__name__)

_CONCURRENCY = 8


class Reconciler:
    """Finds due certificates and works each one, at most `_CONCURRENCY` at a time."""

    def __init__(
        self,
        repository: Repository,
        sealer: KeySealer,
        accounts: AccountManager,
        dns01: Dns01Solver,
        http01: Http01Solver,
        events: CertificateEvents,
        metrics: IssuerMetrics,
        *,
        replica_id: str,
        interval: float,
        delegation_recheck: float,
        validation_timeout: float,
        retry_base: float,
        retry_max: float,
        jitter_fraction: float,
        lease_seconds: float,
        rng: random.Random | None = None,
    ) -> None:
        self._repository = repository
        self._metrics = metrics
        self._owner = replica_id
        self._interval = interval
        self._lease = timedelta(seconds=lease_seconds)
        self._services = AttemptServices(
            repository=repository,
            sealer=sealer,
            accounts=accounts,
            dns01=dns01,
            http01=http01,
            events=events,
            metrics=metrics,
            owner=replica_id,
        )
        self._policy = AttemptPolicy(
            delegation_recheck=timedelta(seconds=delegation_recheck),
            validation_timeout=validation_timeout,
            retry_base=retry_base,
            retry_max=retry_max,
            jitter_fraction=jitter_fraction,
            rng=rng or random.Random(),  # noqa: S311 - jitter, not secrets
        )
        self._wake = asyncio.Event()
        self._working: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def replica_id(self) -> str:
        """The lease owner name of this replica."""
        return self._owner

    def start(self) -> None:
        """Start the background loop."""
        self._loop_task = asyncio.create_task(self._loop(), name="reconciler")

    def wake(self) -> None:
        """Look for due certificates now rather than at the next interval."""
        self._wake.set()

    async def stop(self) -> None:
        """Cancel the loop and every attempt in progress; their state is already persisted."""
        tasks = [t for t in (self._loop_task, *self._working.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._working.clear()
        self._loop_task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("reconcile pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()

    async def _tick(self) -> None:
        await self._refresh_gauges()
        free = _CONCURRENCY - len(self._working)
        if free <= 0:
            return
        # Our own leases count as due (a restart reclaims them), so the ones being worked
        # now are asked for on top of the free slots.
        limit = free * 2 + len(self._working)
        due = await self._repository.due_certificates(utcnow(), limit, self._owner)
        for certificate_id in due:
            if certificate_id in self._working or len(self._working) >= _CONCURRENCY:
                continue
            task = asyncio.create_task(self._work(certificate_id), name=f"cert:{certificate_id}")
            self._working[certificate_id] = task
            task.add_done_callback(functools.partial(self._done, certificate_id))

    def _done(self, certificate_id: str, _task: asyncio.Task[None]) -> None:
        self._working.pop(certificate_id, None)
        self._wake.set()

    async def _refresh_gauges(self) -> None:
        """From the shared database, so every replica exports the same figures."""
        self._metrics.set_state_counts(await self._repository.count_certificates_by_state())
        self._metrics.set_schedules(
            {
                f"certificates/{cid}": (not_after, renewal)
                for cid, not_after, renewal in await self._repository.all_schedules()
            }
        )
        self._metrics.set_delivery(
            {
                f"certificates/{cid}": (f.current, f.stale, f.earliest_stale_not_after)
                for cid, f in summarise(await self._repository.delivery_summary()).items()
            }
        )

    async def _work(self, certificate_id: str) -> None:
        row = await self._repository.acquire_lease(certificate_id, self._owner, self._lease)
        if row is None:
            return
        keeper = asyncio.create_task(self._keep_lease(certificate_id))
        job = CertificateAttempt(row, self._services, self._policy)
        try:
            await job.run()
        except LeaseLostError:
            logger.warning("lease lost", extra={"certificate": certificate_id})
        except Exception as exc:
            logger.exception("certificate attempt crashed", extra={"certificate": certificate_id})
            # Record it like any failure, so a persistent fault backs off instead of spinning.
            with contextlib.suppress(Exception):
                await job.fail(IssuanceError(f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await asyncio.shield(self._repository.release_lease(certificate_id, self._owner))

    async def _keep_lease(self, certificate_id: str) -> None:
        while True:
            await asyncio.sleep(self._lease.total_seconds() / 3)
            if not await self._repository.renew_lease(certificate_id, self._owner, self._lease):
                return
