"""The delivery agent against a real issuer and Pebble: started while the issuer is down, the
issuer restarted mid-watch, a renewal while the agent was stopped, a hook that fails then
succeeds, and the agent process SIGKILLed between writes, SIGTERMed in the middle of an install
(the hook then runs at the next start) and after one."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from prometheus_client import CollectorRegistry

from acmezone_clients.agent.app import AgentApp
from acmezone_clients.agent.files import Installer
from acmezone_clients.cli.commands import run as cli_run
from tests.clients.agent_support import agent_settings, restartable_issuer, target
from tests.issuer.conftest import CA, OPERATOR_TOKEN, ca, fake_dns

__all__ = ["ca", "fake_dns"]

WITHIN = 60.0


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


def installed_files(directory: Path) -> tuple[str, bool]:
    """(serial of cert.pem, whether privkey.pem is its key and fullchain.pem starts with it)."""
    cert_pem = (directory / "cert.pem").read_bytes()
    leaf = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key((directory / "privkey.pem").read_bytes(), None)
    fullchain = (directory / "fullchain.pem").read_bytes()
    consistent = key.public_key() == leaf.public_key() and fullchain.startswith(cert_pem)
    return format(leaf.serial_number, "x"), consistent


async def test_agent_waits_for_a_down_issuer_and_follows_a_restart(tmp_path: Path, ca: CA) -> None:
    metrics = CollectorRegistry()
    out = tmp_path / "web"
    hook_log = tmp_path / "hook.log"
    hook = f'echo "$RENEWED_LINEAGE $RENEWED_DOMAINS $LEGO_CERT_KEY_PATH" >> {hook_log}'
    async with restartable_issuer(tmp_path / "issuer", ca) as issuer:
        agent = AgentApp(
            agent_settings(issuer.address, metrics_address="127.0.0.1:0"),
            [target("web", out, hook)],
            metrics,
        )
        await agent.start()
        try:
            # Nothing listens yet: the agent keeps retrying, with nothing installed.
            await agent.wait_for("web", lambda s: "UNAVAILABLE" in s.last_error, within=WITHIN)
            assert not out.exists()

            await issuer.start()
            first = await issuer.issue("web", "www.agent.example.test")
            status = await agent.wait_for(
                "web",
                lambda s: s.installed_serial == first.serial_number and len(s.hook_runs) == 1,
                within=WITHIN,
            )
            assert status.hook_runs[0].ok
            assert installed_files(out) == (first.serial_number, True)
            assert hook_log.read_text() == f"{out} www.agent.example.test {out}/privkey.pem\n"
            scraped = await asyncio.to_thread(scrape, str(agent.metrics_address))
            assert (
                'acmezone_agent_installs_total{certificate="web",result="success"} 1.0' in scraped
            )
            assert 'acmezone_agent_watch_connected{certificate="web"} 1.0' in scraped

            # The issuer goes away mid-watch and comes back on the same port and database.
            await issuer.stop()
            await agent.wait_for("web", lambda s: not s.connected, within=WITHIN)
            await issuer.start()
            await agent.wait_for("web", lambda s: s.connected, within=WITHIN)
            second = await issuer.renew("certificates/web", first.serial_number)
            await agent.wait_for(
                "web", lambda s: s.installed_serial == second.serial_number, within=WITHIN
            )
            assert installed_files(out) == (second.serial_number, True)
            assert Installer(out).previous_serial() == first.serial_number
            await agent.wait_for("web", lambda s: len(s.hook_runs) == 1, within=WITHIN)
        finally:
            await agent.stop()

    def sample(name: str, **labels: str) -> float:
        return metrics.get_sample_value(name, {"certificate": "web", **labels}) or 0.0

    assert sample("acmezone_agent_installs_total", result="success") == 2
    assert sample("acmezone_agent_hook_runs_total", result="success") == 2
    assert sample("acmezone_agent_watch_reconnects_total") >= 2
    assert sample("acmezone_agent_last_install_success") == 1
    assert sample("acmezone_agent_certificate_not_after_timestamp_seconds") == (
        second.not_after_time.seconds
    )


async def test_renewal_while_stopped_is_caught_up_and_a_failing_hook_retried(
    tmp_path: Path, ca: CA
) -> None:
    out = tmp_path / "api"
    marker = tmp_path / "failed-once"
    # Fails on its first run after each install, succeeds on the retry.
    hook = f'if [ ! -e {marker} ]; then touch {marker}; echo "reload refused"; exit 7; fi; ' + (
        f"rm {marker}; echo reloaded"
    )
    async with restartable_issuer(tmp_path / "issuer", ca) as issuer:
        await issuer.start()
        first = await issuer.issue("api", "api.agent.example.test")
        metrics = CollectorRegistry()
        agent = AgentApp(agent_settings(issuer.address), [target("api", out, hook)], metrics)
        await agent.start()
        try:
            status = await agent.wait_for(
                "api",
                lambda s: s.installed_serial == first.serial_number and len(s.hook_runs) == 2,
                within=WITHIN,
            )
        finally:
            await agent.stop()
        assert [r.exit_code for r in status.hook_runs] == [7, 0]
        assert status.hook_runs[0].output_tail == "reload refused\n"
        assert status.hook_runs[1].output_tail == "reloaded\n"
        assert (
            metrics.get_sample_value(
                "acmezone_agent_hook_runs_total", {"certificate": "api", "result": "failure"}
            )
            == 1
        )
        assert (
            metrics.get_sample_value("acmezone_agent_last_hook_success", {"certificate": "api"})
            == 1
        )

        # Renewed while no agent runs: the next agent installs it on its first message.
        second = await issuer.renew("certificates/api", first.serial_number)
        assert installed_files(out) == (first.serial_number, True)
        agent = AgentApp(agent_settings(issuer.address), [target("api", out)], CollectorRegistry())
        assert agent.watchers == {}
        await agent.start()
        try:
            await agent.wait_for(
                "api", lambda s: s.installed_serial == second.serial_number, within=WITHIN
            )
        finally:
            await agent.stop()
        assert installed_files(out) == (second.serial_number, True)


async def _read_until(stream: asyncio.StreamReader, needle: bytes, within: float) -> bytes:
    seen = b""

    async def read() -> bytes:
        nonlocal seen
        while line := await stream.readline():
            seen += line
            if needle in line:
                return seen
        raise AssertionError(f"the agent ended without logging {needle!r}:\n{seen.decode()}")

    try:
        return await asyncio.wait_for(read(), within)
    except TimeoutError:
        raise AssertionError(f"no {needle!r} within {within}s:\n{seen.decode()}") from None


async def _agent_process(
    issuer: str, out: Path, token: str, *hook: str, **env: str
) -> asyncio.subprocess.Process:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ACMEZONE_")}
    environment.update(env)
    return await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("acmezone")),
        "--issuer",
        issuer,
        "--token",
        token,
        "agent",
        "--cert",
        "db",
        "--dir",
        str(out),
        *(("--reload-command", *hook) if hook else ()),
        env=environment,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_agent_process_killed_between_writes_leaves_a_complete_set(
    tmp_path: Path, ca: CA
) -> None:
    out = tmp_path / "db"
    async with restartable_issuer(tmp_path / "issuer", ca) as issuer:
        await issuer.start()
        first = await issuer.issue("db", "db.agent.example.test")
        # The agent runs with a delivery token for this one certificate, made with the CLI.
        printed = io.StringIO()
        code = await cli_run(
            [
                *("--issuer", issuer.address, "--token", OPERATOR_TOKEN, "--json"),
                *("delivery-token", "create", "--cert", "db", "--id", "db-hosts"),
            ],
            printed,
        )
        assert code == 0, printed.getvalue()
        token = json.loads(printed.getvalue())["secret"]
        assert token.startswith("azdt_db-hosts_")
        agent = await _agent_process(issuer.address, out, token)
        assert agent.stderr is not None
        await _read_until(agent.stderr, b"certificate installed", WITHIN)
        agent.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(agent.wait(), WITHIN) == 0
        assert installed_files(out) == (first.serial_number, True)

        second = await issuer.renew("certificates/db", first.serial_number)
        # Killed after the third rename of the new set: its files are half written.
        crashed = await _agent_process(
            issuer.address, out, token, ACMEZONE_AGENT_CRASH_AFTER_WRITES="3"
        )
        assert await asyncio.wait_for(crashed.wait(), WITHIN) == -signal.SIGKILL
        assert installed_files(out) == (first.serial_number, True)

        again = await _agent_process(issuer.address, out, token)
        assert again.stderr is not None
        await _read_until(again.stderr, b"certificate installed", WITHIN)
        again.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(again.wait(), WITHIN) == 0
        assert installed_files(out) == (second.serial_number, True)
        assert len(list((out / ".acmezone" / "sets").iterdir())) == 2

        # SIGTERM after the third rename of a new set: the install completes, the agent exits
        # 0 before its hook ran, and the next start runs the hook for what it installed.
        third = await issuer.renew("certificates/db", second.serial_number)
        hook_log = tmp_path / "hook.log"
        hook = f"echo $ACMEZONE_SERIAL >> {hook_log}"
        stopped = await _agent_process(
            issuer.address,
            out,
            token,
            hook,
            ACMEZONE_AGENT_CRASH_AFTER_WRITES="3",
            ACMEZONE_AGENT_CRASH_SIGNAL="TERM",
        )
        assert await asyncio.wait_for(stopped.wait(), WITHIN) == 0
        assert installed_files(out) == (third.serial_number, True)
        assert not hook_log.exists()
        resumed = await _agent_process(issuer.address, out, token, hook)
        assert resumed.stderr is not None
        await _read_until(resumed.stderr, b"hook ran", WITHIN)
        resumed.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(resumed.wait(), WITHIN) == 0
        assert hook_log.read_text() == f"{third.serial_number}\n"
