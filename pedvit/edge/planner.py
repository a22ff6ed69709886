"""The planner: which windows of one request go where, before anything is sent.

`Planner.plan` turns the engine's settings (scheme, constraints, keep-local classes, static or adaptive
scheduling), the current estimates and the available workers into a `RequestPlan`: the assignment checked
against the hard privacy constraints, the keep-local detection summary, the schedule and estimates hedging
needs, and how each stage's windows are batched for a worker (`RequestPlan.batches`: with hidden positions a
worker's windows come in an order drawn from OS randomness, and the plan's batches are the edge's map back).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from pedvit.partition import (
    Assignment,
    ConstraintError,
    Constraints,
    WindowGrid,
    assign,
    check_assignment,
    constraints_for_image,
    max_share,
    parse_keep_local,
)
from pedvit.partition.detectors import detector_names
from pedvit.plans.plans import Jobs, SplitPlan

from .estimates import PerfEstimate, PerfTable
from .executor import Executor
from .scheduler import InfeasibleScheduleError, Schedule, schedule

log = logging.getLogger(__name__)

#: a caller's own assignment of one request: (the request's grid, its constraints with keep-local windows found,
#: the names of the workers offered work, in order) -> an `Assignment` indexed in that order (a video session's
#: temporal policy); the planner checks it against the constraints like any other
CallerAssign = Callable[[WindowGrid, Constraints, Sequence[str]], Assignment]

#: the order of a worker's windows with hidden positions: OS randomness, which a worker cannot predict or replay
_SHUFFLE = random.SystemRandom()


def absolute_positions(stage: str) -> int | None:
    """The position period of a plan that always sends absolute origins (None for every stage)."""
    return None


@dataclass
class RequestPlan:
    """What the planner decided for one request.

    Attributes:
        assignment: worker index (order of `members`) -> window ids; `assignment.local`: the edge's windows.
        constraints: the request's constraints (semantic: keep-local windows and spread groups added).
        members: name -> executor of the workers offered work, in assignment order.
        max_per_worker: the share cap every placement (assignment, failover, hedge) respects.
        schedule, estimates, edge_estimate: adaptive scheduling only: what hedging predicts from.
        detection: semantic: the classes, detectors and regions of this request's keep-local detection (the
            ledger's ``extra.sensitive``); per request, so concurrent requests cannot mix them up.
        position_period: stage -> the period workers' origins are reduced modulo, None when positions are sent.
    """

    assignment: Assignment
    constraints: Constraints
    members: dict[str, Executor]
    max_per_worker: int
    schedule: Schedule | None = None
    estimates: dict[str, PerfEstimate] = field(default_factory=dict)
    edge_estimate: PerfEstimate | None = None
    detection: dict[str, Any] = field(default_factory=dict)
    position_period: Callable[[str], int | None] = absolute_positions

    def owners(self) -> dict[int, str]:
        """Window id -> name of the worker assigned to compute it (the edge's windows are absent)."""
        names = list(self.members)
        return {wid: names[w] for w, ids in self.assignment.worker_windows.items() for wid in ids}

    def batches(self, stage: str, window_ids: list[int], jobs: Jobs, *, remote: bool) -> list[list[int]]:
        """`window_ids` grouped into one call per window shape (border windows are smaller). With hidden
        positions a remote call's windows are in a random order: the worker must not learn the layout from it.
        The caller records the result as the edge's map (`WorkerRecord.sent_order`) before sending."""
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for wid in window_ids:
            by_shape.setdefault(jobs[wid][0].shape, []).append(wid)
        batches = list(by_shape.values())
        if remote and self.position_period(stage) is not None:
            for batch in batches:
                _SHUFFLE.shuffle(batch)
        return batches


class Planner:
    """Plans requests for one engine.

    Args:
        plan: the split plan (halo, position periods of its stages).
        scheme: assignment scheme; with adaptive scheduling only its constraints are used.
        base_constraints: constraints of every request; the semantic scheme adds keep-local and spread groups.
        keep_local_classes: semantic scheme: sensitive classes kept on the edge (None: faces and text).
        scheduling: "static" or "adaptive".
        allow_local: may the edge compute windows itself.
        seed: seed of the random scheme (None: fresh randomness per image).
        perf: the estimates table adaptive scheduling reads.
        hide_positions: hide positions from workers of stages that allow it (`SplitPlan.position_period`).
    """

    def __init__(self, plan: SplitPlan, *, scheme: str, base_constraints: Constraints,
                 keep_local_classes: Sequence[str] | str | None, scheduling: str, allow_local: bool,
                 seed: int | None, perf: PerfTable, hide_positions: bool) -> None:
        if scheduling not in ("static", "adaptive"):
            raise ValueError(f"scheduling must be 'static' or 'adaptive', got {scheduling!r}")
        self.plan = plan
        self.scheme = scheme
        self.base_constraints = base_constraints
        self.keep_local_classes = parse_keep_local(keep_local_classes)
        self.scheduling = scheduling
        self.allow_local = allow_local
        self.seed = seed
        self.perf = perf
        self.hide_positions = hide_positions

    def position_period(self, stage: str) -> int | None:
        """The period workers' origins are reduced modulo for `stage`, None when positions are sent."""
        return self.plan.position_period(stage) if self.hide_positions else None

    def constraints_for(self, original: np.ndarray, grid: WindowGrid) -> tuple[Constraints, dict[str, Any]]:
        """The request's constraints and what detection found (empty unless semantic); semantic: windows whose
        crop (halo included) touches a detection grown by 16 px stay local.

        Raises `DetectorError` (naming the detector) when detection fails: nothing has been sent yet.
        """
        if self.scheme != "semantic":
            return self.base_constraints, {}
        started = time.perf_counter()
        regions: list[Any] = []
        constraints = constraints_for_image(original, grid, self.base_constraints, keep_local=self.keep_local_classes,
                                            halo_px=self.plan.halo_px, regions_out=regions)
        detection = {
            "keep_local_classes": list(self.keep_local_classes),
            "detectors": list(detector_names(self.keep_local_classes)),
            "regions": {k: sum(r.kind == k for r in regions) for k in sorted({r.kind for r in regions})},
            "detect_s": time.perf_counter() - started,
        }
        return constraints, detection

    def plan_request(self, original: np.ndarray, grid: WindowGrid, members: Mapping[str, Executor], *,
                     caller_assign: CallerAssign | None = None) -> RequestPlan:
        """Plan one request over the available `members` (H x W x 3 `original`, for keep-local detection);
        `caller_assign` replaces the scheme / schedule with the caller's assignment (checked all the same).

        Raises `ConstraintError` when no assignment keeps the hard constraints (or there is nobody to compute:
        no workers and local compute forbidden), `DetectorError` when detection fails.
        """
        constraints, detection = self.constraints_for(original, grid)
        members = dict(members)
        if not members:
            if not self.allow_local:
                raise ConstraintError("no (healthy) workers and local compute is forbidden")
            everything_local = Assignment({}, tuple(grid.content_ids), tuple(grid.padding_ids), self.scheme)
            request = RequestPlan(everything_local, constraints, {}, max_share(grid, 1, constraints))
        else:
            if caller_assign is None:
                request = self._assign(grid, constraints, members)
            else:
                assignment = caller_assign(grid, constraints, list(members))
                request = RequestPlan(assignment, constraints, members, max_share(grid, len(members), constraints))
            problems = check_assignment(request.assignment, grid, constraints)
            if problems:
                whose = "the caller's assignment" if caller_assign is not None else "assignment"
                raise ConstraintError(f"{whose} breaks the privacy constraints: " + "; ".join(problems))
        request.detection = detection
        request.position_period = self.position_period
        return request

    def _assign(self, grid: WindowGrid, constraints: Constraints, members: dict[str, Executor]) -> RequestPlan:
        """The adaptive schedule when asked for and feasible, else the scheme's static assignment."""
        if self.scheduling == "adaptive":
            try:
                return self._adaptive_plan(grid, constraints, members)
            except (InfeasibleScheduleError, ConstraintError) as error:
                log.warning("adaptive schedule failed (%s); using the static %s assignment", error, self.scheme)
        assignment = assign(grid, len(members), self.scheme, constraints=constraints, seed=self.seed)
        return RequestPlan(assignment, constraints, members, max_share(grid, len(members), constraints))

    def estimates(self, names: Sequence[str]) -> tuple[dict[str, PerfEstimate], PerfEstimate | None]:
        """Copies of the workers' estimates (unmeasured ones assumed typical) and the edge's (None until
        measured: an unmeasured edge only computes keep-local windows)."""
        table = self.perf.estimates()
        est = {n: table[n] for n in names if n in table}
        seeded = [e for e in est.values() if e.seeded]
        if seeded and len(seeded) < len(est):
            # A worker that has not answered yet is assumed as fast as the fastest: it gets work on its first
            # request (a new member is tried at once), and that answer seeds its estimate.
            spw = min(e.seconds_per_window for e in seeded)
            overhead = min(e.overhead_s for e in seeded)
            for e in est.values():
                if not e.seeded:
                    e.seconds_per_window, e.overhead_s = spw, overhead
        edge = self.perf.edge
        return est, (edge if edge.seeded and self.allow_local else None)

    def _adaptive_plan(self, grid: WindowGrid, constraints: Constraints, members: dict[str, Executor]) -> RequestPlan:
        names = list(members)
        est, edge = self.estimates(names)
        cap = max_share(grid, len(names), constraints)
        sched = schedule(
            grid.content_ids, est, edge, max_per_worker=cap, neighbours=grid.neighbours,
            adjacency=constraints.adjacency, keep_local=constraints.keep_local,
            spread_groups=constraints.spread_groups, allow_local=self.allow_local, now=self.perf.clock(),
        )
        notes = []
        if sched.adjacent_pairs:
            notes.append(f"adaptive: {sched.adjacent_pairs} same-worker adjacent pair(s) left (adjacency={constraints.adjacency})")
        assignment = Assignment(
            {i: sched.assignments.get(n, ()) for i, n in enumerate(names)}, sched.local, tuple(grid.padding_ids),
            "adaptive", tuple(notes),
        )
        return RequestPlan(assignment, constraints, members, cap, sched, est, edge)
