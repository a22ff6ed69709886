"""`pedvit eval privacy`: pixel-level privacy attacks on real photos split by the real partition schemes, plus a
perturbation-based feature-leakage check of the split plans.

For every photo, scheme (contiguous, interleaved, random, semantic) and worker count N the real assignment
is computed (``assign(grid, N, scheme)``, ``semantic`` with the windows of detected faces and text kept on
the edge, :mod:`pedvit.partition.detectors`) and each worker's
view is the set of original pixels its windows (with halo) cover. :mod:`pedvit.privacy.report` then runs the
exposure, reconstruction (inpainting) and detection (Haar, MTCNN, RapidOCR) attacks for single workers and worst-case
coalitions of k = 2..K colluders. The cloud-only baseline (one worker sees every pixel) is in the same table.

The feature-leakage check (``--leakage``) runs the real split engine in-process, records every tensor each
worker received (pixels in round 1, edge-computed tokens in later rounds), perturbs every pixel outside the
worker's windows and measures how much those tensors change (:func:`pedvit.privacy.leakage_metrics.feature_leakage`).

Python API::

    report = evaluate_photos([(name, image), ...], workers_list=(2, 4), schemes=("semantic",))
    summary = summarize(report)          # JSON-ready dict (also what --json writes)
    leak = leakage_check(image, "tinyvit-isolated", n_workers=4)
"""

from __future__ import annotations

import pathlib
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from pedvit.partition import Constraints, WindowGrid, assign, constraints_for_image
from pedvit.privacy.detection import DEFAULT_KINDS
from pedvit.privacy.reconstruction import ATTACKS
from pedvit.privacy.report import PrivacyReport, _clean
from pedvit.privacy.views import view_masks

__all__ = [
    "SCHEMES",
    "DEFAULT_WORKERS",
    "load_images",
    "scheme_views",
    "evaluate_photos",
    "summarize",
    "leakage_check",
    "resize_boundary_leak",
    "resize_margin_px",
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
    return _clean(out)


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


# --- feature leakage ----------------------------------------------------------------------------------


def small_random_vit(seed: int = 0) -> Any:
    """A small random-weight SAM ViT (embed 64, depth 6, 2 heads, global blocks 2 and 5) for ``vit-exact``:
    same structure as ViT-B (window stretches around global blocks), cheap enough for a CPU check."""
    import torch

    from pedvit.models.image_encoder_vit import ImageEncoderViT
    from pedvit.models.registry import build_sam

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = build_sam("vit_b", ImageEncoderViT(embed_dim=64, depth=6, num_heads=2, global_attn_indexes=(2, 5)))
        # SAM initialises the absolute position embedding to zeros; random values make the check stricter
        with torch.no_grad():
            model.image_encoder.pos_embed.normal_(0, 0.02)
    finally:
        torch.random.set_rng_state(state)
    return model.eval().requires_grad_(False)


def resize_margin_px(original_size: tuple[int, int], long_side: int = 1024) -> int:
    """Original pixels beyond a window's floor/ceil mask that PIL's bilinear resize can blend into its pixels:
    1 when upscaling (2-tap interpolation), ``ceil(1 / scale) + 1`` when downscaling (antialiased support)."""
    scale = long_side / max(original_size)
    return 1 if scale >= 1 else int(np.ceil(1 / scale)) + 1


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    if px <= 0:
        return mask
    import cv2

    k = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), k).astype(bool)


def resize_boundary_leak(image: np.ndarray, masks: dict[str, np.ndarray], grid: WindowGrid,
                         windows: dict[str, list[int]], *, halo_px: int = 0, seed: int = 0) -> dict[str, Any]:
    """Pixel-only check with the strict ``original_mask``: perturb outside it, resize like the edge does
    (``ResizeLongestSide``) and count changed resized pixels inside the worker's crops.

    Returns:
        ``{"max_abs_diff": uint8 levels, "changed_pixels": count over workers, "crop_pixels": total}``.
    """
    from pedvit.models.transforms import ResizeLongestSide
    from pedvit.privacy.leakage_metrics import perturb_outside

    t = ResizeLongestSide(grid.input_size)
    base = t.apply_image(image).astype(np.int16)
    h, w = base.shape[:2]
    rng = np.random.default_rng(seed)
    worst, changed, total = 0, 0, 0
    for wk, m in masks.items():
        inside = grid.input_mask(windows[wk], halo_px)[:h, :w]
        d = np.abs(t.apply_image(perturb_outside(image, m, rng=rng)).astype(np.int16) - base).max(-1)
        worst = max(worst, int(d[inside].max(initial=0)))
        changed += int((d[inside] > 0).sum())
        total += int(inside.sum())
    return {"max_abs_diff": worst, "changed_pixels": changed, "crop_pixels": total}


def leakage_check(image: np.ndarray, plan: str, *, n_workers: int = 4, model: Any = None, halo_px: int = 0,
                  scheme: str = "interleaved", trials: int = 1, seed: int = 0, atol: float = 0.0,
                  dilate_px: int | None = None) -> dict[str, Any]:
    """Does what each worker receives depend only on the pixels of its own windows (with halo)?

    Runs ``DistributedSamPredictor(model, in_process_workers(model, n, record_inputs=True), plan=plan)`` on
    ``image`` and on copies whose pixels outside a worker's mask are replaced by noise, and compares every
    tensor that worker received (:func:`pedvit.privacy.leakage_metrics.feature_leakage`). The scheme must not
    depend on image content (so the assignment is the same for the perturbed image): not ``semantic``.

    Args:
        image: ``H x W x 3`` uint8 photo.
        plan: ``"tinyvit-isolated"`` (default model: MobileSAM real weights), ``"vit-exact"`` or
            ``"vit-isolated"`` (default model: :func:`small_random_vit`).
        n_workers, halo_px, scheme: engine settings.
        trials: random perturbations per worker (worst case kept).
        atol: tolerance of ``isolated``.
        dilate_px: the masks are the workers' ``original_mask`` grown by this many original pixels; None:
            :func:`resize_margin_px` (the bilinear resize blends each resized pixel with original pixels up to
            that far outside the floor/ceil window mask, see ``resize_boundary_leak_strict_mask``).

    Returns:
        JSON-ready dict: plan, model, per worker ``max_abs_diff``/``max_rel_change``/``isolated``, and per
        round (stage) the worst relative change over workers.
    """
    import torch

    from pedvit.edge.build import in_process_workers

    from pedvit.edge.distributed import DistributedSamPredictor
    from pedvit.privacy.leakage_metrics import feature_leakage

    if scheme == "semantic":
        raise ValueError("leakage_check needs a content-independent scheme (the perturbation changes faces)")
    if model is None:
        if plan == "tinyvit-isolated":
            from pedvit.models import build_model

            model = build_model("mobile_sam")
        else:
            model = small_random_vit(seed)
    stages: dict[str, list[str]] = {}
    assignment: dict[str, list[int]] = {}
    grid = WindowGrid(image.shape[:2], input_size=model.img_size)

    def received(img: np.ndarray) -> dict[str, list[np.ndarray]]:
        execs = in_process_workers(model, n_workers, record_inputs=True)
        pred = DistributedSamPredictor(model, execs, plan=plan, scheme=scheme, halo_px=halo_px, fusion="off",
                                       seed=seed)
        with torch.inference_mode():
            pred.set_image(img)
        run = pred.last_run
        assert run is not None
        if run.failovers:
            raise RuntimeError(f"unexpected failover during the leakage check: {run.failovers}")
        if not assignment:
            assignment.update({k: list(v) for k, v in run.assignment.items()})
        elif {k: list(v) for k, v in run.assignment.items()} != assignment:
            raise RuntimeError("the assignment changed with the perturbation; use a content-independent scheme")
        out = {}
        for ex in execs:
            stages[ex.name] = [s for s, _, _ in ex.received]
            # Rows in window-id order: with hidden positions each request sends them in a fresh random order.
            orders = run.workers[ex.name].sent_order
            out[ex.name] = [b[np.argsort(order, kind="stable")] for (_, b, _), order in zip(ex.received, orders, strict=True)]
        pred.close()
        return out

    first = received(image)  # learns the assignment; reused as feature_leakage's unperturbed run

    def f(img: np.ndarray) -> dict[str, list[np.ndarray]]:
        return first if img is image else received(img)

    strict = {w: grid.original_mask(ids, halo_px) for w, ids in assignment.items() if ids}
    margin = resize_margin_px(image.shape[:2], model.img_size) if dilate_px is None else dilate_px
    masks = {w: _dilate(m, margin) for w, m in strict.items()}
    boundary = resize_boundary_leak(image, strict, grid, {w: assignment[w] for w in strict}, halo_px=halo_px,
                                    seed=seed)
    t0 = time.perf_counter()
    res = feature_leakage(f, image, masks, trials=trials, seed=seed, atol=atol)
    per_stage: dict[str, dict[str, float]] = {}
    for w, lr in res.items():
        for stage, t in zip(stages[w], lr.tensors):
            s = per_stage.setdefault(stage, {"max_abs_diff": 0.0, "max_rel_change": 0.0, "tensors": 0})
            s["max_abs_diff"] = max(s["max_abs_diff"], t.max_abs_diff)
            s["max_rel_change"] = max(s["max_rel_change"], t.rel_change)
            s["tensors"] += 1
    return _clean({
        "plan": plan,
        "model": getattr(model, "name", type(model).__name__),
        "model_note": "MobileSAM real weights" if plan == "tinyvit-isolated" else
                      "small random ViT (embed 64, depth 6, global blocks 2, 5)",
        "n_workers": n_workers,
        "scheme": scheme,
        "halo_px": halo_px,
        "trials": trials,
        "mask_margin_px": margin,
        "resize_boundary_leak_strict_mask": boundary,
        "isolated": all(r.isolated for r in res.values()),
        "max_abs_diff": max((r.max_abs_diff for r in res.values()), default=0.0),
        "max_rel_change": max((r.max_rel_change for r in res.values()), default=0.0),
        "per_stage": per_stage,
        "workers": {str(w): {"windows": assignment[w], "max_abs_diff": r.max_abs_diff,
                             "max_rel_change": r.max_rel_change, "isolated": r.isolated}
                    for w, r in res.items()},
        "seconds": time.perf_counter() - t0,
    })
