"""`make run`: start the whole acmezone system locally on the default ports.

Each component is a child process whose output is prefixed with its name; components start in
order, each once the previous one reports healthy, and Ctrl-C (or SIGTERM) stops them all in
reverse order. State lives under `var/` so a restart keeps registrations and certificates.
Add a component by appending a `Component` to `components()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from acmezone_clients.devpebble import DEV_ZONE

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
BIN = Path(sys.executable).parent
# The issuer's operator token in development; the CLI reads it from ACMEZONE_CLI_TOKEN.
DEV_OPERATOR_TOKEN = "dev-operator-token"  # noqa: S105 - a published development value
# The dns service's zone edit token in development (`acmezone zone-record`, `cert request
# --add-cnames`); the CLI reads it from ACMEZONE_CLI_ZONE_TOKEN.
DEV_ZONE_TOKEN = "dev-zone-token"  # noqa: S105 - a published development value
# The challenge zone of `make run`, apart from the dev customer zone example.test: a challenge zone
# inside the customer's zone would only work while this server also hosts that zone.
CHALLENGE_ZONE = "challenges.test"
CUSTOMER_ZONE = f"""\
; The dev customer zone of `make run`: a domain you "own", already delegated. The issuer in dev
; mode asks the registry for the registration label `<domain with dots as dashes>`, so this CNAME
; points at the registration the issuer will create for example.test (and *.example.test). The
; dns service reloads this file when it changes (or on SIGHUP).
$ORIGIN example.test.
$TTL 60
@                SOA   ns1.{CHALLENGE_ZONE}. hostmaster.example.test. 1 3600 600 86400 1
@                NS    ns1.{CHALLENGE_ZONE}.
@                A     127.0.0.1
www              A     127.0.0.1
_acme-challenge  CNAME example-test.{CHALLENGE_ZONE}.
"""


def write_customer_zone(path: Path) -> Path:
    """Write the dev customer zone unless the developer edited one there; the zone earlier
    versions wrote (challenge zone inside it) is replaced."""
    if not path.exists() or path.read_text() == DEV_ZONE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(CUSTOMER_ZONE)
    return path


@dataclass
class Component:
    """A process to run: its command, extra environment, and how to tell it is ready."""

    name: str
    argv: list[str]
    ready: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    summary: str = ""


def tcp_open(host: str, port: int) -> Callable[[], bool]:
    """Ready when something accepts TCP connections on host:port."""

    def check() -> bool:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        return False

    return check


def grpc_serving(target: str) -> Callable[[], bool]:
    """Ready when the gRPC health check at `target` answers SERVING."""

    def check() -> bool:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(target) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=0.5
                )
            except grpc.RpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    return check


def components() -> list[Component]:
    """Everything `make run` starts, in start order."""
    return [
        Component(
            name="registry",
            argv=[str(BIN / "acmezone-registry")],
            ready=grpc_serving("127.0.0.1:50051"),
            env={
                "ACMEZONE_REGISTRY_DATA_DIR": str(VAR / "registry"),
                "ACMEZONE_REGISTRY_ZONE": CHALLENGE_ZONE,
            },
            summary="registry  gRPC 127.0.0.1:50051  acme-dns HTTP 127.0.0.1:8053  "
            "metrics 127.0.0.1:9101",
        ),
        Component(
            name="dns",
            argv=[str(BIN / "acmezone-dns")],
            ready=grpc_serving("127.0.0.1:50052"),
            # The dev customer zone example.test, delegated to the registration the issuer
            # will create, beside the challenge zone.
            env={
                "ACMEZONE_DNS_ZONE": CHALLENGE_ZONE,
                "ACMEZONE_DNS_NS_NAMES": f"ns1.{CHALLENGE_ZONE}",
                "ACMEZONE_DNS_ZONE_EDIT_TOKEN": DEV_ZONE_TOKEN,
                "ACMEZONE_DNS_ZONE_FILES": str(
                    write_customer_zone(VAR / "dns" / "example.test.zone")
                ),
            },
            summary="dns       DNS 127.0.0.1:5353 (UDP+TCP)  gRPC 127.0.0.1:50052  "
            "metrics 127.0.0.1:9102",
        ),
        Component(
            name="pebble",
            argv=[
                str(BIN / "python"),
                "-m",
                "acmezone_clients.devpebble",
                "--workdir",
                str(VAR / "pebble"),
                # `make run PEBBLE_BIN=../shared/bin/pebble` for ARI, profiles, dns-account-01.
                "--binary",
                os.environ.get("PEBBLE_BIN") or "pebble",
            ],
            ready=tcp_open("127.0.0.1", 14000),
            summary="pebble    ACME https://127.0.0.1:14000/dir (test CA; resolves through dns)",
        ),
        Component(
            name="issuer",
            argv=[str(BIN / "acmezone-issuer")],
            ready=grpc_serving("127.0.0.1:50053"),
            env={
                "ACMEZONE_ISSUER_DATA_DIR": str(VAR / "issuer"),
                "ACMEZONE_ISSUER_ACME_CA_BUNDLE": str(VAR / "pebble" / "tls" / "ca.pem"),
                "ACMEZONE_ISSUER_DNS_RESOLVER": "127.0.0.1:5353",
                "ACMEZONE_ISSUER_OPERATOR_TOKEN": DEV_OPERATOR_TOKEN,
                "ACMEZONE_ISSUER_REGISTRATION_ID_FROM_DOMAIN": "true",
            },
            summary="issuer    gRPC 127.0.0.1:50053  HTTP-01 127.0.0.1:5002  metrics 127.0.0.1:9103"
            f"  (operator token: {DEV_OPERATOR_TOKEN})",
        ),
    ]


async def _pump(name: str, stream: asyncio.StreamReader) -> None:
    width = max(len(c.name) for c in components())
    while line := await stream.readline():
        sys.stdout.write(f"{name:<{width}} | {line.decode(errors='replace')}")
        sys.stdout.flush()


async def _wait_ready(component: Component, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"{component.name} exited with status {process.returncode}")
        if await asyncio.to_thread(component.ready):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{component.name} did not become ready within 60 s")


async def main() -> int:
    VAR.mkdir(exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    running: list[tuple[Component, asyncio.subprocess.Process]] = []
    pumps: list[asyncio.Task[None]] = []
    status = 0
    try:
        for component in components():
            process = await asyncio.create_subprocess_exec(
                *component.argv,
                cwd=ROOT,
                env={**os.environ, **component.env},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            assert process.stdout is not None
            running.append((component, process))
            pumps.append(asyncio.create_task(_pump(component.name, process.stdout)))
            await _wait_ready(component, process)
        print("\nacmezone is running (Ctrl-C stops everything):")
        for component, _ in running:
            print(f"  {component.summary or component.name}")
        print(flush=True)
        exits = [asyncio.create_task(p.wait()) for _, p in running]
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *exits], return_when=asyncio.FIRST_COMPLETED)
        if stopper not in done:
            print("a component exited; stopping the rest", file=sys.stderr)
            status = 1
        stopper.cancel()
    except RuntimeError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        status = 1
    finally:
        for _component, process in reversed(running):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), 15)
                except TimeoutError:
                    process.kill()
        for pump in pumps:
            pump.cancel()
    return status


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
