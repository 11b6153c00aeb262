"""Delivery targets in the database (SQLite and PostgreSQL): one row per target, replaced by each
report; the summary the fleet gauges are made from; reports validated before storing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from acmezone_common.errors import InvalidArgumentError, NotFoundError
from acmezone_common.sql import utcnow
from acmezone_issuer.fleet import DeliveryTargets, FleetFigures, Report, summarise
from acmezone_issuer.storage.repository import Repository
from tests.issuer.test_repository import account, certificate


def report(target_id: str, serial: str, days: int = 30, **extra: object) -> Report:
    values: dict[str, object] = {
        "certificate_id": "web",
        "target_id": target_id,
        "host": f"{target_id}.example",
        "directory": "/etc/ssl/web",
        "serial_number": serial,
        "not_after": utcnow() + timedelta(days=days),
        "install_time": utcnow(),
        "hook_result": "success",
        "hook_exit_code": 0,
        "hook_output_tail": "x" * 5000,
    }
    values.update(extra)
    return Report(**values)  # type: ignore[arg-type]


async def test_reports_replace_each_other_and_feed_the_summary(repository: Repository) -> None:
    await repository.insert_account(account())
    row = certificate("web")
    row.serial_number = "bb"
    await repository.insert_certificate(row)
    targets = DeliveryTargets(repository)

    stored, current = await targets.report(report("one", "aa", days=3))
    assert not current
    assert len(stored.hook_output_tail) == 1024
    _, current = await targets.report(report("one", "bb"))
    assert current
    await targets.report(report("two", "aa", days=5))
    await targets.report(report("three", "aa", days=4))
    page = await repository.list_delivery_targets("web", "", 10)
    rows = page.items
    assert [r.target_id for r in rows] == ["one", "two", "three"]
    assert page.next_page_token == ""
    assert rows[0].serial_number == "bb"

    figures = summarise(await repository.delivery_summary())
    assert figures["web"].current == 1
    assert figures["web"].stale == 2
    earliest = figures["web"].earliest_stale_not_after
    assert earliest is not None
    assert abs((earliest - (utcnow() + timedelta(days=4))).total_seconds()) < 60

    with pytest.raises(NotFoundError):
        await targets.report(report("one", "aa", certificate_id="nope"))
    with pytest.raises(InvalidArgumentError) as invalid:
        await targets.report(report("one", "XYZ", host="", not_after=None))
    fields = {v.field for v in invalid.value.field_violations}
    assert fields == {
        "delivery_target.host",
        "delivery_target.serial_number",
        "delivery_target.not_after_time",
    }
    with pytest.raises(InvalidArgumentError):
        await targets.report(report("Not An Id", "aa"))


def test_summarise_counts_current_and_stale() -> None:
    now = utcnow()
    rows = [
        ("a", "s2", "s2", now),
        ("a", "s2", "s1", now + timedelta(days=2)),
        ("a", "s2", "s1", now + timedelta(days=1)),
        ("b", "t1", "t1", now),
    ]
    assert summarise(rows) == {
        "a": FleetFigures(1, 2, now + timedelta(days=1)),
        "b": FleetFigures(1, 0, None),
    }
