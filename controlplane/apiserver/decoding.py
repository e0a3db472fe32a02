"""Requests that do not decode are the client's error: INVALID_ARGUMENT, not a crash.

gRPC decodes each request with the method's protobuf class before any
handler runs; when that fails (random bytes, a string field that is not
UTF-8) grpc.aio answers UNKNOWN "Unexpected DecodeError", which reads like
a server bug and carries no Kubernetes reason. This interceptor wraps every
method's decoder so a failure becomes a marker the handler sees first, and
the call ends with INVALID_ARGUMENT and reason BadRequest, like any other
malformed request (server.py's `_decode` does the same for the object bytes
inside a request).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from proto.errors import REASON_METADATA_KEY, BadRequest


class _Undecodable:
    def __init__(self, error: Exception) -> None:
        self.error = error


async def _reject(context: grpc.aio.ServicerContext, method: str, bad: _Undecodable) -> None:
    err = BadRequest(f"the request to {method} is not valid: {bad.error}")
    context.set_trailing_metadata(((REASON_METADATA_KEY, err.reason),))
    await context.abort(err.code, str(err))


class RejectUndecodableRequests(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None or handler.request_streaming:
            return handler
        decode = handler.request_deserializer
        method = str(details.method).rpartition("/")[2]

        def safe_decode(raw: bytes) -> Any:
            try:
                return decode(raw)
            except Exception as exc:  # whatever protobuf raises for bytes it cannot take
                return _Undecodable(exc)

        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if isinstance(request, _Undecodable):
                    await _reject(context, method, request)
                return await unary(request, context)

            return handler._replace(request_deserializer=safe_decode, unary_unary=unary_unary)
        stream = handler.unary_stream

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if isinstance(request, _Undecodable):
                await _reject(context, method, request)
            async for reply in stream(request, context):
                yield reply

        return handler._replace(request_deserializer=safe_decode, unary_stream=unary_stream)
