"""The agent's installer on a real filesystem: complete sets swapped in one rename, modes, the
previous set for rollback, refusal of a key that does not match, and a process SIGKILLed at every
write boundary leaving the old or the new complete set."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from acmezone_clients.agent.bundle import check_bundle
from acmezone_clients.agent.errors import BundleError, InstallError
from acmezone_clients.agent.files import FileNames, Installer, Ownership
from tests.clients.agent_pki import Issued, LeafCA, other_key_pem

NAMES = FileNames(combined="haproxy.pem")


@pytest.fixture(scope="module")
def test_ca() -> LeafCA:
    return LeafCA()


def live_set(directory: Path, names: FileNames = NAMES) -> dict[str, str]:
    return {n: (directory / n).read_text() for n in names.all()}


def assert_complete_set(directory: Path, issued: Issued, names: FileNames = NAMES) -> None:
    """Every live file belongs to `issued`, and the key is the leaf's."""
    files = live_set(directory, names)
    leaf = x509.load_pem_x509_certificate(files[names.cert].encode())
    assert format(leaf.serial_number, "x") == issued.serial
    assert files[names.fullchain] == issued.chain_pem
    assert files[names.privkey] == issued.key_pem
    assert files[names.cert] + files[names.chain] == issued.chain_pem
    assert files["haproxy.pem"] == issued.key_pem + issued.chain_pem
    key = serialization.load_pem_private_key(files[names.privkey].encode(), None)
    assert key.public_key() == leaf.public_key()


def test_install_writes_a_complete_set_and_keeps_one_previous(
    tmp_path: Path, test_ca: LeafCA
) -> None:
    installer = Installer(tmp_path, NAMES)
    assert installer.installed_serial() is None
    first = test_ca.issue("www.example.test", "example.test")
    bundle = check_bundle(first.chain_pem, first.key_pem)
    assert bundle.dns_names == ("www.example.test", "example.test")
    installer.install(bundle)
    assert_complete_set(tmp_path, first)
    assert installer.installed_serial() == first.serial
    assert stat.S_IMODE((tmp_path / "privkey.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "haproxy.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "fullchain.pem").stat().st_mode) == 0o644
    assert (tmp_path / "fullchain.pem").is_symlink()

    second, third = test_ca.issue("www.example.test"), test_ca.issue("www.example.test")
    installer.install(check_bundle(second.chain_pem, second.key_pem))
    assert_complete_set(tmp_path, second)
    assert installer.previous_serial() == first.serial
    installer.install(check_bundle(third.chain_pem, third.key_pem))
    assert installer.previous_serial() == second.serial
    # Only the current and the previous set stay on disk.
    assert len(list((tmp_path / ".acmezone" / "sets").iterdir())) == 2

    assert installer.rollback() == second.serial
    assert_complete_set(tmp_path, second)
    assert installer.installed_serial() == second.serial
    assert installer.rollback() == third.serial  # rolling back twice returns to the newest


def test_modes_and_group_come_from_the_target(tmp_path: Path, test_ca: LeafCA) -> None:
    gid = os.getgid()
    installer = Installer(
        tmp_path, FileNames(), Ownership(group=gid, key_mode=0o640, cert_mode=0o604)
    )
    issued = test_ca.issue("mail.example.test")
    installer.install(check_bundle(issued.chain_pem, issued.key_pem))
    key = (tmp_path / "privkey.pem").stat()
    assert stat.S_IMODE(key.st_mode) == 0o640
    assert key.st_gid == gid
    assert stat.S_IMODE((tmp_path / "cert.pem").stat().st_mode) == 0o604


def test_a_key_that_does_not_match_is_refused_and_nothing_changes(
    tmp_path: Path, test_ca: LeafCA
) -> None:
    installer = Installer(tmp_path, NAMES)
    good = test_ca.issue("www.example.test")
    installer.install(check_bundle(good.chain_pem, good.key_pem))
    before = live_set(tmp_path)
    bad = test_ca.issue("www.example.test")
    with pytest.raises(BundleError, match="does not match"):
        check_bundle(bad.chain_pem, other_key_pem())
    with pytest.raises(BundleError, match="not valid PEM"):
        check_bundle("garbage", good.key_pem)
    with pytest.raises(BundleError, match="unencrypted PEM key"):
        check_bundle(good.chain_pem, "garbage")
    assert live_set(tmp_path) == before
    assert installer.installed_serial() == good.serial


def test_rollback_without_a_previous_set_is_an_error(tmp_path: Path, test_ca: LeafCA) -> None:
    installer = Installer(tmp_path)
    with pytest.raises(InstallError, match="no previous set"):
        installer.rollback()
    issued = test_ca.issue("a.example.test")
    installer.install(check_bundle(issued.chain_pem, issued.key_pem))
    with pytest.raises(InstallError, match="no previous set"):
        installer.rollback()


def test_an_unwritable_directory_is_an_install_error(tmp_path: Path, test_ca: LeafCA) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    issued = test_ca.issue("a.example.test")
    with pytest.raises(InstallError, match="failed"):
        Installer(blocker / "sub").install(check_bundle(issued.chain_pem, issued.key_pem))


# The installer in a child process, its writes counted by the agent's settings: the child is
# SIGKILLed after the N-th rename, for every N until an install runs to the end.
_CHILD = """
import sys
from pathlib import Path
from acmezone_clients.agent.bundle import check_bundle
from acmezone_clients.agent.files import CrashPoint, FileNames, Installer
from acmezone_clients.agent.settings import AgentSettings

crash = CrashPoint(AgentSettings().crash_after_writes)
installer = Installer(Path(sys.argv[1]), FileNames(combined="haproxy.pem"), crash=crash)
chain, key = Path(sys.argv[2]).read_text(), Path(sys.argv[3]).read_text()
installer.install(check_bundle(chain, key))
"""


def _install_in_child(directory: Path, issued: Issued, crash_after: int | None) -> int:
    chain, key = directory.parent / "chain.in", directory.parent / "key.in"
    chain.write_text(issued.chain_pem)
    key.write_text(issued.key_pem)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACMEZONE_AGENT_")}
    if crash_after is not None:
        env["ACMEZONE_AGENT_CRASH_AFTER_WRITES"] = str(crash_after)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(directory), str(chain), str(key)],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return done.returncode


def test_sigkill_at_every_write_leaves_the_old_or_the_new_complete_set(
    tmp_path: Path, test_ca: LeafCA
) -> None:
    directory = tmp_path / "live"
    old = test_ca.issue("www.example.test")
    assert _install_in_child(directory, old, None) == 0
    assert_complete_set(directory, old)
    crashes = 0
    for after in range(1, 50):
        new = test_ca.issue("www.example.test")
        code = _install_in_child(directory, new, after)
        installed = Installer(directory, NAMES).installed_serial()
        if code == -signal.SIGKILL:
            crashes += 1
            assert installed in (old.serial, new.serial), after
            assert_complete_set(directory, old if installed == old.serial else new)
            if installed == new.serial:
                old = new
            continue
        assert code == 0
        assert_complete_set(directory, new)
        break
    else:
        pytest.fail("the install never completed")
    # 5 files, the previous and current links: every one of them was a crash point.
    assert crashes >= 7
    # Whatever the crashes left behind, only two sets remain after a complete install.
    assert len(list((directory / ".acmezone" / "sets").iterdir())) == 2
