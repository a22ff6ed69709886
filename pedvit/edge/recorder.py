"""The run record of one request: what each worker received and cost, failovers, hedges, timings.

`RunRecorder` owns one request's `RunRecord` (the engine's `last_run` and one ledger line) and the wall time
of each dispatch round (`round_seconds`, read by the performance benchmark; not part of the ledger). The round
runner reports to it from its pool threads, so every change goes through the recorder's lock.
"""

from __future__ import annotations

import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping

from pedvit.partition import WindowGrid

from .ledger import Ledger
from .planner import RequestPlan


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


@dataclass(frozen=True)
class RunIdentity:
    """What a run record says about the engine that served it (constant across requests)."""

    model: str
    plan: str
    scheme: str
    wire_dtype: str
    halo_px: int
    window_tokens: int


class RunRecorder:
    """Owns one request's `RunRecord` and the wall seconds of each of its dispatch rounds.

    Args:
        identity: the engine's model, plan, scheme and wire settings.
        plan: the request's plan (`Planner.plan`): its assignment, constraints and detection summary.
        grid: the request's window grid (image size, content and padding windows, original boxes).
        image_size: (H, W) of the original image.
        assign_s: seconds spent planning (the record's ``timings["assign_s"]``).
    """

    def __init__(self, identity: RunIdentity, plan: RequestPlan, grid: WindowGrid, image_size: tuple[int, int],
                 assign_s: float) -> None:
        self.grid = grid
        self._lock = threading.Lock()
        #: wall seconds of each dispatch round, in order (failover passes of a round included)
        self.round_seconds: list[float] = []
        names = list(plan.members)
        self.record = RunRecord(
            request_id=uuid.uuid4().hex[:16], started_at=time.time(),
            model=identity.model, plan=identity.plan, scheme=identity.scheme,
            image_size=(int(image_size[0]), int(image_size[1])),
            content_windows=list(grid.content_ids), padding_windows=list(grid.padding_ids),
            keep_local=sorted(plan.constraints.keep_local), max_windows_per_worker=plan.max_per_worker,
            adjacency=plan.constraints.adjacency,
            assignment={names[w]: list(ids) for w, ids in plan.assignment.worker_windows.items()},
            local_windows=set(plan.assignment.local), wire_dtype=identity.wire_dtype, halo_px=identity.halo_px,
            window_tokens=identity.window_tokens, notes=list(plan.assignment.notes),
            scheduling="adaptive" if plan.schedule is not None else "static",
            predicted=dict(plan.schedule.finish) if plan.schedule is not None else {},
        )
        self.record.workers = {name: WorkerRecord() for name in names}
        if plan.detection:
            self.record.extra["sensitive"] = dict(plan.detection)
        self.record.timings["assign_s"] = assign_s

    # ------------------------------------------------------------------------------ rounds
    @contextmanager
    def round(self, stage: str, positions_hidden: bool) -> Iterator[None]:
        """Time one dispatch round of `stage` (its wall seconds go to `round_seconds`)."""
        with self._lock:
            self.record.rounds += 1
            self.record.positions_hidden[stage] = positions_hidden
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                self.round_seconds.append(elapsed)

    # ------------------------------------------------------------------------------ windows and workers
    def is_local(self, window_id: int) -> bool:
        """Whether the edge computes `window_id` (keep-local, leftover, or failed over to the edge)."""
        with self._lock:
            return window_id in self.record.local_windows

    def n_local(self) -> int:
        with self._lock:
            return len(self.record.local_windows)

    def sent(self, worker: str, batches: list[list[int]]) -> None:
        """`worker` is about to receive these windows, one call per batch, rows in this order. Recorded before
        sending: a worker that fails mid-request may still have seen them."""
        with self._lock:
            record = self.record.workers[worker]
            for wid in (w for batch in batches for w in batch):
                record.windows.add(wid)
                box = self.grid.window(wid).original_box
                if box is not None:
                    record.boxes[wid] = list(box)
            record.sent_order.extend(batches)

    def sent_windows(self) -> dict[str, set[int]]:
        """Worker -> windows it was sent so far in this request (hedges and earlier rounds included)."""
        with self._lock:
            return {name: set(w.windows) for name, w in self.record.workers.items()}

    def call_cost(self, worker: str, wall_s: float, compute_s: float, bytes_sent: int, bytes_received: int) -> None:
        """One finished call of `worker` (all batches of one submission)."""
        with self._lock:
            record = self.record.workers[worker]
            record.calls += 1
            record.wall_s += wall_s
            record.compute_s += compute_s
            record.bytes_received += bytes_received
            record.bytes_sent += bytes_sent

    def edge_compute(self, seconds: float) -> None:
        with self._lock:
            self.record.edge_compute_s += seconds

    def worker_failed(self, worker: str, error: BaseException) -> None:
        with self._lock:
            record = self.record.workers[worker]
            record.failed = True
            record.errors.append(f"{type(error).__name__}: {error}"[:500])

    def last_errors(self, workers: set[str]) -> str:
        """"name: last error" of each of `workers` that reported one (for a clear failure message)."""
        with self._lock:
            return "; ".join(f"{n}: {self.record.workers[n].errors[-1]}" for n in sorted(workers)
                             if n in self.record.workers and self.record.workers[n].errors)

    # ------------------------------------------------------------------------------ failovers, hedges, notes
    def failover(self, window_id: int, stage: str, source: str, target: str, reason: str, *, to_edge: bool) -> None:
        with self._lock:
            self.record.failovers.append({"window": window_id, "stage": stage, "from": source, "to": target,
                                          "reason": reason})
            if to_edge:
                self.record.local_windows.add(window_id)

    def hedge(self, row: dict[str, Any]) -> None:
        """A hedge row (window, stage, original, hedge, winner, after_s); its ``winner`` is filled in later."""
        with self._lock:
            self.record.hedges.append(row)

    def hedge_won(self, row: dict[str, Any], winner: str) -> None:
        """The first answer for a hedged window came from `winner` (the original worker or the hedge)."""
        with self._lock:
            row["winner"] = winner

    def note(self, text: str) -> None:
        with self._lock:
            self.record.notes.append(text)

    # ------------------------------------------------------------------------------ end of the request
    def finish(self, encode_s: float, outgoing_params: Callable[[], Mapping[str, Any]] | None) -> RunRecord:
        """Close the record: total encode time, and the noise hook's parameters per worker that received
        windows (the DP mechanism describes itself)."""
        with self._lock:
            self.record.timings["encode_s"] = encode_s
            if outgoing_params is not None:
                params = outgoing_params()
                self.record.extra["dp"] = {name: {**params, "windows": sorted(w.windows)}
                                           for name, w in self.record.workers.items() if w.windows}
        return self.record

    def append_to(self, ledger: Ledger) -> None:
        """Write the record as one ledger line."""
        with self._lock:
            ledger.append(self.record.to_dict(self.grid))
