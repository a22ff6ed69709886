"""In-process executors: the `Executor` protocol without a network (tests, debugging, the edge)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from pedvit.plans.stage import Stage

from .executor import BlockingExecutor


@dataclass
class InProcessStats:
    """Per-call accounting, mirroring the gRPC client's `CallStats` fields the engine reads."""

    windows: int
    bytes_sent: int
    bytes_received: int
    wall_seconds: float
    compute_seconds: float


class ExecutorFailure(RuntimeError):
    """Raised by an in-process executor told to fail (failover tests without processes)."""


class InProcessExecutor(BlockingExecutor):
    """Runs stages in this process. With `record_inputs`, keeps a copy of every tensor it receives, so
    isolation tests can check exactly what a worker saw."""

    def __init__(self, stages: Mapping[str, Stage], name: str = "inproc", *, record_inputs: bool = False) -> None:
        self.stages = dict(stages)
        self.name = name
        self.record_inputs = record_inputs
        self.received: list[tuple[str, np.ndarray, np.ndarray]] = []
        self.fail = False

    def compute(self, stage: str, batch: np.ndarray, meta: np.ndarray, out_dtype: str) -> tuple[np.ndarray, InProcessStats]:
        started = time.perf_counter()
        if self.fail:
            raise ExecutorFailure(f"executor {self.name} is marked as failed")
        if stage not in self.stages:
            raise ValueError(f"executor {self.name} does not serve stage {stage!r}")
        spec = self.stages[stage].spec
        spec.validate(batch.dtype.name, tuple(batch.shape), tuple(meta.shape))
        if self.record_inputs:
            self.received.append((stage, batch.copy(), meta.copy()))
        compute_started = time.perf_counter()
        out = np.ascontiguousarray(self.stages[stage].run(batch, meta), dtype=np.dtype(out_dtype))
        now = time.perf_counter()
        return out, InProcessStats(len(batch), batch.nbytes + meta.nbytes, out.nbytes, now - started, now - compute_started)

    def health(self, timeout: float = 1.0) -> bool:
        return not self.fail
