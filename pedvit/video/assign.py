"""Temporal assignment policies: which worker gets which window of each frame of a video.

* ``NaivePolicy``: pedvit's single-image ``assign(grid, n, scheme)`` re-run on every frame. Each frame on its
  own is well spread, but as the camera moves every worker sweeps the whole scene.
* ``StickyPolicy``: the scene is tiled into square regions of ``region_px`` scene pixels, each owned by one
  worker (``(col + stride * row) % n_workers`` with ``stride = n_workers // 2``: regions sharing a side have
  different owners, and with 4 or more workers regions sharing a corner too); a window
  goes to the owner of the region holding its centre's scene position, so a worker keeps receiving the same
  scene regions as the camera moves. A worker takes at most pedvit's per-image max share of a frame's
  windows; a window over that goes to the worker that has already seen most of it.
  With ``coverage_cap=F``, a window that would push its worker's scene coverage past ``F`` goes to the
  worker within the cap that has already seen most of it, else stays on the edge. The policy's ledger
  registers frames with *estimated* motion, so it books each window grown by ``margin_px`` on every side:
  what a worker really saw stays inside what was booked while the registration drift is under the margin.
  With ``spill_px`` the policy is *confined*: a window goes only to its owner, and only when it reaches at
  most ``spill_px`` past the owner's region, so a cap is spent on whole regions rather than border strips.

Keep-local windows (per frame, e.g. faces or text) never go to a worker under any policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import AbstractSet, Protocol, Sequence

import numpy as np

from pedvit.partition import Constraints, WindowGrid, assign
from pedvit.partition.constraints import max_share, share_cap

from .coverage import SceneCoverage, window_frame_boxes

__all__ = ["FrameAssignment", "NaivePolicy", "StickyPolicy", "TemporalPolicy", "ReplayResult", "replay"]


@dataclass(frozen=True)
class FrameAssignment:
    """One frame's assignment.

    Attributes:
        worker_windows: worker -> sorted window ids it computes (every worker present, possibly empty).
        local: content windows the edge computes (keep-local ones and those the policy held back), sorted.
    """

    worker_windows: dict[int, tuple[int, ...]]
    local: tuple[int, ...]


class TemporalPolicy(Protocol):
    """Assigns one frame's windows given what each worker has seen so far.

    ``ledger`` is the policy's view of coverage (frames registered with *estimated* motion); the frame's
    footprint is already added. The policy marks each window it sends in ``ledger``.
    """

    n_workers: int

    def assign_frame(
        self,
        frame_index: int,
        grid: WindowGrid,
        offset: np.ndarray,
        keep_local: AbstractSet[int],
        ledger: SceneCoverage,
    ) -> FrameAssignment: ...


def _check_workers(n_workers: int) -> int:
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise ValueError(f"n_workers must be an int >= 1, got {n_workers!r}")
    return n_workers


class NaivePolicy:
    """Per-frame assignment with pedvit's ``assign`` (``scheme`` "random" or "interleaved")."""

    def __init__(self, n_workers: int, scheme: str = "random", seed: int = 0) -> None:
        if scheme not in ("random", "interleaved"):
            raise ValueError(f"naive scheme must be 'random' or 'interleaved', got {scheme!r}")
        self.n_workers = _check_workers(n_workers)
        self.scheme = scheme
        self.seed = seed

    def assign_frame(
        self,
        frame_index: int,
        grid: WindowGrid,
        offset: np.ndarray,
        keep_local: AbstractSet[int],
        ledger: SceneCoverage,
    ) -> FrameAssignment:
        a = assign(grid, self.n_workers, self.scheme,
                   constraints=Constraints(keep_local=frozenset(keep_local)), seed=self.seed + frame_index)
        boxes = window_frame_boxes(grid)
        for w, ids in a.worker_windows.items():
            for wid in ids:
                ledger.mark(w, SceneCoverage.scene_box(boxes[wid], offset))
        return FrameAssignment(dict(a.worker_windows), tuple(sorted(a.local)))


class StickyPolicy:
    """Windows go to the owner of their centre's scene region; optional per-worker coverage cap.

    Args:
        n_workers: number of workers.
        region_px: side of a scene region in scene pixels (the unit of stickiness).
        coverage_cap: most share of the scene (0..1] one worker may see; None: no cap.
        max_windows_per_worker: most windows of one frame a worker may take; None: pedvit's per-image max
            share (``ceil(n_assignable / n_workers)``). Never more than all content windows but one.
        margin_px: scene pixels each sent window is grown by in the policy's ledger (registration error).
        spill_px: None, or confine each worker to its own regions: a window (grown by the margin) may reach
            at most ``spill_px`` outside its owner's region and never goes to another worker; windows that
            reach further stay on the edge. Spends a cap on whole regions instead of on border strips.
    """

    def __init__(
        self,
        n_workers: int,
        region_px: int = 280,
        coverage_cap: float | None = None,
        max_windows_per_worker: int | None = None,
        margin_px: int = 8,
        spill_px: int | None = None,
    ) -> None:
        self.n_workers = _check_workers(n_workers)
        if isinstance(margin_px, bool) or not isinstance(margin_px, int) or margin_px < 0:
            raise ValueError(f"margin_px must be an int >= 0, got {margin_px!r}")
        self.margin_px = margin_px
        if spill_px is not None and (isinstance(spill_px, bool) or not isinstance(spill_px, int) or spill_px < 0):
            raise ValueError(f"spill_px must be an int >= 0 or None, got {spill_px!r}")
        self.spill_px = spill_px
        m = max_windows_per_worker
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ValueError(f"max_windows_per_worker must be an int >= 1 or None, got {m!r}")
        self.max_windows_per_worker = m
        if isinstance(region_px, bool) or not isinstance(region_px, int) or region_px < 1:
            raise ValueError(f"region_px must be an int >= 1, got {region_px!r}")
        if coverage_cap is not None and not 0 < coverage_cap <= 1:
            raise ValueError(f"coverage_cap must be in (0, 1], got {coverage_cap!r}")
        self.region_px = region_px
        self.coverage_cap = coverage_cap
        self._stride = max(1, n_workers // 2)  # rows shift the owner pattern (see the module docstring)

    def owner(self, scene_y: float, scene_x: float) -> int:
        """The worker owning the scene region that holds scene point ``(y, x)``."""
        row, col = math.floor(scene_y / self.region_px), math.floor(scene_x / self.region_px)
        return (col + self._stride * row) % self.n_workers

    def assign_frame(
        self,
        frame_index: int,
        grid: WindowGrid,
        offset: np.ndarray,
        keep_local: AbstractSet[int],
        ledger: SceneCoverage,
    ) -> FrameAssignment:
        boxes = window_frame_boxes(grid)
        keep = sorted(set(boxes) & set(keep_local))
        send = [wid for wid in sorted(boxes) if wid not in keep_local]
        # pedvit's per-image rule: at most the max share per worker, never every content window
        per_image = Constraints(keep_local=frozenset(keep), max_windows_per_worker=self.max_windows_per_worker)
        limit = share_cap(max_share(grid, self.n_workers, per_image), len(boxes))
        load = [0] * self.n_workers
        out: dict[int, list[int]] = {w: [] for w in range(self.n_workers)}
        local = list(keep)
        for wid in send:
            y0, x0, y1, x1 = SceneCoverage.scene_box(boxes[wid], offset)
            owner = self.owner((y0 + y1) / 2, (x0 + x1) / 2)
            m = self.margin_px
            box = (y0 - m, x0 - m, y1 + m, x1 + m)
            confined = self.spill_px is not None
            if confined and not self._inside_own_region(box):
                local.append(wid)
                continue
            chosen = owner if load[owner] < limit and self._within_cap(ledger, owner, box) else None
            if chosen is None and not confined:
                chosen = self._fallback(ledger, box, load, limit)
            if chosen is None:
                local.append(wid)
                continue
            ledger.mark(chosen, box)
            load[chosen] += 1
            out[chosen].append(wid)
        return FrameAssignment({w: tuple(v) for w, v in out.items()}, tuple(sorted(local)))

    def _inside_own_region(self, box: tuple[int, int, int, int]) -> bool:
        """Does ``box`` shrunk by ``spill_px`` lie in the region that holds its centre?

        Per axis: a box no longer than ``2 * spill_px`` reaches at most ``spill_px`` past its centre's region.
        """
        spill, r = self.spill_px or 0, self.region_px
        for lo, hi in ((box[0] + spill, box[2] - spill - 1), (box[1] + spill, box[3] - spill - 1)):
            if lo <= hi and math.floor(lo / r) != math.floor(hi / r):
                return False
        return True

    def _within_cap(self, ledger: SceneCoverage, worker: int, box: tuple[int, int, int, int]) -> bool:
        if self.coverage_cap is None:
            return True
        return ledger.coverage(worker, ledger.new_pixels(worker, box)) <= self.coverage_cap

    def _fallback(
        self, ledger: SceneCoverage, box: tuple[int, int, int, int], load: Sequence[int], limit: int
    ) -> int | None:
        """The worker with room and within its cap that has already seen most of ``box``, or None."""
        best: tuple[int, int, int] | None = None
        for w in range(self.n_workers):
            if load[w] >= limit:
                continue
            new = ledger.new_pixels(w, box)
            if self.coverage_cap is not None and ledger.coverage(w, new) > self.coverage_cap:
                continue
            key = (new, load[w], w)
            if best is None or key < best:
                best = key
        return None if best is None else best[2]


@dataclass(frozen=True)
class ReplayResult:
    """Coverage over a replayed clip.

    Attributes:
        coverage: ``T x n_workers`` cumulative scene coverage after each frame, measured with the
            ground-truth registration.
        policy_coverage: the same as the policy saw it (estimated registration).
        local_per_frame: ``T`` content windows kept on the edge per frame.
        sent_per_frame: ``T`` windows sent to workers per frame.
        assignments: each frame's assignment.
        ledger: the ground-truth coverage ledger at the end (per-worker seen maps).
    """

    coverage: np.ndarray
    policy_coverage: np.ndarray
    local_per_frame: np.ndarray
    sent_per_frame: np.ndarray
    assignments: tuple[FrameAssignment, ...]
    ledger: SceneCoverage


def replay(
    policy: TemporalPolicy,
    frame_size: tuple[int, int],
    estimated_offsets: np.ndarray,
    true_offsets: np.ndarray,
    keep_local: Sequence[AbstractSet[int]] | None = None,
) -> ReplayResult:
    """Run ``policy`` over a clip's frames (no pixels needed: only sizes, offsets and keep-local windows).

    Args:
        policy: the temporal policy.
        frame_size: ``(H, W)`` of every frame.
        estimated_offsets: ``T x 2`` scene offsets the policy registers frames with.
        true_offsets: ``T x 2`` ground-truth offsets, used to measure what workers really saw.
        keep_local: per frame, window ids that never leave the edge (None: none).
    """
    est, true = np.asarray(estimated_offsets, float), np.asarray(true_offsets, float)
    if est.ndim != 2 or est.shape[1] != 2 or est.shape != true.shape or len(est) == 0:
        raise ValueError(f"offsets must be two equal T x 2 arrays with T >= 1, got {est.shape} and {true.shape}")
    if keep_local is not None and len(keep_local) != len(est):
        raise ValueError(f"keep_local has {len(keep_local)} entries for {len(est)} frames")
    grid = WindowGrid(frame_size)
    boxes = window_frame_boxes(grid)
    n = policy.n_workers
    policy_ledger, true_ledger = SceneCoverage(n), SceneCoverage(n)
    coverage = np.zeros((len(est), n))
    policy_coverage = np.zeros((len(est), n))
    local = np.zeros(len(est), dtype=int)
    sent = np.zeros(len(est), dtype=int)
    assignments = []
    for t in range(len(est)):
        policy_ledger.add_frame(frame_size, est[t])
        true_ledger.add_frame(frame_size, true[t])
        a = policy.assign_frame(t, grid, est[t], keep_local[t] if keep_local is not None else frozenset(),
                                policy_ledger)
        for w, ids in a.worker_windows.items():
            for wid in ids:
                true_ledger.mark(w, SceneCoverage.scene_box(boxes[wid], true[t]))
        coverage[t] = true_ledger.coverages()
        policy_coverage[t] = policy_ledger.coverages()
        local[t] = len(a.local)
        sent[t] = sum(len(v) for v in a.worker_windows.values())
        assignments.append(a)
    return ReplayResult(coverage, policy_coverage, local, sent, tuple(assignments), true_ledger)
