"""Bootstrap confidence intervals of the accuracy evaluation (`pedvit.eval.accuracy`): GT retention, the
paired retention gain of a fusion, and prompt agreement (photos resampled as clusters)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bootstrap_ratio_ci(numerators: np.ndarray, denominators: np.ndarray, level: float, resamples: int,
                        seed: int) -> tuple[float, float]:
    """Percentile interval of sum(numerators[i]) / sum(denominators[i]) over units i resampled with replacement."""
    idx = np.random.default_rng(seed).integers(0, numerators.size, size=(resamples, numerators.size))
    ratios = numerators[idx].sum(axis=1) / np.maximum(denominators[idx].sum(axis=1), 1e-12)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return float(low), float(high)


def retention_ci(split_ious: Sequence[float], mono_ious: Sequence[float], *, level: float = 0.95,
                 resamples: int = 5000, seed: int = 0) -> tuple[float, float]:
    """Paired bootstrap interval of mean(split) / mean(mono) over instances (both lists in instance order).

    With few images per dataset (29 VOC instances in 4 photos, 8 ARC instances in one) these intervals are
    wide, which is why the report prints them. Instances of one photo share its embedding, so the interval
    is, if anything, too narrow."""
    a, b = np.asarray(split_ious, dtype=np.float64), np.asarray(mono_ious, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("need two equally long, non-empty IoU lists")
    return bootstrap_ratio_ci(a, b, level, resamples, seed)


def retention_gain_ci(with_ious: Sequence[float], without_ious: Sequence[float], mono_ious: Sequence[float], *,
                      level: float = 0.95, resamples: int = 5000, seed: int = 0) -> tuple[float, float, float]:
    """Retention difference (with - without) / mono of two settings on the same instances, with its paired
    bootstrap interval (instances resampled together in all three lists): (gain, low, high), as fractions."""
    a, b, m = (np.asarray(v, dtype=np.float64) for v in (with_ious, without_ious, mono_ious))
    if not (a.shape == b.shape == m.shape) or a.size == 0:
        raise ValueError("need three equally long, non-empty IoU lists")
    low, high = bootstrap_ratio_ci(a - b, m, level, resamples, seed)
    return float((a - b).sum() / m.sum()), low, high


def agreement_ci(ious_per_photo: Sequence[Sequence[float]], *, level: float = 0.95, resamples: int = 5000,
                 seed: int = 0) -> tuple[float, float]:
    """Cluster-bootstrap interval of the mean prompt IoU: photos are resampled, each with all its prompts
    (prompts on one photo share its embedding, so they are not independent)."""
    groups = [g for g in ious_per_photo if len(g)]
    if not groups:
        raise ValueError("need at least one photo with prompts")
    sums = np.array([float(np.sum(g)) for g in groups])
    counts = np.array([len(g) for g in groups], dtype=np.float64)
    return bootstrap_ratio_ci(sums, counts, level, resamples, seed)
