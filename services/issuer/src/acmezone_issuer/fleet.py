"""The fleet view: what delivery agents report installing, checked against the current serial.

A report replaces the previous one for the same target (certificate, host and directory), so
the table holds one row per place a certificate is installed. `summarise` turns the rows into the
per-certificate figures the gauges export: how many targets run the current serial, how many an
older one, and the earliest not-after among the older ones (what the alert watches).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from acmezone_common.errors import FieldViolation, InvalidArgumentError
from acmezone_common.names import check_resource_id
from acmezone_common.sql import utcnow
from acmezone_issuer import errors
from acmezone_issuer.storage.repository import Repository
from acmezone_issuer.storage.tables import DeliveryTargetRow

logger = logging.getLogger(__name__)

HOOK_RESULTS = ("none", "success", "failure", "timeout")
MAX_OUTPUT_TAIL = 1024


@dataclass(frozen=True)
class Report:
    """One agent report, as the servicer read it from the request."""

    certificate_id: str
    target_id: str
    host: str
    directory: str
    serial_number: str
    not_after: datetime | None
    install_time: datetime | None
    hook_result: str | None
    hook_exit_code: int
    hook_output_tail: str


@dataclass(frozen=True)
class FleetFigures:
    """One certificate's delivery figures."""

    current: int
    stale: int
    earliest_stale_not_after: datetime | None


def _violations(report: Report) -> list[FieldViolation]:
    field = "delivery_target"
    problems: list[FieldViolation] = []
    if not report.host or len(report.host) > 253 or not report.host.isprintable():
        problems.append(FieldViolation(f"{field}.host", "1 to 253 printable characters"))
    if not report.directory or len(report.directory) > 1024:
        problems.append(FieldViolation(f"{field}.directory", "1 to 1024 characters"))
    serial = report.serial_number
    if not serial or len(serial) > 64 or any(c not in "0123456789abcdef" for c in serial):
        problems.append(FieldViolation(f"{field}.serial_number", "lower-case hex, required"))
    if report.not_after is None:
        problems.append(FieldViolation(f"{field}.not_after_time", "required"))
    if report.install_time is None:
        problems.append(FieldViolation(f"{field}.install_time", "required"))
    if report.hook_result is None:
        problems.append(FieldViolation(f"{field}.hook_result", "required"))
    return problems


class DeliveryTargets:
    """Records reports and reads them back."""

    def __init__(self, repository: Repository) -> None:
        self._repository = repository

    async def report(self, report: Report) -> tuple[DeliveryTargetRow, bool]:
        """Store a report for an existing certificate; (row, whether it runs the current serial)."""
        check_resource_id(report.target_id, "delivery_target_id")
        problems = _violations(report)
        if problems:
            raise InvalidArgumentError(
                errors.INVALID_DELIVERY_TARGET,
                "; ".join(f"{p.field}: {p.description}" for p in problems),
                field_violations=problems,
            )
        assert report.not_after is not None
        assert report.install_time is not None
        assert report.hook_result is not None
        certificate = await self._repository.get_certificate(report.certificate_id)
        row = await self._repository.put_delivery_target(
            DeliveryTargetRow(
                certificate_id=report.certificate_id,
                target_id=report.target_id,
                host=report.host,
                directory=report.directory,
                serial_number=report.serial_number,
                not_after=report.not_after,
                install_time=report.install_time,
                hook_result=report.hook_result,
                hook_exit_code=report.hook_exit_code,
                hook_output_tail=report.hook_output_tail[-MAX_OUTPUT_TAIL:],
                report_time=utcnow(),
            )
        )
        current = row.serial_number == certificate.serial_number
        logger.info(
            "delivery reported",
            extra={
                "certificate": report.certificate_id,
                "target": report.target_id,
                "serial": report.serial_number,
                "current": current,
            },
        )
        return row, current


def summarise(rows: list[tuple[str, str, str, datetime]]) -> dict[str, FleetFigures]:
    """Per certificate id: targets on the current serial, on an older one, and the earliest
    not-after among the older ones."""
    figures: dict[str, FleetFigures] = {}
    for certificate_id, current_serial, serial, not_after in rows:
        before = figures.get(certificate_id, FleetFigures(0, 0, None))
        if serial == current_serial:
            figures[certificate_id] = FleetFigures(
                before.current + 1, before.stale, before.earliest_stale_not_after
            )
        else:
            earliest = before.earliest_stale_not_after
            figures[certificate_id] = FleetFigures(
                before.current,
                before.stale + 1,
                not_after if earliest is None or not_after < earliest else earliest,
            )
    return figures
