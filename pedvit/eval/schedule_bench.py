"""Simulation benchmark of the window scheduler (no model, simulated time, nothing sleeps).

For each worker count (and share cap) a seeded *world* is drawn: heterogeneous workers whose seconds per
window are log-uniform over ``[base, base * speed_spread]`` and whose per-request overhead is uniform, a slow
edge, per-request multiplicative noise, and workers that go down (per request with probability
``fail_rate``, for an exponentially distributed time). Two policies serve the same request stream in the same
world, each with its own online `PerfTable` (probe-seeded with errors, then EWMA-updated from what it sees):

* ``scheduler``: `pedvit.edge.scheduler.schedule`;
* ``equal split``: `pedvit.edge.scheduler.equal_split` (windows divided equally over available workers).

A worker that is down when its windows arrive is detected after a timeout (``timeout_factor`` x its predicted
time, at least ``min_timeout_s``), marked failed (exponential backoff) and its windows are re-placed on a
legal target chosen by `pick_hedge` (the edge as a last resort).

Per request both realised makespans are divided by the same **oracle lower bound**: `lower_bound` evaluated on
the request's *realised* costs (noise included) of the workers actually up, with the same constraints (share
cap, never the whole image, the same edge). Placement constraints are relaxed in the bound. Note that when
``workers >= windows`` and the cap is ``ceil(n / N) = 1``, the bound is simply the n-th fastest realised
single-window time: the scheduler can only matter by choosing *which* workers to use. A larger cap (e.g. 3)
lets it load fast workers more.

Run: ``pedvit bench schedule --workers 16,32,64 --json out.json``.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

from pedvit.edge.estimates import EDGE_ID, PerfEstimate, PerfTable
from pedvit.edge.scheduler import (InfeasibleScheduleError, Schedule, equal_split, lower_bound, pick_hedge,
                                   schedule)

GRID = 5  # windows per side of the 1024 px input


def king_neighbours(window_id: int, rows: int = GRID, cols: int = GRID) -> list[int]:
    """8-neighbourhood of a window on the 5 x 5 window grid (id = row * 5 + col)."""
    r, c = divmod(window_id, cols)
    return [(r + dr) * cols + (c + dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)
            if (dr or dc) and 0 <= r + dr < rows and 0 <= c + dc < cols]


def content_ids(aspect: str) -> list[int]:
    """Content windows of a square image (25) or of a 4:3 landscape image (4 rows x 5 columns = 20)."""
    rows = {"square": 5, "4:3": 4}[aspect]  # 768 px of content spans rows 0..3 (224 px each)
    return [r * GRID + c for r in range(rows) for c in range(GRID)]


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark configuration (all times in seconds)."""

    workers: int = 16
    cap: int | None = None  # None: max(1, ceil(n / workers)) per request
    requests: int = 200
    seed: int = 0
    speed_spread: float = 4.0
    base_spw: float = 0.06
    overhead_range: tuple[float, float] = (0.01, 0.04)
    edge_spw: float = 0.5
    noise: float = 0.1  # sigma of the per-request log-normal noise on compute and overhead
    probe_noise: float = 0.3  # sigma of the log-normal error of the initial probe
    fail_rate: float = 0.002  # probability per request that an up worker goes down
    down_mean_s: float = 10.0
    interval_s: float = 1.0  # time between request starts
    timeout_factor: float = 3.0
    min_timeout_s: float = 0.25
    alpha: float = 0.3
    reprobe_every: int = 10  # requests between background 1-window probes of workers left idle (0: never)
    adjacency: str = "prefer"
    allow_local: bool = True

    @property
    def cap_label(self) -> str:
        return "auto" if self.cap is None else str(self.cap)


@dataclass
class _World:
    """The true, pre-drawn environment both policies see."""

    spw: np.ndarray  # (N,) true seconds per window
    overhead: np.ndarray  # (N,) true overhead
    c_noise: np.ndarray  # (R, N) compute noise factors
    o_noise: np.ndarray  # (R, N) overhead noise factors
    e_noise: np.ndarray  # (R,) edge noise factors
    down: np.ndarray  # (R, N) worker down at request r
    aspect: list[str]  # (R,) "square" or "4:3"
    probe_spw: np.ndarray
    probe_overhead: np.ndarray


def _make_world(cfg: BenchConfig) -> _World:
    # Why seed by worker count only: both cap settings of one worker count then share the same world.
    rng = np.random.default_rng([cfg.seed, cfg.workers])
    n, r = cfg.workers, cfg.requests
    spw = cfg.base_spw * np.exp(rng.uniform(0.0, math.log(max(cfg.speed_spread, 1.0)), n))
    overhead = rng.uniform(*cfg.overhead_range, n)
    c_noise = np.exp(rng.normal(0.0, cfg.noise, (r, n)))
    o_noise = np.exp(rng.normal(0.0, cfg.noise, (r, n)))
    e_noise = np.exp(rng.normal(0.0, cfg.noise, r))
    down = np.zeros((r, n), dtype=bool)
    down_until = np.full(n, -1.0)
    for i in range(r):
        t = i * cfg.interval_s
        up = down_until <= t
        fail = up & (rng.random(n) < cfg.fail_rate)
        down_until[fail] = t + rng.exponential(cfg.down_mean_s, int(fail.sum()))
        down[i] = down_until > t
    aspect = ["square" if a else "4:3" for a in rng.random(r) < 0.5]
    probe_spw = spw * np.exp(rng.normal(0.0, cfg.probe_noise, n))
    probe_overhead = overhead * np.exp(rng.normal(0.0, cfg.probe_noise, n))
    return _World(spw, overhead, c_noise, o_noise, e_noise, down, aspect, probe_spw, probe_overhead)


def _wid(j: int) -> str:
    return f"w{j:02d}"


@dataclass
class _Outcome:
    makespan: float
    failures: int
    predicted: float
    lb_est: float
    sched_ms: float


def _serve(cfg: BenchConfig, world: _World, i: int, table: PerfTable, policy: Callable[..., Schedule],
           used_at: dict[str, int]) -> _Outcome:
    """Serve request ``i`` with one policy; update the policy's table from what it observed."""
    t0 = i * cfg.interval_s
    ids = content_ids(world.aspect[i])
    n = len(ids)
    cap = max(1, math.ceil(n / cfg.workers)) if cfg.cap is None else cfg.cap
    ests = table.estimates(t0)
    edge = table.edge
    tic = time.perf_counter()
    sched = policy(ids, ests, edge, max_per_worker=cap, neighbours=king_neighbours, adjacency=cfg.adjacency,
                   allow_local=cfg.allow_local, now=t0)
    sched_ms = (time.perf_counter() - tic) * 1e3
    avail = {w: e for w, e in ests.items() if e.available(t0)}
    lb_est = lower_bound(n, avail, cap, edge if cfg.allow_local else None, n_content=n, now=t0)

    def cost(rid: str, k: int) -> tuple[float, float]:
        """Realised (wall, compute) of a k-window request on rid."""
        if rid == EDGE_ID:
            c = k * cfg.edge_spw * world.e_noise[i]
            return c, c
        j = int(rid[1:])
        c = k * world.spw[j] * world.c_noise[i, j]
        return world.overhead[j] * world.o_noise[i, j] + c, c

    def is_down(rid: str) -> bool:
        return rid != EDGE_ID and bool(world.down[i, int(rid[1:])])

    # Pending requests: (rid, window ids, start time, predicted duration)
    pending: list[tuple[str, tuple[int, ...], float, float]] = [
        (w, v, t0, sched.finish[w]) for w, v in sched.assignments.items()]
    busy: dict[str, float] = {}
    if sched.local:
        wall, comp = cost(EDGE_ID, len(sched.local))
        busy[EDGE_ID] = t0 + wall
        table.observe(EDGE_ID, len(sched.local), wall, comp)
    for w in sched.assignments:
        used_at[w] = i
    failed: set[str] = set()
    extra: dict[str, list[int]] = {}
    failures = 0
    end = t0
    guard = 0
    while pending:
        guard += 1
        rid, win, start, pred = pending.pop(0)
        if is_down(rid):
            failures += 1
            detect = start + max(cfg.min_timeout_s, cfg.timeout_factor * pred)
            table.mark_failed(rid, detect)
            failed.add(rid)
            hedge = pick_hedge(win, sched, table.estimates(detect), table.edge, max_per_worker=cap,
                               neighbours=king_neighbours, adjacency=cfg.adjacency, allow_local=cfg.allow_local,
                               exclude=failed, also_held=extra, now=detect) if guard < 50 else {}
            if not hedge:
                # Why: the edge is the last resort (trusted); it always may compute when all else failed.
                hedge = {EDGE_ID: win}
            for tgt, tw in hedge.items():
                extra.setdefault(tgt, []).extend(tw)
                e = table.get(tgt) if tgt != EDGE_ID else table.edge
                pending.append((tgt, tuple(tw), detect, e.predict(len(tw)) if tgt != EDGE_ID
                                else len(tw) * e.seconds_per_window))
            end = max(end, detect)
            continue
        # Re-placements sit behind every original request in `pending`, so a target's own work is known here.
        st = max(start, busy.get(rid, t0))
        wall, comp = cost(rid, len(win))
        busy[rid] = st + wall
        end = max(end, st + wall)
        table.observe(rid, len(win), wall, comp)
    end = max([end] + list(busy.values()))
    return _Outcome(end - t0, failures, sched.makespan, lb_est, sched_ms)


def _oracle_lb(cfg: BenchConfig, world: _World, i: int) -> float:
    """Lower bound on the realised costs of request i over the workers actually up (same constraints)."""
    n = len(content_ids(world.aspect[i]))
    cap = max(1, math.ceil(n / cfg.workers)) if cfg.cap is None else cfg.cap
    real = [PerfEstimate(seconds_per_window=float(world.spw[j] * world.c_noise[i, j]),
                         overhead_s=float(world.overhead[j] * world.o_noise[i, j]), seeded=True)
            for j in range(cfg.workers) if not world.down[i, j]]
    edge = PerfEstimate(seconds_per_window=float(cfg.edge_spw * world.e_noise[i]), is_edge=True, seeded=True)
    return lower_bound(n, real, cap, edge if cfg.allow_local else None, n_content=n, now=0.0)


def _mean_lb(cfg: BenchConfig, world: _World, i: int) -> float:
    """Lower bound on the *expected* (noise-free) costs of request i over the workers up (same constraints)."""
    n = len(content_ids(world.aspect[i]))
    cap = max(1, math.ceil(n / cfg.workers)) if cfg.cap is None else cfg.cap
    mean = [PerfEstimate(seconds_per_window=float(world.spw[j]), overhead_s=float(world.overhead[j]), seeded=True)
            for j in range(cfg.workers) if not world.down[i, j]]
    edge = PerfEstimate(seconds_per_window=cfg.edge_spw, is_edge=True, seeded=True)
    return lower_bound(n, mean, cap, edge if cfg.allow_local else None, n_content=n, now=0.0)


def _reprobe(cfg: BenchConfig, world: _World, i: int, table: PerfTable, used: dict[str, int]) -> None:
    """Background probe (one window) of every up worker idle since the last probe round.

    Why: a worker whose first probe overestimated it is never chosen, so without probes its estimate would
    never be corrected (an exploration problem of any estimate-driven scheduler).
    """
    t = i * cfg.interval_s
    for j in range(cfg.workers):
        w = _wid(j)
        if i - used.get(w, -1) < cfg.reprobe_every or world.down[i, j]:
            continue
        if not table.get(w).available(t):
            continue
        comp = float(world.spw[j] * world.c_noise[i, j])
        table.observe(w, 1, float(world.overhead[j] * world.o_noise[i, j]) + comp, comp)
        used[w] = i


def _new_table(cfg: BenchConfig, world: _World) -> PerfTable:
    table = PerfTable(alpha=cfg.alpha, clock=lambda: 0.0)
    for j in range(cfg.workers):
        table.seed(_wid(j), float(world.probe_spw[j]), float(world.probe_overhead[j]))
    table.seed(EDGE_ID, cfg.edge_spw)
    return table


def _q(a: Sequence[float], q: float) -> float:
    return float(np.quantile(np.asarray(a, dtype=float), q)) if len(a) else float("nan")


def run_config(cfg: BenchConfig, *, progress: bool = True) -> dict[str, Any]:
    """Simulate one configuration; return its result row (plain dict)."""
    world = _make_world(cfg)
    t_sched, t_equal = _new_table(cfg, world), _new_table(cfg, world)
    r_s: list[float] = []
    r_e: list[float] = []
    r_pred: list[float] = []
    ms: list[float] = []
    fail_s = fail_e = 0
    abs_s: list[float] = []
    abs_e: list[float] = []
    abs_lb: list[float] = []
    infeasible = 0
    r_sm: list[float] = []
    r_em: list[float] = []
    used_s: dict[str, int] = {}
    used_e: dict[str, int] = {}
    bar = tqdm(range(cfg.requests), desc=f"N={cfg.workers} cap={cfg.cap_label}", disable=not progress,
               leave=False, file=sys.stderr)
    for i in bar:
        lb = _oracle_lb(cfg, world, i)
        lb_mean = _mean_lb(cfg, world, i)
        if cfg.reprobe_every > 0 and i % cfg.reprobe_every == 0 and i > 0:
            _reprobe(cfg, world, i, t_sched, used_s)
            _reprobe(cfg, world, i, t_equal, used_e)
        try:
            a = _serve(cfg, world, i, t_sched, schedule, used_s)
            b = _serve(cfg, world, i, t_equal, equal_split, used_e)
        except InfeasibleScheduleError:
            infeasible += 1
            continue
        r_s.append(a.makespan / lb)
        r_e.append(b.makespan / lb)
        r_sm.append(a.makespan / lb_mean)
        r_em.append(b.makespan / lb_mean)
        if a.lb_est > 0 and math.isfinite(a.lb_est):
            r_pred.append(a.predicted / a.lb_est)
        ms.append(a.sched_ms)
        fail_s += a.failures > 0
        fail_e += b.failures > 0
        abs_s.append(a.makespan)
        abs_e.append(b.makespan)
        abs_lb.append(lb)
    done = max(1, len(r_s))
    return {
        "workers": cfg.workers,
        "cap": cfg.cap_label,
        "requests": cfg.requests,
        "speed_spread": cfg.speed_spread,
        "noise": cfg.noise,
        "makespan_over_lower_bound": _q(r_s, 0.5),
        "makespan_over_lower_bound_p90": _q(r_s, 0.9),
        "equal_split_over_lower_bound": _q(r_e, 0.5),
        "equal_split_over_lower_bound_p90": _q(r_e, 0.9),
        "makespan_over_mean_lower_bound": _q(r_sm, 0.5),
        "equal_split_over_mean_lower_bound": _q(r_em, 0.5),
        "predicted_over_estimated_lower_bound": _q(r_pred, 0.5),
        "failure_rate": fail_s / done,
        "equal_split_failure_rate": fail_e / done,
        "mean_makespan_s": float(np.mean(abs_s)) if abs_s else float("nan"),
        "mean_equal_split_s": float(np.mean(abs_e)) if abs_e else float("nan"),
        "mean_lower_bound_s": float(np.mean(abs_lb)) if abs_lb else float("nan"),
        "schedule_ms_median": _q(ms, 0.5),
        "schedule_ms_p99": _q(ms, 0.99),
        "infeasible": infeasible,
        "config": {k: v for k, v in asdict(cfg).items()},
    }


def run_bench(workers: Sequence[int] = (16, 32, 64), caps: Sequence[int | None] = (None, 3), *,
              progress: bool = True, **kwargs: Any) -> list[dict[str, Any]]:
    """Run every (workers, cap) configuration; ``kwargs`` go to `BenchConfig`."""
    rows = []
    for n in workers:
        for cap in caps:
            rows.append(run_config(BenchConfig(workers=int(n), cap=cap, **kwargs), progress=progress))
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Plain-text table of the result rows."""
    head = (f"{'workers':>7} {'cap':>4} | {'sched/LB med':>12} {'p90':>6} | {'equal/LB med':>12} {'p90':>6} | "
            f"{'sched/LBmean':>12} {'equal/LBmean':>12} | {'plan/LB(est)':>12} | {'fail rate':>9} | "
            f"{'sched ms':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['workers']:>7} {r['cap']:>4} | {r['makespan_over_lower_bound']:>12.3f} "
            f"{r['makespan_over_lower_bound_p90']:>6.3f} | {r['equal_split_over_lower_bound']:>12.3f} "
            f"{r['equal_split_over_lower_bound_p90']:>6.3f} | {r['makespan_over_mean_lower_bound']:>12.3f} "
            f"{r['equal_split_over_mean_lower_bound']:>12.3f} | {r['predicted_over_estimated_lower_bound']:>12.3f} | "
            f"{r['failure_rate']:>9.3f} | {r['schedule_ms_median']:>8.2f}")
    return "\n".join(lines)
