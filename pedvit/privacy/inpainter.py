"""A learned inpainting attacker: a small U-Net that fills what a worker did not receive.

The classical attacks (:mod:`pedvit.privacy.reconstruction`) only extend colour and smooth structure. This
one has learned, from natural photos, what usually lies between and around windows: it is the attacker an
honest-but-curious cloud could train itself. It is trained by :mod:`pedvit.training.inpainter` on photos
that are disjoint from the evaluation photos, with the views the real partition schemes produce; the
shipped weights (``weights/inpainter.pt``, with a JSON of how they were made) are used by
``pedvit eval privacy`` as the ``unet`` attack.

Input: a view (``H x W x 3`` uint8, unseen pixels zero) and its mask; the network sees the masked image in
[0, 1] plus the mask (4 channels) and predicts RGB; seen pixels are pasted back. It is fully convolutional
(sides padded to a multiple of 16), and meant for the evaluation's working size (256 px on the long side),
where one 224 px window of a 1024 px canvas is ~56 px.
"""

from __future__ import annotations

import functools
import json
import pathlib
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InpaintUNet", "WEIGHTS", "load_inpainter", "unet_inpaint"]

WEIGHTS = pathlib.Path(__file__).with_name("weights") / "inpainter.pt"


def _block(c_in: int, c_out: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation), nn.GroupNorm(8, c_out), nn.SiLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU(),
    )


class InpaintUNet(nn.Module):
    """4 -> 3 channel U-Net, four downsamplings (stride 16) and a dilated bottleneck whose receptive field
    spans a 256 px image: B x 4 x H x W (masked RGB in [0, 1], mask) -> B x 3 x H x W RGB in [0, 1]."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        chans = [w, 2 * w, 4 * w, 4 * w, 4 * w]
        self.width = width
        self.stem = _block(4, chans[0])
        self.downs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1), _block(chans[i + 1], chans[i + 1]))
            for i in range(4)
        )
        self.middle = nn.Sequential(_block(chans[4], chans[4], 2), _block(chans[4], chans[4], 4))
        self.ups = nn.ModuleList(_block(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(4)))
        self.head = nn.Conv2d(chans[0], 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = self.middle(skips.pop())
        for up in self.ups:
            skip = skips.pop()
            y = up(torch.cat([F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1))
        return torch.sigmoid(self.head(y))

    def fill(self, view: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W view in [0, 1] (unseen zero) and B x 1 x H x W mask -> the view with unseen pixels
        predicted (sides padded to a multiple of 16 by reflection, then cropped back)."""
        h, w = view.shape[-2:]
        ph, pw = (-h) % 16, (-w) % 16
        x = torch.cat([view * mask, mask], 1)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        pred = self(x)[..., :h, :w]
        return mask * view + (1 - mask) * pred


@functools.lru_cache(maxsize=2)
def load_inpainter(path: str | None = None) -> tuple[InpaintUNet, dict[str, Any]]:
    """The shipped (or given) weights in eval mode, and their metadata (how they were trained)."""
    file = pathlib.Path(path) if path else WEIGHTS
    if not file.is_file():
        raise FileNotFoundError(f"inpainter weights not found at {file}; train them with "
                                "`python -m pedvit.training.inpainter` (see docs/privacy.md)")
    blob = torch.load(file, map_location="cpu", weights_only=True)
    meta_file = file.with_suffix(".json")
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    model = InpaintUNet(int(blob.get("width", 32)))
    model.load_state_dict(blob["state_dict"])
    return model.eval().requires_grad_(False), meta


def unet_inpaint(view: np.ndarray, mask: np.ndarray, work_side: int = 256) -> np.ndarray:
    """The ``unet`` attack: ``H x W x 3`` uint8 view (unseen zero) + ``H x W`` bool mask -> ``H x W x 3`` uint8.

    Runs at ``work_side`` on the long side when the view is larger (then upscaled; seen pixels pasted back at
    full resolution)."""
    import cv2

    if not mask.any():
        return np.full(view.shape, 128, np.uint8)
    if mask.all():
        return view.copy()
    model, _ = load_inpainter()
    h, w = mask.shape
    s = min(1.0, work_side / max(h, w))
    small_view, small_mask = view, mask
    if s < 1.0:
        size = (max(1, round(w * s)), max(1, round(h * s)))
        small_view = cv2.resize(view, size, interpolation=cv2.INTER_AREA)
        small_mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    v = torch.from_numpy(np.ascontiguousarray(small_view)).permute(2, 0, 1)[None].float() / 255
    m = torch.from_numpy(small_mask)[None, None].float()
    with torch.inference_mode():
        out = model.fill(v * m, m)[0].permute(1, 2, 0).numpy()
    out = np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)
    if out.shape[:2] != (h, w):
        out = cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.where(mask[:, :, None], view, out).astype(np.uint8)
