"""The one server interceptor every acmezone gRPC server runs.

It does two jobs that must see the same final status: it turns domain errors
(`acmezone_common.errors`) into canonical statuses with `google.rpc.ErrorInfo` and
`google.rpc.BadRequest` details, and it records the standard `grpc_server_*` metrics. An exception
that is not a domain error is a bug: it is logged with its traceback and the caller gets INTERNAL
without internal details.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from acmezone_common.errors import AcmezoneError
from acmezone_common.metrics import GrpcServerMetrics

logger = logging.getLogger(__name__)

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


if TYPE_CHECKING:  # the stubs make it generic; the runtime class is not subscriptable
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler


def rpc_type(handler: Handler) -> str:
    """The go-grpc-prometheus name of a handler's streaming shape."""
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


def split_method(full_method: str) -> tuple[str, str]:
    """`/pkg.Service/Method` -> (`pkg.Service`, `Method`)."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service or "unknown", method or "unknown"


def status_details(error: AcmezoneError, domain: str) -> bytes:
    """The serialized `google.rpc.Status` for a domain error, for the details trailer."""
    status = status_pb2.Status(
        code=grpc.StatusCode[error.code.value].value[0], message=error.message
    )
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=error.metadata)
    )
    status.details.append(info)
    if error.field_violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.field_violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad_request)
        status.details.append(packed)
    return bytes(status.SerializeToString())


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Maps domain errors to rich statuses and records grpc_server_* metrics for every RPC."""

    def __init__(self, metrics: GrpcServerMetrics, error_domain: str) -> None:
        self._metrics = metrics
        self._domain = error_domain

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or (handler.request_streaming and handler.response_streaming):
            # Unknown methods get UNIMPLEMENTED from grpc itself; we expose no bidi streams.
            return handler
        service, method = split_method(handler_call_details.method)
        labels = (rpc_type(handler), service, method)
        if handler.request_streaming:
            # A client stream ends in one response: wrapped as a unary call is (the request
            # argument is the iterator of requests).
            assert handler.stream_unary is not None
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(handler.stream_unary, labels),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.response_streaming:
            assert handler.unary_stream is not None
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, labels),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        assert handler.unary_unary is not None
        return grpc.unary_unary_rpc_method_handler(
            self._wrap_unary(handler.unary_unary, labels),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap_unary(
        self, behavior: Callable[..., Any], labels: tuple[str, str, str]
    ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            self._metrics.started.labels(*labels).inc()
            start = time.perf_counter()
            try:
                return await behavior(request, context)
            except BaseException as exc:
                await self._abort_for(exc, context, labels)
            finally:
                self._record(labels, start, context)

        return unary

    def _wrap_stream(
        self, behavior: Callable[..., Any], labels: tuple[str, str, str]
    ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]:
        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            self._metrics.started.labels(*labels).inc()
            start = time.perf_counter()
            sent = self._metrics.msg_sent.labels(*labels)
            try:
                result = behavior(request, context)
                if inspect.isasyncgen(result):
                    async for message in result:
                        yield message
                        sent.inc()
                else:
                    await result
            except BaseException as exc:
                await self._abort_for(exc, context, labels)
            finally:
                self._record(labels, start, context)

        return stream

    async def _abort_for(
        self,
        exc: BaseException,
        context: grpc.aio.ServicerContext[Any, Any],
        labels: tuple[str, str, str],
    ) -> NoReturn:
        """End the RPC with the status `exc` stands for; the code is set on the context first so
        `_record` reads the same code the client gets."""
        if isinstance(exc, AcmezoneError):
            code = grpc.StatusCode[exc.code.value]
            context.set_code(code)
            await context.abort(
                code,
                exc.message,
                trailing_metadata=((_STATUS_DETAILS_KEY, status_details(exc, self._domain)),),
            )
        if isinstance(exc, asyncio.CancelledError):
            context.set_code(grpc.StatusCode.CANCELLED)
            raise exc
        if isinstance(exc, grpc.aio.AbortError):
            raise exc
        if isinstance(exc, Exception):
            logger.exception(
                "unhandled error in RPC",
                extra={"grpc_service": labels[1], "grpc_method": labels[2]},
            )
            context.set_code(grpc.StatusCode.INTERNAL)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise exc

    def _record(
        self,
        labels: tuple[str, str, str],
        start: float,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        status = context.code()
        code = status.name if isinstance(status, grpc.StatusCode) else "OK"
        self._metrics.handled.labels(*labels, code).inc()
        self._metrics.handling_seconds.labels(*labels).observe(time.perf_counter() - start)
