"""Stage implementations: the compute a worker (or the edge, for its local windows) runs on window batches.

Every stage takes B x h x w x C windows and B x 4 int32 meta (origin_y, origin_x, valid_h, valid_w) and
returns B x h' x w' x C' float32. The batch arrays may be read-only views of network buffers: stages never
modify them in place.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from pedvit.models import Sam, build_model
from pedvit.models.image_encoder_vit import ImageEncoderViT
from pedvit.models.tiny_vit import TinyViT

from .stage import Stage, StageSpec

TINYVIT_TRUNK = "tinyvit.trunk"
WINDOW_PX = 224


def vit_embed_stage_name(end: int) -> str:
    return f"vit.embed+blocks:0-{end - 1}"


def vit_blocks_stage_name(start: int, end: int) -> str:
    return f"vit.blocks:{start}-{end - 1}"


def vit_window_stretches(encoder: ImageEncoderViT) -> list[tuple[int, int]]:
    """[start, end) ranges of consecutive window-attention blocks, in order."""
    stretches, start = [], 0
    for g in list(encoder.global_attn_indexes) + [encoder.depth]:
        if g > start:
            stretches.append((start, g))
        start = g + 1
    return stretches


def _normalised_pixels(model_mean: torch.Tensor, model_std: torch.Tensor, batch: np.ndarray, meta: np.ndarray) -> torch.Tensor:
    """B x h x w x 3 uint8 crops -> B x 3 x h x w normalised, zero outside each crop's valid extent."""
    x = torch.from_numpy(np.array(batch, dtype=np.float32)).permute(0, 3, 1, 2)
    x = (x - model_mean) / model_std
    h, w = x.shape[-2:]
    for i, (_, _, valid_h, valid_w) in enumerate(meta.tolist()):
        if valid_h < h:
            x[i, :, valid_h:, :] = 0
        if valid_w < w:
            x[i, :, :, valid_w:] = 0
    return x


def _groups_by_origin(meta: np.ndarray, period: int) -> dict[tuple[int, int], list[int]]:
    """Batch indices grouped by their origin modulo `period` (windows aligned alike can share one forward)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (oy, ox, _, _) in enumerate(meta.tolist()):
        groups.setdefault((oy % period, ox % period), []).append(i)
    return groups


class TinyViTTrunkStage:
    """MobileSAM trunk on pixel crops: uint8 B x h x w x 3 -> B x h/16 x w/16 x 320."""

    def __init__(self, encoder: TinyViT, pixel_mean: torch.Tensor, pixel_std: torch.Tensor) -> None:
        self.encoder = encoder
        self.mean, self.std = pixel_mean, pixel_std
        self.spec = StageSpec(TINYVIT_TRUNK, ("uint8",), 3, max_side=encoder.img_size, multiple_of=16)

    @torch.inference_mode()
    def run(self, batch: np.ndarray, meta: np.ndarray) -> np.ndarray:
        x = _normalised_pixels(self.mean, self.std, batch, meta)
        out = torch.empty(x.shape[0], x.shape[2] // 16, x.shape[3] // 16, self.encoder.trunk_channels)
        # All TinyViT window grids repeat every 224 px, so crops with equal origin mod 224 batch together.
        for (oy, ox), idx in _groups_by_origin(meta, WINDOW_PX).items():
            out[idx] = self.encoder.run_trunk(x[idx], origin_px=(oy, ox)).permute(0, 2, 3, 1)
        return out.numpy()


class ViTEmbedStage:
    """ViT patch embedding + absolute positions + the window blocks before the first global block."""

    def __init__(self, encoder: ImageEncoderViT, end: int, pixel_mean: torch.Tensor, pixel_std: torch.Tensor) -> None:
        self.encoder, self.end = encoder, end
        self.mean, self.std = pixel_mean, pixel_std
        self.spec = StageSpec(vit_embed_stage_name(end), ("uint8",), 3, max_side=encoder.window_size * encoder.patch_size, multiple_of=encoder.patch_size)

    @torch.inference_mode()
    def run(self, batch: np.ndarray, meta: np.ndarray) -> np.ndarray:
        x = _normalised_pixels(self.mean, self.std, batch, meta)
        p = self.encoder.patch_size
        tokens = torch.cat([self.encoder.embed(x[i : i + 1], (oy // p, ox // p)) for i, (oy, ox, _, _) in enumerate(meta.tolist())])
        return self.encoder.run_blocks(tokens, 0, self.end).numpy()


class ViTBlocksStage:
    """A stretch of ViT window blocks on token windows: float B x h x w x C -> B x h x w x C."""

    def __init__(self, encoder: ImageEncoderViT, start: int, end: int) -> None:
        self.encoder, self.start, self.end = encoder, start, end
        dim = encoder.pos_embed.shape[-1]
        self.spec = StageSpec(vit_blocks_stage_name(start, end), ("float16", "float32"), dim, max_side=encoder.window_size)

    @torch.inference_mode()
    def run(self, batch: np.ndarray, meta: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.array(batch, dtype=np.float32))
        return self.encoder.run_blocks(x, self.start, self.end).numpy()


def stages_for_model(model: Sam) -> dict[str, Stage]:
    """Every worker stage of a model (the edge uses the same objects for the windows it computes itself)."""
    encoder = model.image_encoder
    if isinstance(encoder, TinyViT):
        stage: Stage = TinyViTTrunkStage(encoder, model.pixel_mean, model.pixel_std)
        return {stage.spec.name: stage}
    stretches = vit_window_stretches(encoder)
    stages: dict[str, Stage] = {}
    first_start, first_end = stretches[0]
    if first_start == 0:
        embed = ViTEmbedStage(encoder, first_end, model.pixel_mean, model.pixel_std)
        stages[embed.spec.name] = embed
    for start, end in stretches[1:] if first_start == 0 else stretches:
        blocks = ViTBlocksStage(encoder, start, end)
        stages[blocks.spec.name] = blocks
    return stages


def strip_to_worker_parts(model: Sam) -> Sam:
    """Drop what no worker stage uses (global blocks, neck, prompt encoder, mask decoder) to free memory."""
    encoder = model.image_encoder
    if isinstance(encoder, ImageEncoderViT):
        for i in encoder.global_attn_indexes:
            encoder.blocks[i] = nn.Identity()
    encoder.neck = nn.Identity()
    model.prompt_encoder = nn.Identity()  # type: ignore[assignment]
    model.mask_decoder = nn.Identity()  # type: ignore[assignment]
    return model


def build_worker_stages(model_name: str, checkpoint: str | os.PathLike[str] | None) -> dict[str, Stage]:
    """Stages a cloud worker serves for `model_name` (weights loaded, unneeded blocks dropped)."""
    return stages_for_model(strip_to_worker_parts(build_model(model_name, checkpoint)))
