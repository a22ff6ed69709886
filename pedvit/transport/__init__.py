"""Edge <-> worker transport: the `pedvit.v1` protocol, tensor codec, TLS/token auth and the gRPC client."""

from pedvit.transport.codec import DEFAULT_MAX_MESSAGE_BYTES, decode_tensor, encode_tensor
from pedvit.transport.tls import ClientTLS, ServerTLS, generate_dev_pki
from pedvit.transport.client import RemoteExecutor, StageCall
from pedvit.transport.worker_types import CallStats, WorkerError, WorkerInfo

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "CallStats",
    "ClientTLS",
    "RemoteExecutor",
    "ServerTLS",
    "StageCall",
    "WorkerError",
    "WorkerInfo",
    "decode_tensor",
    "encode_tensor",
    "generate_dev_pki",
]
