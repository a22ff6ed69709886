#!/usr/bin/env python
"""Defence levers at N = 4 with hidden positions, single workers: one line per lever, the views that succeed.

    python scripts/privacy_levers.py [--seeds 4] [--max-side 256]

Levers: ``interleaved`` (the default), ``interleaved`` with ``adjacency="require"`` (the edge keeps the fewest
windows that make a non-adjacent assignment possible) and ``random`` over several seeds (a fresh assignment per
request: an attacker cannot rerun the scheme to learn its slot set). Same photos, attacks and metric as
``pedvit eval privacy`` (docs/privacy.md).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from pedvit.eval.privacy_eval import DETERMINISTIC_SCHEMES, load_images, scheme_views
from pedvit.partition.constraints import Constraints
from pedvit.partition.geometry import WindowGrid
from pedvit.privacy.report import evaluate_views

METHODS = ("mean_fill", "telea", "pullpush", "unet")


def lever_views(images: list[tuple[str, np.ndarray]], scheme: str, constraints: Constraints, seed: int,
                max_side: int) -> list[dict[str, Any]]:
    """Per-view rows (image, worker, placement, gain, success, method, local windows) of one lever."""
    rows = []
    for name, img in images:
        grid = WindowGrid(img.shape[:2])
        views, a = scheme_views(img, grid, 4, scheme, seed=seed, constraints=constraints)
        windows = {str(w): ids for w, ids in a.worker_windows.items()}
        r = evaluate_views(img, views, colluders=(1,), positions="hidden", windows=windows, grid=grid,
                           slot_sets=list(a.worker_windows.values()) if scheme in DETERMINISTIC_SCHEMES else None,
                           max_side=max_side, methods=METHODS, detect_kinds=(), name=name, scheme=scheme)
        for w, v in r["workers"].items():
            rec = v["reconstruction"]
            rows.append({"image": name, "worker": w, "seed": seed, "placement": v["placement_accuracy"],
                         "gain": rec["unseen_gain"], "method": rec["best_unseen_method"],
                         "success": v["unseen_success"], "local_windows": len(a.local)})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=4, help="seeds of the random scheme")
    ap.add_argument("--max-side", type=int, default=256, help="attack working size (as in docs/privacy.md)")
    args = ap.parse_args()
    images = load_images([], "builtin")
    levers = [("interleaved", Constraints(), [0]), ("interleaved", Constraints(adjacency="require"), [0]),
              ("random", Constraints(), list(range(args.seeds)))]
    for scheme, cons, seeds in levers:
        rows = [r for s in seeds for r in lever_views(images, scheme, cons, s, args.max_side)]
        wins = [r for r in rows if r["success"]]
        print(f"{scheme:12s} adjacency={cons.adjacency:8s} seeds={len(seeds)}: {len(wins)}/{len(rows)} views "
              f"({len(wins) / len(rows):.1%}), placement {np.mean([r['placement'] for r in rows]):.1%}, "
              f"windows kept local per photo {np.mean([r['local_windows'] for r in rows]):.2f}")
        for r in wins:
            print(f"    {r['image']} worker {r['worker']} seed {r['seed']}: gain {r['gain']:.3f} ({r['method']}), "
                  f"placement {r['placement']:.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
