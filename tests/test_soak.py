"""The fault soak (`pedvit.eval.soak`, `pedvit eval soak`) and the worker's hidden fault mode it relies on."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from pedvit.cli import build_parser
from pedvit.cloud.worker import FaultInjection, serve
from pedvit.eval.soak import SoakConfig, format_report, run_soak
from pedvit.plans.stage import StageSpec
from pedvit.transport.client import RemoteExecutor


class HalfStage:
    """Returns batch / 2 as float32 (an honest answer with a known value)."""

    spec = StageSpec("half", ("float32",), channels=3, max_side=64)

    def run(self, batch: np.ndarray, meta: np.ndarray) -> np.ndarray:
        return batch / 2


def _call(fault: FaultInjection | None) -> tuple[np.ndarray, np.ndarray]:
    """(honest answer, what a worker with `fault` answered) for one batch of 3 windows."""
    batch = np.random.default_rng(0).normal(0, 1, (3, 16, 16, 3)).astype(np.float32)
    meta = np.tile(np.array([0, 0, 16, 16], np.int32), (3, 1))
    worker = serve(0, {"half": HalfStage()}, fault=fault)
    try:
        with RemoteExecutor(worker.address, name="w") as executor:
            return batch / 2, executor.run("half", batch, meta, out_dtype="float32", request_id="abc123")
    finally:
        worker.stop(grace=None)


def test_fault_mode_corrupts_answers_after_compute(caplog: pytest.LogCaptureFixture) -> None:
    honest, answer = _call(None)
    np.testing.assert_array_equal(answer, honest)
    with caplog.at_level(logging.WARNING, logger="pedvit.cloud.worker"):
        _, nan = _call(FaultInjection("nan"))
        _, garbage = _call(FaultInjection("garbage"))
    assert nan.shape == honest.shape and np.isnan(nan).any() and np.isfinite(nan).sum() > 0.9 * nan.size
    assert garbage.shape == honest.shape and np.isfinite(garbage).all()
    rms = lambda x: float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))  # noqa: E731
    assert rms(garbage) > 100 * rms(honest)
    lines = [r.getMessage() for r in caplog.records]
    assert sum("injected a nan answer for request 'abc123'" in m for m in lines) == 1
    assert sum("injected a garbage answer for request 'abc123'" in m for m in lines) == 1
    np.testing.assert_array_equal(_call(FaultInjection("nan", rate=0.0))[1], honest)


@pytest.mark.parametrize("kind,rate", [("zeros", 1.0), ("nan", 1.5), ("nan", -0.1)])
def test_fault_mode_rejects_bad_settings(kind: str, rate: float) -> None:
    with pytest.raises(ValueError):
        FaultInjection(kind, rate)


def test_fault_mode_is_hidden_and_off_by_default() -> None:
    parser = build_parser()
    args = parser.parse_args(["worker", "--port", "0"])
    assert args.inject_fault is None
    assert parser.parse_args(["worker", "--port", "0", "--inject-fault", "nan", "--fault-rate", "0.2"]).fault_rate == 0.2
    worker_parser = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "worker")[1]
    assert "--inject-fault" not in worker_parser.format_help() and "--fault-rate" not in worker_parser.format_help()


def test_soak_config_is_validated() -> None:
    with pytest.raises(ValueError, match="workers >= 3"):
        SoakConfig(workers=4, hostile=3)
    with pytest.raises(ValueError, match="probabilities"):
        SoakConfig(fault_rate=2.0)


@pytest.mark.slow
def test_bounded_soak_loses_nothing_and_detects_every_corrupted_answer(tmp_path) -> None:
    """6 real worker processes (one answering garbage, one NaN, now and then), 24 requests, a worker killed or
    stopped in most of them."""
    report = run_soak(SoakConfig(workers=6, requests=24, hostile=2, hostile_rate=0.3, fault_rate=0.7, seed=1), tmp_path)
    print("\n" + format_report(report))
    assert report.requests == 24 and report.lost == 0 and report.wrong == 0, report.errors
    assert report.faults["kill"] >= 1 and report.faults["stop"] >= 1 and report.faults_on_busy_worker >= 1
    assert report.injected["garbage"] >= 1 and report.injected["nan"] >= 1
    assert report.detected == sum(report.injected.values()) and report.undetected == []
    assert report.false_rejections == []
    assert report.failovers >= 1 and report.ledger_records == 24 + SoakConfig().warmup
    assert report.ledger_problems == []
