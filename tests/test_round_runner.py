"""The round runner alone (no model, no engine): fan-out to the planned workers, position hiding on the wire,
failover within the privacy constraints, hedging of a straggler, all through the `Executor` protocol."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import pytest

from engine_fakes import EDGE_OFFSET, IMAGE_SIZE, OffsetExecutor, computed_by, fake_jobs
from pedvit.edge.estimates import EDGE_ID, PerfTable
from pedvit.edge.executor import Executor, FinishedCall
from pedvit.edge.executors import ExecutorFailure, InProcessExecutor
from pedvit.edge.planner import Planner
from pedvit.edge.recorder import RunIdentity, RunRecorder
from pedvit.edge.rounds import DispatchSettings, RoundRunner
from pedvit.edge.routing import EDGE, PrivacyConstraintError
from pedvit.partition import Constraints, WindowGrid
from pedvit.plans.plans import make_plan
from pedvit.plans.stages import TINYVIT_TRUNK
from pedvit.transport.client import RemoteExecutor

IDENTITY = RunIdentity("fake", "tinyvit-isolated", "interleaved", "float32", 0, 14)


@pytest.fixture()
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=16) as threads:
        yield threads


def make_runner(pool: ThreadPoolExecutor, workers: list[OffsetExecutor], *, constraints: Constraints | None = None,
                allow_local: bool = True, adaptive: bool = False, perf: PerfTable | None = None,
                hide_positions: bool = True, hedge_factor: float | None = 3.0) -> tuple[RoundRunner, OffsetExecutor]:
    """A planned request over `workers` on a 1024 x 1024 image, and its runner (the edge adds 1000)."""
    grid = WindowGrid(IMAGE_SIZE)
    perf = perf if perf is not None else PerfTable()
    for worker in workers:
        perf.add(worker.name)
    planner = Planner(make_plan("tinyvit-isolated"), scheme="interleaved",
                      base_constraints=constraints or Constraints(allow_local=allow_local), keep_local_classes=None,
                      scheduling="adaptive" if adaptive else "static", allow_local=allow_local, seed=None, perf=perf,
                      hide_positions=hide_positions)
    plan = planner.plan_request(np.zeros((*IMAGE_SIZE, 3), np.uint8), grid, {w.name: w for w in workers})
    recorder = RunRecorder(IDENTITY, plan, grid, IMAGE_SIZE, 0.0)
    edge = OffsetExecutor(EDGE, EDGE_OFFSET)
    settings = DispatchSettings(wire_dtype="float32", allow_local=allow_local, adaptive=adaptive,
                                hedge_factor=hedge_factor, hedge_min_s=0.01)
    return RoundRunner(settings, pool, perf, edge, plan, grid, recorder), edge


def workers(n: int, **kinds: dict[str, bool]) -> list[OffsetExecutor]:
    """Workers w0..w{n-1} answering +100, +200, ...; `kinds` = {"w1": {"fail": True}, ...}."""
    return [OffsetExecutor(f"w{i}", 100.0 * (i + 1), **kinds.get(f"w{i}", {})) for i in range(n)]


def test_executors_implement_the_whole_protocol() -> None:
    remote = RemoteExecutor("127.0.0.1:9", name="r")  # the channel connects lazily: nothing is dialled
    try:
        for executor in (InProcessExecutor({}, "p"), remote, OffsetExecutor("o", 1.0)):
            assert isinstance(executor, Executor), type(executor).__name__
    finally:
        remote.close()


def test_blocking_executor_future_carries_the_calls_own_stats_and_error() -> None:
    worker = OffsetExecutor("w", 5.0)
    batch, meta = np.ones((3, 2, 2, 1), np.float32), np.zeros((3, 4), np.int32)
    handle = worker.run_future("s", batch, meta, out_dtype="float32")
    assert isinstance(handle, FinishedCall) and handle.done() and not handle.cancel()
    np.testing.assert_array_equal(handle.result(), batch + 5.0)
    assert handle.stats is worker.stats() and handle.stats.bytes_sent == batch.nbytes + meta.nbytes
    worker.fail = True
    failed = worker.run_future("s", batch, meta)  # the error comes out of result(), like a remote failure
    with pytest.raises(ExecutorFailure, match="marked as failed"):
        failed.result()
    assert failed.stats is None


def test_round_answers_every_window_on_its_owner_with_positions_hidden(pool: ThreadPoolExecutor) -> None:
    team = workers(3)
    runner, edge = make_runner(pool, team)
    jobs = fake_jobs(runner.routing.grid)
    results = runner.run_round(TINYVIT_TRUNK, jobs, frozenset())
    owners = runner.plan.owners()
    offsets = {w.name: w.offset for w in team}
    assert sorted(results) == sorted(jobs) and sorted(owners) == sorted(jobs)
    for wid, answer in results.items():
        assert computed_by(answer, wid) == offsets[owners[wid]]
    record = runner.recorder.record
    assert record.rounds == 1 and len(runner.recorder.round_seconds) == 1 and record.failovers == []
    assert record.positions_hidden == {TINYVIT_TRUNK: True} and edge.received == []
    for worker in team:
        sent = record.workers[worker.name]
        assert sent.windows == {w for w, o in owners.items() if o == worker.name}
        assert sent.calls == 1 and sent.bytes_sent > 0
        # The edge's map: row i of each call the worker received is window sent_order[call][i] ...
        assert worker.windows_received() == [w for call in sent.sent_order for w in call]
        # ... and it saw each origin only modulo the trunk's 224 px period (0: no halo).
        assert all(int(meta[:, :2].max()) == 0 for _, _, meta in worker.received)


def test_absolute_positions_when_hiding_is_off_and_forced_local_windows(pool: ThreadPoolExecutor) -> None:
    team = workers(2)
    runner, edge = make_runner(pool, team, hide_positions=False)
    jobs = fake_jobs(runner.routing.grid)
    results = runner.run_round(TINYVIT_TRUNK, jobs, frozenset({0, 6}))
    assert computed_by(results[0], 0) == computed_by(results[6], 6) == EDGE_OFFSET
    assert sorted(edge.windows_received()) == [0, 6]
    assert runner.recorder.record.positions_hidden == {TINYVIT_TRUNK: False}
    for worker in team:
        assert 0 not in worker.windows_received() and 6 not in worker.windows_received()
        for _, batch, meta in worker.received:
            origins = {tuple(jobs[int(row.flat[0])][1][:2]) for row in batch}
            assert {tuple(m[:2]) for m in meta} == origins  # absolute origins, as planned
            assert [int(row.flat[0]) for row in batch] == sorted(int(row.flat[0]) for row in batch)


def test_failed_worker_fails_over_to_the_edge_and_stays_off(pool: ThreadPoolExecutor) -> None:
    team = workers(3, w1={"fail": True})
    perf = PerfTable()
    runner, edge = make_runner(pool, team, perf=perf)
    jobs = fake_jobs(runner.routing.grid)
    lost = sorted(w for w, o in runner.plan.owners().items() if o == "w1")
    results = runner.run_round(TINYVIT_TRUNK, jobs, frozenset())
    assert all(computed_by(results[w], w) == EDGE_OFFSET for w in lost)
    record = runner.recorder.record
    assert [(f["window"], f["from"], f["to"], f["reason"]) for f in record.failovers] == \
        [(w, "w1", EDGE, "ExecutorFailure") for w in lost]
    assert record.workers["w1"].failed and "marked as failed" in record.workers["w1"].errors[0]
    assert record.local_windows == set(lost) and perf.get("w1").consecutive_failures == 1
    calls_before = len(team[1].received)
    again = runner.run_round("second-stage", jobs, frozenset())  # later rounds route them to the edge at once
    assert len(team[1].received) == calls_before and record.rounds == 2
    assert all(computed_by(again[w], w) == EDGE_OFFSET for w in lost)


def test_failover_without_local_compute_moves_windows_within_the_share_cap(pool: ThreadPoolExecutor) -> None:
    team = workers(3, w1={"fail": True})
    constraints = Constraints(max_windows_per_worker=13, adjacency="off", allow_local=False)
    runner, edge = make_runner(pool, team, constraints=constraints, allow_local=False)
    lost = [w for w, o in runner.plan.owners().items() if o == "w1"]
    results = runner.run_round(TINYVIT_TRUNK, fake_jobs(runner.routing.grid), frozenset())
    assert all(computed_by(results[w], w) in (100.0, 300.0) for w in lost) and edge.received == []
    record = runner.recorder.record
    assert record.local_windows == set() and {f["to"] for f in record.failovers} <= {"w0", "w2"}
    assert all(len(record.workers[n].windows) <= 13 for n in ("w0", "w2"))


def test_no_legal_worker_and_no_local_compute_fails_clearly(pool: ThreadPoolExecutor) -> None:
    team = workers(3, w1={"fail": True})
    runner, edge = make_runner(pool, team, constraints=Constraints(adjacency="off", allow_local=False),
                               allow_local=False)  # share cap 9: the two live workers cannot take 8 more
    with pytest.raises(PrivacyConstraintError, match="allow_local=False.*w1: ExecutorFailure"):
        runner.run_round(TINYVIT_TRUNK, fake_jobs(runner.routing.grid), frozenset())
    assert edge.received == []


def test_a_straggler_is_hedged_and_the_hedge_wins(pool: ThreadPoolExecutor) -> None:
    team = workers(4, w0={"stall": True})
    perf = PerfTable()
    for worker in team:
        perf.seed(worker.name, seconds_per_window=0.001)
    perf.seed(EDGE_ID, seconds_per_window=0.001)
    runner, edge = make_runner(pool, team, adaptive=True, perf=perf, hedge_factor=2.0)
    late = sorted(w for w, o in runner.plan.owners().items() if o == "w0")
    assert late and runner.plan.schedule is not None
    try:
        results = runner.run_round(TINYVIT_TRUNK, fake_jobs(runner.routing.grid), frozenset())
    finally:
        team[0].release.set()
    hedges = runner.recorder.record.hedges
    assert sorted(h["window"] for h in hedges) == late
    offsets = {w.name: w.offset for w in team} | {EDGE: EDGE_OFFSET}
    for row in hedges:
        assert row["original"] == "w0" and row["winner"] == row["hedge"] != "w0"
        assert computed_by(results[row["window"]], row["window"]) == offsets[row["hedge"]]
    record = runner.recorder.record
    assert record.failovers == [] and not record.workers["w0"].failed
