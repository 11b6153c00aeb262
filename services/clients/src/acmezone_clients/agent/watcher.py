"""One certificate's delivery loop: watch, and install whenever the issued serial changes.

The first message of every watch is the certificate as it is now, so reconnecting after the
issuer was down, restarted, or the agent itself was stopped, catches up by itself: whatever
serial was issued meanwhile differs from the installed one and is installed. Reconnects back
off exponentially with jitter (the "equal jitter" of AWS's "Exponential Backoff And Jitter"),
reset once a stream delivers a message, so a fleet does not reconnect in lock-step after an
issuer restart.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from acmezone.issuer.v1 import certificate_service_pb2 as pb
from acmezone.issuer.v1 import certificate_service_pb2_grpc, delivery_target_service_pb2_grpc
from acmezone.issuer.v1 import delivery_target_service_pb2 as dtpb
from acmezone_clients.agent import report
from acmezone_clients.agent.bundle import CheckedBundle, check_bundle, leaf_facts
from acmezone_clients.agent.config import Target
from acmezone_clients.agent.errors import BundleError, InstallError
from acmezone_clients.agent.files import Installer
from acmezone_clients.agent.hooks import HookResult, hook_environment, run_hook
from acmezone_clients.agent.metrics import AgentMetrics

logger = logging.getLogger(__name__)

# States in which the issuer holds a valid certificate worth installing.
_INSTALLABLE = (pb.STATE_ISSUED, pb.STATE_RENEWING, pb.STATE_FAILED)


class Backoff:
    """Exponential backoff with equal jitter: a wait in [c/2, c], c = min(max, initial * 2^n)."""

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self._initial, self._max = initial, maximum
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
        self._attempt = 0

    def reset(self) -> None:
        self._attempt = 0

    def next(self) -> float:
        ceiling = min(self._max, self._initial * 2**self._attempt)
        self._attempt = min(self._attempt + 1, 32)
        return self._rng.uniform(ceiling / 2, ceiling)


@dataclass
class Status:
    """What a watcher did last; read by the tests, the fleet report and the logs."""

    installed_serial: str | None = None
    last_result: str = ""
    last_error: str = ""
    hook_runs: list[HookResult] = field(default_factory=list)
    connected: bool = False
    reported_serial: str | None = None


@dataclass(frozen=True)
class WatchPolicy:
    """Timings and limits, from the agent's settings."""

    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    hook_attempts: int = 5
    hook_backoff_initial: float = 2.0
    rpc_timeout: float = 30.0
    host: str = "localhost"
    report_installs: bool = True


class CertificateWatcher:
    """Keeps one target's files at the certificate's issued serial."""

    def __init__(
        self,
        target: Target,
        stub: certificate_service_pb2_grpc.CertificateServiceAsyncStub,
        targets: delivery_target_service_pb2_grpc.DeliveryTargetServiceAsyncStub,
        metadata: tuple[tuple[str, str], ...],
        installer: Installer,
        metrics: AgentMetrics,
        policy: WatchPolicy,
        changed: Callable[[], None],
    ) -> None:
        self.target = target
        self._stub = stub
        self._targets = targets
        self._reported = False
        self._metadata = metadata
        self._installer = installer
        self._metrics = metrics
        self._policy = policy
        self._changed = changed
        self._refused: set[str] = set()
        self.status = Status(installed_serial=installer.installed_serial())
        metrics.initialise(target.certificate_id)

    @property
    def _label(self) -> str:
        return self.target.certificate_id

    async def run(self) -> None:
        """Watch until cancelled; every failure ends in a backed-off reconnect."""
        backoff = Backoff(self._policy.backoff_initial, self._policy.backoff_max)
        while True:
            try:
                await self._watch(backoff)
                logger.info("watch ended by the issuer", extra={"certificate": self._label})
            except grpc.aio.AioRpcError as exc:
                self.status.last_error = f"{exc.code().name}: {exc.details()}"
                logger.warning(
                    "issuer unreachable or refused the watch",
                    extra={"certificate": self._label, "error": self.status.last_error},
                )
            except InstallError as exc:
                self.status.last_error = str(exc)
                logger.error(
                    "install failed", extra={"certificate": self._label, "error": str(exc)}
                )
            except Exception as exc:
                self.status.last_error = repr(exc)
                logger.exception("watcher failed", extra={"certificate": self._label})
            self._set_connected(False)
            self._metrics.reconnects.labels(self._label).inc()
            await asyncio.sleep(backoff.next())

    def _set_connected(self, connected: bool) -> None:
        self.status.connected = connected
        self._metrics.watch_connected.labels(self._label).set(1 if connected else 0)
        self._changed()

    async def _watch(self, backoff: Backoff) -> None:
        stream = self._stub.WatchCertificate(
            pb.WatchCertificateRequest(name=self.target.certificate), metadata=self._metadata
        )
        async for message in stream:
            if not self.status.connected:
                self._set_connected(True)
                backoff.reset()
                self._reported = False
            cert = message.certificate
            serial = cert.serial_number
            if (
                cert.state in _INSTALLABLE
                and serial
                and serial != self.status.installed_serial
                and serial not in self._refused
            ):
                await self.deliver(serial)
            elif not self._reported:
                # Once per connection, so a restarted agent (or issuer) shows up in the fleet
                # view without waiting for a renewal.
                self._reported = True
                await self._catch_up()

    async def deliver(self, announced: str) -> None:
        """Export, check, install, then run the hook; an export failure propagates (the watch
        reconnects and the first message retries it)."""
        try:
            bundle_pb = await self._stub.ExportCertificate(
                pb.ExportCertificateRequest(name=self.target.certificate),
                metadata=self._metadata,
                timeout=self._policy.rpc_timeout,
            )
        except grpc.aio.AioRpcError:
            self._record("export_failed")
            raise
        try:
            bundle = check_bundle(bundle_pb.certificate_chain_pem, bundle_pb.private_key_pem)
        except BundleError as exc:
            self._refused.add(announced)
            self.status.last_error = str(exc)
            self._record("bundle_refused")
            logger.error(
                "bundle refused, installed files kept",
                extra={"certificate": self._label, "error": str(exc)},
            )
            return
        if bundle.serial == self.status.installed_serial:
            return
        await self._install(bundle)
        await self._finish(bundle.serial, bundle.not_after, bundle.dns_names)

    async def _finish(
        self, serial: str, not_after: datetime.datetime, dns_names: tuple[str, ...]
    ) -> None:
        """After an install: the hook, then the report, saved first so a restart knows both
        happened."""
        await self._run_hook(serial, dns_names)
        done = report.InstallReport.of(serial, not_after, self.status.hook_runs)
        await asyncio.to_thread(report.save, self.target.directory, done)
        await self._report(done)

    async def _catch_up(self) -> None:
        """Once per connection, with nothing new to install: report what is installed; if the
        agent stopped between an install and its hook (SIGTERM, SIGKILL, a crash), the saved
        report is older than the installed set, and the hook runs now."""
        installed = self.status.installed_serial
        if installed is None:
            return
        last = await asyncio.to_thread(report.load, self.target.directory)
        if last is not None and last.serial == installed:
            await self._report(last)
            return
        leaf = await asyncio.to_thread(self._installer.installed_leaf_pem)
        if leaf is None:
            return
        facts = leaf_facts(leaf)
        logger.info(
            "install without a hook run found; running it now",
            extra={"certificate": self._label, "serial": installed},
        )
        await self._finish(installed, facts.not_after, facts.dns_names)

    async def _report(self, done: report.InstallReport) -> None:
        """Best effort: a failed report is logged and sent again on the next connection."""
        if not self._policy.report_installs:
            return
        hook = {
            "none": dtpb.HOOK_RESULT_NONE,
            "success": dtpb.HOOK_RESULT_SUCCEEDED,
            "failure": dtpb.HOOK_RESULT_FAILED,
            "timeout": dtpb.HOOK_RESULT_TIMED_OUT,
        }[done.hook_result]
        target = dtpb.DeliveryTarget(
            host=self._policy.host,
            directory=str(self.target.directory.resolve()),
            serial_number=done.serial,
            hook_result=hook,
            hook_exit_code=done.hook_exit_code,
            hook_output_tail=done.hook_output_tail,
        )
        target.not_after_time.FromDatetime(
            datetime.datetime.fromtimestamp(done.not_after, datetime.UTC)
        )
        target.install_time.FromDatetime(
            datetime.datetime.fromtimestamp(done.install_time, datetime.UTC)
        )
        try:
            await self._targets.ReportDeliveryTarget(
                dtpb.ReportDeliveryTargetRequest(
                    parent=self.target.certificate,
                    delivery_target_id=report.target_id(self._policy.host, self.target.directory),
                    delivery_target=target,
                ),
                metadata=self._metadata,
                timeout=self._policy.rpc_timeout,
            )
        except grpc.aio.AioRpcError as exc:
            logger.warning(
                "install report not accepted",
                extra={"certificate": self._label, "error": f"{exc.code().name}: {exc.details()}"},
            )
            return
        self._reported = True
        self.status.reported_serial = done.serial
        self._changed()

    async def _install(self, bundle: CheckedBundle) -> None:
        # Shielded: a SIGTERM (task cancellation) lets a started install finish, so the agent
        # exits with the old or the new set current and no stray set directory.
        work = asyncio.ensure_future(asyncio.to_thread(self._installer.install, bundle))
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            await asyncio.wait([work])
            raise
        except InstallError:
            self._record("write_failed")
            raise
        self.status.installed_serial = bundle.serial
        self.status.last_error = ""
        self._metrics.installed(self._label, bundle.not_after)
        self._record("success")

    def _record(self, result: str) -> None:
        self.status.last_result = result
        self._metrics.install_result(self._label, result, time.time())
        self._changed()

    async def _run_hook(self, serial: str, dns_names: tuple[str, ...]) -> None:
        self.status.hook_runs = []
        command = self.target.reload_command
        if not command:
            return
        names = self.target.names
        env = hook_environment(
            certificate=self.target.certificate,
            serial=serial,
            directory=str(self.target.directory),
            dns_names=dns_names,
            fullchain_path=str(self._installer.live_path(names.fullchain)),
            key_path=str(self._installer.live_path(names.privkey)),
            combined_path=str(self._installer.live_path(names.combined))
            if names.combined
            else None,
        )
        delay = self._policy.hook_backoff_initial
        for attempt in range(1, self._policy.hook_attempts + 1):
            result = await run_hook(command, env, self.target.hook_timeout)
            self.status.hook_runs.append(result)
            self._metrics.hook_result(self._label, result.outcome)
            self._changed()
            log = logger.info if result.ok else logger.warning
            log(
                "hook ran",
                extra={
                    "certificate": self._label,
                    "attempt": attempt,
                    "exit_code": result.exit_code,
                    "seconds": result.seconds,
                    "output_tail": result.output_tail[-512:],
                },
            )
            if result.ok or attempt == self._policy.hook_attempts:
                return
            await asyncio.sleep(delay)
            delay *= 2
