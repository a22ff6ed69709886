"""The privacy report's table: per-image attack results (:func:`pedvit.privacy.report.evaluate_views`)
aggregated into one row per (scheme, number of workers, positions, colluders); see the report module's
docstring for what the columns mean."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.mean(xs)) if xs else None


def _max(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.max(xs)) if xs else None


def aggregate(results: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Table rows, one per (scheme, n_workers, positions, colluders), sorted by those keys (see module
    docstring)."""
    groups: dict[tuple[str, int, str], list[Mapping[str, Any]]] = {}
    for r in results:
        groups.setdefault((str(r["scheme"]), int(r["n_workers"]), str(r.get("positions", "known"))), []).append(r)
    rows: list[dict[str, Any]] = []
    for (scheme, n, positions), rs in sorted(groups.items()):
        fk = "face" if any("face" in r["full_detections"] for r in rs) else "frontal_face"  # MTCNN + Haar
        found_by_one = {kind: sum(r["found_by_any_single_worker"].get(kind, 0) for r in rs) for kind in (fk, "text")}
        for k in sorted({int(k) for r in rs for k in r["coalitions"]} | {1}):
            units, images, faces_found, objects_found = _attacking_units(rs, k, fk)
            if units:
                counts = dict(faces_full=sum(r["full_detections"].get(fk, 0) for r in rs), faces_found=faces_found,
                              faces_one=found_by_one[fk], text_full=sum(r["full_detections"].get("text", 0) for r in rs),
                              text_one=found_by_one["text"], objects_full=sum(sum(r["full_detections"].values()) for r in rs),
                              objects_found=objects_found)
                rows.append(_row(rs, units, scheme=scheme, n_workers=n, positions=positions, colluders=k, images=images,
                                 **counts))
    return rows


def _attacking_units(results: Sequence[Mapping[str, Any]], k: int, face_kind: str
                     ) -> tuple[list[Mapping[str, Any]], int, int, int]:
    """The (worker or coalition) entries attacking as one for coalition size k: (units, images, faces found,
    objects found)."""
    units: list[Mapping[str, Any]] = []
    faces_found = objects_found = images = 0
    for r in results:
        if k == 1:
            units.extend(r["workers"].values())
            faces_found += r["found_by_any_single_worker"].get(face_kind, 0)
            objects_found += sum(r["found_by_any_single_worker"].values())
            images += 1
        elif str(k) in r["coalitions"]:
            c = r["coalitions"][str(k)]
            units.append(c)
            faces_found += c["detection"].get(face_kind, 0)
            objects_found += sum(c["detection"].values())
            images += 1
    return units, images, faces_found, objects_found


def _row(rs: Sequence[Mapping[str, Any]], units: Sequence[Mapping[str, Any]], *, scheme: str, n_workers: int,
         positions: str, colluders: int, images: int, faces_full: int, faces_found: int, faces_one: int, text_full: int,
         text_one: int, objects_full: int, objects_found: int) -> dict[str, Any]:
    """One table row: the means and maxima over its attacking units, the detection counts, and per attack
    method its means and how often it was the best on unseen pixels."""
    n, k = n_workers, colluders
    exp = [u["exposure"]["fraction"] for u in units]
    ssim = [u["reconstruction"]["best"]["ssim"] for u in units]
    base = [r["baseline_grey"]["ssim"] for r in rs]
    gains = [(u["reconstruction"]["best"]["ssim"] - u["reconstruction"]["baseline_grey"]["ssim"])
             / max(1e-9, 1 - u["reconstruction"]["baseline_grey"]["ssim"]) for u in units]
    recs = [u["reconstruction"] for u in units]
    row: dict[str, Any] = {
        "scheme": scheme,
        "n_workers": n,
        "positions": positions,
        "colluders": k,
        "images": images,
        "units": len(units),
        "mean_exposure": _mean(exp),
        "max_exposure": _max(exp),
        "mean_largest_region": _mean([u["exposure"]["largest_region_fraction"] for u in units]),
        "max_largest_region": _max([u["exposure"]["largest_region_fraction"] for u in units]),
        "mean_bbox_coverage": _mean([u["exposure"]["bbox_coverage"] for u in units]),
        "mean_ssim": _mean(ssim),
        "max_ssim": _max(ssim),
        "mean_ssim_gain": _mean(gains),
        "mean_ssim_unseen": _mean([u["reconstruction"]["best"]["ssim_unseen"] for u in units]),
        "mean_psnr": _mean([u["reconstruction"]["best"]["psnr"] for u in units]),
        "mean_baseline_ssim": _mean(base),
        # the headline: inference beyond the view (unseen pixels, against no-knowledge baselines)
        "reconstruction_success_rate": float(np.mean([bool(u.get("unseen_success")) for u in units])),
        "full_image_ssim_success_rate": float(np.mean([bool(u["success"]) for u in units])),
        "mean_unseen_gain": _mean([rc.get("unseen_gain") for rc in recs]),
        "max_unseen_gain": _max([rc.get("unseen_gain") for rc in recs]),
        "mean_ssim_unseen_best": _mean([rc["best_unseen"]["ssim_unseen"] for rc in recs if "best_unseen" in rc]),
        "mean_ssim_unseen_grey": _mean([rc["baseline_grey"]["ssim_unseen"] for rc in recs]),
        "mean_ssim_unseen_mean_colour": _mean([rc["baseline_mean_colour"]["ssim_unseen"] for rc in recs
                                               if "baseline_mean_colour" in rc]),
        "mean_psnr_unseen_best": _mean([rc["best_unseen"]["psnr_unseen"] for rc in recs if "best_unseen" in rc]),
        "mean_psnr_unseen_mean_colour": _mean([rc["baseline_mean_colour"]["psnr_unseen"] for rc in recs
                                               if "baseline_mean_colour" in rc]),
        "placement_accuracy": _mean([u.get("placement_accuracy") for u in units]),
        "faces_in_full_image": faces_full,
        "faces_found": faces_found,
        "faces_found_by_one_worker": faces_one,
        "text_in_full_image": text_full,
        "text_found_by_one_worker": text_one,
        "objects_in_full_image": objects_full,
        "objects_found": objects_found,
    }
    methods = sorted({m for u in units for m in u["reconstruction"]["per_method"]})
    for m in methods:
        row[f"mean_ssim_{m}"] = _mean([u["reconstruction"]["per_method"][m]["ssim"]
                                      for u in units if m in u["reconstruction"]["per_method"]])
        row[f"mean_ssim_unseen_{m}"] = _mean([u["reconstruction"]["per_method"][m]["ssim_unseen"]
                                             for u in units if m in u["reconstruction"]["per_method"]])
        row[f"best_unseen_share_{m}"] = float(np.mean([rc.get("best_unseen_method") == m for rc in recs]))
    return row
