"""A hostile or frozen worker cannot corrupt a mask or stall a request: the edge checks every answer and
fails a worker that stops answering; its windows are re-dispatched under the same privacy constraints."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pedvit.edge.build import in_process_workers
from pedvit.edge.distributed import DistributedSamPredictor
from pedvit.edge.executors import InProcessExecutor
from pedvit.edge.ledger import check_ledger, read_ledger

POINT = (np.array([[300.0, 200.0]]), np.array([1]))


class HostileExecutor(InProcessExecutor):
    """TEST ONLY: computes honestly, then answers `kind` instead: NaN values, features scaled 1000x, or noise
    with the honest answer's own mean and spread (plausible norms, wrong content)."""

    def __init__(self, honest: InProcessExecutor, kind: str) -> None:
        super().__init__(honest.stages, f"hostile-{kind}")
        self.kind = kind

    def compute(self, stage, batch, meta, out_dtype):
        out, stats = super().compute(stage, batch, meta, out_dtype)
        rng = np.random.default_rng(0)
        if self.kind == "nan":
            out = out.copy()
            out.flat[::97] = np.nan
        elif self.kind == "scaled":
            out = (out.astype(np.float32) * 1000).astype(out.dtype)
        else:
            x = out.astype(np.float32)
            out = rng.normal(x.mean(), x.std(), x.shape).astype(out.dtype)
        return out, stats


class FrozenExecutor(InProcessExecutor):
    """TEST ONLY: a worker stopped mid-request (SIGSTOP): calls never answer, health checks fail."""

    def __init__(self, honest: InProcessExecutor) -> None:
        super().__init__(honest.stages, "frozen")
        self.thaw = threading.Event()

    def compute(self, stage, batch, meta, out_dtype):
        self.thaw.wait(timeout=300)
        return super().compute(stage, batch, meta, out_dtype)

    def health(self, timeout: float = 2.0) -> bool:
        return False


@pytest.fixture(scope="module")
def clean_masks(mobile_sam, coffee) -> np.ndarray:
    with DistributedSamPredictor(mobile_sam, in_process_workers(mobile_sam, 4)) as p:
        p.set_image(coffee)
        return p.predict(*POINT, multimask_output=False)[0]


@pytest.mark.parametrize("kind,spot_check", [("nan", 0.0), ("scaled", 0.0), ("noise", 1.0)])
def test_hostile_answers_are_rejected(mobile_sam, coffee, clean_masks, tmp_path: Path, kind, spot_check) -> None:
    honest = in_process_workers(mobile_sam, 4)
    workers = [HostileExecutor(honest[0], kind), *honest[1:]]
    ledger = tmp_path / "ledger.jsonl"
    with DistributedSamPredictor(mobile_sam, workers, ledger=ledger, spot_check=spot_check) as p:
        p.set_image(coffee)
        masks = p.predict(*POINT, multimask_output=False)[0]
        record = p.last_run
    hostile = record.workers[workers[0].name]
    assert hostile.failed and any("AnswerRejected" in e for e in hostile.errors), hostile.errors
    assert record.failovers, "the hostile worker's windows were computed elsewhere"
    assert (masks != clean_masks).mean() < 0.002  # the honest result (float16 wire vs edge float32 aside)
    assert check_ledger(ledger)[1] == []
    (line,) = read_ledger(ledger)
    assert any("AnswerRejected" in e for e in line["workers"][workers[0].name]["errors"])


def test_noise_with_plausible_norms_passes_without_spot_checks(mobile_sam, coffee) -> None:
    """What the norm check alone cannot see (and why `spot_check` exists)."""
    honest = in_process_workers(mobile_sam, 4)
    workers = [HostileExecutor(honest[0], "noise"), *honest[1:]]
    with DistributedSamPredictor(mobile_sam, workers, spot_check=0.0) as p:
        p.set_image(coffee)
        assert not p.last_run.workers[workers[0].name].failed


def test_frozen_worker_is_failed_over_quickly(mobile_sam, coffee, clean_masks) -> None:
    honest = in_process_workers(mobile_sam, 4)
    frozen = FrozenExecutor(honest[0])
    try:
        with DistributedSamPredictor(mobile_sam, [frozen, *honest[1:]], timeout_s=300.0, stall_unknown_s=2.0) as p:
            started = time.monotonic()
            p.set_image(coffee)
            elapsed = time.monotonic() - started
            masks = p.predict(*POINT, multimask_output=False)[0]
            record = p.last_run
        assert record.workers["frozen"].failed and any("TimeoutError" in e for e in record.workers["frozen"].errors)
        assert elapsed < 100  # far below the 300 s call deadline it would otherwise wait for
        assert (masks != clean_masks).mean() < 0.002
    finally:
        frozen.thaw.set()
