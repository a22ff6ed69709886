"""The round runner: one stage's window jobs fanned out to their workers, hedged and failed over.

A round sends every job to where `Routing` says (the edge computes its own windows at the same time), waits
for the first answer per window, duplicates a call that runs past its predicted time on a hedge target
(adaptive scheduling), moves the windows of a failed worker to a new legal place and runs them again, until
every job has an answer. Workers are reached only through the `Executor` protocol: each worker call is a
`run_future` whose handle a lost hedge cancels, and whose `stats` say what it cost.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from pedvit.partition import WindowGrid
from pedvit.plans.plans import Jobs

from .estimates import EDGE_ID, PerfTable
from .executor import CallHandle, Executor
from .planner import RequestPlan
from .recorder import RunRecorder
from .routing import EDGE, MayReceive, Routing
from .verify import AnswerCheck

log = logging.getLogger(__name__)


class OutgoingHook(Protocol):
    """Applied to every window tensor before it leaves the edge (e.g. differential-privacy noise); it
    describes itself for the run record (`params`)."""

    def __call__(self, stage: str, window_id: int, array: np.ndarray) -> np.ndarray: ...

    def params(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class DispatchSettings:
    """How the engine talks to workers (the same for every request).

    Attributes:
        wire_dtype: dtype workers answer in ("float16" halves the bytes; "float32" is bit-exact).
        timeout_s: deadline of each worker call.
        allow_local: may the edge compute windows itself (failover, hedges, the speed probe).
        adaptive: adaptive scheduling: hedge late calls, probe the edge's speed, rank failovers by speed.
        hedge_factor: a call still running after ``hedge_factor`` x its predicted time (and at least
            ``hedge_min_s``) is hedged; None disables hedging.
        hedge_min_s: smallest wait before a call is hedged (predictions of tiny calls are noisy).
        outgoing: hook applied to every window sent to a worker (never to the edge's own windows).
        stall_factor, stall_slack_s, stall_unknown_s: a worker call still unanswered after ``stall_factor`` x
            its predicted time + ``stall_slack_s`` (``stall_unknown_s`` while nothing predicts it) gets a health
            check; a worker that does not answer it (frozen, unreachable) is failed for the request and its
            windows move on at once, instead of waiting for ``timeout_s``. A live but slow worker is given
            another period.
        spot_check: probability that a worker answer gets one window recomputed on the edge (`AnswerCheck`).
    """

    wire_dtype: str = "float16"
    timeout_s: float = 120.0
    allow_local: bool = True
    adaptive: bool = False
    hedge_factor: float | None = 3.0
    hedge_min_s: float = 0.05
    outgoing: OutgoingHook | None = None
    stall_factor: float = 3.0
    stall_slack_s: float = 1.0
    stall_unknown_s: float = 5.0
    spot_check: float = 0.0

    def __post_init__(self) -> None:
        if self.wire_dtype not in ("float16", "float32"):
            raise ValueError(f"wire_dtype must be 'float16' or 'float32', got {self.wire_dtype!r}")
        if self.hedge_factor is not None and self.hedge_factor <= 1.0:
            raise ValueError(f"hedge_factor must be > 1 (or None), got {self.hedge_factor}")


class _CancelToken:
    """Cancels one in-flight worker call (the losing side of a hedge). gRPC calls are really cancelled
    (`StageCall.cancel`); in-process calls cannot be interrupted, their late answer is ignored."""

    def __init__(self) -> None:
        self.cancelled = False
        self._call: CallHandle | None = None
        self._lock = threading.Lock()

    def attach(self, call: CallHandle) -> None:
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
    stall_at: float | None = None  # monotonic time after which the worker's health is checked (None: never)


@dataclass
class _Round:
    """The state of one pass of a round: its calls and the windows still waiting for an answer."""

    stage: str
    jobs: Jobs
    pending: dict[int, Any]  # jobs not answered yet (a failed-over window stays for the next pass)
    results: dict[int, np.ndarray]
    calls: dict[Future, _Call]
    active: set[Future] = field(default_factory=set)
    unresolved: set[int] = field(default_factory=set)
    hedge_rows: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)


class RoundRunner:
    """Runs the dispatch rounds of one request.

    Args:
        settings: wire dtype, timeouts, hedging, local compute, the outgoing hook.
        pool: the threads calls run on (shared by the engine's requests).
        perf: the estimates table; every call updates it.
        edge: the edge's own executor (float32, never hidden positions, no outgoing hook).
        plan: the request's plan.
        grid: the request's window grid.
        recorder: the request's recorder.
        checker: verifies every worker answer before it is used (None: no checks).
    """

    def __init__(self, settings: DispatchSettings, pool: ThreadPoolExecutor, perf: PerfTable, edge: Executor,
                 plan: RequestPlan, grid: WindowGrid, recorder: RunRecorder, checker: AnswerCheck | None = None,
                 may_receive: MayReceive | None = None) -> None:
        self.settings = settings
        self.checker = checker
        self.pool = pool
        self.perf = perf
        self.edge = edge
        self.plan = plan
        self.recorder = recorder
        self.routing = Routing(plan, grid, recorder, perf, allow_local=settings.allow_local,
                               adaptive=settings.adaptive, may_receive=may_receive)

    def run_round(self, stage: str, jobs: Jobs, force_local: frozenset[int]) -> dict[int, np.ndarray]:
        """Run one round (a `pedvit.plans.plans.Dispatch`): every job on its owner (the edge's own windows and
        `force_local` concurrently), hedging stragglers and failing over failed workers until every job has
        an answer. Returns window id -> output h' x w' x C'."""
        results: dict[int, np.ndarray] = {}
        pending = dict(jobs)
        with self.recorder.round(stage, self.plan.position_period(stage) is not None):
            while pending:
                by_target: dict[str, list[int]] = {}
                for wid in sorted(pending):
                    target = EDGE if wid in force_local else self.routing.target(wid)
                    by_target.setdefault(target, []).append(wid)
                rnd = _Round(stage, jobs, pending, results, {})
                for target, wids in by_target.items():
                    rnd.calls.update(self._submit(rnd, target, wids))
                if (self.settings.adaptive and self.settings.allow_local and EDGE not in by_target
                        and not self.perf.edge.seeded):
                    # Probe the edge's speed on one window (redundant, result unused) while the workers compute.
                    rnd.calls.update(self._submit(rnd, EDGE, [min(pending)], probe=True))
                self._await(rnd)
        return results

    # ------------------------------------------------------------------------------ submitting
    def _submit(self, rnd: _Round, target: str, wids: list[int], *, hedge: bool = False,
                probe: bool = False) -> dict[Future, _Call]:
        call = _Call(target, list(wids), time.monotonic(), _CancelToken(), hedge=hedge, probe=probe)
        settings = self.settings
        if target != EDGE and not hedge and settings.hedge_factor is not None and self.plan.schedule is not None:
            est = self.perf.get(target) if target in self.perf else None
            if est is not None and est.seeded:  # an unmeasured worker's prediction is a guess: never hedged
                call.deadline = call.started + max(settings.hedge_min_s, settings.hedge_factor * est.predict(len(wids)))
        if target != EDGE and not probe:
            call.stall_at = call.started + self._stall_period(target, len(wids))
        if target == EDGE:
            future = self.pool.submit(self._call_edge, rnd.stage, call.wids, rnd.jobs)
        else:
            # Record before sending (a worker that fails mid-request may still have seen the windows), and
            # here rather than in the pool thread, so the next failover or hedge decision counts them.
            batches = self.plan.batches(rnd.stage, call.wids, rnd.jobs, remote=True)
            self.recorder.sent(target, batches)
            future = self.pool.submit(self._call_worker, target, rnd.stage, batches, rnd.jobs, call.token)
        return {future: call}

    def _stall_period(self, target: str, n_windows: int) -> float:
        """How long a call of `n_windows` on `target` may run before the worker's health is checked: from its
        own estimate, else the edge's (workers are rarely slower than the edge), else `stall_unknown_s`."""
        settings = self.settings
        for name in (target, EDGE_ID):
            est = self.perf.get(name) if name in self.perf else None
            if est is not None and est.seeded:
                return settings.stall_factor * est.predict(n_windows) + settings.stall_slack_s
        return settings.stall_unknown_s

    # ------------------------------------------------------------------------------ collecting
    def _await(self, rnd: _Round) -> None:
        """Collect the round's answers (first answer per window wins); hedge calls past their deadline;
        windows whose every call failed get a new place (left in `rnd.pending` for the next pass)."""
        rnd.unresolved = {w for c in rnd.calls.values() if not c.probe for w in c.wids}
        rnd.active = set(rnd.calls)
        while rnd.unresolved:
            deadlines = [c.deadline for f, c in rnd.calls.items()
                         if f in rnd.active and c.deadline is not None and not c.hedged]
            deadlines += [c.stall_at for f, c in rnd.calls.items() if f in rnd.active and c.stall_at is not None]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            done, _ = wait(rnd.active, timeout=timeout, return_when=FIRST_COMPLETED)
            lost: list[tuple[int, str, str]] = []
            for future in done:
                rnd.active.discard(future)
                call = rnd.calls[future]
                try:
                    out = future.result()
                except Exception as error:  # noqa: BLE001 - any worker failure triggers failover
                    lost.extend(self._failed(rnd, call, error))
                    continue
                if not call.probe:
                    self._answered(rnd, call, out)
            lost.extend(self._stalled(rnd))
            if not rnd.active and rnd.unresolved:
                # Safety net: nothing in flight can answer these any more; move them like failed windows.
                already = {w for w, _, _ in lost}
                lost.extend((wid, self.routing.owner.get(wid, EDGE), "NoAnswer") for wid in sorted(rnd.unresolved)
                            if wid not in already)
            for wid, source, reason in lost:
                rnd.unresolved.discard(wid)
                self.routing.fail_over(wid, rnd.stage, source, reason)
            self._hedge_late(rnd)
        for future in rnd.active:
            rnd.calls[future].token.cancel()  # leftovers: probes and losers still running

    def _failed(self, rnd: _Round, call: _Call, error: Exception) -> list[tuple[int, str, str]]:
        """A call failed: the windows no other call in flight covers are lost, as (window, worker, reason).
        The edge failing is the request failing (it re-raises); a probe or a hedge's loser is ignored."""
        if call.probe:
            return []
        if call.target == EDGE:
            raise error
        missing = [w for w in call.wids if w in rnd.unresolved]
        if not missing or (call.token.cancelled and not isinstance(error, TimeoutError)):
            return []  # the losing side of a hedge
        log.warning("worker %s failed on %s: %s", call.target, rnd.stage, error)
        self.recorder.worker_failed(call.target, error)
        self.routing.mark_failed(call.target)
        covered = {w for f in rnd.active if not rnd.calls[f].probe for w in rnd.calls[f].wids}
        return [(wid, call.target, type(error).__name__) for wid in missing if wid not in covered]

    def _stalled(self, rnd: _Round) -> list[tuple[int, str, str]]:
        """Worker calls past their stall time: a worker that fails a health check is failed (its call
        cancelled, its windows lost, as in `_failed`); a live one gets another period."""
        lost: list[tuple[int, str, str]] = []
        now = time.monotonic()
        for future in list(rnd.active):
            call = rnd.calls[future]
            if call.stall_at is None or now < call.stall_at or call.token.cancelled:
                continue
            executor = self.plan.members[call.target]
            if executor.health(timeout=1.0):
                call.stall_at = time.monotonic() + self._stall_period(call.target, len(call.wids))
                continue
            rnd.active.discard(future)
            call.token.cancel()
            error = TimeoutError(f"no answer after {now - call.started:.1f} s and no answer to a health check")
            lost.extend(self._failed(rnd, call, error))
        return lost

    def _answered(self, rnd: _Round, call: _Call, out: dict[int, np.ndarray]) -> None:
        """The first answer per window wins; calls whose windows are all answered (the slower side of a hedge)
        are cancelled."""
        won = [w for w in call.wids if w in rnd.unresolved]
        for wid in won:
            rnd.results[wid] = out[wid]
            rnd.unresolved.discard(wid)
            rnd.pending.pop(wid, None)
        for wid in won:
            for (hedged_wid, _), row in rnd.hedge_rows.items():
                if hedged_wid == wid and row["winner"] is None:
                    self.recorder.hedge_won(row, call.target)
        if not won:
            return
        for future in list(rnd.active):
            other = rnd.calls[future]
            if not other.probe and not any(w in rnd.unresolved for w in other.wids):
                other.token.cancel()
                rnd.active.discard(future)
                if not other.hedge and other.target != EDGE and other.target in self.perf:
                    # The straggler took at least this long: let its estimate know.
                    self.perf.observe(other.target, len(other.wids), time.monotonic() - other.started)

    def _hedge_late(self, rnd: _Round) -> None:
        """Duplicate the unanswered windows of every call past its deadline on `Routing.hedge_targets`."""
        now = time.monotonic()
        for future in list(rnd.active):
            call = rnd.calls[future]
            if call.deadline is None or call.hedged or now < call.deadline:
                continue
            call.hedged = True
            wids = [w for w in call.wids if w in rnd.unresolved]
            targets = self.routing.hedge_targets(wids, call.target) if wids else {}
            if not targets:
                self.recorder.note(f"{rnd.stage}: worker {call.target} is late but no hedge target keeps the constraints")
                continue
            log.info("hedging %s's windows %s: %s", call.target, wids, targets)
            for target, ids in targets.items():
                new = self._submit(rnd, target, list(ids), hedge=True)
                rnd.calls.update(new)
                rnd.active.update(new)
                for wid in ids:
                    row = {"window": wid, "stage": rnd.stage, "original": call.target, "hedge": target,
                           "winner": None, "after_s": round(now - call.started, 4)}
                    rnd.hedge_rows[(wid, target)] = row
                    self.recorder.hedge(row)

    # ------------------------------------------------------------------------------ calling
    def _call_edge(self, stage: str, wids: list[int], jobs: Jobs) -> dict[int, np.ndarray]:
        """The edge computes `wids` itself: float32, absolute positions, no outgoing hook."""
        started = time.perf_counter()
        out: dict[int, np.ndarray] = {}
        for ids in self.plan.batches(stage, wids, jobs, remote=False):
            batch, meta = self._wire_batch(stage, ids, jobs, remote=False)
            result = self.edge.run(stage, batch, meta, out_dtype="float32", timeout=self.settings.timeout_s,
                                   request_id=self.recorder.record.request_id)
            out.update(zip(ids, result))
        elapsed = time.perf_counter() - started
        self.recorder.edge_compute(elapsed)
        self.perf.observe(EDGE_ID, len(wids), elapsed, elapsed)
        return out

    def _call_worker(self, target: str, stage: str, batches: list[list[int]], jobs: Jobs,
                     token: _CancelToken) -> dict[int, np.ndarray]:
        """Send each batch (`RequestPlan.batches`) to worker `target` in one cancellable call; record what the
        calls cost and update its estimate."""
        executor = self.plan.members[target]
        out: dict[int, np.ndarray] = {}
        wall = compute = 0.0
        bytes_sent = bytes_received = 0
        for ids in batches:
            if token.cancelled:
                raise RuntimeError("call cancelled (hedge lost)")
            batch, meta = self._wire_batch(stage, ids, jobs, remote=True)
            started = time.perf_counter()
            handle = executor.run_future(stage, batch, meta, out_dtype=self.settings.wire_dtype,
                                         timeout=self.settings.timeout_s, request_id=self.recorder.record.request_id)
            token.attach(handle)  # the losing side of a hedge stops on the worker too
            result = handle.result()
            if self.checker is not None:
                self.checker.verify(stage, batch, meta, result, self.settings.wire_dtype)
            wall += time.perf_counter() - started
            if handle.stats is not None:
                bytes_sent += int(handle.stats.bytes_sent)
                bytes_received += int(handle.stats.bytes_received)
                compute += float(handle.stats.compute_seconds)
            out.update(zip(ids, result))
        self.recorder.call_cost(target, wall, compute, bytes_sent, bytes_received)
        if target in self.perf:
            self.perf.observe(target, sum(map(len, batches)), wall, compute if compute > 0 else None,
                              bytes_sent + bytes_received)
        return out

    def _wire_batch(self, stage: str, ids: list[int], jobs: Jobs, *, remote: bool) -> tuple[np.ndarray, np.ndarray]:
        """The B x h x w x C batch and B x 4 int32 meta of windows `ids`, in that order. Sent to a worker: the
        outgoing hook applied, float32 features cast to the wire dtype, and with hidden positions each origin
        reduced modulo the stage's period."""
        arrays = []
        for wid in ids:
            array = jobs[wid][0]
            if remote:
                if self.settings.outgoing is not None:
                    array = self.settings.outgoing(stage, wid, array)
                if array.dtype == np.float32 and self.settings.wire_dtype == "float16":
                    array = array.astype(np.float16)
            arrays.append(array)
        meta = np.stack([jobs[wid][1] for wid in ids]).astype(np.int32)
        period = self.plan.position_period(stage) if remote else None
        if period is not None:
            meta[:, :2] %= period
        return np.stack(arrays), meta
