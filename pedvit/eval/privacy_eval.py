"""`pedvit eval privacy`: pixel-level privacy attacks on real photos split by the real partition schemes, plus a
perturbation-based feature-leakage check of the split plans.

For every photo, scheme (contiguous, interleaved, random, semantic) and worker count N the real assignment
is computed (``assign(grid, N, scheme)``, ``semantic`` with the windows of detected faces and text kept on
the edge, :mod:`pedvit.partition.detectors`) and each worker's
view is the set of original pixels its windows (with halo) cover. :mod:`pedvit.privacy.report` then runs the
exposure, reconstruction (inpainting) and detection (Haar, MTCNN, RapidOCR) attacks for single workers and worst-case
coalitions of k = 2..K colluders. The cloud-only baseline (one worker sees every pixel) is in the same table.

The feature-leakage check (``--leakage``, :mod:`pedvit.eval.leakage`) runs the real split engine in-process,
records every tensor each worker received (pixels in round 1, edge-computed tokens in later rounds), perturbs
every pixel outside the worker's windows and measures how much those tensors change
(:func:`pedvit.privacy.leakage_metrics.feature_leakage`).

Python API::

    report = evaluate_photos([(name, image), ...], workers_list=(2, 4), schemes=("semantic",))
    summary = summarize(report)          # JSON-ready dict (also what --json writes)
    leak = leakage_check(image, "tinyvit-isolated", n_workers=4)    # pedvit.eval.leakage
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from pedvit.partition import Constraints, WindowGrid, assign, constraints_for_image
from pedvit.privacy.detection import DEFAULT_KINDS
from pedvit.privacy.reconstruction import ATTACKS
from pedvit.privacy.report import PrivacyReport, json_ready
from pedvit.privacy.views import view_masks

__all__ = [
    "SCHEMES",
    "DEFAULT_WORKERS",
    "load_images",
    "scheme_views",
    "evaluate_photos",
    "summarize",
    "format_table",
]

SCHEMES: tuple[str, ...] = ("contiguous", "interleaved", "random", "semantic")
#: schemes whose assignment depends only on the grid and N (random draws per image, semantic reads the image)
DETERMINISTIC_SCHEMES: tuple[str, ...] = ("contiguous", "interleaved")
DEFAULT_WORKERS: tuple[int, ...] = (2, 4, 8, 16)
#: photos with real human faces (curated; the Haar detector also fires on some photos without people)
try:
    from pedvit.data import FACE_PHOTOS as _FACE_PHOTOS
except ImportError:  # pragma: no cover - data module always present in this repo
    _FACE_PHOTOS = ("astronaut", "grace_hopper", "voc")
KNOWN_FACE_PHOTOS: frozenset[str] = frozenset(_FACE_PHOTOS)


def _tqdm(iterable: Iterable[Any], **kwargs: Any) -> Iterable[Any]:
    try:
        from tqdm import tqdm
    except ImportError:  # progress bars are a nicety
        return iterable
    return tqdm(iterable, **kwargs)


# --- inputs -------------------------------------------------------------------------------------------


def load_images(paths: Sequence[str], photos: str | None = None) -> list[tuple[str, np.ndarray]]:
    """``(name, H x W x 3 uint8 RGB)`` pairs from image files / directories, or the built-in real photos.

    Args:
        paths: image files or directories (non-recursive; png/jpg/jpeg/bmp/tif/tiff/webp).
        photos: ``"builtin"`` adds :func:`pedvit.data.real_photos`; it is also used when ``paths`` is empty.
    """
    out: list[tuple[str, np.ndarray]] = []
    if photos == "builtin" or not paths:
        from pedvit.data import real_photos

        out += [(p.name, p.image) for p in real_photos()]
    if photos not in (None, "builtin"):
        raise ValueError(f"--photos must be 'builtin', got {photos!r}")
    import cv2

    exts = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
    files: list[pathlib.Path] = []
    for p in map(pathlib.Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in exts)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(p)
    for f in files:
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read image {f}")
        out.append((f.stem, np.ascontiguousarray(bgr[..., ::-1])))
    return out


def scheme_views(image: np.ndarray, grid: WindowGrid, n_workers: int, scheme: str, *, halo_px: int = 0,
                 seed: int = 0, constraints: Constraints | None = None) -> tuple[dict[str, np.ndarray], Any]:
    """Per-worker visibility masks of the real assignment.

    Args:
        image: ``H x W x 3`` uint8 original.
        grid: ``WindowGrid(image.shape[:2])``.
        n_workers: number of cloud workers.
        scheme: one of :data:`SCHEMES`.
        halo_px: context pixels each window's crop carries (tinyvit-isolated halo).
        seed: seed of the ``random`` scheme.
        constraints: constraints to use (``semantic`` computes face/object constraints when None).

    Returns:
        (worker id -> ``H x W`` bool mask of the original pixels it receives, the ``Assignment``).
    """
    if constraints is None:
        constraints = constraints_for_image(image, grid, Constraints()) if scheme == "semantic" else Constraints()
    a = assign(grid, n_workers, scheme, constraints=constraints, seed=seed)
    return view_masks(grid, a.worker_windows, halo_px), a


# --- pixel-level evaluation ---------------------------------------------------------------------------


def evaluate_photos(
    images: Sequence[tuple[str, np.ndarray]],
    *,
    workers_list: Sequence[int] = DEFAULT_WORKERS,
    schemes: Sequence[str] = SCHEMES,
    halo_px: int = 0,
    colluders: int = 3,
    threshold: float = 0.5,
    cloud_only: bool = True,
    seed: int = 0,
    max_side: int | None = 512,
    methods: Sequence[str] | None = None,
    detect_kinds: Sequence[str] | None = None,
    figure_images: Sequence[str] = ("astronaut",),
    figure_n: int | None = None,
    progress: bool = True,
    window_tokens: int = 14,
    positions: Sequence[str] = ("hidden",),
    keep_local: Sequence[str] | None = None,
) -> PrivacyReport:
    """Run every attack over ``images`` x ``schemes`` x ``workers_list`` (+ cloud-only) into a report.

    Args:
        images: ``(name, H x W x 3 uint8)`` pairs.
        workers_list: worker counts N.
        schemes: partition schemes.
        halo_px: halo of every window crop (pixels).
        colluders: evaluate coalitions of k = 1..colluders workers.
        threshold: SSIM threshold of a successful reconstruction.
        cloud_only: add the cloud-only baseline row.
        seed: seed of the ``random`` scheme.
        max_side: attacks run on a copy downscaled to this longest side (speed); exposure is exact.
        methods, detect_kinds: reconstruction attacks / Haar kinds (None: all).
        figure_images: names whose arrays are kept for view/reconstruction figures.
        figure_n: worker count of the figures (default: the smallest N >= 4, else the first).
        progress: tqdm progress bar.
        window_tokens: window side in tokens (14 = 224 px at SAM's 1024 px input; tinyvit-isolated takes
            multiples of 14).
        positions: what the workers learn of where their windows sit: ``"hidden"`` (position hiding, the
            default of tinyvit-isolated: the jigsaw attacker must place its pieces) and/or ``"known"``.
        keep_local: ``semantic``: the sensitive classes kept on the edge (None: faces and text).

    Returns:
        a :class:`PrivacyReport` holding one result per (image, scheme, N) and per cloud-only image.
    """
    methods = tuple(methods) if methods else tuple(ATTACKS)
    kinds = tuple(detect_kinds) if detect_kinds is not None else DEFAULT_KINDS
    ks = tuple(range(1, max(1, colluders) + 1))
    if figure_n is None:
        figure_n = min((n for n in workers_list if n >= 4), default=workers_list[0])
    report = PrivacyReport(threshold=threshold, colluders=ks,
                           max_figures=2 * len(schemes) * len(positions) * max(1, len(figure_images)))
    common = dict(methods=methods, detect_kinds=kinds, max_side=max_side)
    jobs = [(name, img, s, n, pos) for name, img in images for s in schemes for n in workers_list for pos in positions]
    bar = _tqdm(range(len(jobs) + (len(images) if cloud_only else 0)), desc="privacy", unit="view-set",
                disable=not progress, file=sys.stderr)
    it = iter(bar)
    grids: dict[str, tuple[WindowGrid, Constraints]] = {}
    for name, img, scheme, n, pos in jobs:
        if name not in grids:  # semantic constraints cost a Haar pass: once per photo
            grid = WindowGrid(img.shape[:2], window_tokens=window_tokens)
            sem = (constraints_for_image(img, grid, Constraints(), keep_local=keep_local, halo_px=halo_px)
                   if "semantic" in schemes else Constraints())
            grids[name] = (grid, sem)
        grid, sem = grids[name]
        views, a = scheme_views(img, grid, n, scheme, halo_px=halo_px, seed=seed,
                                constraints=sem if scheme == "semantic" else Constraints())
        res = report.evaluate(img, views, figures=name in figure_images and n == figure_n, scheme=scheme,
                              name=name, positions=pos, grid=grid, non_adjacent=scheme != "contiguous",
                              windows={str(w): ids for w, ids in a.worker_windows.items()},
                              # a deterministic scheme's slot sets are known to an attacker who reruns it
                              slot_sets=list(a.worker_windows.values()) if scheme in DETERMINISTIC_SCHEMES else None,
                              **common)
        res["local_windows"] = sorted(a.local)
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(f"{name} {scheme} N={n} {pos}")
        next(it, None)
    if cloud_only:
        for name, img in images:
            report.add_cloud_only(img, name=name, **common)
            next(it, None)
    if hasattr(bar, "close"):
        bar.close()
    return report


def _face_counts(results: Sequence[dict[str, Any]], names: Iterable[str] | None = None) -> dict[str, int]:
    keep = None if names is None else set(names)
    rs = [r for r in results if keep is None or r["image"] in keep]
    out: dict[str, int] = {"photos": len(rs)}
    for kind in ("frontal_face", "profile_face"):
        out[f"{kind}_in_full_image"] = sum(r["full_detections"].get(kind, 0) for r in rs)
        out[f"{kind}_found_by_one_worker"] = sum(r["found_by_any_single_worker"].get(kind, 0) for r in rs)
    out["photos_with_a_face_found_by_one_worker"] = sum(
        1 for r in rs if r["found_by_any_single_worker"].get("frontal_face", 0)
        + r["found_by_any_single_worker"].get("profile_face", 0) > 0)
    return out


def summarize(report: PrivacyReport, *, config: dict[str, Any] | None = None,
              leakage: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """JSON-ready summary: flat ``rows`` plus ``table[scheme][N]`` (k = 1 fields and ``colluders[k]``; the
    rows with hidden positions where both were attacked, as the engine hides them by default) and
    ``faces[scheme][N]`` (Haar counts over all photos and over the curated face photos)."""
    rows = report.rows()
    table: dict[str, dict[str, Any]] = {}
    hidden = {(r["scheme"], r["n_workers"]) for r in rows if r.get("positions") == "hidden"}
    for r in rows:
        if r.get("positions") == "known" and (r["scheme"], r["n_workers"]) in hidden:
            continue
        entry = table.setdefault(r["scheme"], {}).setdefault(str(r["n_workers"]), {"colluders": {}})
        if r["colluders"] == 1:
            entry.update({k: v for k, v in r.items() if k not in ("scheme", "n_workers", "colluders")})
        entry["colluders"][str(r["colluders"])] = {
            k: r[k] for k in ("mean_exposure", "max_exposure", "mean_ssim", "max_ssim", "mean_ssim_unseen",
                              "reconstruction_success_rate", "full_image_ssim_success_rate",
                              "placement_accuracy", "faces_found", "images")}
    faces: dict[str, dict[str, Any]] = {}
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for res in report.results:
        if res.get("positions") == "known" and (res["scheme"], res["n_workers"]) in hidden:
            continue  # the detection attack reads the same pixels either way: count each photo once
        groups.setdefault((res["scheme"], res["n_workers"]), []).append(res)
    for (scheme, n), rs in sorted(groups.items()):
        faces.setdefault(scheme, {})[str(n)] = {
            "all_photos": _face_counts(rs),
            "known_face_photos": _face_counts(rs, KNOWN_FACE_PHOTOS),
            "photos_without_known_faces": _face_counts([r for r in rs if r["image"] not in KNOWN_FACE_PHOTOS]),
            "per_known_face_photo": {
                r["image"]: {"frontal_face_in_full_image": r["full_detections"].get("frontal_face", 0),
                             "frontal_face_found_by_one_worker": r["found_by_any_single_worker"].get("frontal_face", 0),
                             "local_windows": r.get("local_windows", [])}
                for r in rs if r["image"] in KNOWN_FACE_PHOTOS},
        }
    out = {"config": config or {}, "photos": sorted({r["image"] for r in report.results}), "rows": rows,
           "table": table, "faces": faces}
    if leakage is not None:
        out["leakage"] = leakage
    return json_ready(out)


HEADLINE_COLUMNS: tuple[str, ...] = (
    "scheme", "n_workers", "positions", "colluders", "mean_exposure", "max_exposure", "placement_accuracy",
    "mean_ssim_unseen_best", "mean_unseen_gain", "reconstruction_success_rate", "full_image_ssim_success_rate",
    "faces_in_full_image", "faces_found", "faces_found_by_one_worker", "text_in_full_image", "text_found_by_one_worker",
)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] = HEADLINE_COLUMNS, *,
                 markdown: bool = False) -> str:
    """Plain-text (or Markdown) table of ``rows``."""
    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines)
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
