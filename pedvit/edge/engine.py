"""The split engine: assigns windows to workers, fans out each round, fails over, records, merges.

The engine is the only place that decides *where* a window is computed. Plans say *what* is computed; the
engine routes each window job to the worker the assignment names, computes the edge's windows itself at the
same time, and when a worker fails it moves that worker's windows to another worker only if the move keeps
every privacy constraint (max share, adjacency, never a keep-local window, never the whole image), else
computes them on the edge (or fails clearly if local compute is forbidden).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from pedvit.models import Sam
from pedvit.partition import Assignment, Constraints, ConstraintError, WindowGrid, assign, check_assignment, max_share
from pedvit.plans.plans import Jobs, SplitPlan
from pedvit.plans.stages import stages_for_model

from .executors import InProcessExecutor
from .ledger import Ledger

log = logging.getLogger(__name__)

EDGE = "edge"


class WindowExecutor(Protocol):
    name: str

    def run(self, stage: str, batch: np.ndarray, meta: np.ndarray, *, out_dtype: str = "float16", timeout: float | None = None, request_id: str = "") -> np.ndarray: ...


class PrivacyConstraintError(RuntimeError):
    """A failed worker's windows could not be moved without breaking a constraint, and the edge may not
    compute them."""


@dataclass
class WorkerRecord:
    """What one worker received and cost in one request."""

    windows: set[int] = field(default_factory=set)
    boxes: dict[int, list[int]] = field(default_factory=dict)  # window id -> original-image box (y0, x0, y1, x1)
    calls: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    wall_s: float = 0.0
    compute_s: float = 0.0
    failed: bool = False
    errors: list[str] = field(default_factory=list)


@dataclass
class RunRecord:
    """One request's audit record (`last_run`, and a ledger line)."""

    request_id: str
    started_at: float
    model: str
    plan: str
    scheme: str
    image_size: tuple[int, int]
    content_windows: list[int]
    padding_windows: list[int]
    keep_local: list[int]
    max_windows_per_worker: int
    adjacency: str
    assignment: dict[str, list[int]]
    local_windows: set[int] = field(default_factory=set)
    workers: dict[str, WorkerRecord] = field(default_factory=dict)
    failovers: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    edge_compute_s: float = 0.0
    rounds: int = 0
    wire_dtype: str = "float16"
    halo_px: int = 0
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def adjacent_pairs(self, grid: WindowGrid) -> dict[str, list[list[int]]]:
        out = {}
        for name, worker in self.workers.items():
            pairs = [[a, b] for a in sorted(worker.windows) for b in grid.neighbours(a) if b > a and b in worker.windows]
            if pairs:
                out[name] = pairs
        return out

    def to_dict(self, grid: WindowGrid | None = None) -> dict[str, Any]:
        data = asdict(self)
        data["local_windows"] = sorted(self.local_windows)
        for worker in data["workers"].values():
            worker["windows"] = sorted(worker["windows"])
            worker["boxes"] = {str(k): v for k, v in sorted(worker["boxes"].items())}
        if grid is not None:
            data["adjacent_pairs"] = self.adjacent_pairs(grid)
        return data


class SplitEngine:
    """Computes image embeddings with a split plan over a set of executors.

    Args:
        model: the full model (the edge holds all weights; workers hold only their stages').
        executors: the workers, each a `WindowExecutor` (gRPC `RemoteExecutor` or `InProcessExecutor`).
        plan: a `SplitPlan`.
        scheme: assignment scheme ("contiguous", "interleaved", "random", "semantic").
        constraints: base constraints; the semantic scheme adds keep-local (faces) and spread groups.
        wire_dtype: dtype workers answer in ("float16" halves the bytes; "float32" is bit-exact).
        allow_local: may the edge compute windows itself (failover, leftovers).
        timeout_s: deadline of each worker call.
        ledger: where to append one JSON line per request.
        seed: seed of the random scheme (None: fresh randomness per image).
        outgoing: optional hook applied to every window tensor before it leaves the edge
            (`(stage, window_id, array) -> array`, e.g. differential-privacy noise); never applied to the edge's
            own windows.
    """

    def __init__(
        self,
        model: Sam,
        executors: Sequence[WindowExecutor],
        plan: SplitPlan,
        *,
        scheme: str = "interleaved",
        constraints: Constraints | None = None,
        wire_dtype: str = "float16",
        allow_local: bool = True,
        timeout_s: float = 120.0,
        ledger: Ledger | None = None,
        seed: int | None = None,
        outgoing: Callable[[str, int, np.ndarray], np.ndarray] | None = None,
        sensitive_kinds: tuple[str, ...] = ("face",),
    ) -> None:
        if wire_dtype not in ("float16", "float32"):
            raise ValueError(f"wire_dtype must be 'float16' or 'float32', got {wire_dtype!r}")
        plan.check_model(model)
        self.model = model
        self.executors = list(executors)
        names = [getattr(e, "name", None) or f"worker{i}" for i, e in enumerate(self.executors)]
        if len(set(names)) != len(names):
            names = [f"{n}#{i}" for i, n in enumerate(names)]
        self.names = names
        self.plan = plan
        self.scheme = scheme
        self.base_constraints = constraints or Constraints(allow_local=allow_local)
        self.wire_dtype = wire_dtype
        self.allow_local = allow_local
        self.timeout_s = timeout_s
        self.ledger = ledger
        self.seed = seed
        self.outgoing = outgoing
        self.sensitive_kinds = sensitive_kinds
        self.edge = InProcessExecutor(stages_for_model(model), EDGE)
        self._pool = ThreadPoolExecutor(max_workers=max(4, 2 * len(self.executors)), thread_name_prefix="pedvit-fanout")
        self.last_run: RunRecord | None = None
        self.last_grid: WindowGrid | None = None
        self.last_assignment: Assignment | None = None

    # ------------------------------------------------------------------------------ assignment
    def constraints_for(self, original: np.ndarray, grid: WindowGrid) -> Constraints:
        if self.scheme != "semantic":
            return self.base_constraints
        from pedvit.partition import constraints_for_image

        return constraints_for_image(original, grid, self.base_constraints)

    def plan_assignment(self, original: np.ndarray, grid: WindowGrid) -> tuple[Assignment, Constraints]:
        if not self.executors:
            if not self.allow_local:
                raise ConstraintError("no workers given and local compute is forbidden")
            constraints = self.constraints_for(original, grid)
            return Assignment({}, tuple(grid.content_ids), tuple(grid.padding_ids), self.scheme), constraints
        constraints = self.constraints_for(original, grid)
        assignment = assign(grid, len(self.executors), self.scheme, constraints=constraints, seed=self.seed)
        problems = check_assignment(assignment, grid, constraints)
        if problems:
            raise ConstraintError("assignment breaks the privacy constraints: " + "; ".join(problems))
        return assignment, constraints

    # ---------------------------------------------------------------------------------- encode
    def encode(self, resized: np.ndarray, original: np.ndarray) -> torch.Tensor:
        """h x w x 3 uint8 resized image (and the H x W x 3 original, for sensitive-region detection) ->
        1 x 256 x 64 x 64 embedding."""
        started = time.perf_counter()
        grid = WindowGrid(original.shape[:2], input_size=self.model.img_size)
        assignment, constraints = self.plan_assignment(original, grid)
        planned = time.perf_counter()
        record = RunRecord(
            request_id=uuid.uuid4().hex[:16],
            started_at=time.time(),
            model=self.model.name,
            plan=self.plan.name,
            scheme=self.scheme,
            image_size=(int(original.shape[0]), int(original.shape[1])),
            content_windows=list(grid.content_ids),
            padding_windows=list(grid.padding_ids),
            keep_local=sorted(constraints.keep_local),
            max_windows_per_worker=max_share(grid, max(1, len(self.executors)), constraints),
            adjacency=constraints.adjacency,
            assignment={self.names[w]: list(ids) for w, ids in assignment.worker_windows.items()},
            local_windows=set(assignment.local),
            wire_dtype=self.wire_dtype,
            halo_px=self.plan.halo_px,
            notes=list(assignment.notes),
        )
        record.workers = {name: WorkerRecord() for name in self.names}
        record.timings["assign_s"] = planned - started
        owner = {wid: self.names[w] for w, ids in assignment.worker_windows.items() for wid in ids}
        dead: set[str] = set()

        def dispatch(stage: str, jobs: Jobs, force_local: frozenset[int]) -> dict[int, np.ndarray]:
            record.rounds += 1
            return self._dispatch(stage, jobs, force_local, grid, constraints, record, owner, dead)

        embedding = self.plan.encode(self.model, resized, grid, dispatch)
        record.timings["encode_s"] = time.perf_counter() - started
        self.last_run, self.last_grid, self.last_assignment = record, grid, assignment
        if self.ledger is not None:
            self.ledger.append(record.to_dict(grid))
        return embedding

    # -------------------------------------------------------------------------------- fan-out
    def _dispatch(
        self,
        stage: str,
        jobs: Jobs,
        force_local: frozenset[int],
        grid: WindowGrid,
        constraints: Constraints,
        record: RunRecord,
        owner: dict[int, str],
        dead: set[str],
    ) -> dict[int, np.ndarray]:
        results: dict[int, np.ndarray] = {}
        pending = dict(jobs)
        while pending:
            by_target: dict[str, list[int]] = {}
            for wid in sorted(pending):
                target = EDGE if wid in force_local or wid in record.local_windows else owner[wid]
                by_target.setdefault(target, []).append(wid)
            futures: dict[str, Future] = {
                target: self._pool.submit(self._call_worker, target, stage, wids, pending, grid, record)
                for target, wids in by_target.items()
                if target != EDGE
            }
            if EDGE in by_target:
                # The edge's own windows are computed while the workers compute theirs.
                edge_started = time.perf_counter()
                results.update(self._run_batches(self.edge, stage, by_target[EDGE], pending, "float32", record.request_id))
                record.edge_compute_s += time.perf_counter() - edge_started
                for wid in by_target[EDGE]:
                    pending.pop(wid)
            for target, future in futures.items():
                try:
                    results.update(future.result())
                    for wid in by_target[target]:
                        pending.pop(wid)
                except Exception as error:  # noqa: BLE001 - any worker failure triggers failover
                    log.warning("worker %s failed on %s: %s", target, stage, error)
                    worker = record.workers[target]
                    worker.failed = True
                    worker.errors.append(f"{type(error).__name__}: {error}"[:500])
                    dead.add(target)
                    for wid in by_target[target]:
                        new_owner = self._failover_target(wid, grid, constraints, record, dead)
                        record.failovers.append({"window": wid, "stage": stage, "from": target, "to": new_owner, "reason": type(error).__name__})
                        if new_owner == EDGE:
                            record.local_windows.add(wid)
                        else:
                            owner[wid] = new_owner
        return results

    def _call_worker(self, target: str, stage: str, wids: list[int], jobs: Jobs, grid: WindowGrid, record: RunRecord) -> dict[int, np.ndarray]:
        executor = self.executors[self.names.index(target)]
        worker = record.workers[target]
        # Record before sending: a worker that fails mid-request may still have seen the windows.
        for wid in wids:
            worker.windows.add(wid)
            box = grid.window(wid).original_box
            if box is not None:
                worker.boxes[wid] = list(box)
        return self._run_batches(executor, stage, wids, jobs, self.wire_dtype, record.request_id, worker)

    def _run_batches(
        self,
        executor: WindowExecutor,
        stage: str,
        wids: list[int],
        jobs: Jobs,
        out_dtype: str,
        request_id: str,
        worker: WorkerRecord | None = None,
    ) -> dict[int, np.ndarray]:
        """Send `wids` to one executor, one call per window shape (border windows are smaller)."""
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for wid in wids:
            by_shape.setdefault(jobs[wid][0].shape, []).append(wid)
        out: dict[int, np.ndarray] = {}
        remote = executor is not self.edge
        for shape_ids in by_shape.values():
            arrays = []
            for wid in shape_ids:
                array = jobs[wid][0]
                if remote:
                    if self.outgoing is not None:
                        array = self.outgoing(stage, wid, array)
                    if array.dtype == np.float32 and self.wire_dtype == "float16":
                        array = array.astype(np.float16)
                arrays.append(array)
            batch = np.stack(arrays)
            meta = np.stack([jobs[wid][1] for wid in shape_ids]).astype(np.int32)
            started = time.perf_counter()
            result = executor.run(stage, batch, meta, out_dtype=out_dtype, timeout=self.timeout_s, request_id=request_id)
            if worker is not None:
                worker.calls += 1
                worker.wall_s += time.perf_counter() - started
                stats = getattr(executor, "last_call", None)
                if stats is not None:
                    worker.bytes_sent += int(getattr(stats, "bytes_sent", 0))
                    worker.bytes_received += int(getattr(stats, "bytes_received", 0))
                    worker.compute_s += float(getattr(stats, "compute_seconds", 0.0))
            for i, wid in enumerate(shape_ids):
                out[wid] = result[i]
        return out

    def _failover_target(self, wid: int, grid: WindowGrid, constraints: Constraints, record: RunRecord, dead: set[str]) -> str:
        """A live worker that can take `wid` without breaking a constraint, else the edge."""
        n_content = len(grid.content_ids)
        candidates = []
        for name in self.names:
            if name in dead:
                continue
            planned = set(record.assignment.get(name, []))
            held = record.workers[name].windows | planned
            if wid in held:
                continue
            new = held | {wid}
            if len(new) > record.max_windows_per_worker:
                continue
            if n_content >= 2 and set(grid.content_ids) <= new:
                continue
            if constraints.adjacency != "off" and any(n in held for n in grid.neighbours(wid)):
                continue
            if any(wid in group and len(group & held) >= math.ceil(len(group) / max(1, len(self.names))) for group in constraints.spread_groups):
                continue
            candidates.append((len(held), name))
        if candidates:
            return min(candidates)[1]
        if self.allow_local:
            return EDGE
        raise PrivacyConstraintError(
            f"window {wid}: its worker failed and no other worker can take it within the privacy constraints; "
            "local compute is forbidden (allow_local=False)"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for executor in self.executors:
            close = getattr(executor, "close", None)
            if close is not None:
                close()
