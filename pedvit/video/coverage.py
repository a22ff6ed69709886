"""What each worker has seen of the scene: cumulative coverage maps in scene coordinates.

Each frame is registered on a scene mosaic by its scene offset (estimated by ``motion.track_offsets`` or
ground truth); a window sent to a worker marks its scene pixels in that worker's map. A worker's coverage is
the share of the scene seen so far (the union of every frame's footprint up to now, which the edge knows
online) that the worker has received. The mosaic grows as the camera reveals new scene.

Windows are pedvit's SAM windows (``pedvit.partition.WindowGrid``: the frame resized to 1024 px long side,
224 px windows), mapped back to frame pixels by ``Window.original_box``.
"""

from __future__ import annotations

import numpy as np

from typing import AbstractSet, Mapping, Sequence

from pedvit.partition import Box, WindowGrid

__all__ = ["SceneCoverage", "coverage_violations", "window_frame_boxes"]

_GROW = 256  # mosaic growth step in px (amortises re-allocation while the camera reveals new scene)


def window_frame_boxes(grid: WindowGrid) -> dict[int, Box]:
    """Frame-pixel box ``(y0, x0, y1, x1)`` of each content window of ``grid``."""
    return {w.id: w.original_box for w in grid.windows if w.original_box is not None}


class SceneCoverage:
    """Per-worker cumulative coverage of a scene mosaic.

    Args:
        n_workers: number of workers (maps ``0..n_workers-1``).

    Scene boxes are ``(y0, x0, y1, x1)`` in integer scene pixels; ``scene_box`` rounds a frame box moved by a
    float offset.
    """

    def __init__(self, n_workers: int) -> None:
        if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
            raise ValueError(f"n_workers must be an int >= 1, got {n_workers!r}")
        self.n_workers = n_workers
        self._origin = (0, 0)  # scene coordinate of mosaic pixel [0, 0]
        self._scene = np.zeros((0, 0), dtype=bool)  # pixels of any frame so far
        self._seen = np.zeros((n_workers, 0, 0), dtype=bool)  # n_workers x h x w
        self._scene_count = 0
        self._seen_count = [0] * n_workers

    # ------------------------------------------------------------------ geometry
    @staticmethod
    def scene_box(frame_box: Box, offset: tuple[float, float] | np.ndarray) -> Box:
        """The frame box moved to scene pixels by the frame's ``(dy, dx)`` offset (rounded)."""
        dy, dx = int(round(float(offset[0]))), int(round(float(offset[1])))
        y0, x0, y1, x1 = frame_box
        return (y0 + dy, x0 + dx, y1 + dy, x1 + dx)

    def _ensure(self, box: Box) -> tuple[slice, slice]:
        """Grow the mosaic to hold ``box``; the mosaic slices of the box."""
        y0, x0, y1, x1 = box
        if y0 >= y1 or x0 >= x1:
            raise ValueError(f"empty scene box {box}")
        h, w = self._scene.shape
        if self._scene.size == 0:
            bounds = (y0, x0, y1, x1)
        else:
            cy0, cx0 = self._origin
            cy1, cx1 = cy0 + h, cx0 + w
            # grow only the sides the box crosses, by a margin, so a pan re-allocates rarely
            bounds = (
                y0 - _GROW if y0 < cy0 else cy0,
                x0 - _GROW if x0 < cx0 else cx0,
                y1 + _GROW if y1 > cy1 else cy1,
                x1 + _GROW if x1 > cx1 else cx1,
            )
        if bounds != (*self._origin, self._origin[0] + h, self._origin[1] + w):
            ny0, nx0, ny1, nx1 = bounds
            scene = np.zeros((ny1 - ny0, nx1 - nx0), dtype=bool)
            seen = np.zeros((self.n_workers, ny1 - ny0, nx1 - nx0), dtype=bool)
            if self._scene.size:
                oy, ox = self._origin[0] - ny0, self._origin[1] - nx0
                scene[oy: oy + h, ox: ox + w] = self._scene
                seen[:, oy: oy + h, ox: ox + w] = self._seen
            self._scene, self._seen, self._origin = scene, seen, (ny0, nx0)
        oy, ox = self._origin
        return slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox)

    def _worker(self, worker: int) -> int:
        if isinstance(worker, bool) or not isinstance(worker, (int, np.integer)) or not 0 <= worker < self.n_workers:
            raise ValueError(f"worker must be an int in [0, {self.n_workers}), got {worker!r}")
        return int(worker)

    # ------------------------------------------------------------------ updates
    def add_frame(self, frame_size: tuple[int, int], offset: tuple[float, float] | np.ndarray) -> None:
        """Add a frame's footprint to the scene (call before marking that frame's windows)."""
        ys, xs = self._ensure(self.scene_box((0, 0, int(frame_size[0]), int(frame_size[1])), offset))
        region = self._scene[ys, xs]
        self._scene_count += int(region.size - np.count_nonzero(region))
        region[...] = True

    def new_pixels(self, worker: int, box: Box) -> int:
        """How many scene pixels of ``box`` ``worker`` has not seen yet (pixels outside the scene so far
        do not count)."""
        return self.new_pixels_of(worker, [box])

    def new_pixels_of(self, worker: int, boxes: Sequence[Box]) -> int:
        """How many scene pixels of the union of ``boxes`` ``worker`` has not seen yet."""
        if not boxes:
            return 0
        w = self._worker(worker)
        bounds = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                  max(b[3] for b in boxes))
        ys, xs = self._ensure(bounds)
        union = np.zeros((ys.stop - ys.start, xs.stop - xs.start), dtype=bool)
        for y0, x0, y1, x1 in boxes:
            union[y0 - bounds[0]: y1 - bounds[0], x0 - bounds[1]: x1 - bounds[1]] = True
        return int(np.count_nonzero(union & self._scene[ys, xs] & ~self._seen[w, ys, xs]))

    def mark(self, worker: int, box: Box) -> int:
        """Record that ``worker`` received the scene pixels of ``box``; returns how many it had not seen."""
        w = self._worker(worker)
        ys, xs = self._ensure(box)
        unseen = self._scene[ys, xs] & ~self._seen[w, ys, xs]
        new = int(np.count_nonzero(unseen))
        self._seen[w, ys, xs] |= unseen
        self._seen_count[w] += new
        return new

    # ------------------------------------------------------------------ queries
    @property
    def scene_pixels(self) -> int:
        """Pixels of the scene seen so far (union of all frame footprints)."""
        return self._scene_count

    def seen_pixels(self, worker: int) -> int:
        return self._seen_count[self._worker(worker)]

    def coverage(self, worker: int, extra_pixels: int = 0) -> float:
        """Share of the scene so far that ``worker`` has seen (plus ``extra_pixels`` it would newly see)."""
        if self._scene_count == 0:
            return 0.0
        return (self.seen_pixels(worker) + extra_pixels) / self._scene_count

    def coverages(self) -> list[float]:
        """Coverage of each worker."""
        return [self.coverage(w) for w in range(self.n_workers)]

    def max_worker_scene_coverage(self) -> float:
        """The largest share of the scene that any single worker has seen."""
        return max(self.coverages())

    def seen_map(self, worker: int) -> tuple[np.ndarray, tuple[int, int]]:
        """``(h x w`` bool copy of the worker's map, scene coordinate of its pixel ``[0, 0])``."""
        return self._seen[self._worker(worker)].copy(), self._origin


def coverage_violations(
    frame_size: tuple[int, int],
    offsets: np.ndarray,
    worker_windows: Sequence[Mapping[int, Sequence[int]]],
    n_workers: int,
    cap: float,
    keep_local: Sequence[AbstractSet[int]] | None = None,
    window_tokens: int = 14,
    moved: Sequence[AbstractSet[int]] | None = None,
) -> list[str]:
    """Check a recorded video assignment independently of the policy that made it.

    Replays each frame's ``worker -> window ids`` on a fresh ledger registered with ``offsets``
    (``T x 2``, e.g. ground truth or a re-estimate) and returns one message per problem: a worker's
    coverage above ``cap`` (first frame where it happens), an unknown worker or window id, a window sent to
    two workers (unless ``moved`` lists it for that frame: failed over or hedged, so sent again; every worker
    it reached counts in the coverage), a keep-local window sent. Empty list: the recording keeps the cap.
    ``window_tokens``: the window side the frames were cut with (``WindowGrid``).
    """
    off = np.asarray(offsets, dtype=float)
    if off.ndim != 2 or off.shape[1] != 2 or len(off) != len(worker_windows):
        raise ValueError(f"offsets must be T x 2 with T = {len(worker_windows)} frames, got shape {off.shape}")
    for name, per_frame in (("keep_local", keep_local), ("moved", moved)):
        if per_frame is not None and len(per_frame) != len(worker_windows):
            raise ValueError(f"{name} has {len(per_frame)} entries for {len(worker_windows)} frames")
    boxes = window_frame_boxes(WindowGrid(frame_size, window_tokens=window_tokens))
    ledger = SceneCoverage(n_workers)
    problems: list[str] = []
    over: set[int] = set()
    for t, frame in enumerate(worker_windows):
        ledger.add_frame(frame_size, off[t])
        taken: dict[int, int] = {}
        for w, ids in frame.items():
            if not (isinstance(w, (int, np.integer)) and 0 <= w < n_workers):
                problems.append(f"frame {t}: unknown worker {w!r}")
                continue
            for wid in ids:
                if wid not in boxes:
                    problems.append(f"frame {t}: worker {w} got window {wid!r}, not a content window")
                    continue
                if wid in taken and (moved is None or wid not in moved[t]):
                    problems.append(f"frame {t}: window {wid} sent to workers {taken[wid]} and {w}")
                if keep_local is not None and wid in keep_local[t]:
                    problems.append(f"frame {t}: keep-local window {wid} sent to worker {w}")
                taken[wid] = int(w)
                ledger.mark(int(w), SceneCoverage.scene_box(boxes[wid], off[t]))
        for w, c in enumerate(ledger.coverages()):
            if c > cap and w not in over:
                over.add(w)
                problems.append(f"frame {t}: worker {w} has seen {c:.3f} of the scene, above the cap {cap}")
    return problems
