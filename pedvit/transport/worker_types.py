"""What a call to a worker yields besides its output: `WorkerError` (every gRPC failure), `CallStats` (what one
`run` cost) and the worker's self-description (`WorkerInfo`, `StageInfo`)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc


class WorkerError(RuntimeError):
    """A call to a worker failed.

    Attributes:
        address: the worker dialed.
        code: the gRPC status code (DEADLINE_EXCEEDED for timeouts, UNAVAILABLE when unreachable, ...).
        message: the worker's (or gRPC's) readable explanation.
    """

    def __init__(self, address: str, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"worker {address}: {code.name}: {message}")
        self.address = address
        self.code = code
        self.message = message

    @classmethod
    def from_rpc_error(cls, address: str, error: grpc.RpcError) -> WorkerError:
        """Wrap a grpc.RpcError (which, for calls, is also a grpc.Call)."""
        code = error.code() if hasattr(error, "code") else None
        details = error.details() if hasattr(error, "details") else None
        return cls(address, code or grpc.StatusCode.UNKNOWN, details or str(error))


@dataclass
class CallStats:
    """What one `run` cost.

    Attributes:
        bytes_sent / bytes_received: tensor payload bytes (batch+meta out, outputs back), excluding
            protobuf/gRPC framing (well under 1 KiB per request).
        wall_seconds: from the call to its end, as seen by the edge.
        compute_seconds: the sum of the worker-reported stage times.
        requests: gRPC messages sent (more than 1 when the batch was split).
        worker_id: as reported by the worker ("" if it never answered).
    """

    address: str
    stage: str
    windows: int
    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    wall_seconds: float = 0.0
    compute_seconds: float = 0.0
    worker_id: str = ""


@dataclass(frozen=True)
class StageInfo:
    """A stage as the worker describes it (same fields as `pedvit.plans.stage.StageSpec`)."""

    name: str
    input_dtypes: tuple[str, ...]
    channels: int
    max_side: int
    multiple_of: int
    max_batch: int


@dataclass(frozen=True)
class WorkerInfo:
    """The answer of `Info`."""

    model_name: str
    stages: dict[str, StageInfo]
    pedvit_version: str
    worker_id: str
    max_message_bytes: int
