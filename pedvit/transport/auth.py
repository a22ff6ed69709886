"""Bearer-token authentication for workers.

The edge sends `authorization: Bearer <token>` metadata on every call; the worker's interceptor compares it
in constant time and answers UNAUTHENTICATED otherwise. The token is a shared secret: use it together with
TLS, since on a plaintext channel anyone on the path can read it.

Health checks (`/grpc.health.v1.Health/*`) pass without a token on purpose: orchestrator probes (k8s
gRPC probes, grpc_health_probe) cannot send custom metadata, and the health answer reveals nothing but
"up". Everything else, including `Info`, requires the token.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

#: Metadata key (gRPC lower-cases keys).
AUTH_METADATA_KEY = "authorization"
#: Method prefix that bypasses the token check.
HEALTH_PREFIX = "/grpc.health.v1.Health/"


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The per-call metadata that carries `token`."""
    return ((AUTH_METADATA_KEY, f"Bearer {token}"),)


def read_token_file(path: str | os.PathLike[str]) -> str:
    """Read a token from a file (surrounding whitespace stripped).

    Raises:
        ValueError: if the file holds no token.
    """
    token = Path(path).read_text().strip()
    if not token:
        raise ValueError(f"token file {path} is empty")
    return token


def guarded_handler(handler: grpc.RpcMethodHandler, refusal: Callable[[grpc.ServicerContext], str | None],
                    code: grpc.StatusCode) -> grpc.RpcMethodHandler:
    """`handler` with `refusal` checked before its behaviour runs: a reason aborts the call with `code`. The
    guarded handler keeps the method's streaming kind (else gRPC would wait for messages nobody reads) and
    its serializers."""

    def check(context: grpc.ServicerContext) -> None:
        reason = refusal(context)
        if reason is not None:
            context.abort(code, reason)

    def unary(fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(request: Any, context: grpc.ServicerContext) -> Any:
            check(context)
            return fn(request, context)
        return run

    def streaming(fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        def run(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            check(context)
            yield from fn(request, context)
        return run

    kw = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **kw)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), **kw)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **kw)
    return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), **kw)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Server interceptor that requires `authorization: Bearer <token>` on every non-health call."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("empty token")
        self._expected = f"Bearer {token}".encode()

    def _authorized(self, metadata: Any) -> bool:
        for key, value in metadata or ():
            if key == AUTH_METADATA_KEY:
                got = value.encode() if isinstance(value, str) else bytes(value)
                return hmac.compare_digest(got, self._expected)
        return False

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        """Pass authorized calls and health checks through; replace others with a denying handler."""
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(HEALTH_PREFIX):
            return handler
        if self._authorized(handler_call_details.invocation_metadata):
            return handler
        return guarded_handler(handler, lambda context: "missing or invalid bearer token",
                               grpc.StatusCode.UNAUTHENTICATED)
