"""Feature-leakage check: does anything a worker receives depend on pixels it is not allowed to see?

Pixels are not the only channel: a split plan may send a worker features computed on the edge, and a bug
(a halo too large, a global attention step, a shared normalisation statistic) can mix information from
other windows into them. The test is differential: perturb every pixel **outside** a worker's visibility
mask, recompute everything that worker receives, and compare. If the worker's inputs are a function of its
visible pixels only, nothing changes (max abs diff 0, up to float noise); any change is leakage.

Framework-agnostic: ``f`` may return numpy arrays, torch tensors (converted with ``.detach().cpu()``) or
anything ``np.asarray`` accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

__all__ = ["TensorChange", "LeakageResult", "perturb_outside", "feature_leakage", "to_numpy"]

#: f(image) -> worker -> list of tensors that worker received
ReceivedFn = Callable[[np.ndarray], Mapping[Hashable, Sequence[Any]]]


def to_numpy(x: Any) -> np.ndarray:
    """numpy view/copy of an array-like (numpy, torch tensor, list), as float64 for comparison."""
    if hasattr(x, "detach"):  # torch without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


@dataclass(frozen=True)
class TensorChange:
    """Change of one received tensor under the perturbation.

    Attributes:
        shape: tensor shape.
        max_abs_diff: ``max |a - b|`` (0 = untouched).
        rel_change: ``||a - b||_2 / max(||a||_2, eps)``.
    """

    shape: tuple[int, ...]
    max_abs_diff: float
    rel_change: float


@dataclass(frozen=True)
class LeakageResult:
    """Leakage of one worker over all trials.

    Attributes:
        worker: worker id.
        tensors: per received tensor, the worst change over trials.
        max_abs_diff: worst ``max_abs_diff`` over tensors.
        max_rel_change: worst ``rel_change`` over tensors.
        isolated: ``max_abs_diff <= atol``: the worker's inputs depend only on its visible pixels.
    """

    worker: Hashable
    tensors: tuple[TensorChange, ...]
    max_abs_diff: float
    max_rel_change: float
    isolated: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "worker": str(self.worker),
            "max_abs_diff": self.max_abs_diff,
            "max_rel_change": self.max_rel_change,
            "isolated": self.isolated,
            "tensors": [{"shape": list(t.shape), "max_abs_diff": t.max_abs_diff, "rel_change": t.rel_change}
                        for t in self.tensors],
        }


def perturb_outside(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    mode: str = "noise",
    other: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Replace every pixel outside ``mask`` and keep the inside exactly.

    Args:
        image: ``H x W x C`` (or ``H x W``) uint8 or float array.
        mask: ``H x W`` bool, True = kept.
        mode: ``"noise"`` (uniform random values over the dtype's range: uint8 0..255, float 0..1) or
            ``"photo"`` (``other`` resized to ``H x W``).
        other: the replacement photo for ``mode="photo"``.
        rng: random generator for ``"noise"``.

    Returns:
        a new array of ``image``'s shape and dtype.
    """
    img = np.asarray(image)
    m = np.asarray(mask, dtype=bool)
    if m.shape != img.shape[:2]:
        raise ValueError(f"mask {m.shape} does not match image {img.shape}")
    if mode == "noise":
        rng = rng if rng is not None else np.random.default_rng(0)
        if img.dtype == np.uint8:
            repl = rng.integers(0, 256, size=img.shape, dtype=np.uint8)
        else:
            repl = rng.random(img.shape).astype(img.dtype)
    elif mode == "photo":
        if other is None:
            raise ValueError("mode='photo' needs `other`")
        o = np.asarray(other)
        repl = cv2.resize(o, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
        if repl.shape != img.shape:
            raise ValueError(f"replacement photo {o.shape} incompatible with image {img.shape}")
        repl = repl.astype(img.dtype)
    else:
        raise ValueError(f"mode must be 'noise' or 'photo', got {mode!r}")
    sel = m if img.ndim == 2 else m[:, :, None]
    return np.where(sel, img, repl)


def feature_leakage(
    f: ReceivedFn,
    image: np.ndarray,
    masks: Mapping[Hashable, np.ndarray],
    *,
    mode: str = "noise",
    other: np.ndarray | None = None,
    trials: int = 2,
    seed: int = 0,
    atol: float = 0.0,
) -> dict[Hashable, LeakageResult]:
    """Measure, per worker, how much of what it receives changes when pixels it may not see change.

    Args:
        f: ``f(image) -> {worker: [tensor, ...]}``, everything each worker receives for ``image``
            (e.g. pixel crops and/or edge-computed features). Must be deterministic.
        image: ``H x W x 3`` original image.
        masks: worker -> ``H x W`` bool visibility mask (pixels it is allowed to depend on).
        mode, other: perturbation (see :func:`perturb_outside`); ``"photo"`` runs one trial.
        trials: number of random perturbations (worst case is kept).
        seed: RNG seed.
        atol: tolerance for ``isolated`` (use e.g. 1e-5 for float16/float32 pipelines that are not
            bit-exact; 0 for pure pixel crops).

    Returns:
        worker -> :class:`LeakageResult`.
    """
    rng = np.random.default_rng(seed)
    base = {w: [to_numpy(t) for t in ts] for w, ts in f(image).items()}
    out: dict[Hashable, LeakageResult] = {}
    n_trials = 1 if mode == "photo" else max(1, trials)
    for w, mask in masks.items():
        if w not in base:
            raise KeyError(f"f(image) returned nothing for worker {w!r}")
        worst = [(0.0, 0.0)] * len(base[w])
        for _ in range(n_trials):
            pert = perturb_outside(image, mask, mode=mode, other=other, rng=rng)
            got = [to_numpy(t) for t in f(pert)[w]]
            if len(got) != len(base[w]):
                raise ValueError(f"worker {w!r} received {len(got)} tensors after perturbation, {len(base[w])} before")
            for i, (a, b) in enumerate(zip(base[w], got)):
                if a.shape != b.shape:
                    raise ValueError(f"worker {w!r} tensor {i} changed shape {a.shape} -> {b.shape}")
                d = np.abs(a - b)
                mad = float(d.max()) if d.size else 0.0
                rel = float(np.linalg.norm(d) / max(float(np.linalg.norm(a)), 1e-12)) if d.size else 0.0
                worst[i] = (max(worst[i][0], mad), max(worst[i][1], rel))
        tensors = tuple(TensorChange(tuple(a.shape), m, r) for a, (m, r) in zip(base[w], worst))
        mad = max((t.max_abs_diff for t in tensors), default=0.0)
        rel = max((t.rel_change for t in tensors), default=0.0)
        out[w] = LeakageResult(w, tensors, mad, rel, bool(mad <= atol))
    return out
