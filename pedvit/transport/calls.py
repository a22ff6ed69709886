"""What one call to a gRPC worker is: its handle (`StageCall`), its cost (`CallStats`), its errors
(`WorkerError`) and the worker's self-description (`WorkerInfo`). `RemoteExecutor` (`client.py`) produces them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import dataclass

import grpc
import numpy as np

from pedvit.transport import pedvit_pb2 as pb

logger = logging.getLogger(__name__)


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


class StageCall:
    """A future-like handle of one in-flight `run` (see `RemoteExecutor.run_future`).

    `cancel()` cancels the gRPC call in flight and ends the handle at once (`result()` then raises
    `concurrent.futures.CancelledError`); it returns False if the call had already finished.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._done = False
        self._cancelled = False
        self._result: np.ndarray | None = None
        self._exception: BaseException | None = None
        self._rpc: grpc.Future | None = None
        self._callbacks: list[Callable[[StageCall], None]] = []
        #: Filled in when the work ends (also after errors/cancellation, with what was spent so far).
        self.stats: CallStats | None = None

    # -- consumer side --------------------------------------------------------------------------------

    def cancel(self) -> bool:
        """Cancel the call; True unless it had already finished."""
        with self._cond:
            if self._done:
                return False
            self._cancelled = True
            rpc = self._rpc
        if rpc is not None:
            rpc.cancel()
        self._finish(None, CancelledError())
        return True

    def cancelled(self) -> bool:
        """True if `cancel()` ended the call."""
        with self._cond:
            return self._cancelled

    def done(self) -> bool:
        """True once a result, an error or a cancellation is in."""
        with self._cond:
            return self._done

    def result(self, timeout: float | None = None) -> np.ndarray:
        """Wait for and return the output; re-raises the call's error.

        Raises:
            TimeoutError: if `timeout` passes first (the call keeps running).
            WorkerError, ValueError, concurrent.futures.CancelledError.
        """
        exc = self.exception(timeout)
        if exc is not None:
            raise exc
        assert self._result is not None
        return self._result

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the call; return its error, or None on success."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._done, timeout):
                raise TimeoutError("stage call still running")
            return self._exception

    def add_done_callback(self, fn: Callable[[StageCall], None]) -> None:
        """Call `fn(self)` when done (at once if already done), on the thread that finishes the call."""
        with self._cond:
            if not self._done:
                self._callbacks.append(fn)
                return
        fn(self)

    # -- producer side ----------------------------------------------------------------------------------

    def _attach(self, rpc: grpc.Future) -> None:
        """Record the gRPC call in flight so that cancel() can reach it."""
        with self._cond:
            self._rpc = rpc
            cancelled = self._cancelled
        if cancelled:
            rpc.cancel()

    def _finish(self, result: np.ndarray | None, exception: BaseException | None) -> None:
        with self._cond:
            if self._done:  # e.g. the work ended after a cancel
                return
            self._done = True
            self._result, self._exception = result, exception
            self._rpc = None
            callbacks, self._callbacks = self._callbacks, []
            self._cond.notify_all()
        for fn in callbacks:
            try:
                fn(self)
            except Exception:
                logger.exception("StageCall done-callback failed")


def info_from_pb(resp: pb.InfoResponse) -> WorkerInfo:
    stages = {
        s.name: StageInfo(s.name, tuple(s.input_dtypes), s.channels, s.max_side, s.multiple_of, s.max_batch)
        for s in resp.stages
    }
    return WorkerInfo(resp.model_name, stages, resp.pedvit_version, resp.worker_id, resp.max_message_bytes)
