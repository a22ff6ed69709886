"""The executor protocol: what the engine asks of a worker (gRPC `RemoteExecutor`, `InProcessExecutor`, ...).

Every executor implements all of it, so the engine calls it without probing:

* `run` blocks and returns the B x ... outputs;
* `run_future` returns a `CallHandle` at once: `result()`, `cancel()` (the losing side of a hedge stops on the
  worker too, where the executor can interrupt a call) and the call's own `stats`;
* `stats()` is the cost of the executor's most recently finished call (under concurrent use of one executor
  read the handle's `stats` instead);
* `health` answers a liveness probe, `close` releases connections.

`BlockingExecutor` is the base of executors that compute in the calling thread and cannot be interrupted
(in process): its `run_future` computes at once and returns a finished handle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol, runtime_checkable

import numpy as np


class ExecutorStats(Protocol):
    """What one call cost (the fields the engine reads; `pedvit.transport.client.CallStats` has more)."""

    bytes_sent: int
    bytes_received: int
    wall_seconds: float
    compute_seconds: float


class CallHandle(Protocol):
    """One call in flight (`Executor.run_future`)."""

    #: the call's cost, filled in when it ends (None before, or when it failed before anything was sent)
    stats: ExecutorStats | None

    def result(self, timeout: float | None = None) -> np.ndarray: ...

    def cancel(self) -> bool: ...

    def done(self) -> bool: ...


@runtime_checkable
class Executor(Protocol):
    """A worker that runs named stages on batches of windows.

    `batch`: B x h x w x C (uint8 pixels or float features); `meta`: B x 4 int32 (origin_y, origin_x,
    valid_h, valid_w). The answer has one row per window, in the order received, in `out_dtype`.
    """

    name: str

    def run(self, stage: str, batch: np.ndarray, meta: np.ndarray, *, out_dtype: str = "float16",
            timeout: float | None = None, request_id: str = "") -> np.ndarray: ...

    def run_future(self, stage: str, batch: np.ndarray, meta: np.ndarray, *, out_dtype: str = "float16",
                   timeout: float | None = None, request_id: str = "") -> CallHandle: ...

    def stats(self) -> ExecutorStats | None: ...

    def health(self, timeout: float = 2.0) -> bool: ...

    def close(self) -> None: ...


class FinishedCall:
    """A `CallHandle` of a call that ran to its end before the handle was returned: cancelling it is too late
    (`cancel()` returns False), and `result()` returns the output or raises the call's error."""

    def __init__(self, output: np.ndarray | None, error: Exception | None, stats: ExecutorStats | None) -> None:
        self._output = output
        self._error = error
        self.stats = stats

    def result(self, timeout: float | None = None) -> np.ndarray:
        if self._error is not None:
            raise self._error
        assert self._output is not None
        return self._output

    def cancel(self) -> bool:
        return False

    def done(self) -> bool:
        return True


class BlockingExecutor(ABC):
    """Base of executors that compute in the calling thread (`compute`) and cannot be interrupted."""

    name: str
    _last_stats: ExecutorStats | None = None

    @abstractmethod
    def compute(self, stage: str, batch: np.ndarray, meta: np.ndarray, out_dtype: str) -> tuple[np.ndarray, ExecutorStats]:
        """Run `stage` on B x h x w x C `batch` and B x 4 `meta`; return (B x ... outputs, the call's cost)."""

    def run(self, stage: str, batch: np.ndarray, meta: np.ndarray, *, out_dtype: str = "float16",
            timeout: float | None = None, request_id: str = "") -> np.ndarray:
        output, self._last_stats = self.compute(stage, batch, meta, out_dtype)
        return output

    def run_future(self, stage: str, batch: np.ndarray, meta: np.ndarray, *, out_dtype: str = "float16",
                   timeout: float | None = None, request_id: str = "") -> FinishedCall:
        try:
            output, stats = self.compute(stage, batch, meta, out_dtype)
        except Exception as error:  # noqa: BLE001 - handed to the caller through result(), like a remote failure
            return FinishedCall(None, error, None)
        self._last_stats = stats
        return FinishedCall(output, None, stats)

    def stats(self) -> ExecutorStats | None:
        return self._last_stats

    def health(self, timeout: float = 2.0) -> bool:
        return True

    def close(self) -> None:
        pass
