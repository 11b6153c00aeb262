"""Helpers for tests and tools that drive real acmezone servers over real sockets."""

from __future__ import annotations

import asyncio
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


async def wait_for_serving(target: str, service: str = "", within: float = 20.0) -> None:
    """Poll a gRPC server's health until `service` is SERVING; raise TimeoutError otherwise."""
    deadline = time.monotonic() + within
    last_error: str = "no answer"
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last_error = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as exc:
                last_error = f"{exc.code().name}: {exc.details()}"
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{target} service {service!r} not SERVING after {within}s: {last_error}")


def error_info_reason(error: grpc.aio.AioRpcError) -> str | None:
    """The `google.rpc.ErrorInfo.reason` a failed RPC carries, or None."""
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)
    if status is None:
        return None
    from google.rpc import error_details_pb2

    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return None


def free_port(host: str = "127.0.0.1", kind: int = 1) -> int:
    """A port that was free a moment ago (kind 1 = TCP, 2 = UDP), for servers in subprocesses,
    which cannot report a port-0 choice back. Prefer port 0 for in-process servers."""
    import socket

    sock_type = socket.SOCK_STREAM if kind == 1 else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, sock_type) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class ServiceProcess:
    """A service command run as a child process (real process, real signals), for tests.

    Output goes to a log file so a failing test can show it; `stop` sends SIGTERM and waits,
    as Kubernetes does, and returns the exit status.
    """

    def __init__(self, argv: list[str], env: dict[str, str], log_path: str) -> None:
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the process (appending to its log)."""
        import os

        log = open(self.log_path, "ab")  # noqa: SIM115, ASYNC230 - handed to the child process
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self.argv, env={**os.environ, **self.env}, stdout=log, stderr=log
            )
        finally:
            log.close()

    @property
    def running(self) -> bool:
        """True while the process has not exited."""
        return self._process is not None and self._process.returncode is None

    def log(self) -> str:
        """Everything the process has written so far."""
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    async def wait_for_serving(self, target: str, within: float = 30.0) -> None:
        """Wait until the process's gRPC server at `target` is SERVING; fail fast, with the log,
        if the process exits first."""
        waiting = asyncio.ensure_future(wait_for_serving(target, within=within))
        while not waiting.done():
            if not self.running:
                waiting.cancel()
                raise RuntimeError(f"{self.argv[0]} exited early:\n{self.log()}")
            await asyncio.sleep(0.05)
        try:
            waiting.result()
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}\n{self.log()}") from exc

    async def stop(self, within: float = 20.0) -> int | None:
        """SIGTERM, wait up to `within` seconds, then SIGKILL; returns the exit status."""
        import signal

        process = self._process
        if process is None:
            return None
        if process.returncode is None:
            process.send_signal(signal.SIGCONT)  # a stopped process could not act on SIGTERM
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), within)
            except TimeoutError:
                process.kill()
                await process.wait()
        return process.returncode

    def send_signal(self, signum: int) -> None:
        """Send a signal to the running process (SIGSTOP freezes it: a hung replica)."""
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signum)

    async def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
