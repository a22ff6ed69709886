"""TEST ONLY: fake executors and a small request for testing the engine's parts (planner, round runner,
recorder) without a model: each fake answers its input plus its own offset, so an answer says who computed it."""

from __future__ import annotations

import threading

import numpy as np

from pedvit.edge.executor import BlockingExecutor
from pedvit.edge.executors import ExecutorFailure, InProcessStats
from pedvit.partition import WindowGrid
from pedvit.plans.plans import Jobs

#: a 1024 x 1024 image: 5 x 5 = 25 content windows of 224 px (the last row/column 128 px)
IMAGE_SIZE = (1024, 1024)
EDGE_OFFSET = 1000.0


class OffsetExecutor(BlockingExecutor):
    """TEST ONLY: answers ``batch + offset`` (so the answer names who computed it) and keeps what it received.
    With `fail` it raises; with `stall` it blocks until `release` is set (a straggler)."""

    def __init__(self, name: str, offset: float, *, fail: bool = False, stall: bool = False) -> None:
        self.name = name
        self.offset = offset
        self.fail = fail
        self.stall = stall
        self.release = threading.Event()
        self.received: list[tuple[str, np.ndarray, np.ndarray]] = []
        self._lock = threading.Lock()

    def compute(self, stage: str, batch: np.ndarray, meta: np.ndarray, out_dtype: str) -> tuple[np.ndarray, InProcessStats]:
        with self._lock:
            self.received.append((stage, batch.copy(), meta.copy()))
        if self.fail:
            raise ExecutorFailure(f"executor {self.name} is marked as failed")
        if self.stall:
            self.release.wait(timeout=60)
        out = (batch.astype(np.float32) + self.offset).astype(out_dtype)
        return out, InProcessStats(len(batch), batch.nbytes + meta.nbytes, out.nbytes, 0.0, 0.0)

    def windows_received(self) -> list[int]:
        """The window ids this executor was sent (each fake job's tensor holds its window id)."""
        return [int(row.flat[0]) for _, batch, _ in self.received for row in batch]


def fake_jobs(grid: WindowGrid) -> Jobs:
    """One job per content window: a tensor filled with the window id (the last column's windows are
    narrower, so a stage has two window shapes), and meta = (input origin y, x, valid h, w)."""
    jobs: Jobs = {}
    for wid in grid.content_ids:
        window = grid.window(wid)
        y0, x0 = window.input_box[:2]
        shape = (2, 1, 1) if window.col == 4 else (2, 2, 1)
        jobs[wid] = (np.full(shape, wid, np.float32), np.array([y0, x0, shape[0], shape[1]], np.int32))
    return jobs


def computed_by(answer: np.ndarray, window_id: int) -> float:
    """The offset of whoever computed `answer` for window `window_id`."""
    return float(answer.flat[0]) - window_id
