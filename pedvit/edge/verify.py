"""The edge checks every worker answer before it is used: a hostile or broken worker cannot corrupt a mask.

Checks, cheapest first:

1. shape and dtype: one h' x w' x C' output per window, of the wire dtype, the shape the edge's own stage
   gives for that window size;
2. finite values;
3. plausibility: each window's feature RMS lies within ``NORM_MARGIN`` x of what the edge's own computation of
   a window of that stage gave (the edge computes one reference window per stage and window size, once);
4. optionally (``spot_check`` probability per call): one random window of the answer is recomputed on the
   edge and must match to ``SPOT_TOLERANCE`` (relative max difference; float16 wire rounding is ~1e-3).

A failed check raises :class:`AnswerRejected`; the round runner then treats the worker as failed for the
request: its windows are re-dispatched under the same privacy constraints and the ledger says why.
"""

from __future__ import annotations

import random
import threading

import numpy as np

from .executor import Executor

#: a window's feature RMS may differ this much (either way) from the edge's reference window of the stage
NORM_MARGIN = 20.0
#: largest relative max difference of a spot-checked window against the edge's own result
SPOT_TOLERANCE = 0.02


class AnswerRejected(RuntimeError):
    """A worker's answer failed the edge's checks (the message says which)."""


def _rms(x: np.ndarray) -> np.ndarray:
    """Per-window root mean square of B x ... features (float64)."""
    flat = x.reshape(x.shape[0], -1).astype(np.float64)
    return np.sqrt(np.mean(flat * flat, axis=1))


class AnswerCheck:
    """Checks worker answers against the edge's own stages (`edge`: the engine's in-process executor).

    Args:
        edge: runs the reference windows and the spot checks (float32, on the edge).
        spot_check: probability that a call's answer gets one window recomputed on the edge (0: never).
    """

    def __init__(self, edge: Executor, spot_check: float = 0.0) -> None:
        if not 0.0 <= spot_check <= 1.0:
            raise ValueError(f"spot_check must be a probability in [0, 1], got {spot_check}")
        self.edge, self.spot_check = edge, float(spot_check)
        self._reference: dict[tuple[str, tuple[int, ...]], tuple[tuple[int, ...], float]] = {}
        self._lock = threading.Lock()
        self._random = random.SystemRandom()  # a worker must not predict which answers get checked

    def _reference_of(self, stage: str, batch: np.ndarray, meta: np.ndarray) -> tuple[tuple[int, ...], float]:
        """(output shape of one window, its RMS) from the edge's own run of the batch's first window."""
        key = (stage, tuple(batch.shape[1:]))
        with self._lock:
            known = self._reference.get(key)
        if known is None:
            out = self.edge.run(stage, batch[:1], meta[:1], out_dtype="float32")
            known = (tuple(out.shape[1:]), float(_rms(out)[0]))
            with self._lock:
                self._reference[key] = known
        return known

    def verify(self, stage: str, batch: np.ndarray, meta: np.ndarray, answer: np.ndarray, wire_dtype: str) -> None:
        """Raise `AnswerRejected` unless `answer` is a plausible B x h' x w' x C' result for `batch`."""
        n = batch.shape[0]
        if not isinstance(answer, np.ndarray) or answer.dtype != np.dtype(wire_dtype):
            raise AnswerRejected(f"answer of type {getattr(answer, 'dtype', type(answer))}, expected {wire_dtype}")
        shape, reference_rms = self._reference_of(stage, batch, meta)
        if answer.shape != (n, *shape):
            raise AnswerRejected(f"answer of shape {list(answer.shape)}, expected {[n, *shape]}")
        if not np.isfinite(answer).all():
            raise AnswerRejected("answer holds NaN or infinite values")
        rms = _rms(answer)
        lo, hi = reference_rms / NORM_MARGIN, reference_rms * NORM_MARGIN
        bad = np.flatnonzero((rms < lo) | (rms > hi))
        if bad.size:
            raise AnswerRejected(f"feature RMS {rms[bad[0]]:.3g} of window {int(bad[0])} is outside the plausible "
                                 f"range [{lo:.3g}, {hi:.3g}]")
        if self.spot_check and self._random.random() < self.spot_check:
            i = self._random.randrange(n)
            mine = self.edge.run(stage, batch[i:i + 1], meta[i:i + 1], out_dtype="float32")[0]
            diff = float(np.max(np.abs(answer[i].astype(np.float32) - mine)))
            scale = float(np.max(np.abs(mine))) or 1.0
            if diff > SPOT_TOLERANCE * scale:
                raise AnswerRejected(f"spot check: window {i} differs from the edge's own result by {diff:.3g} "
                                     f"(max {SPOT_TOLERANCE * scale:.3g})")
