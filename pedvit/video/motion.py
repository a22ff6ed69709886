"""Camera motion between consecutive frames (OpenCV phase correlation), accumulated into scene offsets.

The model is a pure translation (a pan). Phase correlation whitens the spectrum, so a small sharp object
that moves across a smooth scene can win the correlation peak over the camera's motion. The estimate is
therefore the median over a grid of tiles (each phase-correlated on its own, with a Hann window against the
tile border): a moving object spoils the tiles it covers, not the median.
"""

from __future__ import annotations

from typing import Iterable

import cv2
import numpy as np

__all__ = ["estimate_shift", "to_gray", "track_offsets"]


def to_gray(frame: np.ndarray) -> np.ndarray:
    """``H x W`` float32 grey levels of an ``H x W x 3`` uint8 RGB (or ``H x W``) frame."""
    if frame.ndim == 3:
        if frame.shape[2] != 3:
            raise ValueError(f"frame must be H x W x 3 or H x W, got shape {frame.shape}")
        frame = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    elif frame.ndim != 2:
        raise ValueError(f"frame must be H x W x 3 or H x W, got shape {frame.shape}")
    return frame.astype(np.float32)


def _phase_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """``(dy, dx, response)`` of the camera between two ``h x w`` float32 tiles (contiguous: cv2 needs it)."""
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    window = cv2.createHanningWindow((a.shape[1], a.shape[0]), cv2.CV_32F)
    (sx, sy), response = cv2.phaseCorrelate(a, b, window)
    # phaseCorrelate returns how far the content moved; the camera moved the opposite way
    return -float(sy), -float(sx), float(response)


def estimate_shift(
    previous: np.ndarray, current: np.ndarray, tiles: int = 3
) -> tuple[float, float, float]:
    """Camera motion ``(dy, dx, response)`` from ``previous`` to ``current`` (``H x W x 3`` uint8 each).

    ``(dy, dx)`` is how far the camera moved in scene pixels: scene point ``p`` seen at frame pixel ``q`` in
    ``previous`` is at ``q - (dy, dx)`` in ``current``. It is the median over ``tiles x tiles`` tiles of
    their phase-correlation shifts (``tiles=1``: the whole frame; a tile must be larger than twice the
    motion). ``response`` (0..1) is the median peak strength; below ~0.05 the estimate is unreliable
    (featureless or cut scene).
    """
    if previous.shape != current.shape:
        raise ValueError(f"frames differ in shape: {previous.shape} vs {current.shape}")
    if isinstance(tiles, bool) or not isinstance(tiles, int) or tiles < 1:
        raise ValueError(f"tiles must be an int >= 1, got {tiles!r}")
    a, b = to_gray(previous), to_gray(current)
    h, w = a.shape
    ys = np.linspace(0, h, tiles + 1).astype(int)
    xs = np.linspace(0, w, tiles + 1).astype(int)
    shifts = [
        _phase_shift(a[y0:y1, x0:x1], b[y0:y1, x0:x1])
        for y0, y1 in zip(ys[:-1], ys[1:])
        for x0, x1 in zip(xs[:-1], xs[1:])
    ]
    dy, dx, response = np.median(np.asarray(shifts), axis=0)
    return float(dy), float(dx), float(response)


def track_offsets(frames: Iterable[np.ndarray]) -> np.ndarray:
    """``T x 2`` float estimated scene offsets ``(dy, dx)`` of each frame, the first frame at ``(0, 0)``.

    Offsets are the running sum of consecutive shifts, so errors accumulate as drift (measured in the
    tests and the video evaluation).
    """
    offsets: list[tuple[float, float]] = []
    previous: np.ndarray | None = None
    for frame in frames:
        if previous is None:
            offsets.append((0.0, 0.0))
        else:
            dy, dx, _ = estimate_shift(previous, frame)
            offsets.append((offsets[-1][0] + dy, offsets[-1][1] + dx))
        previous = frame
    if not offsets:
        raise ValueError("no frames to track")
    return np.asarray(offsets, dtype=np.float64)
