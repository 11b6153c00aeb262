"""The repositories and domain against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import asyncio
import logging
import stat
import time
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from acmezone_common.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from acmezone_registry import errors
from acmezone_registry.access import Caller, parse_address
from acmezone_registry.model import ChangeType, RecordSet, RegistrationChanges
from acmezone_registry.storage import migrate
from acmezone_registry.storage.database import Database
from tests.registry.conftest import ZONE, Stack, open_stack
from tests.registry.snapshots import full_snapshot
from tests.registry.values import acme_digest

ANYONE = Caller(address=parse_address("127.0.0.1"))


def owner(issued_username: str, password: str, address: str = "127.0.0.1") -> Caller:
    return Caller(address=parse_address(address), username=issued_username, password=password)


async def test_create_returns_credentials_and_name_exists_without_values(stack: Stack) -> None:
    issued = await stack.registrations.create(ANYONE, allowed_cidrs=["192.0.2.7", "2001:db8::/32"])
    registration = issued.registration
    assert len(issued.password) == 40
    assert set(issued.password) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
    )
    assert len(registration.username) == 36
    assert registration.fulldomain == f"{registration.subdomain}.{ZONE}"
    assert registration.allowed_cidrs == ("192.0.2.7/32", "2001:db8::/32")
    assert registration.max_txt_values == 2
    stored = await stack.stores.registrations.get_registration(registration.subdomain)
    assert stored is not None
    assert issued.password not in stored.password_hash
    assert stored.password_hash.startswith("hmac-sha256$")
    revision, record_sets = await full_snapshot(stack.stores.record_sets)
    assert revision == 1
    assert record_sets == [RecordSet(f"{registration.fulldomain}.", ())]


async def test_requested_subdomain_is_folded_and_unique(stack: Stack) -> None:
    first = await stack.registrations.create(ANYONE, subdomain="Host-1")
    assert first.registration.subdomain == "host-1"
    with pytest.raises(AlreadyExistsError) as taken:
        await stack.registrations.create(ANYONE, subdomain="host-1")
    assert taken.value.reason == errors.SUBDOMAIN_TAKEN
    for bad in ("-x", "x-", "a" * 64, "a.b", "ns", "ü"):
        with pytest.raises(InvalidArgumentError) as invalid:
            await stack.registrations.create(ANYONE, subdomain=bad)
        assert invalid.value.reason == errors.INVALID_SUBDOMAIN
    page = await stack.registrations.list(ANYONE, page_size=100, page_token="")
    assert [r.subdomain for r in page.registrations] == ["host-1"]


async def test_bad_create_input_writes_nothing(stack: Stack) -> None:
    cases = [
        ({"allowed_cidrs": ["10.0.0.0/33"]}, errors.INVALID_CIDR),
        ({"allowed_cidrs": ["not-an-ip"]}, errors.INVALID_CIDR),
        ({"description": "x" * 257}, errors.INVALID_DESCRIPTION),
        ({"description": "bell\x07"}, errors.INVALID_DESCRIPTION),
        ({"max_txt_values": 11}, errors.INVALID_MAX_TXT_VALUES),
        ({"max_txt_values": -1}, errors.INVALID_MAX_TXT_VALUES),
    ]
    for kwargs, reason in cases:
        with pytest.raises(InvalidArgumentError) as invalid:
            await stack.registrations.create(ANYONE, **kwargs)  # type: ignore[arg-type]
        assert invalid.value.reason == reason
        assert invalid.value.field_violations
    assert await stack.stores.registrations.count_registrations() == 0
    assert (await stack.stores.log.feed_status()).revision == 0


async def test_txt_values_newest_first_keep_latest_n_and_idempotent(stack: Stack) -> None:
    issued = await stack.registrations.create(ANYONE)
    me = owner(issued.registration.username, issued.password)
    sub = issued.registration.subdomain
    a, b, c = acme_digest("a"), acme_digest("b"), acme_digest("c")
    record = await stack.registrations.add_txt_value(me, sub, a)
    assert [v.value for v in record.values] == [a]
    assert record.revision == 2
    record = await stack.registrations.add_txt_value(me, sub, b)
    assert [v.value for v in record.values] == [b, a]
    again = await stack.registrations.add_txt_value(me, sub, b)
    assert [v.value for v in again.values] == [b, a]
    assert again.revision == record.revision == 3  # no new revision for the same value
    record = await stack.registrations.add_txt_value(me, sub, c)
    assert [v.value for v in record.values] == [c, b]  # a dropped: keeps the latest 2
    removed = await stack.registrations.remove_txt_value(me, sub, b)
    assert [v.value for v in removed.values] == [c]
    unchanged = await stack.registrations.remove_txt_value(me, sub, b)
    assert unchanged.revision == removed.revision
    for garbage in ("nul\x00byte" + "x" * 33, "x" * 300):
        with pytest.raises(InvalidArgumentError) as refused:
            await stack.registrations.remove_txt_value(me, sub, garbage)
        assert refused.value.reason == errors.INVALID_TXT_VALUE
    nul_user = Caller(address=None, username="\x00" * 36, password="x" * 40)
    with pytest.raises(UnauthenticatedError) as nul_login:
        await stack.registrations.add_txt_value(nul_user, sub, a)
    assert nul_login.value.reason == errors.CREDENTIALS_INVALID
    cleared = await stack.registrations.clear_txt_values(me, sub)
    assert cleared.values == ()
    changes = await stack.stores.log.changes_since(1, 100)
    assert [(ch.revision, ch.record_set.txt_values) for ch in changes] == [
        (1, ()),
        (2, (a,)),
        (3, (b, a)),
        (4, (c, b)),
        (5, (c,)),
        (6, ()),
    ]
    assert all(ch.type is ChangeType.PUT for ch in changes)


async def test_authentication_and_authorisation_of_txt_updates(stack: Stack) -> None:
    mine = await stack.registrations.create(ANYONE, allowed_cidrs=["192.0.2.0/24"])
    other = await stack.registrations.create(ANYONE)
    sub = mine.registration.subdomain
    value = acme_digest(1)
    attempts = [
        (Caller(address=parse_address("192.0.2.1")), errors.CREDENTIALS_REQUIRED),
        (owner(mine.registration.username, "wrong" * 8, "192.0.2.1"), errors.CREDENTIALS_INVALID),
        (
            owner("00000000-0000-4000-8000-000000000000", mine.password, "192.0.2.1"),
            errors.CREDENTIALS_INVALID,
        ),
        (
            owner(other.registration.username, other.password, "192.0.2.1"),
            errors.SUBDOMAIN_MISMATCH,
        ),
        (
            owner(mine.registration.username, mine.password, "198.51.100.1"),
            errors.SOURCE_ADDRESS_NOT_ALLOWED,
        ),
        (
            Caller(address=None, username=mine.registration.username, password=mine.password),
            errors.SOURCE_ADDRESS_NOT_ALLOWED,
        ),
    ]
    for caller, reason in attempts:
        with pytest.raises((UnauthenticatedError, PermissionDeniedError)) as denied:
            await stack.registrations.add_txt_value(caller, sub, value)
        assert denied.value.reason == reason, caller
    with pytest.raises(InvalidArgumentError) as bad:
        await stack.registrations.add_txt_value(
            owner(mine.registration.username, mine.password, "192.0.2.9"), sub, "short"
        )
    assert bad.value.reason == errors.INVALID_TXT_VALUE
    record = await stack.stores.txt_values.get_txt_record(sub)
    assert record.values == ()
    assert (await stack.stores.log.feed_status()).revision == 2  # only the two creations
    ok = await stack.registrations.add_txt_value(
        owner(mine.registration.username, mine.password, "192.0.2.9"), sub, value
    )
    assert [v.value for v in ok.values] == [value]
    failures = stack.metrics.auth_failures
    assert failures.labels("credentials_invalid")._value.get() == 2
    assert failures.labels("source_address_not_allowed")._value.get() == 2


async def test_operator_token_guards_management(database_url: str) -> None:
    stack = await open_stack(database_url, operator_token="s3cret-token")
    try:
        with pytest.raises(UnauthenticatedError) as missing:
            await stack.registrations.create(ANYONE)
        assert missing.value.reason == errors.OPERATOR_TOKEN_REQUIRED
        wrong = Caller(address=None, operator_token="s3cret-tokem")
        with pytest.raises(UnauthenticatedError) as invalid:
            await stack.registrations.list(wrong, page_size=0, page_token="")
        assert invalid.value.reason == errors.OPERATOR_TOKEN_INVALID
        operator = Caller(address=None, operator_token="s3cret-token")
        issued = await stack.registrations.create(operator)
        sub = issued.registration.subdomain
        # A registration may read, rotate and delete itself without the operator token.
        me = owner(issued.registration.username, issued.password)
        assert (await stack.registrations.get(me, sub)).subdomain == sub
        rotated = await stack.registrations.rotate_password(me, sub)
        with pytest.raises(UnauthenticatedError):
            await stack.registrations.get(me, sub)
        new_me = owner(issued.registration.username, rotated.password)
        await stack.registrations.delete(new_me, sub)
        with pytest.raises(NotFoundError):
            await stack.registrations.get(operator, sub)
    finally:
        await stack.database.dispose()


async def test_update_lowering_limit_trims_and_publishes(stack: Stack) -> None:
    issued = await stack.registrations.create(ANYONE, max_txt_values=5)
    me = owner(issued.registration.username, issued.password)
    sub = issued.registration.subdomain
    values = [acme_digest(i) for i in range(5)]
    for value in values:
        await stack.registrations.add_txt_value(me, sub, value)
    updated = await stack.registrations.update(
        ANYONE, sub, RegistrationChanges(max_txt_values=2, description="two now")
    )
    assert (updated.max_txt_values, updated.description) == (2, "two now")
    record = await stack.stores.txt_values.get_txt_record(sub)
    assert [v.value for v in record.values] == [values[4], values[3]]
    last = (await stack.stores.log.changes_since(record.revision, 10))[-1]
    assert last.record_set.txt_values == (values[4], values[3])
    with pytest.raises(InvalidArgumentError):
        await stack.registrations.update(ANYONE, sub, RegistrationChanges(allowed_cidrs=("x",)))
    assert (await stack.registrations.get(ANYONE, sub)).allowed_cidrs == ()


async def test_delete_removes_values_and_name(stack: Stack) -> None:
    issued = await stack.registrations.create(ANYONE)
    sub = issued.registration.subdomain
    me = owner(issued.registration.username, issued.password)
    await stack.registrations.add_txt_value(me, sub, acme_digest(1))
    await stack.registrations.delete(ANYONE, sub)
    revision, record_sets = await full_snapshot(stack.stores.record_sets)
    assert record_sets == []
    last = (await stack.stores.log.changes_since(revision, 1))[0]
    assert last.type is ChangeType.DELETE
    assert last.record_set.fqdn == f"{sub}.{ZONE}."
    with pytest.raises(NotFoundError):
        await stack.registrations.delete(ANYONE, sub)


async def test_pagination_walks_every_registration_once(stack: Stack) -> None:
    created = [(await stack.registrations.create(ANYONE)).registration.subdomain for _ in range(7)]
    seen: list[str] = []
    token = ""
    while True:
        page = await stack.registrations.list(ANYONE, page_size=3, page_token=token)
        seen += [r.subdomain for r in page.registrations]
        token = page.next_page_token
        if not token:
            break
    assert seen == created
    with pytest.raises(InvalidArgumentError) as bad_token:
        await stack.registrations.list(ANYONE, page_size=3, page_token="garbage!")
    assert bad_token.value.reason == errors.INVALID_PAGE_TOKEN
    with pytest.raises(InvalidArgumentError) as bad_size:
        await stack.registrations.list(ANYONE, page_size=-1, page_token="")
    assert bad_size.value.reason == errors.INVALID_PAGE_SIZE


async def test_concurrent_updates_to_many_registrations_lose_nothing(stack: Stack) -> None:
    issued = [await stack.registrations.create(ANYONE, max_txt_values=10) for _ in range(20)]
    per_registration = 5

    async def publish(index: int) -> None:
        mine = issued[index]
        me = owner(mine.registration.username, mine.password)
        await asyncio.gather(
            *(
                stack.registrations.add_txt_value(
                    me, mine.registration.subdomain, acme_digest((index, n))
                )
                for n in range(per_registration)
            )
        )

    await asyncio.gather(*(publish(i) for i in range(len(issued))))
    revision, record_sets = await full_snapshot(stack.stores.record_sets)
    assert revision == len(issued) * (1 + per_registration)
    by_name = {rs.fqdn: set(rs.txt_values) for rs in record_sets}
    for index, mine in enumerate(issued):
        expected = {acme_digest((index, n)) for n in range(per_registration)}
        assert by_name[f"{mine.registration.fulldomain}."] == expected
    # The feed history is gap-free and replays to the same state.
    changes = await stack.stores.log.changes_since(1, revision + 10)
    assert sorted({c.revision for c in changes}) == list(range(1, revision + 1))
    replayed: dict[str, set[str]] = {}
    for change in changes:
        replayed[change.record_set.fqdn] = set(change.record_set.txt_values)
    assert replayed == by_name


async def test_restart_keeps_registrations_values_and_feed(database_url: str) -> None:
    first = await open_stack(database_url)
    issued = await first.registrations.create(ANYONE, description="kept")
    me = owner(issued.registration.username, issued.password)
    await first.registrations.add_txt_value(me, issued.registration.subdomain, acme_digest("x"))
    status = await first.stores.log.feed_status()
    await first.database.dispose()

    second = await open_stack(database_url)  # migrations run again: must be a no-op
    try:
        again = await second.stores.log.feed_status()
        assert again == status
        got = await second.registrations.get(me, issued.registration.subdomain)
        assert got.description == "kept"
        record = await second.stores.txt_values.get_txt_record(issued.registration.subdomain)
        assert [v.value for v in record.values] == [acme_digest("x")]
        await asyncio.to_thread(migrate.upgrade, second.database)
    finally:
        await second.database.dispose()


async def test_values_expire_after_lifetime(database_url: str) -> None:
    stack = await open_stack(database_url, lifetime=timedelta(seconds=30))
    try:
        issued = await stack.registrations.create(ANYONE)
        me = owner(issued.registration.username, issued.password)
        sub = issued.registration.subdomain
        record = await stack.registrations.add_txt_value(me, sub, acme_digest(1))
        expire_time = record.values[0].expire_time
        assert expire_time is not None
        assert await stack.stores.txt_values.expire_txt_values(datetime.now(UTC)) == 0
        assert (
            await stack.stores.txt_values.expire_txt_values(expire_time + timedelta(seconds=1)) == 1
        )
        assert (await stack.stores.txt_values.get_txt_record(sub)).values == ()
        last = (await stack.stores.log.changes_since(record.revision + 1, 5))[0]
        assert last.record_set.txt_values == ()
    finally:
        await stack.database.dispose()


async def test_compaction_makes_old_revisions_out_of_range(stack: Stack) -> None:
    for _ in range(6):
        await stack.registrations.create(ANYONE)
    assert await stack.stores.log.compact(keep_revisions=2) == 4
    with pytest.raises(OutOfRangeError) as compacted:
        await stack.stores.log.changes_since(4, 10)
    assert compacted.value.reason == errors.REVISION_COMPACTED
    assert [c.revision for c in await stack.stores.log.changes_since(5, 10)] == [5, 6]
    assert (await stack.stores.log.feed_status()).compacted_revision == 4
    assert await stack.stores.log.compact(keep_revisions=2) == 4  # idempotent


async def test_persistent_values_are_neither_trimmed_nor_expired(database_url: str) -> None:
    stack = await open_stack(database_url, lifetime=timedelta(seconds=30))
    try:
        issued = await stack.registrations.create(ANYONE)
        me = owner(issued.registration.username, issued.password)
        sub = issued.registration.subdomain
        persist = "ca.example; accounturi=https://ca.example/acct/1; policy=wildcard"
        record = await stack.registrations.add_txt_value(me, sub, persist, persistent=True)
        assert record.values[0].persistent
        assert record.values[0].expire_time is None
        for i in range(4):  # twice the default limit of challenge values
            record = await stack.registrations.add_txt_value(me, sub, acme_digest(i))
        assert [v.value for v in record.values] == [acme_digest(3), acme_digest(2), persist]
        latest = max(v.expire_time for v in record.values if v.expire_time is not None)
        assert await stack.stores.txt_values.expire_txt_values(latest + timedelta(seconds=1)) == 2
        record = await stack.stores.txt_values.get_txt_record(sub)
        assert [(v.value, v.persistent) for v in record.values] == [(persist, True)]
        # Published again: no change, no new revision.
        again = await stack.registrations.add_txt_value(me, sub, persist, persistent=True)
        assert again.revision == record.revision
        # Removing it takes it away, strict mode or not.
        removed = await stack.registrations.remove_txt_value(me, sub, persist)
        assert removed.values == ()
    finally:
        await stack.database.dispose()


async def test_sixty_concurrent_writers_of_every_kind_all_land_quickly(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite has one writer at a time: writers queue in-process in front of BEGIN IMMEDIATE,
    so none fails with `database is locked` and none waits behind the busy timeout."""
    issued = [await stack.registrations.create(ANYONE, max_txt_values=10) for _ in range(20)]
    rotated = [await stack.registrations.create(ANYONE) for _ in range(20)]
    durations: list[float] = []

    async def timed(write: Awaitable[object]) -> None:
        started = time.monotonic()
        await write
        durations.append(time.monotonic() - started)

    writes: list[Awaitable[object]] = []
    for index, (mine, other) in enumerate(zip(issued, rotated, strict=True)):
        me = owner(mine.registration.username, mine.password)
        subdomain = mine.registration.subdomain
        writes.append(stack.registrations.add_txt_value(me, subdomain, acme_digest(index)))
        writes.append(
            stack.registrations.rotate_password(
                owner(other.registration.username, other.password), other.registration.subdomain
            )
        )
        writes.append(
            stack.stores.tsig_keys.create_tsig_key(
                subdomain, "k", "hmac-sha256", "c2VjcmV0", max_keys=5
            )
        )
    with caplog.at_level(logging.WARNING):
        await asyncio.gather(*(timed(write) for write in writes))
    assert len(durations) == 60
    assert max(durations) < 2.0
    assert "database is locked" not in caplog.text
    assert "unavailable" not in caplog.text
    for index, mine in enumerate(issued):
        record = await stack.stores.txt_values.get_txt_record(mine.registration.subdomain)
        assert [v.value for v in record.values] == [acme_digest(index)]


async def test_debug_logs_hold_no_secret(
    database_url: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Registration, update, rotation and TSIG keys with every logger at DEBUG: no password,
    hash or TSIG secret reaches the log."""
    with caplog.at_level(logging.DEBUG):
        opened = await open_stack(database_url)
        try:
            issued = await opened.registrations.create(ANYONE)
            subdomain = issued.registration.subdomain
            me = owner(issued.registration.username, issued.password)
            await opened.registrations.add_txt_value(me, subdomain, acme_digest("debug"))
            rotated = await opened.registrations.rotate_password(me, subdomain)
            me = owner(issued.registration.username, rotated.password)
            with pytest.raises(UnauthenticatedError):
                await opened.registrations.add_txt_value(
                    owner(issued.registration.username, issued.password), subdomain, "x" * 43
                )
            secret = "c2VjcmV0LXRzaWcta2V5LW1hdGVyaWFs"
            await opened.stores.tsig_keys.create_tsig_key(
                subdomain, "k1", "hmac-sha256", secret, max_keys=5
            )
            found = await opened.stores.tsig_keys.find_tsig_key(f"k1.{subdomain}.{ZONE}.")
            assert found is not None
            stored = await opened.stores.registrations.get_registration(subdomain)
            assert stored is not None
        finally:
            await opened.database.dispose()
    logged = caplog.text + "".join(repr(r.__dict__) for r in caplog.records)
    assert "INSERT" in logged or "SELECT" in logged or caplog.records, "DEBUG was captured"
    for value in (issued.password, rotated.password, stored.password_hash, secret):
        assert value not in logged
    assert stored.password_hash.split("$", 1)[1] not in logged


def test_a_new_sqlite_database_is_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "registry"
    database = Database(f"sqlite:///{data_dir}/registry.db")
    try:
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((data_dir / "registry.db").stat().st_mode) == 0o600
    finally:
        asyncio.run(database.dispose())
