"""Model registry: `build_model(name, checkpoint)` for the SAM family."""

from __future__ import annotations

import os
import warnings
from typing import Callable

import torch

from .image_encoder_vit import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam
from .tiny_vit import TinyViT
from .transformer import TwoWayTransformer
from .weights import resolve_checkpoint


def _heads(name: str) -> tuple[PromptEncoder, MaskDecoder]:
    return PromptEncoder(), MaskDecoder(transformer=TwoWayTransformer())


def _vit(embed_dim: int, depth: int, num_heads: int, global_attn_indexes: tuple[int, ...]) -> Callable[[], ImageEncoderViT]:
    return lambda: ImageEncoderViT(embed_dim=embed_dim, depth=depth, num_heads=num_heads, global_attn_indexes=global_attn_indexes)


#: name -> encoder factory. ViT configurations from the SAM paper; `mobile_sam` is TinyViT `vit_t`.
ENCODERS: dict[str, Callable[[], torch.nn.Module]] = {
    "vit_b": _vit(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": _vit(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": _vit(1280, 32, 16, (7, 15, 23, 31)),
    "mobile_sam": TinyViT,
}

MODEL_NAMES = tuple(ENCODERS)


def build_sam(name: str, encoder: torch.nn.Module) -> Sam:
    prompt_encoder, mask_decoder = _heads(name)
    return Sam(encoder, prompt_encoder, mask_decoder, name=name)


def load_checkpoint(model: Sam, path: str | os.PathLike[str]) -> None:
    """Load an original SAM/MobileSAM checkpoint strictly, without unpickling arbitrary objects."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    model.load_state_dict(state, strict=True)


def build_model(name: str = "mobile_sam", checkpoint: str | os.PathLike[str] | None = None, *, seed: int | None = 0) -> Sam:
    """Build a SAM-family model in eval mode.

    Args:
        name: one of "mobile_sam", "vit_b", "vit_l", "vit_h".
        checkpoint: path to original weights. None: $PEDVIT_CHECKPOINT, else the bundled MobileSAM weights
            for "mobile_sam"; ViT models without a checkpoint get random weights (seeded, for tests and timing).
        seed: seed of the random initialisation (only matters without a checkpoint).
    """
    if name not in ENCODERS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    path = resolve_checkpoint(name, checkpoint)
    if path is None:
        warnings.warn(f"{name}: no checkpoint given, using random weights (pass --checkpoint or set PEDVIT_CHECKPOINT)", stacklevel=2)
    generator_state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        model = build_sam(name, ENCODERS[name]())
    finally:
        torch.random.set_rng_state(generator_state)
    if path is not None:
        load_checkpoint(model, path)
    return model.eval().requires_grad_(False)
