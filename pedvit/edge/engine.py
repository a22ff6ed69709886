"""The split engine: assigns windows to workers, fans out each round, fails over, records, merges.

The engine is the only place that decides *where* a window is computed. Plans say *what* is computed; the
engine routes each window job to the worker the assignment names, computes the edge's windows itself at the
same time, and when a worker fails it moves that worker's windows to another worker only if the move keeps
every hard privacy constraint (max share, never the whole image, spread groups, "require" adjacency; keep-local
windows are never sent), else computes them on the edge. A "prefer" adjacency is relaxed, with a note, only
when local compute is forbidden; with no legal worker and no local compute the request fails clearly.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from pedvit.models import Sam
from pedvit.partition import Assignment, Constraints, ConstraintError, WindowGrid, assign, check_assignment, max_share
from pedvit.partition.constraints import placement_cost, share_cap
from pedvit.plans.plans import Jobs, SplitPlan
from pedvit.plans.stages import stages_for_model

from .estimates import EDGE_ID, PerfEstimate, PerfTable
from .executors import InProcessExecutor
from .ledger import Ledger
from .scheduler import InfeasibleScheduleError, Schedule, pick_hedge, schedule

log = logging.getLogger(__name__)

EDGE = "edge"
#: the order of a worker's windows with hidden positions: OS randomness, which a worker cannot predict or replay
_SHUFFLE = random.SystemRandom()


class WindowExecutor(Protocol):
    name: str

    def run(self, stage: str, batch: np.ndarray, meta: np.ndarray, *, out_dtype: str = "float16", timeout: float | None = None, request_id: str = "") -> np.ndarray: ...


class PrivacyConstraintError(RuntimeError):
    """A failed worker's windows could not be moved without breaking a hard constraint, and the edge may not
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
    #: the window ids of each call in the order they were sent: the edge's map from a worker's answer rows back
    #: to windows (with hidden positions the worker receives neither the ids nor the origins)
    sent_order: list[list[int]] = field(default_factory=list)


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
    hedges: list[dict[str, Any]] = field(default_factory=list)
    scheduling: str = "static"
    predicted: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    edge_compute_s: float = 0.0
    rounds: int = 0
    wire_dtype: str = "float16"
    halo_px: int = 0
    window_tokens: int = 14
    #: stage -> whether its workers got positions hidden (origins modulo the stage's period, shuffled order)
    positions_hidden: dict[str, bool] = field(default_factory=dict)
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


class _CancelToken:
    """Cancels one in-flight worker call (the losing side of a hedge). gRPC calls are really cancelled
    (`StageCall.cancel`); in-process calls cannot be interrupted, their late answer is ignored."""

    def __init__(self) -> None:
        self.cancelled = False
        self._call: Any = None
        self._lock = threading.Lock()

    def attach(self, call: Any) -> None:
        with self._lock:
            self._call = call
            if self.cancelled:
                call.cancel()

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            if self._call is not None:
                self._call.cancel()


@dataclass
class _Call:
    """One in-flight call of a dispatch round: an owner's call, a hedge, or the edge's speed probe."""

    target: str
    wids: list[int]
    started: float
    token: _CancelToken
    hedge: bool = False
    probe: bool = False
    deadline: float | None = None  # monotonic time after which the call is hedged (None: never)
    hedged: bool = False


@dataclass
class _Plan:
    """What `SplitEngine._plan` decided for one request."""

    assignment: Assignment
    constraints: Constraints
    members: dict[str, "WindowExecutor"]  # name -> executor of the workers offered work (assignment order)
    schedule: Schedule | None = None
    estimates: dict[str, PerfEstimate] = field(default_factory=dict)
    edge_estimate: PerfEstimate | None = None
    #: semantic: the classes, detectors and regions of this request's keep-local detection (the ledger's
    #: `extra.sensitive`); per request, so concurrent requests cannot mix them up
    detection: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Request:
    """Per-request state shared by the dispatch rounds of one `encode`."""

    grid: WindowGrid
    plan: _Plan
    record: RunRecord
    owner: dict[int, str]
    dead: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


class SplitEngine:
    """Computes image embeddings with a split plan over a set of executors.

    Args:
        model: the full model (the edge holds all weights; workers hold only their stages').
        executors: the workers, each a `WindowExecutor` (gRPC `RemoteExecutor` or `InProcessExecutor`).
        plan: a `SplitPlan`.
        scheme: assignment scheme ("contiguous", "interleaved", "random", "semantic"); with
            ``scheduling="adaptive"`` only its constraints (semantic: faces keep-local, spread groups) are used.
        constraints: base constraints; the semantic scheme adds keep-local (faces) and spread groups.
        keep_local_classes: semantic scheme: the sensitive classes whose windows stay on the edge
            (``faces``, ``text``, ``people``; None: faces and text; see `pedvit.partition.detectors`). A
            detector that fails raises `DetectorError` before any window is sent.
        wire_dtype: dtype workers answer in ("float16" halves the bytes; "float32" is bit-exact).
        allow_local: may the edge compute windows itself (failover, leftovers, adaptive scheduling, hedges).
        timeout_s: deadline of each worker call.
        ledger: where to append one JSON line per request.
        seed: seed of the random scheme (None: fresh randomness per image).
        outgoing: optional hook applied to every window tensor before it leaves the edge
            (`(stage, window_id, array) -> array`, e.g. differential-privacy noise); never applied to the edge's
            own windows.
        scheduling: "static" (the scheme's equal split) or "adaptive" (`pedvit.edge.scheduler.schedule` over
            the `perf` estimates: faster workers, and the edge when it finishes sooner, get more windows).
        hedge_factor: adaptive only: a worker call still running after ``hedge_factor`` x its predicted time
            (and at least ``hedge_min_s``) is duplicated on the edge or another worker with privacy budget
            (`pick_hedge`); the first answer wins. None disables hedging.
        hedge_min_s: smallest wait before a call is hedged (predictions of tiny calls are noisy).
        perf: the estimates table (default: a fresh `PerfTable`); every call updates it, in both modes.
        hide_positions: workers of a stage whose output does not depend on absolute position
            (`SplitPlan.position_period`: the `tinyvit-isolated` trunk) get their windows in a random order and
            each origin modulo that period, so they do not learn where their pieces sit; the edge keeps the map
            (`WorkerRecord.sent_order`). Outputs are bit-identical either way. Stages that need absolute
            positions (ViT plans) always get them; the run record says which stages hid them.
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
        keep_local_classes: Sequence[str] | str | None = None,
        scheduling: str = "static",
        hedge_factor: float | None = 3.0,
        hedge_min_s: float = 0.05,
        perf: PerfTable | None = None,
        hide_positions: bool = True,
    ) -> None:
        if wire_dtype not in ("float16", "float32"):
            raise ValueError(f"wire_dtype must be 'float16' or 'float32', got {wire_dtype!r}")
        if scheduling not in ("static", "adaptive"):
            raise ValueError(f"scheduling must be 'static' or 'adaptive', got {scheduling!r}")
        if hedge_factor is not None and hedge_factor <= 1.0:
            raise ValueError(f"hedge_factor must be > 1 (or None), got {hedge_factor}")
        plan.check_model(model)
        self.model = model
        self.executors = list(executors)
        names = [getattr(e, "name", None) or f"worker{i}" for i, e in enumerate(self.executors)]
        if len(set(names)) != len(names) or EDGE in names:
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
        from pedvit.partition.detectors import parse_keep_local

        self.keep_local_classes = parse_keep_local(keep_local_classes)
        self.scheduling = scheduling
        self.hedge_factor = hedge_factor
        self.hedge_min_s = hedge_min_s
        self.perf = perf if perf is not None else PerfTable()  # (an empty table is falsy)
        self.hide_positions = hide_positions
        for name in self.names:
            self.perf.add(name)
        self._members_lock = threading.RLock()
        self.edge = InProcessExecutor(plan.edge_stages(model), EDGE)
        # Threads are created lazily; the bound only has to cover workers added later plus hedges.
        self._pool = ThreadPoolExecutor(max_workers=max(64, 4 * len(self.executors)), thread_name_prefix="pedvit-fanout")
        self.last_run: RunRecord | None = None
        self.last_grid: WindowGrid | None = None

    # ------------------------------------------------------------------------------ membership
    def members(self) -> dict[str, WindowExecutor]:
        """Name -> executor of every current worker (healthy or not)."""
        with self._members_lock:
            return dict(zip(self.names, self.executors))

    def add_worker(self, executor: WindowExecutor, name: str | None = None) -> str:
        """Add a worker; it gets work from the next request on (its first answers seed its estimate)."""
        with self._members_lock:
            name = name or getattr(executor, "name", None) or f"worker{len(self.names)}"
            if name in self.names or name == EDGE:
                raise ValueError(f"a worker named {name!r} is already a member (or the name is reserved)")
            self.executors.append(executor)
            self.names.append(name)
            self.perf.add(name)
        log.info("worker %s joined", name)
        return name

    def remove_worker(self, name: str, *, close: bool = True) -> WindowExecutor:
        """Remove a worker; calls in flight to it fail over like any failed call."""
        with self._members_lock:
            if name not in self.names:
                raise KeyError(f"no worker named {name!r}")
            index = self.names.index(name)
            executor = self.executors.pop(index)
            self.names.pop(index)
            self.perf.remove(name)
        if close and hasattr(executor, "close"):
            executor.close()
        log.info("worker %s left", name)
        return executor

    def available_workers(self) -> dict[str, WindowExecutor]:
        """The members that may be offered work now (not in failure backoff)."""
        ok = set(self.perf.available())
        return {n: e for n, e in self.members().items() if n in ok}

    def status(self) -> dict[str, Any]:
        """Members, their health state and current estimates (`PerfTable.snapshot`), for `cluster status`."""
        snap = self.perf.snapshot()
        return {"scheduling": self.scheduling, "members": list(self.members()), **snap}

    # ------------------------------------------------------------------------------ assignment
    def constraints_for(self, original: np.ndarray, grid: WindowGrid) -> tuple[Constraints, dict[str, Any]]:
        """The request's constraints and what detection found (empty unless semantic); semantic: windows whose
        crop (halo included) touches a detection grown by 16 px stay local.

        Raises `DetectorError` (naming the detector) when detection fails: nothing has been sent yet.
        """
        if self.scheme != "semantic":
            return self.base_constraints, {}
        from pedvit.partition import constraints_for_image
        from pedvit.partition.detectors import detector_names

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

    def _plan(self, original: np.ndarray, grid: WindowGrid) -> _Plan:
        constraints, detection = self.constraints_for(original, grid)
        members = self.available_workers()
        if not members:
            if not self.allow_local:
                raise ConstraintError("no (healthy) workers and local compute is forbidden")
            return _Plan(Assignment({}, tuple(grid.content_ids), tuple(grid.padding_ids), self.scheme), constraints, {},
                         detection=detection)
        names = list(members)
        plan: _Plan | None = None
        if self.scheduling == "adaptive":
            try:
                plan = self._adaptive_plan(grid, constraints, members)
            except (InfeasibleScheduleError, ConstraintError) as error:
                log.warning("adaptive schedule failed (%s); using the static %s assignment", error, self.scheme)
        if plan is None:
            assignment = assign(grid, len(names), self.scheme, constraints=constraints, seed=self.seed)
            plan = _Plan(assignment, constraints, members)
        plan.detection = detection
        problems = check_assignment(plan.assignment, grid, constraints)
        if problems:
            raise ConstraintError("assignment breaks the privacy constraints: " + "; ".join(problems))
        return plan

    def _estimates(self, names: Sequence[str]) -> tuple[dict[str, PerfEstimate], PerfEstimate | None]:
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

    def _adaptive_plan(self, grid: WindowGrid, constraints: Constraints, members: dict[str, WindowExecutor]) -> _Plan:
        names = list(members)
        est, edge = self._estimates(names)
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
        return _Plan(assignment, constraints, members, sched, est, edge)

    # ---------------------------------------------------------------------------------- encode
    def encode(self, resized: np.ndarray, original: np.ndarray) -> torch.Tensor:
        """h x w x 3 uint8 resized image (and the H x W x 3 original, for sensitive-region detection) ->
        1 x 256 x 64 x 64 embedding."""
        started = time.perf_counter()
        grid = WindowGrid(original.shape[:2], input_size=self.model.img_size, window_tokens=self.plan.window_tokens)
        plan = self._plan(original, grid)
        assignment, constraints = plan.assignment, plan.constraints
        names = list(plan.members)
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
            max_windows_per_worker=max_share(grid, max(1, len(names)), constraints),
            adjacency=constraints.adjacency,
            assignment={names[w]: list(ids) for w, ids in assignment.worker_windows.items()},
            local_windows=set(assignment.local),
            wire_dtype=self.wire_dtype,
            halo_px=self.plan.halo_px,
            window_tokens=self.plan.window_tokens,
            notes=list(assignment.notes),
            scheduling="adaptive" if plan.schedule is not None else "static",
            predicted=dict(plan.schedule.finish) if plan.schedule is not None else {},
        )
        record.workers = {name: WorkerRecord() for name in names}
        if plan.detection:
            record.extra["sensitive"] = dict(plan.detection)
        record.timings["assign_s"] = planned - started
        owner = {wid: names[w] for w, ids in assignment.worker_windows.items() for wid in ids}
        request = _Request(grid, plan, record, owner)

        def dispatch(stage: str, jobs: Jobs, force_local: frozenset[int]) -> dict[int, np.ndarray]:
            record.rounds += 1
            record.positions_hidden[stage] = self._position_period(stage) is not None
            return self._dispatch(stage, jobs, force_local, request)

        embedding = self.plan.encode(self.model, resized, grid, dispatch)
        record.timings["encode_s"] = time.perf_counter() - started
        describe = getattr(self.outgoing, "params", None)
        if describe is not None:
            # A noise hook (the DP mechanism) describes itself; every worker that received windows got noised ones.
            params = describe()
            record.extra["dp"] = {name: {**params, "windows": sorted(w.windows)} for name, w in record.workers.items() if w.windows}
        self.last_run, self.last_grid = record, grid
        if self.ledger is not None:
            with request.lock:
                self.ledger.append(record.to_dict(grid))
        return embedding

    # -------------------------------------------------------------------------------- fan-out
    def _position_period(self, stage: str) -> int | None:
        """The period workers' origins are reduced modulo for `stage`, None when positions are sent."""
        return self.plan.position_period(stage) if self.hide_positions else None

    def _dispatch(self, stage: str, jobs: Jobs, force_local: frozenset[int], req: _Request) -> dict[int, np.ndarray]:
        """Run one round: every job on its owner (the edge's own windows concurrently), hedging stragglers
        and failing over failed workers until every job has an answer."""
        record = req.record
        results: dict[int, np.ndarray] = {}
        pending = dict(jobs)
        while pending:
            by_target: dict[str, list[int]] = {}
            for wid in sorted(pending):
                target = EDGE if wid in force_local or wid in record.local_windows else req.owner[wid]
                by_target.setdefault(target, []).append(wid)
            calls: dict[Future, _Call] = {}
            for target, wids in by_target.items():
                calls.update(self._submit(target, stage, wids, jobs, req))
            if (self.scheduling == "adaptive" and self.allow_local and EDGE not in by_target
                    and not self.perf.edge.seeded):
                # Probe the edge's speed on one window (redundant, result unused) while the workers compute.
                calls.update(self._submit(EDGE, stage, [min(pending)], jobs, req, probe=True))
            self._await_round(stage, jobs, pending, results, calls, req)
        return results

    def _submit(self, target: str, stage: str, wids: list[int], jobs: Jobs, req: _Request, *,
                hedge: bool = False, probe: bool = False) -> dict[Future, _Call]:
        call = _Call(target, list(wids), time.monotonic(), _CancelToken(), hedge=hedge, probe=probe)
        if target != EDGE and not hedge and self.hedge_factor is not None and req.plan.schedule is not None:
            est = self.perf.get(target) if target in self.perf else None
            if est is not None and est.seeded:  # an unmeasured worker's prediction is a guess: never hedged
                call.deadline = call.started + max(self.hedge_min_s, self.hedge_factor * est.predict(len(wids)))
        if target == EDGE:
            future = self._pool.submit(self._call_edge, stage, call.wids, jobs, req.record)
        else:
            # Record before sending (a worker that fails mid-request may still have seen the windows), and
            # here rather than in the pool thread, so the next failover or hedge decision counts them.
            worker = req.record.workers[target]
            batches = self._batches(stage, call.wids, jobs, remote=True)
            with req.lock:
                for wid in call.wids:
                    worker.windows.add(wid)
                    box = req.grid.window(wid).original_box
                    if box is not None:
                        worker.boxes[wid] = list(box)
                worker.sent_order.extend(batches)
            future = self._pool.submit(self._call_worker, target, stage, batches, jobs, req, call.token)
        return {future: call}

    def _await_round(self, stage: str, jobs: Jobs, pending: dict[int, Any], results: dict[int, np.ndarray],
                     calls: dict[Future, _Call], req: _Request) -> None:
        """Collect the round's answers (first answer per window wins); hedge calls past their deadline;
        windows whose every call failed get a new owner (left in `pending` for the next pass)."""
        record = req.record
        unresolved = {w for c in calls.values() if not c.probe for w in c.wids}
        active = set(calls)
        hedge_rows: dict[tuple[int, str], dict[str, Any]] = {}
        while unresolved:
            deadlines = [c.deadline for f, c in calls.items() if f in active and c.deadline is not None and not c.hedged]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            done, _ = wait(active, timeout=timeout, return_when=FIRST_COMPLETED)
            lost: list[tuple[int, str, str]] = []
            for future in done:
                active.discard(future)
                call = calls[future]
                try:
                    out = future.result()
                except Exception as error:  # noqa: BLE001 - any worker failure triggers failover
                    if call.probe:
                        continue
                    if call.target == EDGE:
                        raise
                    missing = [w for w in call.wids if w in unresolved]
                    if not missing or call.token.cancelled:
                        continue  # the losing side of a hedge
                    log.warning("worker %s failed on %s: %s", call.target, stage, error)
                    with req.lock:
                        worker = record.workers[call.target]
                        worker.failed = True
                        worker.errors.append(f"{type(error).__name__}: {error}"[:500])
                    req.dead.add(call.target)
                    if call.target in self.perf:
                        self.perf.mark_failed(call.target)
                    for wid in missing:
                        covered = any(wid in calls[f].wids and not calls[f].probe for f in active)
                        if not covered:
                            lost.append((wid, call.target, type(error).__name__))
                    continue
                if call.probe:
                    continue
                won = [w for w in call.wids if w in unresolved]
                for wid in won:
                    results[wid] = out[wid]
                    unresolved.discard(wid)
                    pending.pop(wid, None)
                for wid in won:
                    for (hw, _), row in hedge_rows.items():
                        if hw == wid and row["winner"] is None:
                            row["winner"] = call.target
                if won:
                    # Cancel calls whose windows are all answered (the slower side of a hedge).
                    for f in list(active):
                        other = calls[f]
                        if not other.probe and not any(w in unresolved for w in other.wids):
                            other.token.cancel()
                            active.discard(f)
                            if not other.hedge and other.target != EDGE and other.target in self.perf:
                                # The straggler took at least this long: let its estimate know.
                                self.perf.observe(other.target, len(other.wids), time.monotonic() - other.started)
            if not active and unresolved:
                # Safety net: nothing in flight can answer these any more; move them like failed windows.
                lost.extend((wid, req.owner.get(wid, EDGE), "NoAnswer") for wid in sorted(unresolved)
                            if wid not in {w for w, _, _ in lost})
            for wid, source, reason in lost:
                unresolved.discard(wid)
                new_owner = self._failover_target(wid, req)
                record.failovers.append({"window": wid, "stage": stage, "from": source, "to": new_owner, "reason": reason})
                if new_owner == EDGE:
                    record.local_windows.add(wid)
                else:
                    req.owner[wid] = new_owner
            now = time.monotonic()
            for future in list(active):
                call = calls[future]
                if call.deadline is None or call.hedged or now < call.deadline:
                    continue
                call.hedged = True
                wids = [w for w in call.wids if w in unresolved]
                targets = self._hedge_targets(wids, call.target, req) if wids else {}
                if not targets:
                    record.notes.append(f"{stage}: worker {call.target} is late but no hedge target keeps the constraints")
                    continue
                log.info("hedging %s's windows %s: %s", call.target, wids, targets)
                for target, ids in targets.items():
                    new = self._submit(target, stage, list(ids), jobs, req, hedge=True)
                    calls.update(new)
                    active.update(new)
                    for wid in ids:
                        row = {"window": wid, "stage": stage, "original": call.target, "hedge": target, "winner": None,
                               "after_s": round(now - call.started, 4)}
                        hedge_rows[(wid, target)] = row
                        record.hedges.append(row)
        for future in active:
            calls[future].token.cancel()  # leftovers: probes and losers still running

    def _hedge_targets(self, wids: list[int], straggler: str, req: _Request) -> dict[str, tuple[int, ...]]:
        plan, record, grid = req.plan, req.record, req.grid
        if plan.schedule is None:
            return {}
        estimates = {n: e for n, e in plan.estimates.items() if n not in req.dead}
        constraints = plan.constraints
        return pick_hedge(
            wids, plan.schedule, estimates, plan.edge_estimate if self.allow_local else None,
            max_per_worker=record.max_windows_per_worker, neighbours=grid.neighbours,
            adjacency=constraints.adjacency, spread_groups=constraints.spread_groups, allow_local=self.allow_local,
            exclude={straggler, *req.dead}, also_held=self._holdings(req), n_workers=len(plan.members),
            now=self.perf.clock(),
        )

    @staticmethod
    def _holdings(req: _Request) -> dict[str, set[int]]:
        """Windows each worker holds in this request, as failover and hedging count them against the
        constraints: those it was sent (hedges and earlier rounds included) and those routed to it (its
        assignment, and failovers not sent yet)."""
        with req.lock:
            held = {name: set(w.windows) for name, w in req.record.workers.items()}
        for wid, name in req.owner.items():
            if name in held:
                held[name].add(wid)
        return held

    def _call_edge(self, stage: str, wids: list[int], jobs: Jobs, record: RunRecord) -> dict[int, np.ndarray]:
        started = time.perf_counter()
        out, _, _, _ = self._run_batches(self.edge, stage, self._batches(stage, wids, jobs, remote=False), jobs,
                                         "float32", record.request_id)
        elapsed = time.perf_counter() - started
        record.edge_compute_s += elapsed
        self.perf.observe(EDGE_ID, len(wids), elapsed, elapsed)
        return out

    def _call_worker(self, target: str, stage: str, batches: list[list[int]], jobs: Jobs, req: _Request,
                     token: _CancelToken | None = None) -> dict[int, np.ndarray]:
        executor = req.plan.members[target]
        worker = req.record.workers[target]
        out, wall, compute, nbytes = self._run_batches(executor, stage, batches, jobs, self.wire_dtype,
                                                       req.record.request_id, token)
        with req.lock:
            worker.calls += 1
            worker.wall_s += wall
            worker.compute_s += compute
            worker.bytes_received += nbytes[1]
            worker.bytes_sent += nbytes[0]
        if target in self.perf:
            self.perf.observe(target, sum(map(len, batches)), wall, compute if compute > 0 else None, sum(nbytes))
        return out

    def _batches(self, stage: str, wids: list[int], jobs: Jobs, *, remote: bool) -> list[list[int]]:
        """`wids` grouped into one call per window shape (border windows are smaller). With hidden positions
        (`_position_period`) a remote call's windows are in a random order: the worker must not learn the layout
        from it. The caller records the result as the edge's map (`WorkerRecord.sent_order`) before sending."""
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for wid in wids:
            by_shape.setdefault(jobs[wid][0].shape, []).append(wid)
        batches = list(by_shape.values())
        if remote and self._position_period(stage) is not None:
            for batch in batches:
                _SHUFFLE.shuffle(batch)
        return batches

    def _run_batches(
        self,
        executor: WindowExecutor,
        stage: str,
        batches: list[list[int]],
        jobs: Jobs,
        out_dtype: str,
        request_id: str,
        token: _CancelToken | None = None,
    ) -> tuple[dict[int, np.ndarray], float, float, tuple[int, int]]:
        """Send each batch of window ids (`_batches`) to one executor in one call; a remote call of a stage with
        hidden positions carries each origin modulo the stage's period.

        Returns (window id -> output, wall seconds, worker-reported compute seconds, (bytes sent, received)).
        """
        out: dict[int, np.ndarray] = {}
        remote = executor is not self.edge
        period = self._position_period(stage) if remote else None
        wall = compute = 0.0
        bytes_sent = received = 0
        for shape_ids in batches:
            if token is not None and token.cancelled:
                raise RuntimeError("call cancelled (hedge lost)")
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
            if period is not None:
                meta[:, :2] %= period
            started = time.perf_counter()
            stats: Any = None
            if token is not None and hasattr(executor, "run_future"):
                # Cancellable: the losing side of a hedge stops on the worker too.
                handle = executor.run_future(stage, batch, meta, out_dtype=out_dtype, timeout=self.timeout_s, request_id=request_id)
                token.attach(handle)
                result = handle.result()
                stats = getattr(handle, "stats", None)
            else:
                result = executor.run(stage, batch, meta, out_dtype=out_dtype, timeout=self.timeout_s, request_id=request_id)
                stats = getattr(executor, "last_call", None)
            wall += time.perf_counter() - started
            if stats is not None and remote:
                bytes_sent += int(getattr(stats, "bytes_sent", 0))
                received += int(getattr(stats, "bytes_received", 0))
                compute += float(getattr(stats, "compute_seconds", 0.0))
            for i, wid in enumerate(shape_ids):
                out[wid] = result[i]
        return out, wall, compute, (bytes_sent, received)

    def _failover_target(self, wid: int, req: _Request) -> str:
        """Where window ``wid`` of a failed worker goes: a live worker, or the edge (`EDGE`).

        A worker is legal when `placement_cost` (the rule `pick_hedge` uses too) lets it take ``wid`` on top of
        what it holds (`_holdings`): share cap, never the whole image, spread limit, and no adjacent pair under
        "require". Legal workers rank by new adjacent pairs ("prefer"; "off" ignores them), then
        `_failover_cost`, then fewest windows held, then name.

        With local compute allowed, the edge (trusted, hence always privacy-safe) takes the window when no
        worker is legal, when the best one would hold a window adjacent to it (so "prefer" is never relaxed
        while the edge can compute: privacy before speed), when the best one is in backoff, or when the
        measured edge is predicted faster (adaptive scheduling). With local compute forbidden the best legal
        worker takes it, even next to one of its windows under "prefer" (noted in ``record.notes``); with none
        legal, `PrivacyConstraintError`.
        """
        record, grid, constraints = req.record, req.grid, req.plan.constraints
        names = list(req.plan.members)
        cap = share_cap(record.max_windows_per_worker, len(grid.content_ids))
        neighbours = frozenset(grid.neighbours(wid))
        held = self._holdings(req)
        owned = Counter(req.owner.values())
        candidates: list[tuple[int, float, int, str]] = []
        for name in names:
            if name in req.dead:
                continue
            new_pairs = placement_cost(wid, held[name], cap=cap, neighbours=neighbours, adjacency=constraints.adjacency,
                                       spread_groups=constraints.spread_groups, n_workers=len(names))
            if new_pairs is not None:
                candidates.append((new_pairs, self._failover_cost(name, owned[name] + 1), len(held[name]), name))
        best = min(candidates, default=None)
        if self.allow_local:
            # Why: the edge is privacy-safe, so it beats a worker the window would sit next to ("prefer" is
            # relaxed only without it); and a measured straggler (or a worker in backoff) can take far longer
            # than the edge itself: failing over to it would make one lost window the slowest part.
            adaptive_edge = self.scheduling == "adaptive" and self.perf.edge.seeded
            edge_s = self.perf.edge.predict(len(record.local_windows) + 1) if adaptive_edge else math.inf
            if best is None or best[0] > 0 or best[1] == math.inf or edge_s < best[1]:
                return EDGE
        if best is None:
            # Name what the failed workers said: "unknown stage", a TLS error or a timeout need different fixes.
            causes = "; ".join(f"{n}: {record.workers[n].errors[-1]}" for n in sorted(req.dead)
                               if n in record.workers and record.workers[n].errors)
            raise PrivacyConstraintError(
                f"window {wid}: its worker failed and no other worker can take it within the privacy constraints; "
                "local compute is forbidden (allow_local=False)" + (f". Worker errors: {causes[:1500]}" if causes else "")
            )
        new_pairs, _, _, name = best
        if new_pairs:
            near = ", ".join(str(n) for n in sorted(neighbours & held[name]))
            record.notes.append(
                f"window {wid} failed over to {name} next to its window(s) {near} "
                f"(adjacency '{constraints.adjacency}' relaxed: no non-adjacent worker and local compute forbidden)"
            )
        return name

    def _failover_cost(self, name: str, n_windows: int) -> float:
        """Rank of a failover candidate: with adaptive scheduling, its predicted seconds for the windows it
        would then hold (a straggler in backoff or known to be slow ranks last); otherwise 0 (fewest windows
        held decides)."""
        if self.scheduling != "adaptive" or name not in self.perf:
            return 0.0
        est = self.perf.get(name)
        if not est.available(self.perf.clock()):
            return math.inf
        return est.predict(n_windows)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for executor in self.executors:
            close = getattr(executor, "close", None)
            if close is not None:
                close()
