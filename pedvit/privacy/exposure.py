"""How much of an image a worker (or a coalition of colluding workers) has seen.

All functions take plain **visibility masks**: ``H x W`` bool arrays in original-image pixels, True where
the worker received the pixel (e.g. ``WindowGrid.original_mask(worker_windows, halo_px)``). A coalition of
colluding workers sees the union of its members' masks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

__all__ = [
    "Exposure",
    "view_exposure",
    "union_mask",
    "worst_case_coalition",
    "EXACT_COALITION_LIMIT",
]

#: worst_case_coalition enumerates all k-subsets while there are at most this many; greedy beyond.
EXACT_COALITION_LIMIT = 256


@dataclass(frozen=True)
class Exposure:
    """Exposure of one view.

    Attributes:
        seen_px: number of visible pixels.
        total_px: ``H * W``.
        fraction: ``seen_px / total_px``.
        content_fraction: visible share of the content area (``content`` mask; the whole image by default,
            so it equals ``fraction`` for original-space masks, which hold no padding).
        largest_region_px: pixels of the largest 8-connected visible region (a contiguous patch is what an
            observer can interpret; scattered windows leak less context).
        largest_region_fraction: ``largest_region_px / total_px``.
        n_regions: number of 8-connected visible regions.
        bbox_coverage: area of the bounding box of all visible pixels / ``total_px`` (spatial spread).
        largest_region_bbox_coverage: area of the bounding box of the largest region / ``total_px``.
    """

    seen_px: int
    total_px: int
    fraction: float
    content_fraction: float
    largest_region_px: int
    largest_region_fraction: float
    n_regions: int
    bbox_coverage: float
    largest_region_bbox_coverage: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def _check_mask(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"visibility mask must be H x W, got shape {m.shape}")
    return m.astype(bool, copy=False)


def view_exposure(mask: np.ndarray, content: np.ndarray | None = None) -> Exposure:
    """Exposure metrics of one visibility mask.

    Args:
        mask: ``H x W`` bool, True = pixel seen.
        content: optional ``H x W`` bool of non-padding pixels (for masks in padded input space);
            default: every pixel is content.
    """
    m = _check_mask(mask)
    h, w = m.shape
    total = h * w
    seen = int(m.sum())
    if content is None:
        content_fraction = seen / total
    else:
        c = _check_mask(content)
        if c.shape != m.shape:
            raise ValueError("content mask shape differs from visibility mask")
        n_content = int(c.sum())
        content_fraction = float((m & c).sum()) / n_content if n_content else 0.0
    if seen == 0:
        return Exposure(0, total, 0.0, content_fraction, 0, 0.0, 0, 0.0, 0.0)
    n_labels, _labels, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
    stats = stats[1:]  # label 0 is the unseen background
    big = int(np.argmax(stats[:, cv2.CC_STAT_AREA]))
    largest = int(stats[big, cv2.CC_STAT_AREA])
    big_bbox = int(stats[big, cv2.CC_STAT_WIDTH]) * int(stats[big, cv2.CC_STAT_HEIGHT])
    ys = np.flatnonzero(m.any(axis=1))
    xs = np.flatnonzero(m.any(axis=0))
    bbox = (ys[-1] - ys[0] + 1) * (xs[-1] - xs[0] + 1)
    return Exposure(
        seen_px=seen,
        total_px=total,
        fraction=seen / total,
        content_fraction=content_fraction,
        largest_region_px=largest,
        largest_region_fraction=largest / total,
        n_regions=n_labels - 1,
        bbox_coverage=float(bbox) / total,
        largest_region_bbox_coverage=big_bbox / total,
    )


def union_mask(views: Mapping[Any, np.ndarray], members: Sequence[Any]) -> np.ndarray:
    """``H x W`` bool union of the views of ``members`` (what a coalition jointly saw)."""
    if not members:
        raise ValueError("a coalition needs at least one member")
    out = _check_mask(views[members[0]]).copy()
    for k in members[1:]:
        out |= _check_mask(views[k])
    return out


def worst_case_coalition(
    views: Mapping[Any, np.ndarray], k: int, *, exact_limit: int = EXACT_COALITION_LIMIT
) -> tuple[tuple[Any, ...], np.ndarray, str]:
    """The ``k`` workers whose union of views covers the most pixels (the attacker's best coalition).

    Exact (all ``C(n, k)`` subsets) while ``C(n, k) <= exact_limit``, otherwise greedy (start from the
    largest view, repeatedly add the view adding most new pixels; greedy max-coverage is within
    ``1 - 1/e`` of optimal). Ties break by worker order in ``views``.

    Returns:
        ``(members, union H x W bool, method)`` with method ``"exact"`` or ``"greedy"``.
    """
    keys = list(views)
    n = len(keys)
    if not 1 <= k <= n:
        raise ValueError(f"k={k} colluders out of range for {n} workers")
    masks = {key: _check_mask(views[key]) for key in keys}
    if math.comb(n, k) <= exact_limit:
        # pack bits so each union count is cheap even for many subsets of 1024 x 1024 masks
        packed = {key: np.packbits(masks[key].ravel()) for key in keys}
        best: tuple[int, tuple[Any, ...]] = (-1, ())
        for combo in itertools.combinations(keys, k):
            acc = packed[combo[0]].copy()
            for key in combo[1:]:
                acc |= packed[key]
            count = int(np.unpackbits(acc).sum())
            if count > best[0]:
                best = (count, combo)
        return best[1], union_mask(masks, best[1]), "exact"
    chosen: list[Any] = []
    acc = np.zeros_like(next(iter(masks.values())))
    for _ in range(k):
        gains = [(int((masks[key] & ~acc).sum()), -i, key) for i, key in enumerate(keys) if key not in chosen]
        _, _, pick = max(gains, key=lambda t: (t[0], t[1]))
        chosen.append(pick)
        acc |= masks[pick]
    return tuple(chosen), acc, "greedy"
