"""What the fusion trainer learns from: augmented photos on 1024 px canvases, and the trunk features the edge
would stitch from isolated windows (computed in-process, `stitch_isolated`: the same numbers as the engine with
in-process workers, `check-fast-path`) against the monolithic trunk's."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import nn

from pedvit.models import Sam
from pedvit.models.transforms import ResizeLongestSide
from pedvit.plans.fusion import single_canvas
from pedvit.plans.stitch import stitch_windows
from pedvit.plans.window_adapter import WindowAdapter, adapted_encoder

WINDOW_PX = 224
AUGMENT = dict(crop_scale=(0.35, 1.0), aspect=(0.6, 1.67), hflip_p=0.5, vflip_p=0.1, brightness=0.3,
               contrast=0.3, saturation=0.4, hue_shift_deg=12.0, grayscale_p=0.1)



def resize(model: Sam, image: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 -> h x w x 3 uint8 with the longest side = model.img_size (as SamPredictor does)."""
    return ResizeLongestSide(model.img_size).apply_image(image)


def augment(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Random crop (scale, aspect), flips, colour jitter (brightness, contrast, saturation, hue), grey."""
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


class AugmentedCanvases(torch.utils.data.Dataset):
    """Item i: one augmented photo, resized (longest side = `side`) onto a zero `side` x `side` canvas.

    Deterministic per index (rng seeded with (seed, i)), so the data do not depend on the loader's workers.
    Returns (3 x side x side uint8 canvas, (h, w) of the content, photo index).
    """

    def __init__(self, photos: list, length: int, seed: int, side: int = 1024) -> None:
        self.images = [p.image for p in photos]
        self.length, self.seed, self.side = length, seed, side

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        rng = np.random.default_rng([self.seed, i])
        k = int(rng.integers(len(self.images)))
        image, _ = augment(self.images[k], rng)
        resized = ResizeLongestSide(self.side).apply_image(image)
        h, w = resized.shape[:2]
        canvas = np.zeros((self.side, self.side, 3), dtype=np.uint8)
        canvas[:h, :w] = resized
        return torch.from_numpy(canvas).permute(2, 0, 1), torch.tensor([h, w]), k


def loader_worker_init(_: int) -> None:
    """A data-loader process: one OpenCV and one torch thread (the loaders run several)."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def content_mask(sizes: Sequence[tuple[int, int]], side: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """B x 1 x side x side: 1 where a cell of a side x side map over the 1024 px canvas covers image content
    (sizes: the resized h, w per image; content sits top-left), 0 over the padding."""
    stride = 1024 // side
    mask = torch.zeros(len(sizes), 1, side, side, device=device)
    for i, (h, w) in enumerate(sizes):
        mask[i, :, : -(-h // stride), : -(-w // stride)] = 1
    return mask


def seam_distance(side_tokens: int = 64, window_tokens: int = WINDOW_PX // 16) -> torch.Tensor:
    """side x side tokens -> distance (in tokens) of each token to the nearest window border; 0 = on a border."""
    t = torch.arange(side_tokens) % window_tokens
    d = torch.minimum(t, window_tokens - 1 - t)
    return torch.minimum(d[:, None], d[None, :])


def stitch_isolated(encoder: nn.Module, x: torch.Tensor, window_px: int = WINDOW_PX) -> torch.Tensor:
    """B x 3 x S x S normalised, zero-padded input -> B x C x S/16 x S/16 stitched isolated trunk features.

    Every `window_px` window runs through the trunk alone (what a worker computes for `tinyvit-isolated`,
    halo 0: the stage normalises its uint8 crop and zeroes everything beyond the content, which is what the
    padding holds); all windows of one shape, over the whole batch, go through the trunk as one batch.
    Window origins are multiples of 224 px, so TinyViT's attention windows align at (0, 0). Each crop's seam
    sides go with it (an encoder with seam padding uses them, as a worker's stage does).
    """
    b, _, side, _ = x.shape
    stride = 16
    starts = list(range(0, side, window_px))
    by_shape: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for y0 in starts:
        for x0 in starts:
            by_shape.setdefault((min(window_px, side - y0), min(window_px, side - x0)), []).append((y0, x0))
    out = x.new_zeros(b, encoder.trunk_channels, side // stride, side // stride)
    tokens = out.permute(0, 2, 3, 1)  # a channel-last view: the stitcher writes into `out`
    for (h, w), origins in by_shape.items():
        crops = torch.cat([x[:, :, y0:y0 + h, x0:x0 + w] for y0, x0 in origins])  # (origins * B) x 3 x h x w
        seams = encoder.crop_seams([(y0, x0, h, w) for y0, x0 in origins], side).repeat_interleave(b, dim=0)
        feats = encoder.run_trunk(crops, seams=seams).view(len(origins), b, -1, h // stride, w // stride)
        stitch_windows(tokens, (((y0 // stride, x0 // stride, (y0 + h) // stride, (x0 + w) // stride), f.permute(0, 2, 3, 1))
                                for f, (y0, x0) in zip(feats, origins)))
    return out


@torch.inference_mode()
def stitched_fast(model: Sam, resized: np.ndarray, window_px: int = WINDOW_PX, *, adapter: WindowAdapter | None = None) -> torch.Tensor:
    """1 x 320 x 64 x 64 stitched isolated trunk features of one h x w x 3 uint8 resized image, in-process
    (equal to what `TinyViTIsolated.stitched_trunk` gathers from workers; `check-fast-path` measures it); with
    `adapter`, of the adapted trunk the workers then run."""
    return stitch_isolated(adapted_encoder(model.image_encoder, adapter), single_canvas(model, resized), window_px)


@torch.inference_mode()
def monolithic_trunk(model: Sam, resized: np.ndarray) -> torch.Tensor:
    """1 x 320 x 64 x 64 trunk features of the whole image (the distillation target)."""
    return model.image_encoder.run_trunk(single_canvas(model, resized))
