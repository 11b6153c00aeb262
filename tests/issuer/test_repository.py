"""The repository on SQLite and PostgreSQL: migrations, leases between replicas, paging,
revisions."""

from __future__ import annotations

import asyncio
import stat
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from acmezone_common.errors import AlreadyExistsError, FailedPreconditionError
from acmezone_common.sql import utcnow
from acmezone_issuer.identity import replica_identity
from acmezone_issuer.storage.repository import CertificateUpdate, Repository
from acmezone_issuer.storage.tables import AccountRow, CertificateRow


class ManualClock:
    """The repository's clock, moved by the test: lease expiry is exact, not a race with sleep."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def repository_clock(clock: ManualClock) -> ManualClock:
    """The `repository` fixture's repository reads this clock (see tests/issuer/conftest.py)."""
    return clock


def account(account_id: str = "acct") -> AccountRow:
    return AccountRow(
        id=account_id,
        directory_url="https://ca.example/dir",
        contact_emails=["a@example.com"],
        terms_agreed=True,
        terms_url="",
        eab_key_id="",
        key_type="ecdsa-p256",
        sealed_key=b"sealed",
        account_url="https://ca.example/acct/1",
        status="valid",
        create_time=utcnow(),
    )


def certificate(certificate_id: str, account_id: str = "acct") -> CertificateRow:
    now = utcnow()
    return CertificateRow(
        id=certificate_id,
        dns_names=[f"{certificate_id}.example.test"],
        account_id=account_id,
        key_type="ecdsa-p256",
        profile="",
        challenge_type="dns-01",
        state="pending",
        stage="",
        conditions=[],
        delegations=[],
        failed_attempts=0,
        next_attempt_time=now - timedelta(seconds=1),
        order_url="",
        chain_pem="",
        serial_number="",
        renewal_source="",
        renew_requested=False,
        revision=1,
        lease_owner="",
        create_time=now,
        update_time=now,
    )


async def test_only_one_replica_holds_a_lease(repository: Repository) -> None:
    await repository.insert_account(account())
    await repository.insert_certificate(certificate("c1"))
    results = await asyncio.gather(
        *(repository.acquire_lease("c1", f"replica-{i}", timedelta(seconds=30)) for i in range(8))
    )
    winners = [row.lease_owner for row in results if row is not None]
    assert len(winners) == 1
    winner = winners[0]
    assert await repository.due_certificates(utcnow(), 10) == []
    # A loser's writes are refused; the winner's go through and bump the revision.
    loser = "replica-0" if winner != "replica-0" else "replica-1"
    issuing = CertificateUpdate(state="issuing")
    assert await repository.update_certificate("c1", issuing, lease_owner=loser) is None
    updated = await repository.update_certificate("c1", issuing, lease_owner=winner)
    assert updated is not None
    assert (updated.state, updated.revision) == ("issuing", 2)
    assert await repository.renew_lease("c1", winner, timedelta(seconds=30))
    assert not await repository.renew_lease("c1", loser, timedelta(seconds=30))
    await repository.release_lease("c1", winner)
    assert await repository.due_certificates(utcnow(), 10) == ["c1"]
    assert await repository.acquire_lease("c1", loser, timedelta(seconds=30)) is not None


async def test_expired_lease_can_be_taken_over(repository: Repository, clock: ManualClock) -> None:
    await repository.insert_account(account())
    await repository.insert_certificate(certificate("c1"))
    assert await repository.acquire_lease("c1", "dead", timedelta(milliseconds=10)) is not None
    clock.advance(timedelta(milliseconds=10))
    # At the very end of the lease it is still held; a moment after, it is free.
    assert await repository.acquire_lease("c1", "alive", timedelta(seconds=30)) is None
    clock.advance(timedelta(milliseconds=1))
    taken = await repository.acquire_lease("c1", "alive", timedelta(seconds=30))
    assert taken is not None
    assert taken.lease_owner == "alive"


async def test_paging_counts_and_constraints(repository: Repository) -> None:
    await repository.insert_account(account())
    with pytest.raises(AlreadyExistsError):
        await repository.insert_account(account())
    for index in range(5):
        await repository.insert_certificate(certificate(f"c{index}"))
    with pytest.raises(AlreadyExistsError):
        await repository.insert_certificate(certificate("c0"))
    page = await repository.list_certificates("", 3)
    assert [r.id for r in page.items] == ["c0", "c1", "c2"]
    page = await repository.list_certificates(page.next_page_token, 3)
    assert ([r.id for r in page.items], page.next_page_token) == (["c3", "c4"], "")
    assert await repository.count_certificates_by_state() == {"pending": 5}
    with pytest.raises(FailedPreconditionError):
        await repository.delete_account("acct")
    await repository.record_order("c0", "https://ca.example/order/1")
    assert [o.order_url for o in await repository.orders_of("c0")] == ["https://ca.example/order/1"]
    await repository.delete_certificate("c0")
    assert await repository.orders_of("c0") == []
    row = await repository.get_certificate("c1")
    assert row.next_attempt_time is not None
    assert row.next_attempt_time.tzinfo is not None


async def test_a_restarted_replica_finds_and_takes_its_own_lease_at_once(
    repository: Repository,
) -> None:
    await repository.insert_account(account())
    await repository.insert_certificate(certificate("c1"))
    assert await repository.acquire_lease("c1", "pod-a", timedelta(seconds=60)) is not None
    # The process died holding it: others wait for the minute, the same name does not.
    assert await repository.due_certificates(utcnow(), 10, "pod-b") == []
    assert await repository.acquire_lease("c1", "pod-b", timedelta(seconds=60)) is None
    assert await repository.due_certificates(utcnow(), 10, "pod-a") == ["c1"]
    assert await repository.acquire_lease("c1", "pod-a", timedelta(seconds=60)) is not None


def test_the_replica_identity_is_kept_in_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "issuer"
    first = replica_identity("", data_dir)
    assert first
    assert replica_identity("", data_dir) == first
    assert stat.S_IMODE((data_dir / "replica-id").stat().st_mode) == 0o600
    assert replica_identity("issuer-7f9c", data_dir) == "issuer-7f9c"
    assert replica_identity("", tmp_path / "another") != first
