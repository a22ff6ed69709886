#!/usr/bin/env python
"""Per-instance GT IoUs of one `pedvit eval accuracy --json` file: where the split setting loses against the
monolithic model, and whether object size or seams explain it.

    python scripts/gt_per_instance.py accuracy.json [--setting "tinyvit-isolated,0,auto"] [--window-tokens 28]

Prints one line per GT instance (dataset, index, class, mask area, seams crossing its box, share of its mask
within 2 tokens (32 px at 1024) of a window seam of the run's window size, monolithic / setting IoU), then for the VOC instances how
much of the total IoU loss the 5 worst carry and the correlations of the loss with size and seam share.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from pedvit.data import gt_instances
from pedvit.eval.accuracy import plan_label
from pedvit.plans.plans import make_plan

CANVAS_PX = 1024  # SAM's input side


def seam_geometry(mask: np.ndarray, box: tuple[int, int, int, int], window_px: int) -> tuple[int, float]:
    """(seam lines crossing the box, share of mask pixels within 32 px of a seam), at SAM's 1024 px scale."""
    scale = CANVAS_PX / max(mask.shape)
    ys, xs = np.nonzero(mask)
    to_seam = lambda v: np.abs(((v * scale + window_px / 2) % window_px) - window_px / 2)  # noqa: E731
    near = float((np.minimum(to_seam(ys), to_seam(xs)) < 32).mean())
    x0, y0, x1, y1 = (v * scale for v in box)
    lines = range(window_px, CANVAS_PX, window_px)
    return sum(x0 < k < x1 for k in lines) + sum(y0 < k < y1 for k in lines), near


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", help="file written by pedvit eval accuracy --json")
    parser.add_argument("--setting", default="tinyvit-isolated,0,auto", help="plan,halo,fusion of the row to inspect")
    parser.add_argument("--window-tokens", type=int, default=14,
                        help="window side of that run (eval accuracy --window-tokens; default 14 = 224 px)")
    args = parser.parse_args()
    with open(args.json) as f:
        rows = json.load(f)["rows"]
    plan, halo, fusion = args.setting.split(",")
    label = plan_label(make_plan(plan, window_tokens=args.window_tokens))  # the plan column eval accuracy wrote
    mono = next(r for r in rows if r["plan"] == "monolithic")
    chosen = [r for r in rows if r["plan"] == label and str(r["halo"]) == halo and r["fusion"] == fusion]
    if not chosen or "gt_ious" not in chosen[0]:
        sys.exit(f"no row {args.setting} ({16 * args.window_tokens} px windows) with per-instance IoUs in {args.json}; "
                 "a run with another window size needs --window-tokens")
    row = chosen[0]
    print("dataset      idx class              area seams near_seam  mono  split   diff")
    voc = []
    for dataset, ious in row["gt_ious"].items():
        for inst, a, m in zip(gt_instances(dataset), ious, mono["gt_ious"][dataset]):  # type: ignore[arg-type]
            seams, near = seam_geometry(inst.mask, inst.box, 16 * args.window_tokens)
            print(f"{dataset:<12} {inst.index:3d} {inst.class_name[:16]:<16} {inst.area:7d} {seams:5d} {near:9.2f} "
                  f"{m:5.3f} {a:6.3f} {a - m:+6.3f}")
            if dataset.startswith("voc"):
                voc.append((inst.area, near, m - a))
    if voc:
        area, near, loss = (np.array(v, dtype=np.float64) for v in zip(*voc))
        worst = np.sort(loss)[::-1][:5].sum() / loss.sum()
        print(f"VOC: {len(loss)} instances, total IoU loss {loss.sum():.3f}; the 5 worst carry {worst:.0%} of it; "
              f"correlation of the loss with -log(area) {np.corrcoef(loss, -np.log(area))[0, 1]:.2f}, "
              f"with the near-seam share {np.corrcoef(loss, near)[0, 1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
