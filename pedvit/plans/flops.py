"""Encoder FLOPs of each split plan, worker part vs edge part, counted on the real modules.

Counting uses `torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions and scaled-dot-product
attention) on a copy of the model moved to the ``meta`` device, so nothing is computed and any model size
is counted in well under a second. The counted image is a square (every one of the 5 x 5 windows holds
content, the worst case for workers); for other aspect ratios the pure-padding windows are computed once per
model on the edge and cached, so they cost nothing per request.

* worker part: everything the workers run on their windows (pixel crops, + halo for tinyvit-isolated).
* edge part: everything else in the image encoder, **including the neck** (and the learned fusion module
  when the plan has one). The prompt encoder and mask decoder are NOT included: they run on the edge once
  per prompt, not once per image (their cost is reported separately as `decoder_flops_per_prompt`).

FlopCounterMode counts a multiply-add as 2 FLOPs and ignores elementwise ops (norms, GELU, softmax), which
are a few percent of the total.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pedvit.models import Sam
from pedvit.models.image_encoder_vit import ImageEncoderViT
from pedvit.models.tiny_vit import TinyViT
from pedvit.partition import WindowGrid

from .plans import SplitPlan, TinyViTIsolated, ViTExact, ViTIsolated
from .stages import vit_window_stretches

__all__ = ["PlanFlops", "plan_flops", "decoder_flops_per_prompt", "count_flops", "fusion_flops", "context_flops"]


@dataclass(frozen=True)
class PlanFlops:
    """FLOPs of one image encoding with a plan (square image, all 25 windows content)."""

    plan: str
    model: str
    worker_flops: int
    edge_flops: int

    @property
    def total(self) -> int:
        return self.worker_flops + self.edge_flops

    @property
    def edge_share(self) -> float:
        return self.edge_flops / self.total if self.total else 0.0


def count_flops(fn) -> int:  # noqa: ANN001 - any zero-argument callable
    """FLOPs (2 per multiply-add) that calling `fn()` runs."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def fusion_flops(module: nn.Module, channels: int = 320, side: int = 64) -> int:
    """FLOPs (2 per multiply-add, `torch.utils.flop_counter`) of one 1 x channels x side x side forward of
    the module itself (the context pass it may need is `context_flops`)."""
    device = next(module.parameters()).device  # "meta" when counting without computing
    x = torch.zeros(1, channels, side, side, device=device)
    context_px = getattr(module, "context_px", 0)
    context = torch.zeros(1, channels, context_px // 16, context_px // 16, device=device) if context_px else None
    with torch.no_grad():
        return count_flops(lambda: module(x) if context is None else module(x, context))


def context_flops(model: Sam, module: nn.Module) -> int:
    """FLOPs of the edge's context pass for `module` (0 without one): the trunk on context_px x context_px."""
    context_px = getattr(module, "context_px", 0)
    if not context_px:
        return 0
    x = torch.zeros(1, 3, context_px, context_px, device=next(model.parameters()).device)
    with torch.no_grad():
        return count_flops(lambda: model.image_encoder.run_trunk(x))


def _meta_copy(model: Sam) -> Sam:
    return copy.deepcopy(model).to("meta")


@torch.inference_mode()
def plan_flops(plan: SplitPlan, model: Sam) -> PlanFlops:
    """Worker and edge encoder FLOPs of `plan` on `model` (see the module docstring for what is counted)."""
    plan.check_model(model)
    meta = _meta_copy(model)
    encoder = meta.image_encoder
    n = meta.img_size
    grid = WindowGrid((n, n), input_size=n)
    worker = edge = 0
    if isinstance(plan, TinyViTIsolated):
        assert isinstance(encoder, TinyViT)
        for window in grid.windows:
            y0, x0, y1, x1 = grid.crop_box(window.id, plan.halo_px)
            x = torch.empty(1, 3, y1 - y0, x1 - x0, device="meta")
            worker += count_flops(lambda: encoder.run_trunk(x, origin_px=(y0, x0)))
        features = torch.empty(1, encoder.trunk_channels, n // 16, n // 16, device="meta")
        if plan.fusion is not None:
            edge += fusion_flops(copy.deepcopy(plan.fusion).to("meta"), encoder.trunk_channels, n // 16)
            edge += context_flops(meta, plan.fusion)
        edge += count_flops(lambda: encoder.run_neck(features))
    elif isinstance(plan, (ViTIsolated, ViTExact)):
        assert isinstance(encoder, ImageEncoderViT)
        p, dim = encoder.patch_size, encoder.pos_embed.shape[-1]
        stretches = vit_window_stretches(encoder)
        first_end = encoder.global_attn_indexes[0]
        worker_stretches = [(0, first_end)] + (stretches[1:] if isinstance(plan, ViTExact) else [])
        # Window blocks cost the same for every window of one shape: count each shape once, as a batch.
        shapes: dict[tuple[int, int], int] = {}
        for window in grid.windows:
            y0, x0, y1, x1 = window.input_box
            shapes[(y1 - y0, x1 - x0)] = shapes.get((y1 - y0, x1 - x0), 0) + 1
        for (h, w), k in shapes.items():
            x = torch.empty(k, 3, h, w, device="meta")
            worker += count_flops(lambda: encoder.run_blocks(encoder.embed(x, (0, 0)), 0, first_end))
            tokens = torch.empty(k, h // p, w // p, dim, device="meta")
            for start, end in worker_stretches[1:]:
                worker += count_flops(lambda: encoder.run_blocks(tokens, start, end))
        full = torch.empty(1, n // p, n // p, dim, device="meta")
        worker_blocks = {i for start, end in worker_stretches for i in range(start, end)}
        for i in range(first_end, encoder.depth):
            if i not in worker_blocks:
                edge += count_flops(lambda: encoder.run_blocks(full, i, i + 1))
        edge += count_flops(lambda: encoder.run_neck(full))
    else:
        raise ValueError(f"no FLOP model for plan {plan.name!r}")
    return PlanFlops(plan.name, model.name, worker, edge)


@torch.inference_mode()
def decoder_flops_per_prompt(model: Sam) -> int:
    """Prompt encoder + mask decoder FLOPs for one point prompt (runs on the edge, once per prompt)."""
    meta = _meta_copy(model)
    side = meta.img_size // 16
    embedding = torch.empty(1, 256, side, side, device="meta")
    points = (torch.empty(1, 1, 2, device="meta"), torch.ones(1, 1, dtype=torch.int64, device="meta"))

    def run() -> None:
        sparse, dense = meta.prompt_encoder(points=points, boxes=None, masks=None)
        meta.mask_decoder(image_embeddings=embedding, image_pe=meta.prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
                          dense_prompt_embeddings=dense, multimask_output=True)

    return count_flops(run)
