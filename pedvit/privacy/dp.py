"""Differential-privacy noise on the windows sent to workers (the engine's `outgoing` hook).

`GaussianWindowNoise` applies the Gaussian mechanism to every window tensor before it leaves the edge.

What the guarantee covers (read this before quoting an epsilon):

* Unit of privacy: **one window** as seen by **one worker**. Adjacency is *replace-one-window*: two inputs
  are neighbours when they differ in the content of a single window (any content, up to the clipping bound).
  The release to a worker of that window is (epsilon, delta)-DP with respect to that window's content.
* Clipping: each window is mapped to a vector v and clipped to ``||v||_2 <= clip_norm``; two clipped windows
  differ by at most ``2 * clip_norm`` in L2, so the L2 sensitivity is ``2 * clip_norm`` (the ball's
  diameter; a replaced window can sit anywhere in the ball). Content beyond the clip is not released exactly:
  clipping is part of the mechanism, so the guarantee holds for all contents.
* Pixels (uint8): v = window / 255 - 0.5 (a *fixed*, data-independent centre, so centring leaks nothing). Its
  natural bound is ``0.5 * sqrt(h * w * 3)`` (every pixel at 0 or 255); that is the default ``clip_norm``
  for pixels, so nothing is clipped and the guarantee covers every possible window. A smaller ``clip_norm``
  gives less noise per pixel but shrinks (scales down) high-contrast windows. The noised vector is mapped
  back to uint8 (rescale, round, clip to [0, 255]): post-processing, which keeps the guarantee.
* Float tokens: there is no natural bound, so ``clip_norm`` is required (ValueError otherwise).
* Composition: a window sent in several rounds (vit-exact) composes (epsilons add, basic composition); a
  worker that receives k windows of one image gets k independent releases, each protecting its own window
  (parallel composition over disjoint windows). The guarantee says **nothing** about windows a worker never
  saw (they are protected by the partition, not by DP), nor about what the edge itself or the final output
  reveals, nor about correlations between windows (a window's content may be inferable from neighbours that
  the same worker received).
* Noise scale: ``mechanism="classic"`` is the standard Gaussian mechanism
  ``sigma = sensitivity * sqrt(2 ln(1.25 / delta)) / epsilon``, which is only proven for epsilon < 1;
  ``mechanism="analytic"`` is the analytic Gaussian mechanism (Balle & Wang, ICML 2018), exact for every
  epsilon > 0 (the smallest sigma whose privacy profile meets delta). ``"auto"`` (default) uses classic for
  epsilon < 1 and analytic for epsilon >= 1.
* ``epsilon=None`` or ``math.inf`` means no noise (the hook returns its input unchanged).

The random generator is numpy's PCG64 (not a cryptographic RNG); a seed is for reproducible experiments.
Floating-point attacks on the Gaussian sampler (Mironov 2012-style) are not addressed.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

__all__ = ["GaussianWindowNoise", "classic_sigma", "analytic_sigma", "gaussian_sigma"]


def classic_sigma(sensitivity: float, epsilon: float, delta: float) -> float:
    """Standard Gaussian mechanism: sensitivity * sqrt(2 ln(1.25 / delta)) / epsilon (valid for epsilon < 1)."""
    _check(epsilon, delta)
    return sensitivity * math.sqrt(2.0 * math.log(1.25 / delta)) / epsilon


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _analytic_delta(sigma: float, sensitivity: float, epsilon: float) -> float:
    """delta achieved by Gaussian noise sigma (Balle & Wang 2018, Theorem 8)."""
    a = sensitivity / (2.0 * sigma)
    b = epsilon * sigma / sensitivity
    # e^eps * Phi(-a - b) computed in log space so large epsilon does not overflow.
    tail = _phi(-a - b)
    second = math.exp(epsilon + math.log(tail)) if tail > 0 else 0.0
    return _phi(a - b) - second


def analytic_sigma(sensitivity: float, epsilon: float, delta: float, *, tol: float = 1e-10) -> float:
    """Smallest sigma with delta(sigma) <= delta for the Gaussian mechanism (analytic, any epsilon > 0)."""
    _check(epsilon, delta)
    lo, hi = 1e-12 * sensitivity, sensitivity
    while _analytic_delta(hi, sensitivity, epsilon) > delta:
        hi *= 2.0
    for _ in range(200):  # delta(sigma) is decreasing in sigma: bisect
        mid = 0.5 * (lo + hi)
        if _analytic_delta(mid, sensitivity, epsilon) > delta:
            lo = mid
        else:
            hi = mid
        if hi - lo <= tol * hi:
            break
    return hi


def gaussian_sigma(sensitivity: float, epsilon: float, delta: float, mechanism: str = "auto") -> float:
    """Noise standard deviation for `mechanism` in ("auto", "classic", "analytic")."""
    if mechanism == "auto":
        mechanism = "classic" if epsilon < 1.0 else "analytic"
    if mechanism == "classic":
        if epsilon >= 1.0:
            raise ValueError("the classic Gaussian mechanism is only proven for epsilon < 1; use 'analytic'")
        return classic_sigma(sensitivity, epsilon, delta)
    if mechanism == "analytic":
        return analytic_sigma(sensitivity, epsilon, delta)
    raise ValueError(f"mechanism must be 'auto', 'classic' or 'analytic', got {mechanism!r}")


def _check(epsilon: float, delta: float) -> None:
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon must be finite and > 0, got {epsilon}")
    if not (0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta}")


class GaussianWindowNoise:
    """Gaussian mechanism per window; use as ``SplitEngine(..., outgoing=GaussianWindowNoise(...))``.

    Args:
        epsilon: privacy parameter per window release; None or inf disables the noise.
        delta: failure probability, in (0, 1).
        clip_norm: L2 radius of the clipping ball (pixels: on window / 255 - 0.5; default the natural bound
            0.5 * sqrt(h * w * 3)). Required for float tensors.
        seed: seed of the noise generator (None: fresh OS entropy).
        mechanism: "auto", "classic" or "analytic" (see the module docstring).

    Call: ``(stage, window_id, array) -> array`` with the same shape and dtype; uint8 h x w x 3 pixels or
    float h x w x C tokens.
    """

    def __init__(self, epsilon: float | None, delta: float = 1e-5, clip_norm: float | None = None,
                 seed: int | None = None, mechanism: str = "auto") -> None:
        self.epsilon = None if epsilon is None or math.isinf(epsilon) else float(epsilon)
        self.delta = float(delta)
        if self.epsilon is not None:
            _check(self.epsilon, self.delta)
            gaussian_sigma(1.0, self.epsilon, self.delta, mechanism)  # validates the mechanism choice early
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0, got {clip_norm}")
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.mechanism = mechanism
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()  # the engine fans out to workers from several threads

    @property
    def enabled(self) -> bool:
        return self.epsilon is not None

    def clip_for(self, array: np.ndarray) -> float:
        """The clipping radius used for this window (pixels default to their natural bound)."""
        if self.clip_norm is not None:
            return self.clip_norm
        if array.dtype == np.uint8:
            return 0.5 * math.sqrt(array.size)
        raise ValueError("float windows have no natural norm bound: give GaussianWindowNoise a clip_norm")

    def sigma_for(self, array: np.ndarray) -> float:
        """Noise std (in the units of the clipped vector: pixel / 255 for uint8) for this window; 0 if off."""
        if self.epsilon is None:
            return 0.0
        return gaussian_sigma(2.0 * self.clip_for(array), self.epsilon, self.delta, self.mechanism)

    def __call__(self, stage: str, window_id: int, array: np.ndarray) -> np.ndarray:
        if self.epsilon is None:
            return array
        pixels = array.dtype == np.uint8
        v = array.astype(np.float64) / 255.0 - 0.5 if pixels else array.astype(np.float64)
        clip = self.clip_for(array)
        norm = float(np.linalg.norm(v))
        if norm > clip:
            v = v * (clip / norm)
        sigma = self.sigma_for(array)
        with self._lock:
            noise = self._rng.normal(0.0, sigma, size=v.shape)
        v = v + noise
        if pixels:
            return np.clip(np.rint((v + 0.5) * 255.0), 0, 255).astype(np.uint8)
        return v.astype(array.dtype)

    def params(self) -> dict[str, Any]:
        """JSON-able description for audit records (sigma depends on the window shape for pixels)."""
        mech = self.mechanism
        if mech == "auto" and self.epsilon is not None:
            mech = "classic" if self.epsilon < 1.0 else "analytic"
        return {
            "epsilon": self.epsilon,
            "delta": self.delta if self.epsilon is not None else None,
            "clip_norm": self.clip_norm if self.clip_norm is not None else "natural (pixels: 0.5*sqrt(h*w*3))",
            "mechanism": mech if self.epsilon is not None else "none",
            "sensitivity": "2 * clip_norm (replace-one-window, L2)",
            "adjacency": "replace-one-window, per worker",
            "seeded": self.seed is not None,
        }
