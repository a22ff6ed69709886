"""The planner alone (no model): static and adaptive plans, keep-local, no workers, and position hiding."""

from __future__ import annotations

import numpy as np
import pytest

from engine_fakes import IMAGE_SIZE, OffsetExecutor, fake_jobs
from pedvit.edge.estimates import PerfTable
from pedvit.edge.planner import Planner
from pedvit.partition import ConstraintError, Constraints, WindowGrid, check_assignment, max_share
from pedvit.plans.plans import make_plan
from pedvit.plans.stages import TINYVIT_TRUNK, WINDOW_PX

BLANK = np.zeros((*IMAGE_SIZE, 3), np.uint8)


def planner(*, constraints: Constraints | None = None, scheduling: str = "static", allow_local: bool = True,
            perf: PerfTable | None = None, hide_positions: bool = True) -> Planner:
    return Planner(make_plan("tinyvit-isolated"), scheme="interleaved",
                   base_constraints=constraints or Constraints(allow_local=allow_local), keep_local_classes=None,
                   scheduling=scheduling, allow_local=allow_local, seed=None,
                   perf=perf if perf is not None else PerfTable(), hide_positions=hide_positions)


def members(n: int) -> dict[str, OffsetExecutor]:
    return {f"w{i}": OffsetExecutor(f"w{i}", float(i)) for i in range(n)}


def test_static_plan_covers_every_window_once_within_the_constraints() -> None:
    grid = WindowGrid(IMAGE_SIZE)
    keep = frozenset({6, 12})
    constraints = Constraints(keep_local=keep)
    plan = planner(constraints=constraints).plan_request(BLANK, grid, members(3))
    owners = plan.owners()
    assert sorted(owners) == sorted(set(grid.content_ids) - keep) and set(plan.assignment.local) == keep
    assert set(owners.values()) == {"w0", "w1", "w2"} and list(plan.members) == ["w0", "w1", "w2"]
    assert plan.max_per_worker == max_share(grid, 3, constraints) == 8
    assert check_assignment(plan.assignment, grid, constraints) == []
    assert plan.schedule is None and plan.detection == {} and plan.position_period(TINYVIT_TRUNK) == WINDOW_PX


def test_without_workers_everything_is_local_or_the_request_is_refused() -> None:
    grid = WindowGrid(IMAGE_SIZE)
    plan = planner().plan_request(BLANK, grid, {})
    assert plan.members == {} and plan.owners() == {} and sorted(plan.assignment.local) == sorted(grid.content_ids)
    with pytest.raises(ConstraintError, match="local compute is forbidden"):
        planner(allow_local=False).plan_request(BLANK, grid, {})


def test_adaptive_plan_gives_a_slow_worker_fewer_windows() -> None:
    perf = PerfTable()
    perf.seed("w0", seconds_per_window=1.0)
    perf.seed("w1", seconds_per_window=0.1)
    perf.seed("w2", seconds_per_window=0.1)
    plan = planner(scheduling="adaptive", perf=perf).plan_request(BLANK, WindowGrid(IMAGE_SIZE), members(3))
    counts = {name: len(ids) for name, ids in plan.schedule.assignments.items()} if plan.schedule else {}
    assert plan.assignment.scheme == "adaptive" and set(plan.estimates) == {"w0", "w1", "w2"}
    assert counts.get("w0", 0) < counts["w1"] and counts.get("w0", 0) < counts["w2"]


def test_an_unmeasured_worker_is_assumed_as_fast_as_the_fastest() -> None:
    perf = PerfTable()
    perf.seed("slow", seconds_per_window=0.5, overhead_s=0.2)
    perf.seed("fast", seconds_per_window=0.1, overhead_s=0.05)
    perf.add("new")
    estimates, edge = planner(scheduling="adaptive", perf=perf).estimates(["slow", "fast", "new"])
    assert (estimates["new"].seconds_per_window, estimates["new"].overhead_s) == (0.1, 0.05)
    assert perf.get("new").seeded is False and edge is None  # copies; the edge is unmeasured


def test_batches_group_by_shape_and_hide_the_order_only_when_positions_are_hidden() -> None:
    grid = WindowGrid(IMAGE_SIZE)
    jobs = fake_jobs(grid)
    ids = sorted(jobs)
    hidden = planner().plan_request(BLANK, grid, members(2))
    shown = planner(hide_positions=False).plan_request(BLANK, grid, members(2))
    narrow = [w for w in ids if grid.window(w).col == 4]
    assert shown.position_period(TINYVIT_TRUNK) is None
    assert shown.batches(TINYVIT_TRUNK, ids, jobs, remote=True) == [[w for w in ids if w not in narrow], narrow]
    assert hidden.batches(TINYVIT_TRUNK, ids, jobs, remote=False) == [[w for w in ids if w not in narrow], narrow]
    draws = [hidden.batches(TINYVIT_TRUNK, ids, jobs, remote=True) for _ in range(5)]
    for batches in draws:
        assert sorted(batches[0]) == [w for w in ids if w not in narrow] and sorted(batches[1]) == narrow
    assert any(batches[0] != sorted(batches[0]) for batches in draws)  # 20 windows: 5 sorted draws ~ (1/20!)^5
