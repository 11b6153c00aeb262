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
