"""Window adapter for `tinyvit-isolated`: trunk parameters tuned for windows that run alone.

MobileSAM's trunk was trained on whole images. Run on one 224 px window alone, its convolutions read zero
padding where the neighbouring windows used to be, and the next attention layer spreads that border error
over the whole window (`docs/fusion_and_dp.md`, seam oracle). A window adapter replaces the trunk's
normalisation parameters and biases (about 43 k numbers, under 1 % of the trunk's weights) with values
trained so that a window run alone gives tokens closer to the monolithic model's tokens for the same region.

An adapter may also set the trunk's seam padding (``seam_padding="replicate"``, `pedvit.models.tiny_vit`):
the convolutions then repeat the window's edge instead of reading zeros at its seams; the cost is one
padding copy per convolution.

What a worker receives does not change: the same pixels of its own windows, the same operations at the same
cost. Only the values of those parameters differ, and they are public (shipped with the edge's fusion
weights). The stage that runs the adapted trunk is named after the adapter's content hash
(``tinyvit.trunk@<id>``), so an edge and a worker holding different adapters fail loudly ("unknown stage")
instead of mixing features.
"""

from __future__ import annotations

import copy
import hashlib
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from pedvit.models.tiny_vit import SEAM_PADDINGS

__all__ = ["WindowAdapter", "adaptable_parameter", "adaptable_parameters", "adapted_encoder", "ADAPTED_STAGE_PREFIX"]

#: Adapted trunk stages are named ``ADAPTED_STAGE_PREFIX + adapter id``.
ADAPTED_STAGE_PREFIX = "tinyvit.trunk@"


def adaptable_parameter(name: str) -> bool:
    """Whether a TinyViT parameter (name as in `TinyViT.named_parameters()`) may be replaced by an adapter:
    the trunk's biases, LayerNorm / BatchNorm affine parameters and attention biases (never the neck or the
    unused classification head, never a weight matrix or convolution kernel)."""
    if not name.startswith(("patch_embed.", "layers.")):
        return False
    leaf = name.rsplit(".", 2)
    return (name.endswith(".bias") or ".bn." in name or "norm" in leaf[-2] or name.endswith("attention_biases"))


def adaptable_parameters(encoder: nn.Module) -> dict[str, nn.Parameter]:
    """Name -> parameter of everything an adapter may replace in `encoder` (a TinyViT)."""
    return {n: p for n, p in encoder.named_parameters() if adaptable_parameter(n)}


@dataclass(frozen=True)
class WindowAdapter:
    """Replacement values for some of a TinyViT trunk's adaptable parameters.

    Attributes:
        params: parameter name -> fp32 tensor of the parameter's shape. Treated as immutable: the id is
            computed once.
        seam_padding: how the trunk's padded convolutions treat a window's seam sides (`SEAM_PADDINGS`):
            "zeros" (as the plain trunk) or "replicate" (the window's edge row / column).
    """

    params: Mapping[str, torch.Tensor]
    seam_padding: str = "zeros"

    def __post_init__(self) -> None:
        if self.seam_padding not in SEAM_PADDINGS:
            raise ValueError(f"window adapter: seam_padding must be one of {SEAM_PADDINGS}, got {self.seam_padding!r}")
        if not self.params and self.seam_padding == "zeros":
            raise ValueError("a window adapter needs at least one parameter or a seam padding other than zeros")
        for name, value in self.params.items():
            if not adaptable_parameter(name):
                raise ValueError(f"window adapter: {name!r} is not an adaptable trunk parameter (biases, norms, attention biases)")
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                raise ValueError(f"window adapter: {name!r} must be a floating-point tensor")
            if not torch.isfinite(value).all():
                raise ValueError(f"window adapter: {name!r} holds non-finite values")

    @cached_property
    def adapter_id(self) -> str:
        """12 hex digits of a sha256 over the sorted names, shapes and fp32 bytes: the version on the wire."""
        digest = hashlib.sha256()
        if self.seam_padding != "zeros":  # (zeros: the ids of adapters from before seam padding stay the same)
            digest.update(f"seam_padding={self.seam_padding}".encode())
        for name in sorted(self.params):
            value = self.params[name].detach().to("cpu", torch.float32).contiguous()
            digest.update(name.encode() + repr(tuple(value.shape)).encode() + value.numpy().tobytes())
        return digest.hexdigest()[:12]

    @property
    def stage_name(self) -> str:
        """Name of the worker stage that runs the trunk with this adapter."""
        return ADAPTED_STAGE_PREFIX + self.adapter_id

    @property
    def numel(self) -> int:
        return sum(v.numel() for v in self.params.values())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """fp32 CPU copies of the parameters, for saving (the seam padding is saved beside them)."""
        return {n: v.detach().to("cpu", torch.float32).clone() for n, v in self.params.items()}

    @classmethod
    def from_encoder(cls, encoder: nn.Module, reference: nn.Module | None = None) -> WindowAdapter:
        """The adaptable parameters and seam padding of a (trained) encoder; with `reference`, only the
        parameters that differ from it."""
        ref = adaptable_parameters(reference) if reference is not None else {}
        params = {n: p.detach().float().cpu().clone() for n, p in adaptable_parameters(encoder).items()
                  if n not in ref or not torch.equal(p.detach().cpu(), ref[n].detach().cpu())}
        return cls(params, getattr(encoder, "seam_padding", "zeros"))

    def apply_(self, encoder: nn.Module) -> nn.Module:
        """Copy the adapter's values into `encoder` in place (shapes checked first); returns it."""
        targets = dict(encoder.named_parameters())
        for name, value in self.params.items():
            if name not in targets:
                raise ValueError(f"window adapter: the encoder has no parameter {name!r} (not a MobileSAM TinyViT?)")
            if tuple(targets[name].shape) != tuple(value.shape):
                raise ValueError(f"window adapter: {name!r} has shape {tuple(value.shape)}, the encoder's is "
                                 f"{tuple(targets[name].shape)}")
        if not hasattr(encoder, "seam_padding"):
            raise ValueError("window adapter: the encoder has no seam padding setting (not a MobileSAM TinyViT?)")
        with torch.no_grad():
            for name, value in self.params.items():
                targets[name].copy_(value.to(targets[name].device, targets[name].dtype))
        encoder.seam_padding = self.seam_padding
        return encoder


# encoder -> {adapter id: adapted copy}. A copy (not parameters swapped in place) because the edge runs the
# plain trunk (its context pass) and the adapted one (its local windows) at the same time.
_ADAPTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ADAPTED_LOCK = threading.Lock()


def adapted_encoder(encoder: nn.Module, adapter: WindowAdapter | None) -> nn.Module:
    """A frozen copy of `encoder` with the adapter applied, cached per (encoder, adapter id): ~23 MB for
    MobileSAM's trunk, made once per process. Without an adapter, `encoder` itself."""
    if adapter is None:
        return encoder
    key = adapter.adapter_id
    with _ADAPTED_LOCK:
        per_encoder = _ADAPTED.setdefault(encoder, {})
        if key not in per_encoder:
            adapted = adapter.apply_(copy.deepcopy(encoder))
            per_encoder[key] = adapted.eval().requires_grad_(False)
        return per_encoder[key]
