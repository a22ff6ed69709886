"""The SAM container: image encoder + prompt encoder + mask decoder, with pre/post-processing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .image_encoder_vit import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .tiny_vit import TinyViT

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class Sam(nn.Module):
    """Checkpoint-compatible SAM model (keys `image_encoder.*`, `prompt_encoder.*`, `mask_decoder.*`)."""

    mask_threshold: float = 0.0

    def __init__(self, image_encoder: ImageEncoderViT | TinyViT, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder, name: str = "sam") -> None:
        super().__init__()
        self.name = name
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), persistent=False)

    @property
    def img_size(self) -> int:
        return self.image_encoder.img_size

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W RGB in [0, 255] -> normalised (no padding)."""
        return (x - self.pixel_mean) / self.pixel_std

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x h x w resized RGB -> B x 3 x 1024 x 1024 normalised and zero-padded bottom/right."""
        h, w = x.shape[-2:]
        return F.pad(self.normalize(x), (0, self.img_size - w, 0, self.img_size - h))

    def postprocess_masks(self, masks: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]) -> torch.Tensor:
        """B x M x 256 x 256 logits -> B x M x H x W logits at the original size, padding removed."""
        masks = F.interpolate(masks, (self.img_size, self.img_size), mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, original_size, mode="bilinear", align_corners=False)
