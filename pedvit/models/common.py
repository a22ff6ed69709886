"""Layers shared by the SAM family."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def activate_(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`act(x)` (nn.GELU or nn.ReLU), written into `x` itself when no gradient is wanted.

    Only for an `x` the caller owns (a layer's fresh output). Why: a fresh activation-sized buffer on CPU costs
    page faults on first touch (a 67 MB TinyViT activation: ~22 ms to GELU into a new buffer, ~8 ms in place).
    """
    if torch.is_grad_enabled() and x.requires_grad:
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
        return self.lin2(activate_(self.act, self.lin1(x)))


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
