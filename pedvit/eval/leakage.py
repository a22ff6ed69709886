"""Feature leakage: does what each worker receives depend only on the pixels of its own windows (with halo)?
The engine runs with in-process recording workers on an image and on copies perturbed outside a worker's
windows (`leakage_check`, `pedvit eval privacy --leakage`); `resize_boundary_leak` checks the resize alone."""

from __future__ import annotations

import time
from typing import Any

import cv2
import numpy as np
import torch

from pedvit.edge.build import in_process_workers
from pedvit.edge.distributed import DistributedSamPredictor
from pedvit.models import build_model
from pedvit.models.image_encoder_vit import ImageEncoderViT
from pedvit.models.registry import build_sam
from pedvit.models.transforms import ResizeLongestSide
from pedvit.partition import WindowGrid
from pedvit.privacy.leakage_metrics import feature_leakage, perturb_outside
from pedvit.privacy.report import json_ready


def small_random_vit(seed: int = 0) -> Any:
    """A small random-weight SAM ViT (embed 64, depth 6, 2 heads, global blocks 2 and 5) for ``vit-exact``:
    same structure as ViT-B (window stretches around global blocks), cheap enough for a CPU check."""
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
    k = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), k).astype(bool)


def resize_boundary_leak(image: np.ndarray, masks: dict[str, np.ndarray], grid: WindowGrid,
                         windows: dict[str, list[int]], *, halo_px: int = 0, seed: int = 0) -> dict[str, Any]:
    """Pixel-only check with the strict ``original_mask``: perturb outside it, resize like the edge does
    (``ResizeLongestSide``) and count changed resized pixels inside the worker's crops.

    Returns:
        ``{"max_abs_diff": uint8 levels, "changed_pixels": count over workers, "crop_pixels": total}``.
    """
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
    if scheme == "semantic":
        raise ValueError("leakage_check needs a content-independent scheme (the perturbation changes faces)")
    if model is None:
        model = build_model("mobile_sam") if plan == "tinyvit-isolated" else small_random_vit(seed)
    grid = WindowGrid(image.shape[:2], input_size=model.img_size)
    received = _ReceivedTensors(model, plan, n_workers=n_workers, scheme=scheme, halo_px=halo_px, seed=seed)
    first = received(image)  # learns the assignment; reused as feature_leakage's unperturbed run

    def f(img: np.ndarray) -> dict[str, list[np.ndarray]]:
        return first if img is image else received(img)

    assignment = received.assignment
    strict = {w: grid.original_mask(ids, halo_px) for w, ids in assignment.items() if ids}
    margin = resize_margin_px(image.shape[:2], model.img_size) if dilate_px is None else dilate_px
    masks = {w: _dilate(m, margin) for w, m in strict.items()}
    boundary = resize_boundary_leak(image, strict, grid, {w: assignment[w] for w in strict}, halo_px=halo_px,
                                    seed=seed)
    t0 = time.perf_counter()
    res = feature_leakage(f, image, masks, trials=trials, seed=seed, atol=atol)
    per_stage: dict[str, dict[str, float]] = {}
    for w, lr in res.items():
        for stage, t in zip(received.stages[w], lr.tensors):
            s = per_stage.setdefault(stage, {"max_abs_diff": 0.0, "max_rel_change": 0.0, "tensors": 0})
            s["max_abs_diff"] = max(s["max_abs_diff"], t.max_abs_diff)
            s["max_rel_change"] = max(s["max_rel_change"], t.rel_change)
            s["tensors"] += 1
    return json_ready({
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


class _ReceivedTensors:
    """What every worker receives when the engine encodes an image with in-process recording workers: worker ->
    its received tensors, rows in window-id order. Records the stage of each tensor and the assignment, and
    refuses a run whose assignment differs from the first one's."""

    def __init__(self, model: Any, plan: str, *, n_workers: int, scheme: str, halo_px: int, seed: int) -> None:
        self.model, self.plan, self.n_workers, self.scheme, self.halo_px, self.seed = model, plan, n_workers, scheme, halo_px, seed
        self.stages: dict[str, list[str]] = {}
        self.assignment: dict[str, list[int]] = {}

    def __call__(self, img: np.ndarray) -> dict[str, list[np.ndarray]]:
        execs = in_process_workers(self.model, self.n_workers, record_inputs=True)
        pred = DistributedSamPredictor(self.model, execs, plan=self.plan, scheme=self.scheme, halo_px=self.halo_px,
                                       fusion="off", seed=self.seed)
        with torch.inference_mode():
            pred.set_image(img)
        run = pred.last_run
        assert run is not None
        if run.failovers:
            raise RuntimeError(f"unexpected failover during the leakage check: {run.failovers}")
        if not self.assignment:
            self.assignment.update({k: list(v) for k, v in run.assignment.items()})
        elif {k: list(v) for k, v in run.assignment.items()} != self.assignment:
            raise RuntimeError("the assignment changed with the perturbation; use a content-independent scheme")
        out = {}
        for ex in execs:
            self.stages[ex.name] = [s for s, _, _ in ex.received]
            # Rows in window-id order: with hidden positions each request sends them in a fresh random order.
            orders = run.workers[ex.name].sent_order
            out[ex.name] = [b[np.argsort(order, kind="stable")] for (_, b, _), order in zip(ex.received, orders, strict=True)]
        pred.close()
        return out
