"""A worker's budgets hold before compute: pixels, answer size, canvas, finite inputs, concurrency, deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from pedvit.cloud.worker import WorkerServer, serve
from pedvit.plans.stage import StageSpec
from pedvit.transport import pedvit_pb2 as pb
from pedvit.transport import pedvit_pb2_grpc as pb_grpc
from pedvit.transport.codec import encode_tensor
from pedvit.transport.client import RemoteExecutor, WorkerError


class CountingStage:
    """Doubles its input; counts the windows it computed and sleeps `delay` per window."""

    def __init__(self, name: str = "count", delay: float = 0.0, out_channels: int | None = 3,
                 dtypes: tuple[str, ...] = ("uint8", "float32")) -> None:
        self.spec = StageSpec(name, dtypes, channels=3, max_side=256, canvas=512, out_channels=out_channels)
        self.delay, self.windows = delay, 0
        self.lock = threading.Lock()

    def run(self, batch: np.ndarray, meta: np.ndarray) -> np.ndarray:
        time.sleep(self.delay * batch.shape[0])
        with self.lock:
            self.windows += batch.shape[0]
        return batch.astype(np.float32) * 2


def _windows(b: int, side: int = 32, dtype: str = "uint8") -> tuple[np.ndarray, np.ndarray]:
    batch = np.ones((b, side, side, 3), dtype)
    meta = np.tile(np.array([0, 0, side, side], np.int32), (b, 1))
    return batch, meta


@pytest.fixture()
def counting() -> Iterator[tuple[WorkerServer, CountingStage]]:
    stage = CountingStage()
    worker = serve(0, {"count": stage}, max_request_pixels=4 * 32 * 32, max_message_bytes=1 << 20)
    yield worker, stage
    worker.stop(None)


def _code(address: str, batch: np.ndarray, meta: np.ndarray, stage: str = "count", **kw) -> tuple[grpc.StatusCode, str]:
    """Status of one raw RunStage call (no client-side splitting or retries)."""
    request = pb.StageRequest(stage=stage, batch=encode_tensor(batch), meta=encode_tensor(meta), out_dtype="float32")
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.WindowWorkerStub(channel).RunStage(request, **kw)
    return err.value.code(), err.value.details()


def test_pixel_budget_refused_before_compute(counting) -> None:
    worker, stage = counting
    code, details = _code(worker.address, *_windows(5))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "budget" in details
    assert stage.windows == 0
    with RemoteExecutor(worker.address) as ex:  # the client sends fewer windows per request and gets them all
        batch, meta = _windows(9)
        np.testing.assert_array_equal(ex.run("count", batch, meta, out_dtype="float32"), batch * 2.0)
    assert stage.windows == 9


def test_answer_size_refused_before_compute() -> None:
    stage = CountingStage(out_channels=3)
    worker = serve(0, {"count": stage}, max_message_bytes=256 * 1024)  # 4 x 96 x 96 x 3 float32 = 432 KiB
    try:
        code, details = _code(worker.address, *_windows(4, side=96))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "would exceed" in details
        assert stage.windows == 0
    finally:
        worker.stop(None)


@pytest.mark.parametrize("case", ["origin_outside", "nan", "inf"])
def test_bad_values_are_invalid_argument(counting, case) -> None:
    worker, stage = counting
    if case == "origin_outside":
        batch, meta = _windows(1)
        meta[0, :2] = (10_000, 0)
    else:
        batch, meta = _windows(1, dtype="float32")
        batch[0, 0, 0, 0] = np.nan if case == "nan" else np.inf
    assert _code(worker.address, batch, meta)[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert stage.windows == 0


def test_busy_worker_queues_then_refuses() -> None:
    stage = CountingStage(delay=1.5)
    worker = serve(0, {"count": stage}, max_concurrent=1)
    worker.servicer.queue_timeout_s = 0.3
    try:
        with RemoteExecutor(worker.address) as a, RemoteExecutor(worker.address) as b:
            a.info(), b.info()
            first = a.run_future("count", *_windows(1))
            time.sleep(0.3)  # the first is computing
            with pytest.raises(WorkerError) as err:
                b.run("count", *_windows(1))
            assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "busy" in str(err.value)
            assert first.result(timeout=10).shape == (1, 32, 32, 3)
            assert b.run("count", *_windows(1)).shape == (1, 32, 32, 3)  # the slot is free again
    finally:
        worker.stop(None)


def test_deadline_is_honoured_inside_the_stage() -> None:
    stage = CountingStage(delay=0.2)
    worker = serve(0, {"count": stage})
    worker.servicer.chunk_windows = 1
    try:
        with RemoteExecutor(worker.address) as ex:
            ex.info()
            started = time.perf_counter()
            with pytest.raises(WorkerError) as err:
                ex.run("count", *_windows(20), timeout=0.5)
            assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.perf_counter() - started < 2.0
        time.sleep(0.5)
        assert stage.windows < 20  # it stopped instead of computing all 20 windows (4 s) for nobody
    finally:
        worker.stop(None)


def test_real_trunk_rejects_origin_outside_canvas(mobile_sam) -> None:
    from pedvit.plans.stages import stages_for_model

    stages = stages_for_model(mobile_sam)
    worker = serve(0, stages)
    try:
        name = next(n for n in stages if "trunk" in n)
        batch = np.zeros((1, 224, 224, 3), np.uint8)
        meta = np.array([[5000, 0, 224, 224]], np.int32)
        code, details = _code(worker.address, batch, meta, stage=name)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "canvas" in details
    finally:
        worker.stop(None)
