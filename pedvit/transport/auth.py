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
from collections.abc import Callable
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


def _deny(request_or_iterator: Any, context: grpc.ServicerContext) -> None:
    context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")


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
        # The denying handler must match the method's streaming kind, or gRPC would wait for messages
        # the handler never reads.
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(_deny)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(_deny)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(_deny)
        return grpc.unary_unary_rpc_method_handler(_deny)
