"""Password hashing: the keyed fast form, slow forms from elsewhere, and their upgrade on use."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import bcrypt
import pytest
from prometheus_client import CollectorRegistry

from acmezone_common import keyfiles
from acmezone_common.errors import UnauthenticatedError
from acmezone_registry import credentials
from acmezone_registry.access import Caller, parse_address
from tests.registry.conftest import CREDENTIAL_KEY, Stack
from tests.registry.values import acme_digest

ANYONE = Caller(address=parse_address("127.0.0.1"))


def _scrypt_hash(password: str, n: int = 1024) -> str:
    """The registry's earlier stored form, written here independently of the code under test."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=8, p=1, dklen=32)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    return f"scrypt${n}$8$1${b64(salt)}${b64(digest)}"


def test_fast_hash_verifies_only_the_password_under_its_key() -> None:
    hasher = credentials.PasswordHasher(CREDENTIAL_KEY)
    password = credentials.new_password()
    encoded = hasher.hash(password)
    assert encoded.startswith("hmac-sha256$")
    assert password not in encoded
    assert hasher.verify(password, encoded) == credentials.Verification(True, needs_rehash=False)
    assert not hasher.verify_fast(password[:-1] + "?", encoded)
    assert not hasher.verify_fast("", encoded)
    assert not credentials.PasswordHasher(bytes(32)).verify_fast(password, encoded)
    assert not hasher.verify_fast(password, "hmac-sha256$!!!not-base64")
    assert not hasher.verify_fast(password, _scrypt_hash(password))


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        credentials.PasswordHasher(b"short")


@pytest.mark.parametrize("prefix", [b"2a", b"2b"])
def test_bcrypt_hashes_verify_slowly_and_ask_for_a_rehash(prefix: bytes) -> None:
    hasher = credentials.PasswordHasher(CREDENTIAL_KEY)
    password = credentials.new_password()
    encoded = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4, prefix=prefix)).decode()
    assert encoded.startswith(f"${prefix.decode()}$")
    assert hasher.verify(password, encoded) == credentials.Verification(True, needs_rehash=True)
    other = password[:-1] + ("a" if password[-1] != "a" else "b")
    assert hasher.verify(other, encoded) == credentials.Verification(False)
    # Past bcrypt's 72-byte limit nothing verifies (rather than a truncated match or a crash).
    assert not credentials.verify_slow("a" * 100, encoded)
    assert not credentials.verify_slow(password, "$2a$10$broken")


def test_old_scrypt_hashes_still_verify() -> None:
    hasher = credentials.PasswordHasher(CREDENTIAL_KEY)
    password = credentials.new_password()
    encoded = _scrypt_hash(password)
    assert hasher.verify(password, encoded) == credentials.Verification(True, needs_rehash=True)
    assert not hasher.verify(password + "x", encoded).valid
    for malformed in ("scrypt$x$8$1$AA$AA", "scrypt$3$8$1$AA$AA", "md5$abc", "", "scrypt$$$$$"):
        assert not hasher.verify(password, malformed).valid


def test_undecodable_header_bytes_are_a_wrong_password_not_a_crash() -> None:
    hasher = credentials.PasswordHasher(CREDENTIAL_KEY)
    encoded = hasher.hash(credentials.new_password())
    surrogate = b"\xff\xfe".decode("utf-8", "surrogateescape")
    assert not hasher.verify(surrogate, encoded).valid
    assert not hasher.verify(surrogate, _scrypt_hash("x")).valid
    assert not credentials.tokens_equal(surrogate, "token")


def test_tokens_compare_by_content() -> None:
    assert credentials.tokens_equal("s3cret-token", "s3cret-token")
    assert not credentials.tokens_equal("s3cret-token", "s3cret-toke")
    assert not credentials.tokens_equal("", "s3cret-token")


def _rehashes(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("acmezone_registry_password_rehashes_total") or 0.0


@pytest.mark.parametrize("form", ["bcrypt", "scrypt"])
async def test_a_slow_hash_is_replaced_by_the_fast_form_on_first_success(
    stack: Stack, metrics_registry: CollectorRegistry, form: str
) -> None:
    issued = await stack.registrations.create(ANYONE)
    subdomain = issued.registration.subdomain
    password = issued.password
    slow = (
        bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4, prefix=b"2a")).decode()
        if form == "bcrypt"
        else _scrypt_hash(password)
    )
    await stack.stores.registrations.set_password_hash(subdomain, slow)
    me = Caller(
        address=parse_address("127.0.0.1"),
        username=issued.registration.username,
        password=password,
    )
    wrong = Caller(address=me.address, username=me.username, password=credentials.new_password())

    with pytest.raises(UnauthenticatedError):
        await stack.registrations.add_txt_value(wrong, subdomain, acme_digest("a"))
    stored = await stack.stores.registrations.get_registration(subdomain)
    assert stored is not None
    assert stored.password_hash == slow, "a failure must not rehash"

    await stack.registrations.add_txt_value(me, subdomain, acme_digest("b"))
    stored = await stack.stores.registrations.get_registration(subdomain)
    assert stored is not None
    assert stored.password_hash == credentials.PasswordHasher(CREDENTIAL_KEY).hash(password)
    assert _rehashes(metrics_registry) == 1

    record = await stack.registrations.add_txt_value(me, subdomain, acme_digest("c"))
    assert [v.value for v in record.values] == [acme_digest("c"), acme_digest("b")]
    assert _rehashes(metrics_registry) == 1
    with pytest.raises(UnauthenticatedError):
        await stack.registrations.add_txt_value(wrong, subdomain, acme_digest("d"))


async def test_an_upgrade_never_overwrites_a_rotation(stack: Stack) -> None:
    issued = await stack.registrations.create(ANYONE)
    subdomain = issued.registration.subdomain
    await stack.stores.registrations.set_password_hash(subdomain, "rotated")
    assert not await stack.stores.registrations.upgrade_password_hash(subdomain, "stale", "new")
    stored = await stack.stores.registrations.get_registration(subdomain)
    assert stored is not None
    assert stored.password_hash == "rotated"
    assert await stack.stores.registrations.upgrade_password_hash(subdomain, "rotated", "new")


def test_the_generated_key_file_is_private_and_stable(tmp_path: Path) -> None:
    data_dir = tmp_path / "data" / "registry"
    first = keyfiles.load_or_create_key(None, data_dir / "credential.key")
    assert len(first) == 32
    assert stat.S_IMODE((data_dir / "credential.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert keyfiles.load_or_create_key(None, data_dir / "credential.key") == first
    assert list(data_dir.iterdir()) == [data_dir / "credential.key"]


def test_a_configured_key_wins_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    text = base64.urlsafe_b64encode(bytes(range(32))).decode().rstrip("=")
    assert keyfiles.load_or_create_key(text, tmp_path / "unused.key") == bytes(range(32))
    assert not (tmp_path / "unused.key").exists()
    with pytest.raises(ValueError, match="32 bytes"):
        keyfiles.load_or_create_key("c2hvcnQ", tmp_path / "unused.key")
    with pytest.raises(ValueError, match="base64url"):
        keyfiles.load_or_create_key("***", tmp_path / "unused.key")
