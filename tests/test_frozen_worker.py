"""A frozen real worker process (SIGSTOP) costs a request seconds, not minutes, on the default settings.

Four `pedvit worker` processes on loopback (`pedvit.edge.cluster.start_local_workers`); one is stopped with
SIGSTOP (a) before the request and (b) while its call is in flight. The request must finish with the
fault-free result, the frozen worker's windows must have moved to other places under the privacy
constraints (the ledger says so and passes `check_ledger` with an explicit policy), and the added time is
printed (run with ``-s``) and bounded generously: the issue's bar is 10 s on the default settings
(`DispatchSettings`: 5 s without an estimate, then a 1 s health check). Timing proper belongs to benchmarks.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch

from pedvit.edge.cluster import LocalCluster, start_local_workers
from pedvit.edge.distributed import DistributedSamPredictor
from pedvit.edge.ledger import LedgerPolicy, check_ledger, read_ledger

pytestmark = pytest.mark.slow

N_WORKERS = 4
POINT = (np.array([[250.0, 200.0]]), np.array([1]))
#: the issue's bar for the time one frozen worker may add to a request
ADDED_BAR_S = 10.0
#: after the frozen worker's call was sent, wait this long before SIGSTOP (it is then computing)
FREEZE_AFTER_S = 0.3


class FreezeOnFirstCall:
    """TEST ONLY: an `Executor` that forwards to `inner` and SIGSTOPs process `pid` `FREEZE_AFTER_S` after its
    first call was sent (a worker that freezes while it holds windows)."""

    def __init__(self, inner: Any, pid: int) -> None:
        self.inner, self.pid, self.name = inner, pid, inner.name
        self.frozen = threading.Event()
        self._timer: threading.Timer | None = None

    def _freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self.frozen.set()

    def run_future(self, *args: Any, **kwargs: Any) -> Any:
        call = self.inner.run_future(*args, **kwargs)
        if self._timer is None:
            self._timer = threading.Timer(FREEZE_AFTER_S, self._freeze)
            self._timer.start()
        return call

    def __getattr__(self, attr: str) -> Any:  # run, stats, health, close, info: the real executor's
        return getattr(self.inner, attr)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with start_local_workers(N_WORKERS, "mobile_sam", timeout_s=300.0) as local:
        yield local


def _encode(model: Any, executors: list[Any], image: np.ndarray, ledger: Path | None = None) -> tuple[float, torch.Tensor, Any]:
    """(seconds, embedding, run record) of one request with default engine settings (a fresh predictor, so no
    estimate or backoff carries over from an earlier request)."""
    with DistributedSamPredictor(model, executors, ledger=ledger) as predictor:
        started = time.monotonic()
        predictor.set_image(image)
        elapsed = time.monotonic() - started
        return elapsed, predictor.get_image_embedding().clone(), predictor.last_run


@pytest.fixture(scope="module")
def baseline(cluster: LocalCluster, mobile_sam: Any, astronaut: np.ndarray) -> tuple[float, torch.Tensor]:
    """The same request with no frozen worker: warm-up once, then the faster of two timed runs."""
    _encode(mobile_sam, cluster.executors(), astronaut)
    runs = [_encode(mobile_sam, cluster.executors(), astronaut) for _ in range(2)]
    seconds, embedding, _ = min(runs, key=lambda r: r[0])
    return seconds, embedding


def _check_failed_over(record: Any, ledger: Path, victim: str) -> None:
    """The victim failed for the request, every window it held was re-dispatched to another place, and the
    ledger (chain and policy) passes with the request's own share cap as the checker's policy."""
    assert record.workers[victim].failed, record.workers[victim]
    assert any("TimeoutError" in e or "WorkerError" in e for e in record.workers[victim].errors), record.workers[victim].errors
    moved = {f["window"] for f in record.failovers if f["from"] == victim}
    assert moved == set(record.assignment[victim]), (moved, record.assignment[victim])
    assert all(f["to"] != victim for f in record.failovers)
    policy = LedgerPolicy(max_windows_per_worker=record.max_windows_per_worker)
    count, problems = check_ledger(ledger, policy)
    assert (count, problems) == (1, [])
    (line,) = read_ledger(ledger)
    assert line["workers"][victim]["failed"] is True and len(line["failovers"]) >= len(moved)


@pytest.mark.parametrize("when", ["before", "during"])
def test_frozen_worker_adds_seconds_not_minutes(cluster: LocalCluster, mobile_sam: Any, astronaut: np.ndarray,
                                                baseline: tuple[float, torch.Tensor], tmp_path: Path,
                                                when: str) -> None:
    base_s, reference = baseline
    victim = cluster.workers[0]
    executors: list[Any] = cluster.executors()
    freezer = None
    if when == "during":
        freezer = executors[0] = FreezeOnFirstCall(executors[0], victim.pid)
    ledger = tmp_path / "ledger.jsonl"
    try:
        if when == "before":
            os.kill(victim.pid, signal.SIGSTOP)
        elapsed, embedding, record = _encode(mobile_sam, executors, astronaut, ledger)
    finally:
        if freezer is not None and freezer._timer is not None:
            freezer._timer.cancel()
        os.kill(victim.pid, signal.SIGCONT)
    if freezer is not None:
        assert freezer.frozen.is_set(), "the worker was frozen while its call was in flight"
    added = elapsed - base_s
    print(f"\nfrozen {when} the request: {elapsed:.2f} s vs {base_s:.2f} s without a frozen worker "
          f"(+{added:.2f} s); {len(record.failovers)} window(s) re-dispatched")
    # float16 wire: the re-dispatched windows may come from the edge's float32 (tiny differences)
    torch.testing.assert_close(embedding, reference, atol=2e-2, rtol=2e-2)
    _check_failed_over(record, ledger, victim.name)
    assert added < ADDED_BAR_S, f"a frozen worker added {added:.1f} s (bar {ADDED_BAR_S} s)"
