"""A bearer-token guard in front of chosen gRPC services: the record feed, UPDATE forwarding and
reflection are infrastructure, not a public API, and once a deployment sets a token they answer
only callers that present it.

A guarded call without `authorization: Bearer <token>` matching one of the accepted tokens
fails with UNAUTHENTICATED (reason `CREDENTIAL_REQUIRED` or `CREDENTIAL_INVALID`) before the
servicer runs; tokens are compared in constant time. Unguarded services (health, and the APIs
that check credentials of their own) pass straight through. The error comes from the shared
interceptor, so metrics and error details look like every other failure.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any

import grpc

from acmezone_common.errors import UnauthenticatedError

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler

REFLECTION_SERVICES = (
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an `authorization: Bearer <token>` entry; "" for another scheme; None when
    there is no such entry."""
    for key, value in metadata or ():
        if key.lower() == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


class TokenGuard(grpc.aio.ServerInterceptor):
    """Requires one of `tokens` on every method of the `services` named (full names)."""

    def __init__(self, tokens: Collection[str], services: Collection[str]) -> None:
        if not tokens or any(not t for t in tokens):
            raise ValueError("a token guard needs non-empty tokens")
        self._tokens = [t.encode() for t in tokens]
        self._services = frozenset(services)

    def _refusal(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
        """Why a call is refused, or None when it presents an accepted token."""
        token = bearer_token(metadata)
        if not token:
            return "CREDENTIAL_REQUIRED"
        presented = token.encode()
        accepted = False
        for expected in self._tokens:  # every one compared: no early exit to time
            accepted |= hmac.compare_digest(presented, expected)
        return None if accepted else "CREDENTIAL_INVALID"

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        service = method.lstrip("/").rpartition("/")[0]
        if handler is None or service not in self._services:
            return handler
        reason = self._refusal(handler_call_details.invocation_metadata)
        if reason is None:
            return handler
        return _refusing(handler, reason, service)


def _refusing(handler: Handler, reason: str, service: str) -> Handler:
    """A handler of the same shape as `handler` that fails with UNAUTHENTICATED."""
    message = (
        f"{service} needs `authorization: Bearer <token>` with the deployment's feed or "
        "operator token"
        if reason == "CREDENTIAL_REQUIRED"
        else f"the token presented is not accepted by {service}"
    )
    error = UnauthenticatedError(reason, message)

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        raise error

    async def fail() -> None:
        raise error

    async def streaming(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        async for response in _Refused(fail):  # an async generator, as grpc.aio wants
            yield response

    async def bidi(
        requests: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        async def abort() -> None:
            # The shared interceptor leaves bidi streams (reflection) alone: abort here.
            context.set_code(grpc.StatusCode.UNAUTHENTICATED)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        async for response in _Refused(abort):
            yield response

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(bidi, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, **kwargs)
    return grpc.unary_unary_rpc_method_handler(unary, **kwargs)


class _Refused:
    """The responses of a refused stream: none, its first step fails with what `fail` raises."""

    def __init__(self, fail: Callable[[], Awaitable[None]]) -> None:
        self._fail = fail

    def __aiter__(self) -> _Refused:
        return self

    async def __anext__(self) -> object:
        await self._fail()
        raise StopAsyncIteration
