"""Evaluating fusion weights without the engine (`python -m pedvit.training.fusion score|seam-oracle|cost|
check-fast-path|dp-curve`, also `scripts/train_fusion.py ...`): a predictor whose embedding is the in-process
stitched isolated trunk (the engine's numbers up to float rounding, `check-fast-path`), held-out scores, the
seam oracle, the edge's cost, and the accuracy/privacy curve of differential-privacy noise."""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time
from dataclasses import asdict

import numpy as np
import torch
from torch import nn

from pedvit.data import gt_instances, real_photos
from pedvit.edge.build import in_process_workers
from pedvit.edge.engine import SplitEngine
from pedvit.edge.predictor import SamPredictor
from pedvit.eval.accuracy import evaluate_predictor, format_table, fusion_gains, mask_iou, monolithic_row, plan_label, reference
from pedvit.models import Sam, build_model
from pedvit.models.transforms import ResizeLongestSide
from pedvit.partition import WindowGrid, assign
from pedvit.plans.flops import context_flops, count_flops, fusion_flops
from pedvit.plans.fusion import apply_fusion, context_trunk, load_default_fusion
from pedvit.plans.plans import TinyViTIsolated, make_plan
from pedvit.plans.window_adapter import WindowAdapter, adapted_encoder
from pedvit.privacy.dp import GaussianWindowNoise
from pedvit.privacy.reconstruction import DEFAULT_ATTACKS, grey_baseline, reconstruct, score

from .features import WINDOW_PX, content_mask, monolithic_trunk, resize, seam_distance, stitch_isolated, stitched_fast
from .photos import HELD_OUT, held_out_photos


def masks_for_boxes(model: Sam, embedding: torch.Tensor, boxes: np.ndarray, input_hw: tuple[int, int],
                     original_hw: tuple[int, int]) -> np.ndarray:
    """Single-mask prediction for each box (original xyxy) -> N x H x W bool."""
    transform = ResizeLongestSide(model.img_size)
    out = []
    with torch.inference_mode():
        for box in boxes:
            b = torch.as_tensor(transform.apply_boxes(box[None].astype(np.float64), original_hw), dtype=torch.float32)
            sparse, dense = model.prompt_encoder(points=None, boxes=b, masks=None)
            low, _ = model.mask_decoder(image_embeddings=embedding, image_pe=model.prompt_encoder.get_dense_pe(),
                                        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                        multimask_output=False)
            masks = model.postprocess_masks(low, input_hw, original_hw)
            out.append((masks[0, 0] > model.mask_threshold).numpy())
    return np.stack(out)


class FastIsolatedPredictor(SamPredictor):
    """`SamPredictor` whose embedding is the in-process stitched isolated trunk (halo 0) -> fusion -> neck.

    Same numbers as `DistributedSamPredictor` with `tinyvit-isolated` up to float rounding (`check-fast-path`),
    without the engine: used to score many weights quickly."""

    def __init__(self, model: Sam, fusion: nn.Module | None, adapter: WindowAdapter | None = None,
                 window_px: int = WINDOW_PX) -> None:
        """`adapter`: the workers' window adapter when there is no fusion (with one, the fusion's own);
        `window_px`: the plan's window side (224, or 448 for `window_tokens=28`)."""
        super().__init__(model)
        self.fusion = fusion
        self.adapter = getattr(fusion, "window_adapter", None) if fusion is not None else adapter
        self.window_px = window_px

    def trunk(self, resized: np.ndarray) -> torch.Tensor:
        """1 x 320 x 64 x 64 stitched isolated trunk features, after the fusion when there is one."""
        trunk = stitched_fast(self.model, resized, self.window_px, adapter=self.adapter)
        return apply_fusion(self.model, self.fusion, trunk, resized) if self.fusion is not None else trunk

    def _encode(self, resized: np.ndarray, original: np.ndarray) -> torch.Tensor:
        return self.model.image_encoder.run_neck(self.trunk(resized))


SEAM_PADDING_ONLY = WindowAdapter({}, "replicate")  # the plain trunk's weights, replicate seam padding


class SeamOraclePredictor(FastIsolatedPredictor):
    """Diagnostic, not a deployable plan: the stitched isolated trunk (optionally after the fusion) with every
    token closer than `band` tokens to a window border replaced by the monolithic trunk's token. How well the
    masks agree then says how exact a fusion must be near the seams to reach a given agreement."""

    def __init__(self, model: Sam, fusion: nn.Module | None, band: int) -> None:
        super().__init__(model, fusion)
        self.near_seam = (seam_distance() < band).float()[None, None]

    def _encode(self, resized: np.ndarray, original: np.ndarray) -> torch.Tensor:
        trunk, mono = self.trunk(resized), monolithic_trunk(self.model, resized)
        return self.model.image_encoder.run_neck(mono * self.near_seam + trunk * (1 - self.near_seam))


def seam_error_profile(model: Sam, fusion: nn.Module | None) -> dict[str, list[float]]:
    """{"no fusion" / "seam padding" (the plain trunk with replicate seam padding, untrained) / "adapter" (when
    the fusion has one) / "fusion": 7 numbers}: squared error of the 256 x 64 x 64 embedding against the
    monolithic one, averaged over the held-out photos' content tokens at distance 0..6 from a window border,
    per channel divided by the monolithic embedding's variance (1.0 = no better than each channel's mean)."""
    encoder = model.image_encoder
    dist = seam_distance()
    pairs = []
    for photo in held_out_photos():
        resized = resize(model, photo.image)
        content = content_mask([resized.shape[:2]], 64)[0, 0].bool()
        iso = stitched_fast(model, resized)
        candidates = {"no fusion": encoder.run_neck(iso),
                      "seam padding": encoder.run_neck(stitched_fast(model, resized, adapter=SEAM_PADDING_ONLY))}
        adapter = getattr(fusion, "window_adapter", None)
        if adapter is not None:  # the adapted trunk alone, then with the fusion trained on it
            iso = stitched_fast(model, resized, adapter=adapter)
            candidates["adapter"] = encoder.run_neck(iso)
        if fusion is not None:
            candidates["fusion"] = encoder.run_neck(apply_fusion(model, fusion, iso, resized))
        pairs.append((encoder.run_neck(monolithic_trunk(model, resized)), candidates, content))
    variance = torch.cat([mono[0][:, content] for mono, _, content in pairs], dim=1).var(dim=1)[:, None]
    out: dict[str, list[float]] = {}
    for label in pairs[0][1]:
        sums, counts = torch.zeros(7), torch.zeros(7)
        for mono, candidates, content in pairs:
            error = ((candidates[label][0] - mono[0])[:, content] ** 2 / variance).mean(dim=0)
            sums.index_add_(0, dist[content], error)
            counts.index_add_(0, dist[content], torch.ones_like(error))
        out[label] = (sums / counts.clamp_min(1)).tolist()
    return out


def run_seam_oracle(args: argparse.Namespace) -> int:
    """Held-out agreement / GT retention when the trunk is exact (monolithic) within `band` tokens of every
    window border and isolated (optionally fused) elsewhere; the `halo` column holds the band."""
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model("mobile_sam").eval()
    fusion = load_default_fusion(args.weights) if args.weights else None
    if args.weights and fusion is None:
        raise SystemExit(f"no weights at {args.weights}")
    print("[seam-oracle] embedding error by distance to the nearest window border (tokens 0..6; per-channel MSE "
          "over the held-out photos' content / the monolithic embedding's per-channel variance):", flush=True)
    for label, error in seam_error_profile(model, fusion).items():
        print(f"[seam-oracle]   {label:>12}: " + " ".join(f"{e:.3f}" for e in error), flush=True)
    bands = [int(b) for b in args.bands.split(",") if b]
    if not bands:
        return 0
    ref = reference(model, real_photos(min_count=0, names=list(HELD_OUT)), progress=False)
    rows = [monolithic_row(ref)]
    print(format_table(rows), flush=True)
    for band in bands:
        predictor = SeamOraclePredictor(model, fusion, band)
        rows.append(evaluate_predictor(predictor, ref, plan="seam-oracle", halo=band,
                                       fusion_label=pathlib.Path(args.weights).stem if args.weights else "off", progress=False))
        print(format_table(rows[-1:], header=False), flush=True)
    return 0


def run_score(args: argparse.Namespace) -> int:
    """Held-out GT retention and agreement (the `pedvit eval accuracy` protocol) of fusion weights files, and
    each one's paired GT retention gain over no fusion."""
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model("mobile_sam").eval()
    photos = real_photos(min_count=0, names=list(HELD_OUT))
    window_px = 16 * args.window_tokens
    plan = plan_label(make_plan("tinyvit-isolated", window_tokens=args.window_tokens))
    ref = reference(model, photos, progress=False)
    rows = [monolithic_row(ref), evaluate_predictor(FastIsolatedPredictor(model, None, window_px=window_px), ref, plan=plan, halo=0, progress=False)]
    print(format_table(rows), flush=True)
    alone: list[tuple[str, WindowAdapter]] = [("off, seam padding", SEAM_PADDING_ONLY)] if args.adapters_alone else []
    for path in args.weights:
        fusion = load_default_fusion(path)
        if fusion is None:
            raise SystemExit(f"no weights at {path}")
        rows.append(evaluate_predictor(FastIsolatedPredictor(model, fusion, window_px=window_px), ref, plan=plan, halo=0,
                                       fusion_label=pathlib.Path(path).stem, progress=False))
        print(format_table(rows[-1:], header=False), flush=True)
        adapter = fusion.window_adapter
        if args.adapters_alone and adapter is not None and adapter.adapter_id not in {a.adapter_id for _, a in alone}:
            alone.append((f"off, adapter of {pathlib.Path(path).stem}", adapter))
    for label, adapter in alone:  # the workers' trunk with the adapter, no fusion
        rows.append(evaluate_predictor(FastIsolatedPredictor(model, None, adapter, window_px), ref, plan=plan,
                                       halo=0, fusion_label=label, progress=False))
        print(format_table(rows[-1:], header=False), flush=True)
    for line in fusion_gains(rows, rows[0]):
        print(f"[score] {line}", flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0

def run_cost(args: argparse.Namespace) -> int:
    """Edge cost of fusion (with its context pass, if any) + neck against the full image encoder: FLOPs and CPU
    time (medians, one process)."""
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model("mobile_sam").eval()
    encoder = model.image_encoder
    fusion = load_default_fusion(args.weights)
    if fusion is None:
        raise SystemExit(f"no weights at {args.weights}")
    x = torch.randn(1, 3, 1024, 1024)
    trunk = encoder.run_trunk(x)

    def median_s(fn, repeats: int) -> float:
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def edge() -> torch.Tensor:  # everything the edge adds to the stitched trunk: context pass, fusion, neck
        context = context_trunk(model, x, fusion.context_px) if fusion.context_px else None
        return encoder.run_neck(fusion(trunk, context))

    full_flops, neck_flops, fusion_fl = count_flops(lambda: encoder(x)), count_flops(lambda: encoder.run_neck(trunk)), fusion_flops(fusion)
    context_fl = context_flops(model, fusion)
    full_s = median_s(lambda: encoder(x), args.repeats)
    edge_s = median_s(edge, args.repeats)
    neck_s = median_s(lambda: encoder.run_neck(trunk), args.repeats)
    # The workers' side: one image's 25 windows through the plain trunk and through the trunk the fusion's
    # window adapter asks for (its seam padding, if any, is the only extra work), timed alternately.
    adapted = adapted_encoder(encoder, getattr(fusion, "window_adapter", None))
    plain_times, adapted_times = [], []
    for i in range(2 * args.repeats + 2):
        trunk_variant, times = (encoder, plain_times) if i % 2 == 0 else (adapted, adapted_times)
        t0 = time.perf_counter()
        stitch_isolated(trunk_variant, x)
        times.append(time.perf_counter() - t0)
    windows_plain, windows_adapted = statistics.median(plain_times[1:]), statistics.median(adapted_times[1:])
    out = {"encoder_gflops": full_flops / 1e9, "neck_gflops": neck_flops / 1e9, "fusion_gflops": fusion_fl / 1e9,
           "context_pass_gflops": context_fl / 1e9, "context_px": fusion.context_px,
           "fusion_plus_neck_flops_share": (fusion_fl + context_fl + neck_flops) / full_flops,
           "encoder_cpu_s_median": full_s, "fusion_plus_neck_cpu_s_median": edge_s, "neck_cpu_s_median": neck_s,
           "fusion_plus_neck_cpu_share": edge_s / full_s,
           "worker_windows_plain_trunk_s_median": windows_plain, "worker_windows_adapted_trunk_s_median": windows_adapted,
           "worker_adapted_over_plain": windows_adapted / windows_plain,
           "seam_padding": adapted.seam_padding,
           "threads": torch.get_num_threads(), "repeats": args.repeats}
    print(json.dumps(out, indent=2), flush=True)
    return 0


def run_check_fast_path(args: argparse.Namespace) -> int:
    """Max |fast - engine| of the stitched trunk over one held-out image (engine: in-process workers, float32
    wire; the trunk the shipped fusion's window adapter asks for)."""
    model = build_model("mobile_sam").eval()
    image = held_out_photos()[0].image
    resized = resize(model, image)
    # The shipped fusion's window adapter (if any) decides which trunk the workers run; they serve it by default.
    plan = TinyViTIsolated(halo_px=0, fusion=load_default_fusion())
    engine = SplitEngine(model, in_process_workers(model, 3), plan, wire_dtype="float32")
    captured = {}

    def fake_encode(m, r, g, dispatch):  # capture the stitched trunk through the real engine dispatch
        captured["x"] = plan.stitched_trunk(m, r, g, dispatch)
        return model.image_encoder.run_neck(captured["x"])

    plan.encode = fake_encode  # type: ignore[method-assign]
    with torch.inference_mode():
        engine.encode(resized, image)
    diff = float((captured["x"] - stitched_fast(model, resized, adapter=plan.window_adapter)).abs().max())
    print(f"[check] max |engine - fast| = {diff:.3e} (feature scale {float(captured['x'].abs().max()):.2f})")
    return 0 if diff < 1e-3 else 1


def run_dp_curve(args: argparse.Namespace) -> int:
    """GT box mIoU of tinyvit-isolated (halo 0, no fusion) vs epsilon, and a worker's reconstruction SSIM.

    The noise is `GaussianWindowNoise` applied to every content window exactly as the engine's `outgoing`
    hook does (the 224 px crop of the zero-padded canvas), then the same in-process stitched trunk.
    Privacy: worker 0 of 3 (interleaved scheme) sees its noised windows; the pull-push and OpenCV inpainting
    attacks reconstruct the whole resized image from that view; SSIM against the clean resized image.
    """
    torch.set_num_threads(args.threads)
    model = build_model("mobile_sam").eval()
    epsilons = [float(e) for e in args.epsilons.split(",")]
    results: dict[str, dict] = {}
    for dataset in args.datasets.split(","):
        instances = gt_instances(dataset)
        if len({inst.image_name for inst in instances}) != 1:
            raise SystemExit(f"dp-curve takes single-photo GT datasets (voc, arc2017), not {dataset}")
        image = instances[0].image
        hw = image.shape[:2]
        resized = resize(model, image)
        ihw = resized.shape[:2]
        grid = WindowGrid(hw, input_size=model.img_size)
        side = model.img_size
        canvas = np.zeros((side, side, 3), dtype=np.uint8)
        canvas[: ihw[0], : ihw[1]] = resized
        boxes = np.array([inst.box for inst in instances], dtype=np.float64)
        gts = [inst.mask for inst in instances]
        view_ids = assign(grid, 3, "interleaved").worker_windows[0]
        view_mask = np.zeros((side, side), bool)
        for wid in view_ids:
            y0, x0, y1, x1 = grid.crop_box(wid)
            view_mask[y0:y1, x0:x1] = True
        view_mask = view_mask[: ihw[0], : ihw[1]]
        with torch.inference_mode():
            mono = model.image_encoder.run_neck(monolithic_trunk(model, resized))
        mono_miou = float(np.mean([mask_iou(p, g) for p, g in zip(masks_for_boxes(model, mono, boxes, ihw, hw), gts)]))
        rows = {"monolithic": mono_miou, "grey_ssim": grey_baseline(resized).ssim}
        for eps in epsilons:
            noise = GaussianWindowNoise(eps, args.delta, seed=args.seed)
            noised = canvas.copy()
            for wid in grid.content_ids:
                y0, x0, y1, x1 = grid.crop_box(wid)
                noised[y0:y1, x0:x1] = noise("tinyvit.trunk", wid, canvas[y0:y1, x0:x1])
            noised_resized = noised[: ihw[0], : ihw[1]]
            with torch.inference_mode():
                emb = model.image_encoder.run_neck(stitched_fast(model, noised_resized))
            miou = float(np.mean([mask_iou(p, g) for p, g in zip(masks_for_boxes(model, emb, boxes, ihw, hw), gts)]))
            view = np.where(view_mask[..., None], noised_resized, 0).astype(np.uint8)
            ssims = {m: score(resized, reconstruct(view, view_mask, m), view_mask).ssim for m in DEFAULT_ATTACKS}
            sigma = noise.sigma_for(canvas[:224, :224]) * 255.0
            rows[str(eps)] = {"gt_box_mIoU": miou, "retention": miou / mono_miou, "sigma_grey_levels_224px": sigma,
                              "recon_ssim_best": max(ssims.values()), "recon_ssim": ssims}
            print(f"[dp] {dataset} eps={eps:g}: sigma={sigma:.1f} grey levels, mIoU {miou:.4f} "
                  f"({miou / mono_miou:.1%} of {mono_miou:.4f}), worker-0 reconstruction SSIM {max(ssims.values()):.3f}",
                  flush=True)
        results[dataset] = rows
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2))
    return 0
