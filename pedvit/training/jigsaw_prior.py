"""Fit the jigsaw attacker's position prior (:mod:`pedvit.privacy.jigsaw`) on the training-only photos.

    python -m pedvit.training.jigsaw_prior --photos /tmp/pedvit_extra_photos

A ridge regression from a piece's statistics (:func:`pedvit.privacy.jigsaw.piece_features`) to its
normalised centre (y, x), over every content window of every training photo at the evaluation's 256 px
working size (and its mirror image). Seconds on a CPU; writes ``pedvit/privacy/weights/jigsaw_prior.json``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

from pedvit.partition import WindowGrid
from pedvit.privacy.jigsaw import PRIOR_WEIGHTS, piece_features, slots_for
from pedvit.training.inpainter import load_photos


def samples(photos: list[tuple[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Features (+ bias) and normalised centres of every window of every photo and its mirror."""
    xs, ys = [], []
    for _, img in photos:
        for image in (img, np.ascontiguousarray(img[:, ::-1])):
            h, w = image.shape[:2]
            s = 1024 / max(h, w)
            grid = WindowGrid((round(h * s), round(w * s)))
            for slot in slots_for(grid, (h, w)):
                y0, x0, y1, x1 = slot.box
                xs.append(np.append(piece_features(image[y0:y1, x0:x1]), 1.0))
                ys.append(((y0 + y1) / 2 / h, (x0 + x1) / 2 / w))
    return np.array(xs), np.array(ys)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pedvit.training.jigsaw_prior", description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", type=pathlib.Path, required=True)
    p.add_argument("--ridge", type=float, default=1e-2)
    p.add_argument("--out", type=pathlib.Path, default=PRIOR_WEIGHTS)
    args = p.parse_args(argv)
    photos = load_photos(args.photos)
    x, y = samples(photos)
    reg = args.ridge * np.eye(x.shape[1])
    reg[-1, -1] = 0.0  # the bias is not shrunk
    weights = np.linalg.solve(x.T @ x + reg, x.T @ y)
    residual = y - x @ weights
    baseline = y - y.mean(0)
    meta = {
        "command": "python -m pedvit.training.jigsaw_prior " + " ".join(sys.argv[1:] if argv is None else argv),
        "photos": [n for n, _ in photos], "samples": int(len(x)), "ridge": args.ridge,
        "weights": weights.tolist(), "residual_var": float((residual ** 2).mean()),
        "r2": float(1 - (residual ** 2).sum() / (baseline ** 2).sum()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(meta, indent=1) + "\n")
    print(f"[jigsaw prior] {len(x)} windows of {len(photos)} photos: R^2 {meta['r2']:.3f}, "
          f"residual variance {meta['residual_var']:.4f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
