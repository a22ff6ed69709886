"""Adaptive scheduling, straggler hedging and dynamic membership in `SplitEngine` (in-process, real MobileSAM).

Slow and stalling workers are simulated by a test-only wrapper around `InProcessExecutor` that sleeps per
window (and counts the sleep as worker compute, like the gRPC worker's ``--slowdown-per-window``). On two
shared cores, eight in-process workers computing at once each look several times slower than any sleep, which
would hide the speed differences under test; so the wrapper memoises the real stage output per window
(computed once, under one lock) and later requests cost only the sleep. Outputs stay the real ones.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pedvit.edge.build import in_process_workers

from pedvit.edge.distributed import DistributedSamPredictor
from pedvit.edge.engine import EDGE
from pedvit.edge.estimates import PerfTable
from pedvit.edge.executor import BlockingExecutor
from pedvit.edge.executors import ExecutorFailure, InProcessStats
from pedvit.edge.ledger import check_ledger, read_ledger
from pedvit.partition import Constraints


_COMPUTE = threading.Lock()
_MEMO: dict[tuple[str, str, bytes], np.ndarray] = {}


class SlowExecutor(BlockingExecutor):
    """TEST ONLY: an executor that sleeps ``delay_per_window`` s per window; with ``stall`` set it blocks until
    ``release`` is set (a straggler)."""

    def __init__(self, inner: Any, delay_per_window: float = 0.0) -> None:
        self.inner = inner
        self.name = inner.name
        self.delay_per_window = delay_per_window
        self.stall = False
        self.release = threading.Event()
        self.calls = 0

    def compute(self, stage: str, batch: np.ndarray, meta: np.ndarray, out_dtype: str) -> tuple[np.ndarray, InProcessStats]:
        self.calls += 1
        if self.inner.fail:
            raise ExecutorFailure(f"executor {self.name} is marked as failed")
        started = time.perf_counter()
        if self.stall:
            self.release.wait(timeout=60)
        time.sleep(self.delay_per_window * len(batch))
        keys = [(stage, out_dtype, hashlib.blake2b(batch[i].tobytes() + meta[i].tobytes()).digest()) for i in range(len(batch))]
        if not all(k in _MEMO for k in keys):
            with _COMPUTE:
                out = self.inner.run(stage, batch, meta, out_dtype=out_dtype)
            for k, o in zip(keys, out):
                _MEMO[k] = o
        out = np.stack([_MEMO[k] for k in keys])
        elapsed = time.perf_counter() - started
        return out, InProcessStats(len(batch), batch.nbytes + meta.nbytes, out.nbytes, elapsed, elapsed)

    def health(self, timeout: float = 1.0) -> bool:
        return self.inner.health(timeout)

    def close(self) -> None:
        self.release.set()


def _workers(model: Any, n: int, slow: dict[int, float], base: float = 0.15) -> list[SlowExecutor]:
    return [SlowExecutor(e, slow.get(i, base)) for i, e in enumerate(in_process_workers(model, n))]


def _counts(record: Any) -> dict[str, int]:
    return {name: len(ids) for name, ids in record.assignment.items()}


@pytest.fixture(scope="module")
def reference(mobile_sam: Any, astronaut: np.ndarray) -> torch.Tensor:
    """Monolithic-isolated embedding: every window computed on the edge (no workers), float32. Also fills the
    wrappers' memo (one static request), so every test measures only the simulated speeds."""
    predictor = DistributedSamPredictor(mobile_sam, [], fusion="off", wire_dtype="float32")
    predictor.set_image(astronaut)
    with DistributedSamPredictor(mobile_sam, _workers(mobile_sam, 5, {}, base=0.0), fusion="off",
                                 wire_dtype="float32") as warm:
        warm.set_image(astronaut)
    return predictor.features.clone()


@pytest.mark.slow
def test_adaptive_moves_windows_off_slow_workers(mobile_sam: Any, astronaut: np.ndarray, reference: torch.Tensor,
                                                 tmp_path: Path) -> None:
    workers = _workers(mobile_sam, 8, {0: 0.75, 1: 0.75})  # two workers 5x slower
    ledger = tmp_path / "ledger.jsonl"
    with DistributedSamPredictor(mobile_sam, workers, fusion="off", wire_dtype="float32", ledger=ledger,
                                 scheduling="adaptive", hedge_factor=None) as predictor:
        predictor.set_image(astronaut)  # warm-up: unmeasured workers get equal shares
        first = _counts(predictor.last_run)
        assert first["inproc0"] >= 2 and first["inproc1"] >= 2
        for _ in range(2):
            predictor.set_image(astronaut)
            run = predictor.last_run
            assert run.scheduling == "adaptive"
            counts = _counts(run)
            fast = [counts[f"inproc{i}"] for i in range(2, 8)]
            assert max(counts["inproc0"], counts["inproc1"]) < min(fast), counts
            torch.testing.assert_close(predictor.features, reference, atol=1e-3, rtol=1e-3)
        status = predictor.engine.status()
        est = status["workers"]
        assert est["inproc0"]["seconds_per_window"] > 2 * est["inproc2"]["seconds_per_window"]
        assert status["edge"]["n_observations"] >= 1  # the edge's speed was measured
    n, problems = check_ledger(ledger)
    assert n == 3 and problems == []


@pytest.mark.slow
def test_straggler_is_hedged(mobile_sam: Any, astronaut: np.ndarray, reference: torch.Tensor, tmp_path: Path) -> None:
    workers = _workers(mobile_sam, 6, {})
    ledger = tmp_path / "ledger.jsonl"
    with DistributedSamPredictor(mobile_sam, workers, fusion="off", wire_dtype="float32", ledger=ledger,
                                 scheduling="adaptive", hedge_factor=3.0, hedge_min_s=0.2) as predictor:
        predictor.set_image(astronaut)  # measure everyone
        predictor.set_image(astronaut)
        baseline = predictor.last_run.timings["encode_s"]
        staller = next(n for n, ids in predictor.last_run.assignment.items() if ids)
        victim = next(w for w in workers if w.name == staller)
        victim.stall = True  # blocks for up to 60 s
        try:
            predictor.set_image(astronaut)
        finally:
            victim.release.set()
        run = predictor.last_run
        assert run.hedges, "the stalled worker was not hedged"
        assert {h["original"] for h in run.hedges} == {staller}
        assert all(h["winner"] not in (None, staller) for h in run.hedges)
        assert all(h["hedge"] != staller for h in run.hedges)
        # Finished long before the stall would have ended (60 s), in a few baseline requests' time.
        assert run.timings["encode_s"] < 10 * baseline + 5
        torch.testing.assert_close(predictor.features, reference, atol=1e-3, rtol=1e-3)
        # A worker hedge target received the windows too: the constraint checker counts them for both.
        for h in run.hedges:
            if h["hedge"] != EDGE:
                assert h["window"] in run.workers[h["hedge"]].windows
            assert h["window"] in run.workers[staller].windows
    n, problems = check_ledger(ledger)
    assert problems == []
    last = list(read_ledger(ledger))[-1]
    assert last["hedges"] and last["hedges"][0]["original"] == staller


@pytest.mark.slow
def test_failover_avoids_measured_straggler(mobile_sam: Any, astronaut: np.ndarray, reference: torch.Tensor) -> None:
    """A failed worker's windows go to a fast worker or the edge, not to the idle worker known to be slow
    (it holds the fewest windows, which is all the static rule looks at)."""
    workers = _workers(mobile_sam, 6, {0: 3.0}, base=0.05)
    with DistributedSamPredictor(mobile_sam, workers, fusion="off", wire_dtype="float32", scheduling="adaptive",
                                 hedge_factor=None) as predictor:
        predictor.set_image(astronaut)  # measures everyone (inproc0 takes its 3 s per window here)
        predictor.set_image(astronaut)
        assert not predictor.last_run.assignment.get("inproc0"), predictor.last_run.assignment
        victim = next(w for w in workers[1:] if predictor.last_run.assignment.get(w.name))
        victim.inner.fail = True
        predictor.set_image(astronaut)
        run = predictor.last_run
        assert run.failovers and {f["from"] for f in run.failovers} == {victim.name}
        assert all(f["to"] != "inproc0" for f in run.failovers), run.failovers
        torch.testing.assert_close(predictor.features, reference, atol=1e-3, rtol=1e-3)


@pytest.mark.slow
def test_hedge_respects_share_cap(mobile_sam: Any, astronaut: np.ndarray, reference: torch.Tensor) -> None:
    """With local compute forbidden and every worker at its cap, a straggler can't be hedged: it is waited for."""
    workers = _workers(mobile_sam, 5, {})
    with DistributedSamPredictor(mobile_sam, workers, fusion="off", wire_dtype="float32", scheduling="adaptive", hedge_factor=2.0,
                                 hedge_min_s=0.05, allow_local=False,
                                 constraints=Constraints(allow_local=False, adjacency="off")) as predictor:
        predictor.set_image(astronaut)
        predictor.set_image(astronaut)
        victim = workers[0]
        victim.delay_per_window = 0.5  # late, but every other worker already holds 5 = cap windows
        predictor.set_image(astronaut)
        run = predictor.last_run
        assert run.hedges == []
        assert any("no hedge target" in note for note in run.notes)
        assert all(len(w.windows) <= run.max_windows_per_worker for w in run.workers.values())


@pytest.mark.slow
def test_worker_added_and_removed_between_requests(mobile_sam: Any, astronaut: np.ndarray, reference: torch.Tensor,
                                                   tmp_path: Path) -> None:
    workers = _workers(mobile_sam, 4, {})
    ledger = tmp_path / "ledger.jsonl"
    extra = _workers(mobile_sam, 5, {})[4]
    with DistributedSamPredictor(mobile_sam, workers, fusion="off", wire_dtype="float32", ledger=ledger, scheduling="adaptive") as predictor:
        predictor.set_image(astronaut)
        assert "inproc4" not in predictor.last_run.assignment
        predictor.engine.add_worker(extra)
        with pytest.raises(ValueError):
            predictor.engine.add_worker(extra)  # names are unique
        predictor.set_image(astronaut)
        assert predictor.last_run.assignment.get("inproc4"), predictor.last_run.assignment
        assert "inproc4" in predictor.engine.status()["workers"]
        predictor.engine.remove_worker("inproc1")
        predictor.set_image(astronaut)
        assert "inproc1" not in predictor.last_run.assignment
        assert "inproc1" not in predictor.engine.status()["workers"]
    n, problems = check_ledger(ledger)
    assert n == 3 and problems == []


@pytest.mark.slow
def test_failed_worker_backs_off(mobile_sam: Any, astronaut: np.ndarray, reference: torch.Tensor) -> None:
    """A worker that fails is failed over, then not offered work while in backoff."""
    workers = _workers(mobile_sam, 4, {})
    perf = PerfTable(backoff_initial_s=60.0, backoff_cap_s=120.0)  # longer than the test: stays in backoff
    with DistributedSamPredictor(mobile_sam, workers, fusion="off", wire_dtype="float32", scheduling="adaptive",
                                 perf=perf) as predictor:
        predictor.set_image(astronaut)
        workers[2].inner.fail = True
        predictor.set_image(astronaut)
        assert predictor.last_run.failovers and predictor.last_run.workers["inproc2"].failed
        predictor.set_image(astronaut)
        assert "inproc2" not in predictor.last_run.assignment
        assert predictor.engine.status()["workers"]["inproc2"]["state"] == "backoff"


def test_membership_watcher_follows_cluster_file(mobile_sam: Any, tmp_path: Path) -> None:
    """The watcher adds and removes workers when the cluster file changes and backs off unhealthy ones."""
    import json
    import os

    from pedvit.edge.membership import MembershipWatcher, scheduler_estimates
    from pedvit.edge.cluster import WorkerStatus, load_cluster

    pool = {e.name: e for e in in_process_workers(mobile_sam, 3)}
    engine_workers = [pool["inproc0"]]
    cluster_file = tmp_path / "cluster.json"

    def write(names: list[str]) -> None:
        cluster_file.write_text(json.dumps({"workers": [{"address": f"127.0.0.1:{9000 + i}", "name": n}
                                                        for i, n in enumerate(names)]}))
        stamp = time.time_ns() + len(names)  # a distinct mtime even within the filesystem's resolution
        os.utime(cluster_file, ns=(stamp, stamp))

    write(["inproc0", "inproc1"])
    perf = PerfTable(backoff_initial_s=60.0)  # longer than the test: a slow machine cannot end the backoff early
    with DistributedSamPredictor(mobile_sam, engine_workers, fusion="off", scheduling="adaptive", perf=perf) as predictor:
        engine = predictor.engine
        watcher = MembershipWatcher(engine, cluster_file, status_path=tmp_path / "engine-status.json",
                                    executors_for=lambda path: {w.name: pool[w.name] for w in load_cluster(path).workers})
        assert watcher.sync() == (["inproc1"], [])
        assert list(engine.members()) == ["inproc0", "inproc1"]
        write(["inproc1", "inproc2"])
        assert watcher.sync() == (["inproc2"], ["inproc0"])
        assert watcher.sync() == ([], [])  # unchanged file: nothing to do
        pool["inproc2"].fail = True
        assert watcher.check_health() == {"inproc1": True, "inproc2": False}
        assert engine.status()["workers"]["inproc2"]["state"] == "backoff"
        assert "inproc2" not in engine.available_workers()
        assert watcher.check_health() == {"inproc1": True}  # not probed again during its backoff
        watcher.step()
        statuses = [WorkerStatus("inproc1", "127.0.0.1:9000", True), WorkerStatus("inproc2", "127.0.0.1:9001", False)]
        scheduler_estimates(load_cluster(cluster_file), statuses)  # what `pedvit cluster status` adds
        assert statuses[1].extra["sched_state"] == "backoff"
        assert "s_per_window" in statuses[0].extra
