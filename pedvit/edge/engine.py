"""The split engine: computes an image embedding with a split plan over a changing set of workers.

The engine composes three parts, one per concern, and keeps the membership:

* `Planner` (`planner.py`): which windows go where for one request: the scheme or the adaptive schedule,
  keep-local detection, the hard privacy constraints checked, position hiding (`RequestPlan`);
* `RoundRunner` (`rounds.py`, with `Routing` in `routing.py`): each round of window jobs sent to its workers
  through the `Executor` protocol (`executor.py`), hedged and failed over within the same constraints;
* `RunRecorder` (`recorder.py`): the request's `RunRecord` (`last_run`, the ledger line) and round timings.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from pedvit.cloud.heap import release_free_heap
from pedvit.models import Sam
from pedvit.partition import Constraints, WindowGrid
from pedvit.plans.plans import Dispatch, Jobs, SplitPlan

from .estimates import PerfTable
from .executor import Executor
from .executors import InProcessExecutor
from .ledger import Ledger
from .planner import CallerAssign, Planner
from .recorder import RunIdentity, RunRecord, RunRecorder, WorkerRecord
from .rounds import DispatchSettings, OutgoingHook, RoundRunner
from .routing import EDGE, MayReceive, PrivacyConstraintError
from .verify import AnswerCheck

__all__ = ["CallerRequest", "EDGE", "PrivacyConstraintError", "RunRecord", "SplitEngine", "WorkerRecord"]

log = logging.getLogger(__name__)


@dataclass
class CallerRequest:
    """What a caller decides itself for one request (a video session) instead of the engine.

    Attributes:
        assign: the caller's assignment (`CallerAssign`, checked against the request's constraints); None: the
            engine's scheme or schedule.
        reuse: window ids whose outputs are taken from `feature_cache` (computed in an earlier request): they
            are neither computed nor sent, and must be edge windows in the assignment. A window the cache lacks
            for a stage is computed on the edge.
        feature_cache: (stage, window id) -> that window's last output (h' x w' x C' float); every window computed
            in this request updates it. None: no caching.
        extra: merged into the run record's ``extra`` (and so its ledger line), e.g. a video's id and frame index.
        may_receive: ``(worker, window id, windows it holds in this request) -> bool``: may a failover or a hedge
            send the worker that window beyond the caller's assignment (on top of the request's constraints; a
            refused window goes to another worker or the edge). None: the constraints alone decide.
    """

    assign: CallerAssign | None = None
    reuse: frozenset[int] = frozenset()
    feature_cache: dict[tuple[str, int], np.ndarray] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    may_receive: MayReceive | None = None


def _reusing(dispatch: Dispatch, caller: CallerRequest, reused_out: set[int]) -> Dispatch:
    """`dispatch` that serves the caller's reusable windows from its feature cache (adding their ids to
    `reused_out`) and stores every computed window's output there."""
    cache = caller.feature_cache
    assert cache is not None

    def run(stage: str, jobs: Jobs, force_local: frozenset[int]) -> dict[int, np.ndarray]:
        cached = {wid for wid in jobs if wid in caller.reuse and (stage, wid) in cache}
        outputs = dispatch(stage, {wid: job for wid, job in jobs.items() if wid not in cached}, force_local)
        cache.update({(stage, wid): out for wid, out in outputs.items()})
        outputs.update({wid: cache[(stage, wid)] for wid in cached})
        reused_out.update(cached)
        return outputs

    return run


class SplitEngine:
    """Computes image embeddings with a split plan over a set of executors.

    Args:
        model: the full model (the edge holds all weights; workers hold only their stages').
        executors: the workers, each an `Executor` (gRPC `RemoteExecutor` or `InProcessExecutor`).
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
            (`(stage, window_id, array) -> array` with a `params()` description for the run record, e.g.
            `pedvit.privacy.dp.GaussianWindowNoise`); never applied to the edge's own windows.
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
        spot_check: probability that a worker answer gets one window recomputed on the edge and compared
            (`pedvit.edge.verify`); every answer is checked for shape, dtype, finite values and plausible
            feature norms regardless. A rejected answer fails the worker for the request (windows re-dispatched
            under the same constraints; the ledger records why).
        stall_unknown_s: how long a worker call may go unanswered, while nothing predicts its time, before the
            worker's health is checked; a frozen worker is failed then, not after ``timeout_s``.
    """

    def __init__(
        self,
        model: Sam,
        executors: Sequence[Executor],
        plan: SplitPlan,
        *,
        scheme: str = "interleaved",
        constraints: Constraints | None = None,
        wire_dtype: str = "float16",
        allow_local: bool = True,
        timeout_s: float = 120.0,
        ledger: Ledger | None = None,
        seed: int | None = None,
        outgoing: OutgoingHook | None = None,
        keep_local_classes: Sequence[str] | str | None = None,
        scheduling: str = "static",
        hedge_factor: float | None = 3.0,
        hedge_min_s: float = 0.05,
        perf: PerfTable | None = None,
        hide_positions: bool = True,
        spot_check: float = 0.0,
        stall_unknown_s: float = 5.0,
    ) -> None:
        self.settings = DispatchSettings(wire_dtype, timeout_s, allow_local, scheduling == "adaptive", hedge_factor,
                                         hedge_min_s, outgoing, stall_unknown_s=stall_unknown_s,
                                         spot_check=spot_check)
        self.perf = perf if perf is not None else PerfTable()  # (an empty table is falsy)
        self.planner = Planner(plan, scheme=scheme, base_constraints=constraints or Constraints(allow_local=allow_local),
                               keep_local_classes=keep_local_classes, scheduling=scheduling, allow_local=allow_local,
                               seed=seed, perf=self.perf, hide_positions=hide_positions)
        plan.check_model(model)
        self.model, self.plan, self.ledger, self.outgoing, self.scheduling = model, plan, ledger, outgoing, scheduling
        self.identity = RunIdentity(model.name, plan.name, scheme, wire_dtype, plan.halo_px, plan.window_tokens)
        self.executors = list(executors)
        names = [e.name or f"worker{i}" for i, e in enumerate(self.executors)]
        if len(set(names)) != len(names) or EDGE in names:
            names = [f"{n}#{i}" for i, n in enumerate(names)]
        self.names = names
        for name in self.names:
            self.perf.add(name)
        self._members_lock = threading.RLock()
        self.edge = InProcessExecutor(plan.edge_stages(model), EDGE)
        #: every worker answer is checked before use (shape, dtype, finite, plausible norms, spot checks)
        self.checker = AnswerCheck(self.edge, spot_check)
        # Threads are created lazily; the bound only has to cover workers added later plus hedges.
        self._pool = ThreadPoolExecutor(max_workers=max(64, 4 * len(self.executors)), thread_name_prefix="pedvit-fanout")
        #: the recorder of the last finished request: its `record` (`last_run`) and `round_seconds`
        self.last_recorder: RunRecorder | None = None

    @property
    def last_run(self) -> RunRecord | None:
        return self.last_recorder.record if self.last_recorder is not None else None

    @property
    def last_grid(self) -> WindowGrid | None:
        return self.last_recorder.grid if self.last_recorder is not None else None

    # ------------------------------------------------------------------------------ membership
    def members(self) -> dict[str, Executor]:
        """Name -> executor of every current worker (healthy or not)."""
        with self._members_lock:
            return dict(zip(self.names, self.executors))

    def add_worker(self, executor: Executor, name: str | None = None) -> str:
        """Add a worker; it gets work from the next request on (its first answers seed its estimate)."""
        with self._members_lock:
            name = name or executor.name or f"worker{len(self.names)}"
            if name in self.names or name == EDGE:
                raise ValueError(f"a worker named {name!r} is already a member (or the name is reserved)")
            self.executors.append(executor)
            self.names.append(name)
            self.perf.add(name)
        log.info("worker %s joined", name)
        return name

    def remove_worker(self, name: str, *, close: bool = True) -> Executor:
        """Remove a worker; calls in flight to it fail over like any failed call."""
        with self._members_lock:
            if name not in self.names:
                raise KeyError(f"no worker named {name!r}")
            index = self.names.index(name)
            executor = self.executors.pop(index)
            self.names.pop(index)
            self.perf.remove(name)
        if close:
            executor.close()
        log.info("worker %s left", name)
        return executor

    def available_workers(self) -> dict[str, Executor]:
        """The members that may be offered work now (not in failure backoff)."""
        ok = set(self.perf.available())
        return {n: e for n, e in self.members().items() if n in ok}

    def status(self) -> dict[str, Any]:
        """Members, their health state and current estimates (`PerfTable.snapshot`), for `cluster status`."""
        snap = self.perf.snapshot()
        return {"scheduling": self.scheduling, "members": list(self.members()), **snap}

    # ---------------------------------------------------------------------------------- encode
    def constraints_for(self, original: np.ndarray, grid: WindowGrid) -> tuple[Constraints, dict[str, Any]]:
        """The request's constraints and keep-local detection summary (`Planner.constraints_for`)."""
        return self.planner.constraints_for(original, grid)

    def encode(self, resized: np.ndarray, original: np.ndarray, caller: CallerRequest | None = None) -> torch.Tensor:
        """h x w x 3 uint8 resized image (and the H x W x 3 original, for sensitive-region detection) ->
        1 x 256 x 64 x 64 embedding. `caller`: the caller's own assignment, reused windows and record extras."""
        started = time.perf_counter()
        caller = caller or CallerRequest()
        grid = WindowGrid(original.shape[:2], input_size=self.model.img_size, window_tokens=self.plan.window_tokens)
        request = self.planner.plan_request(original, grid, self.available_workers(), caller_assign=caller.assign)
        sent_reusable = sorted(set(caller.reuse) & set(request.assignment.sent))
        if sent_reusable:
            raise ValueError(f"windows {sent_reusable} are to be reused but are assigned to workers")
        recorder = RunRecorder(self.identity, request, grid, original.shape[:2], time.perf_counter() - started)
        runner = RoundRunner(self.settings, self._pool, self.perf, self.edge, request, grid, recorder, self.checker,
                             may_receive=caller.may_receive)
        reused: set[int] = set()
        dispatch = runner.run_round if caller.feature_cache is None else _reusing(runner.run_round, caller, reused)
        embedding = self.plan.encode(self.model, resized, grid, dispatch)
        recorder.record.extra.update(caller.extra)
        if caller.feature_cache is not None:
            recorder.record.extra["reused_windows"] = sorted(reused)
        recorder.finish(time.perf_counter() - started, self.outgoing.params if self.outgoing is not None else None)
        self.last_recorder = recorder
        if self.ledger is not None:
            recorder.append_to(self.ledger)
        release_free_heap()  # a few ms: the windows computed here (failovers, hedges, keep-local) leave free blocks
        return embedding

    def close(self, executors: bool = True) -> None:
        """Stop the fan-out threads; close the executors too unless the caller shares them (``executors=False``)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        if executors:
            for executor in self.executors:
                executor.close()
