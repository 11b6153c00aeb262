"""The reload hook: a shell command run after each install, with the environment certbot's deploy
hooks and lego's run/renew hooks get, so scripts written for either work unchanged.

certbot sets RENEWED_LINEAGE (the directory holding fullchain.pem and privkey.pem) and
RENEWED_DOMAINS (space separated); lego sets LEGO_CERT_DOMAIN, LEGO_CERT_PATH,
LEGO_CERT_KEY_PATH and LEGO_CERT_PEM_PATH. The agent adds ACMEZONE_CERTIFICATE and
ACMEZONE_SERIAL. The hook runs in its own process group and is killed with it when its time
limit passes; only the tail of its output is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass

OUTPUT_TAIL_BYTES = 4096


@dataclass(frozen=True)
class HookResult:
    """How one run of a hook ended. `exit_code` is None when it was killed at its time limit."""

    exit_code: int | None
    output_tail: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def outcome(self) -> str:
        """`success`, `failure` or `timeout`: the bounded metric label."""
        if self.exit_code is None:
            return "timeout"
        return "success" if self.exit_code == 0 else "failure"


def hook_environment(
    *,
    certificate: str,
    serial: str,
    directory: str,
    dns_names: tuple[str, ...],
    fullchain_path: str,
    key_path: str,
    combined_path: str | None,
) -> dict[str, str]:
    """The variables added to the agent's own environment for a hook run."""
    env = {
        "RENEWED_LINEAGE": directory,
        "RENEWED_DOMAINS": " ".join(dns_names),
        "LEGO_CERT_DOMAIN": dns_names[0] if dns_names else "",
        "LEGO_CERT_PATH": fullchain_path,
        "LEGO_CERT_KEY_PATH": key_path,
        "ACMEZONE_CERTIFICATE": certificate,
        "ACMEZONE_SERIAL": serial,
    }
    if combined_path:
        env["LEGO_CERT_PEM_PATH"] = combined_path
    return env


async def run_hook(command: str, env: dict[str, str], limit_seconds: float) -> HookResult:
    """Run `command` with /bin/sh, at most `limit_seconds`; never raises for the hook's sake."""
    started = time.monotonic()
    try:
        process = await asyncio.create_subprocess_shell(
            command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )
    except OSError as exc:
        return HookResult(127, f"could not start the hook: {exc}", time.monotonic() - started)
    assert process.stdout is not None
    tail = bytearray()

    async def read() -> None:
        assert process.stdout is not None
        while chunk := await process.stdout.read(65536):
            tail.extend(chunk)
            del tail[:-OUTPUT_TAIL_BYTES]

    reader = asyncio.ensure_future(read())
    exit_code: int | None
    try:
        exit_code = await asyncio.wait_for(process.wait(), limit_seconds)
    except TimeoutError:
        exit_code = None
        _kill_group(process.pid)
        await process.wait()
    except asyncio.CancelledError:
        _kill_group(process.pid)
        await process.wait()
        raise
    finally:
        # A child of the hook may hold the pipe open; do not wait for it forever.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader, 1.0)
    return HookResult(
        exit_code, tail.decode(errors="replace"), round(time.monotonic() - started, 3)
    )


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
