"""Layers shared by the SAM family."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


#: oneDNN's fused linear (+ activation) kernel, the one torch.compile's CPU backend calls; absent from builds
#: without oneDNN, where `linear` falls back to F.linear.
_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _eager_inference(*tensors: torch.Tensor) -> bool:
    """Whether inference-only shortcuts (in-place writes, oneDNN kernels) may run: no gradient is wanted
    through `tensors`, and nothing traces or compiles the forward (ONNX export and torch.compile see the
    plain ops)."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def linear(layer: nn.Linear, x: torch.Tensor, act: nn.Module | None = None) -> torch.Tensor:
    """`act(layer(x))` (`act`: None, nn.GELU or nn.ReLU) on ... x in_features -> ... x out_features.

    In inference on CPU float32 this runs oneDNN's matmul with the bias and the activation fused in. Why:
    F.linear calls MKL's sgemm, which on the AMD EPYC (AVX-512) machines measured here runs about half as fast
    as oneDNN on the same fp32 math (~2x per ViT-B / TinyViT layer; results within ~1e-5). Autograd, other
    devices and dtypes, tracing and compiling take the plain path (the oneDNN op has no backward).
    """
    weight = layer.weight
    fast = (_ONEDNN_LINEAR and x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
            and _eager_inference(x, weight))
    if fast and act is None:
        return torch.ops.mkldnn._linear_pointwise(x, weight, layer.bias, "none", [], "")
    if fast and isinstance(act, nn.GELU):
        return torch.ops.mkldnn._linear_pointwise(x, weight, layer.bias, "gelu", [], act.approximate)
    if fast and isinstance(act, nn.ReLU):
        return torch.ops.mkldnn._linear_pointwise(x, weight, layer.bias, "relu", [], "")
    out = F.linear(x, weight, layer.bias)
    return out if act is None else activate_(act, out)


def add_into(fresh: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """`fresh + other`, written into `fresh` (a layer's fresh output, same shape) when no gradient is wanted:
    saves an activation-sized allocation (see `activate_`)."""
    if not _eager_inference(fresh, other):
        return fresh + other
    return fresh.add_(other)


def activate_(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`act(x)` (nn.GELU or nn.ReLU), written into `x` itself when no gradient is wanted.

    Only for an `x` the caller owns (a layer's fresh output). Why: a fresh activation-sized buffer on CPU costs
    page faults on first touch (a 67 MB TinyViT activation: ~22 ms to GELU into a new buffer, ~8 ms in place).
    """
    if not _eager_inference(x):
        return act(x)
    if isinstance(act, nn.GELU):
        return torch.ops.aten.gelu_(x, approximate=act.approximate)
    if isinstance(act, nn.ReLU):
        return F.relu_(x)
    raise TypeError(f"activate_ supports nn.GELU and nn.ReLU, got {type(act).__name__}")


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a B x C x H x W tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLPBlock(nn.Module):
    """Two linear layers with an activation between them (keys `lin1`, `lin2`)."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


def pad_to_windows(x: torch.Tensor, window: int, offset: tuple[int, int] = (0, 0)) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Zero-pad a B x H x W x C tensor so that a window grid fits it.

    The window grid of the full image starts at token 0; a crop that starts at token `offset` (in the full
    image) therefore needs `offset % window` tokens of padding before it so that its windows line up with
    the full image's windows.

    Returns:
        the padded tensor and the (top, bottom, left, right) padding.
    """
    _, h, w, _ = x.shape
    top, left = offset[0] % window, offset[1] % window
    bottom = (-(top + h)) % window
    right = (-(left + w)) % window
    if top or bottom or left or right:
        x = nn.functional.pad(x, (0, 0, left, right, top, bottom))
    return x, (top, bottom, left, right)


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """B x H x W x C (H, W multiples of window) -> (B * nH * nW) x window x window x C."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c)


def window_unpartition(windows: torch.Tensor, window: int, hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of `window_partition` for a padded size hw = (H, W)."""
    h, w = hw
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // window) * (w // window))
    x = windows.view(b, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
