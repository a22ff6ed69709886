"""Resizing images and prompts to the model's input frame (longest side 1024)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def preprocess_shape(old_h: int, old_w: int, long_side: int) -> tuple[int, int]:
    """Size (h, w) of an old_h x old_w image resized so that its longest side is `long_side`."""
    scale = long_side / max(old_h, old_w)
    # Never round a side down to 0 (a 1 x 5000 image stays 1 px high), as `pedvit.partition` does.
    return max(1, int(old_h * scale + 0.5)), max(1, int(old_w * scale + 0.5))


class ResizeLongestSide:
    """Resizes images (bilinear, via PIL as the original SAM does) and coordinates to a longest side."""

    def __init__(self, target_length: int = 1024) -> None:
        self.target_length = target_length

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """H x W x 3 uint8 -> h x w x 3 uint8."""
        h, w = preprocess_shape(image.shape[0], image.shape[1], self.target_length)
        return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """... x 2 (x, y) original pixel coordinates -> input-frame coordinates (float)."""
        old_h, old_w = original_size
        new_h, new_w = preprocess_shape(old_h, old_w, self.target_length)
        coords = np.array(coords, dtype=np.float64, copy=True)
        coords[..., 0] *= new_w / old_w
        coords[..., 1] *= new_h / old_h
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """B x 4 (x0, y0, x1, y1) -> input frame."""
        return self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W float -> B x 3 x h x w (antialiased bilinear)."""
        h, w = preprocess_shape(image.shape[2], image.shape[3], self.target_length)
        return torch.nn.functional.interpolate(image, (h, w), mode="bilinear", align_corners=False, antialias=True)
