"""Stage implementations: the compute a worker (or the edge, for its local windows) runs on window batches.

Every stage takes B x h x w x C windows and B x 4 int32 meta (origin_y, origin_x, valid_h, valid_w) and
returns B x h' x w' x C' float32. The batch arrays may be read-only views of network buffers: stages never
modify them in place.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from pedvit.models import Sam, build_model
from pedvit.models.image_encoder_vit import ImageEncoderViT
from pedvit.models.tiny_vit import TinyViT

from .fusion import load_window_adapter
from .stage import Stage, StageSpec
from .window_adapter import WindowAdapter, adapted_encoder

TINYVIT_TRUNK = "tinyvit.trunk"
#: The whole image encoder on the whole (resized, padded) image: the cloud-only baseline, never a split plan.
FULL_ENCODER = "sam.encoder"
WINDOW_PX = 224


def _device_of(module: nn.Module) -> torch.device:
    """Where a module's weights live (stages move numpy inputs there and outputs back to CPU)."""
    for tensor in module.parameters():
        return tensor.device
    return torch.device("cpu")


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
    # One copy to a writable float tensor (the batch may be a read-only network buffer), on the stage's device.
    x = torch.from_numpy(np.array(batch, dtype=np.float32)).to(model_mean.device).permute(0, 3, 1, 2)
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
    """MobileSAM trunk on pixel crops: uint8 B x h x w x 3 -> B x h/16 x w/16 x 320.

    With a `WindowAdapter` the trunk runs with the adapter's parameter values (a cached copy of the encoder)
    and the stage is named after the adapter (`WindowAdapter.stage_name`); inputs and outputs are the same.
    """

    def __init__(self, encoder: TinyViT, pixel_mean: torch.Tensor, pixel_std: torch.Tensor,
                 adapter: WindowAdapter | None = None) -> None:
        self.encoder = adapted_encoder(encoder, adapter)
        self.mean, self.std = pixel_mean, pixel_std
        name = adapter.stage_name if adapter is not None else TINYVIT_TRUNK
        self.spec = StageSpec(name, ("uint8",), 3, max_side=encoder.img_size, multiple_of=16, canvas=encoder.img_size,
                              out_stride=encoder.out_stride, out_channels=encoder.trunk_channels)

    @torch.inference_mode()
    def run(self, batch: np.ndarray, meta: np.ndarray) -> np.ndarray:
        x = _normalised_pixels(self.mean, self.std, batch, meta)
        h, w = x.shape[-2:]
        # Which crop sides border more of the canvas (the trunk's seam padding, if the adapter sets one).
        seams = self.encoder.crop_seams([(oy, ox, h, w) for oy, ox, _, _ in meta.tolist()], self.encoder.img_size)
        groups = _groups_by_origin(meta, WINDOW_PX)
        if len(groups) == 1:  # the common case (no halo): one forward, no scatter copy
            (oy, ox), _ = next(iter(groups.items()))
            return self.encoder.run_trunk(x, origin_px=(oy, ox), seams=seams).permute(0, 2, 3, 1).cpu().numpy()
        out = torch.empty(x.shape[0], x.shape[2] // 16, x.shape[3] // 16, self.encoder.trunk_channels, device=x.device)
        # All TinyViT window grids repeat every 224 px, so crops with equal origin mod 224 batch together.
        for (oy, ox), idx in groups.items():
            out[idx] = self.encoder.run_trunk(x[idx], origin_px=(oy, ox), seams=seams[idx]).permute(0, 2, 3, 1)
        return out.cpu().numpy()


class ViTEmbedStage:
    """ViT patch embedding + absolute positions + the window blocks before the first global block."""

    def __init__(self, encoder: ImageEncoderViT, end: int, pixel_mean: torch.Tensor, pixel_std: torch.Tensor) -> None:
        self.encoder, self.end = encoder, end
        self.mean, self.std = pixel_mean, pixel_std
        self.spec = StageSpec(vit_embed_stage_name(end), ("uint8",), 3, max_side=encoder.window_size * encoder.patch_size,
                              multiple_of=encoder.patch_size, canvas=encoder.img_size, out_stride=encoder.patch_size,
                              out_channels=encoder.pos_embed.shape[-1])

    @torch.inference_mode()
    def run(self, batch: np.ndarray, meta: np.ndarray) -> np.ndarray:
        x = _normalised_pixels(self.mean, self.std, batch, meta)
        p = self.encoder.patch_size
        tokens = torch.cat([self.encoder.embed(x[i : i + 1], (oy // p, ox // p)) for i, (oy, ox, _, _) in enumerate(meta.tolist())])
        return self.encoder.run_blocks(tokens, 0, self.end).cpu().numpy()


class ViTBlocksStage:
    """A stretch of ViT window blocks on token windows: float B x h x w x C -> B x h x w x C."""

    def __init__(self, encoder: ImageEncoderViT, start: int, end: int) -> None:
        self.encoder, self.start, self.end = encoder, start, end
        dim = encoder.pos_embed.shape[-1]
        self.spec = StageSpec(vit_blocks_stage_name(start, end), ("float16", "float32"), dim, max_side=encoder.window_size,
                              canvas=encoder.img_size // encoder.patch_size, out_channels=dim)

    @torch.inference_mode()
    def run(self, batch: np.ndarray, meta: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.array(batch, dtype=np.float32)).to(_device_of(self.encoder))
        return self.encoder.run_blocks(x, self.start, self.end).cpu().numpy()


class FullEncoderStage:
    """The whole image encoder on the whole resized image: uint8 1 x 1024 x 1024 x 3 -> 1 x 64 x 64 x 256.

    Only the cloud-only *baseline* of the benchmark sends this stage anything (a split plan never does: it
    would hand one worker the whole image). Meta is (0, 0, valid_h, valid_w): the content extent, zero beyond.
    """

    def __init__(self, model: Sam) -> None:
        self.model = model
        size = model.img_size
        self.spec = StageSpec(FULL_ENCODER, ("uint8",), 3, max_side=size, multiple_of=size, max_batch=1, canvas=size,
                              out_stride=16, out_channels=256)  # every SAM neck gives 256 channels

    @torch.inference_mode()
    def run(self, batch: np.ndarray, meta: np.ndarray) -> np.ndarray:
        if meta[:, :2].any():
            raise ValueError(f"stage {FULL_ENCODER!r} takes the whole canvas: origins must be 0")
        x = _normalised_pixels(self.model.pixel_mean, self.model.pixel_std, batch, meta)
        return self.model.image_encoder(x).permute(0, 2, 3, 1).cpu().numpy()


def default_window_adapters(model: Sam) -> list[WindowAdapter]:
    """The window adapter shipped with MobileSAM's fusion weights ([] for other models or without one)."""
    if model.name != "mobile_sam" or not isinstance(model.image_encoder, TinyViT):
        return []
    adapter = load_window_adapter()
    return [adapter] if adapter is not None else []


def stages_for_model(model: Sam, window_adapters: Sequence[WindowAdapter] | None = None) -> dict[str, Stage]:
    """Every worker stage of a model (the edge uses the same objects for the windows it computes itself).

    MobileSAM gets the plain trunk stage and one adapted trunk stage per window adapter: `window_adapters`
    (None: the shipped one, `default_window_adapters`).
    """
    encoder = model.image_encoder
    full = FullEncoderStage(model)
    if isinstance(encoder, TinyViT):
        stage: Stage = TinyViTTrunkStage(encoder, model.pixel_mean, model.pixel_std)
        stages = {stage.spec.name: stage, full.spec.name: full}
        for adapter in default_window_adapters(model) if window_adapters is None else window_adapters:
            adapted = TinyViTTrunkStage(encoder, model.pixel_mean, model.pixel_std, adapter)
            stages[adapted.spec.name] = adapted
        return stages
    stretches = vit_window_stretches(encoder)
    stages: dict[str, Stage] = {}
    first_start, first_end = stretches[0]
    if first_start == 0:
        embed = ViTEmbedStage(encoder, first_end, model.pixel_mean, model.pixel_std)
        stages[embed.spec.name] = embed
    for start, end in stretches[1:] if first_start == 0 else stretches:
        blocks = ViTBlocksStage(encoder, start, end)
        stages[blocks.spec.name] = blocks
    stages[full.spec.name] = full
    return stages


def strip_to_worker_parts(model: Sam, *, keep_encoder: bool = False) -> Sam:
    """Drop what no worker stage uses to free memory: the prompt encoder and mask decoder, and (unless
    `keep_encoder`, needed by the full-encoder baseline stage) the global blocks and the neck."""
    encoder = model.image_encoder
    if not keep_encoder:
        if isinstance(encoder, ImageEncoderViT):
            for i in encoder.global_attn_indexes:
                encoder.blocks[i] = nn.Identity()
        encoder.neck = nn.Identity()
    model.prompt_encoder = nn.Identity()  # type: ignore[assignment]
    model.mask_decoder = nn.Identity()  # type: ignore[assignment]
    return model


def build_worker_stages(
    model_name: str,
    checkpoint: str | os.PathLike[str] | None,
    *,
    device: str | torch.device = "cpu",
    full_encoder: bool = False,
    window_adapters: Sequence[WindowAdapter] | None = None,
) -> dict[str, Stage]:
    """Stages a cloud worker serves for `model_name` (weights loaded on `device`, unneeded parts dropped).

    By default a worker loads only the split stages and the blocks they need. With `full_encoder` it also
    serves `FULL_ENCODER` (the cloud-only *baseline* of `pedvit bench`) and so keeps the whole image encoder.
    MobileSAM workers also serve the adapted trunk for each of `window_adapters` (None: the shipped adapter).
    """
    model = strip_to_worker_parts(build_model(model_name, checkpoint), keep_encoder=full_encoder).to(device).eval()
    stages = stages_for_model(model, window_adapters)
    if not full_encoder:
        stages.pop(FULL_ENCODER)
    return stages
