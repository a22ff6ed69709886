"""Edge fusion for `tinyvit-isolated`: restores cross-window context lost by isolated per-window trunks.

With no halo, each worker runs MobileSAM's TinyViT trunk on its own 224 px windows only, so the stitched
1 x 320 x 64 x 64 trunk features miss every interaction across window borders (token rows/columns at
multiples of 14). `SeamFusion` is a small residual module the edge applies to the stitched features before
the neck: ``y = x + f(x)`` where ``f`` mixes information across borders with depthwise large-kernel and
dilated convolutions (receptive field 25 tokens > one window), and knows where the seams are through a
learned embedding of the token's position inside its window (tiled every 14 tokens). The last layer of
each block is zero-initialised, so an untrained module is exactly the identity.

Optionally (``context_px``, on in the shipped weights) the module also reads a **whole-image context pass**
that only the edge can run: the same trunk on the edge's own copy of the image downscaled to 224 px, where
TinyViT's 14-token attention window spans the whole image. The seams' missing context is global, coarse
information; this pass supplies it for ~4 % of the encoder's FLOPs, and the plan runs it while the workers
compute. Nothing about what a worker receives changes.

It is trained by distillation (no labels): input = stitched isolated features (+ the context pass), teacher =
the monolithic model on the same image, loss through the frozen neck (the shipped weights: the embedding
over the image content; optionally also mask logits through the frozen decoder; see `pedvit.training.distil`,
run as `scripts/train_fusion.py distil`). The shipped weights are on by default for
`tinyvit-isolated` (`DistributedSamPredictor(fusion="auto")`). They were trained on the features of the
trunk run with a window adapter (`pedvit.plans.window_adapter`), which the weights file carries and the plan
has the workers run.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pedvit.models import Sam
from pedvit.models.common import LayerNorm2d

from .window_adapter import WindowAdapter

__all__ = ["SeamFusion", "DEFAULT_WEIGHTS", "load_default_fusion", "load_window_adapter", "save_fusion", "canvas_input",
           "single_canvas", "context_trunk", "edge_context", "apply_fusion"]

#: Shipped weights (trained by `pedvit.training`, `scripts/train_fusion.py`) and their metadata JSON.
DEFAULT_WEIGHTS = pathlib.Path(__file__).with_name("weights") / "fusion_mobile_sam.pt"


def _linear_tokens(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """1x1 convolution of a B x H x W x C (channel-last, contiguous) tensor as one matrix multiply."""
    out = torch.addmm(conv.bias, x.reshape(-1, x.shape[-1]), conv.weight.flatten(1).t())
    return out.view(*x.shape[:-1], -1)


def _depthwise_tokens(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """Depthwise (optionally dilated) convolution of a B x H x W x C channel-last tensor; same result as
    ``conv`` on the NCHW tensor.

    Why not just ``conv``: on CPU, oneDNN's dilated depthwise kernel is ~10x slower than the undilated one.
    A dilation-d convolution only mixes tokens whose coordinates agree modulo d, so the map is split into its
    d x d interleaved sub-grids (space-to-batch), each gets the undilated kernel, and the results are
    interleaved back. The zero rows/columns added to reach a multiple of d are what the convolution's own zero
    padding would read there, so the result is exact.
    """
    d, k = conv.dilation[0], conv.kernel_size[0]
    if d == 1:
        return F.conv2d(x.permute(0, 3, 1, 2), conv.weight, conv.bias, padding=k // 2, groups=conv.groups).permute(0, 2, 3, 1)
    b, h, w, c = x.shape
    # Ceiling division written with a positive floor division: traced for ONNX, integer Div truncates.
    hs, ws = (h + d - 1) // d, (w + d - 1) // d
    x = F.pad(x, (0, 0, 0, ws * d - w, 0, hs * d - h))
    grids = x.view(b, hs, d, ws, d, c).permute(0, 2, 4, 1, 3, 5).reshape(b * d * d, hs, ws, c)
    y = F.conv2d(grids.permute(0, 3, 1, 2), conv.weight, conv.bias, padding=k // 2, groups=conv.groups).permute(0, 2, 3, 1)
    y = y.reshape(b, d, d, hs, ws, c).permute(0, 3, 1, 4, 2, 5).reshape(b, hs * d, ws * d, c)
    return y[:, :h, :w]


class _SeamBlock(nn.Module):
    """LN -> 1x1 down -> (+ in-window position embedding) -> DW kxk -> GELU -> DW kxk dilated -> GELU
    -> [1x1 hidden -> mlp_ratio * hidden -> GELU, when mlp_ratio > 0] -> 1x1 up (zero-initialised).

    Receptive field: (k - 1) * (1 + dilation) + 1 tokens; with k=7, dilation=3 that is 25 tokens, so every
    token sees across at least one window border in each direction. The optional pointwise MLP mixes
    channels after the spatial mixing (the depthwise convs alone mix no channels).

    The parameters are stored as convolutions (the checkpoint layout), but `forward` works on channel-last
    B x H x W x C tokens: the 1x1 convolutions become matrix multiplies and the dilated depthwise one is split
    into sub-grids (`_depthwise_tokens`), about 3x less CPU time than the convolutions on NCHW.
    """

    def __init__(self, channels: int, hidden: int, window_tokens: int, kernel: int, dilation: int, mlp_ratio: float = 0.0) -> None:
        super().__init__()
        self.window_tokens = window_tokens
        self.norm = LayerNorm2d(channels)
        self.down = nn.Conv2d(channels, hidden, 1)
        # Where a token sits inside its window (distance to the seams), tiled over the whole map.
        self.pos = nn.Parameter(torch.zeros(1, hidden, window_tokens, window_tokens))
        self.dw1 = nn.Conv2d(hidden, hidden, kernel, padding=kernel // 2, groups=hidden)
        self.dw2 = nn.Conv2d(hidden, hidden, kernel, padding=dilation * (kernel // 2), dilation=dilation, groups=hidden)
        self.act = nn.GELU()
        expanded = int(round(hidden * mlp_ratio))
        self.mlp = nn.Sequential(nn.Conv2d(hidden, expanded, 1), nn.GELU()) if expanded > 0 else nn.Identity()
        self.up = nn.Conv2d(expanded if expanded > 0 else hidden, channels, 1)
        nn.init.zeros_(self.up.weight)  # untrained block == identity
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """B x H x W x C contiguous channel-last tokens (+ optional B x H x W x hidden context, added to the
        hidden features) -> the same shape as x."""
        h, w = x.shape[1:3]
        t = self.window_tokens
        y = F.layer_norm(x, self.norm.weight.shape, self.norm.weight, self.norm.bias, self.norm.eps)
        pos = self.pos.permute(0, 2, 3, 1).repeat(1, (h + t - 1) // t, (w + t - 1) // t, 1)[:, :h, :w]
        y = _linear_tokens(y, self.down) + pos
        if context is not None:
            y = y + context
        y = self.act(_depthwise_tokens(y, self.dw1))
        y = self.act(_depthwise_tokens(y, self.dw2))
        if isinstance(self.mlp, nn.Sequential):
            y = self.mlp[1](_linear_tokens(y, self.mlp[0]))
        return x + _linear_tokens(y, self.up)


class SeamFusion(nn.Module):
    """Residual cross-window fusion of stitched TinyViT trunk features.

    Args:
        channels: trunk channels (320 for MobileSAM).
        hidden: channels inside each block.
        depth: number of residual blocks.
        window_tokens: window side in tokens (14), for the in-window position embedding.
        kernel, dilation: depthwise kernel size and the dilation of the second depthwise conv.
        mlp_ratio: width of the optional pointwise MLP of each block, in multiples of `hidden` (0: none).
        context_px: 0 (none), or the side in px of the edge's whole-image context pass: the edge, which holds
            the whole image anyway, runs the same trunk on the image downscaled to context_px x context_px
            (`context_trunk`); every block adds a projection of those features, upsampled to the token grid, to
            its hidden features. At 224 px the trunk's 14-token attention window covers the whole image, so
            this is global attention over a coarse view, for ~4 % of the encoder's FLOPs.

    Attribute `window_adapter` (not a parameter of this module): the `WindowAdapter` the workers' trunk must run
    with for these weights (they were trained on features of the adapted trunk), or None for the plain trunk.
    `load_default_fusion` sets it from the weights file; the plan dispatches the matching worker stage.

    Shapes: B x channels x H x W (+ B x channels x h x w context) -> B x channels x H x W (H = W = 64 for a
    1024 px input; h = w = context_px / 16).
    """

    def __init__(self, channels: int = 320, hidden: int = 128, depth: int = 2, window_tokens: int = 14,
                 kernel: int = 7, dilation: int = 3, mlp_ratio: float = 0.0, context_px: int = 0) -> None:
        super().__init__()
        if context_px < 0 or context_px % 16:
            raise ValueError(f"context_px must be 0 or a positive multiple of 16, got {context_px}")
        self.config = dict(channels=channels, hidden=hidden, depth=depth, window_tokens=window_tokens,
                           kernel=kernel, dilation=dilation, mlp_ratio=mlp_ratio)
        if context_px:  # absent from older weights' config: they load unchanged
            self.config["context_px"] = context_px
        self.context_px = context_px
        self.window_adapter: WindowAdapter | None = None
        self.blocks = nn.ModuleList(_SeamBlock(channels, hidden, window_tokens, kernel, dilation, mlp_ratio) for _ in range(depth))
        if context_px:
            self.context_norm = LayerNorm2d(channels)
            self.context_proj = nn.ModuleList(nn.Conv2d(channels, hidden, 1) for _ in range(depth))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """B x C x H x W (any memory layout) [+ B x C x h x w context trunk features when context_px > 0]
        -> B x C x H x W (channel-last memory, as the blocks compute)."""
        if self.context_px and context is None:
            raise ValueError(f"this fusion needs the edge's {self.context_px} px context features "
                             "(pedvit.plans.fusion.apply_fusion computes them)")
        y = x.permute(0, 2, 3, 1).contiguous()
        hidden: list[torch.Tensor | None] = [None] * len(self.blocks)
        if self.context_px:
            # Normalised and projected on the coarse grid (cheap), then upsampled to the token grid.
            c = context.permute(0, 2, 3, 1).contiguous()
            c = F.layer_norm(c, self.context_norm.weight.shape, self.context_norm.weight, self.context_norm.bias, self.context_norm.eps)
            hidden = [F.interpolate(_linear_tokens(c, proj).permute(0, 3, 1, 2), size=x.shape[-2:], mode="bilinear",
                                    align_corners=False).permute(0, 2, 3, 1) for proj in self.context_proj]
        for block, extra in zip(self.blocks, hidden):
            y = block(y, extra)
        return y.permute(0, 3, 1, 2)


def context_trunk(model: Sam, x: torch.Tensor, context_px: int) -> torch.Tensor:
    """B x 3 x S x S normalised, zero-padded input -> B x C x context_px/16 x context_px/16 trunk features
    of the whole input downscaled (antialiased) to context_px x context_px: the edge's context pass."""
    small = F.interpolate(x, size=(context_px, context_px), mode="bilinear", antialias=True, align_corners=False)
    return model.image_encoder.run_trunk(small)


@torch.inference_mode()
def edge_context(model: Sam, resized: np.ndarray, context_px: int) -> torch.Tensor:
    """1 x C x context_px/16 x context_px/16: the edge's context pass over its own copy of the h x w x 3 uint8
    resized image (nothing here is sent anywhere). Thread-safe: the plan runs it while the workers compute."""
    return context_trunk(model, single_canvas(model, resized).to(model.device), context_px)


def apply_fusion(model: Sam, fusion: nn.Module, trunk: torch.Tensor, resized: np.ndarray) -> torch.Tensor:
    """fusion(stitched trunk), with the context pass over the h x w x 3 uint8 resized image when the module
    uses one (`SeamFusion.context_px`); any other module is called on the trunk alone."""
    context_px = getattr(fusion, "context_px", 0)
    return fusion(trunk, edge_context(model, resized, context_px)) if context_px else fusion(trunk)


def canvas_input(model: Sam, resized: torch.Tensor, content_hw: Sequence[tuple[int, int]]) -> torch.Tensor:
    """B x 3 x S x S uint8/float canvases (resized content top-left, anything beyond it ignored) ->
    B x 3 x S x S normalised input with zeros beyond each image's content, as `Sam.preprocess` pads."""
    x = model.normalize(resized.float())
    keep = torch.zeros(x.shape[0], 1, *x.shape[-2:], dtype=torch.bool, device=x.device)
    for i, (h, w) in enumerate(content_hw):
        keep[i, :, :h, :w] = True
    return x * keep


def single_canvas(model: Sam, resized: np.ndarray) -> torch.Tensor:
    """1 x 3 x S x S normalised input of one h x w x 3 uint8 resized image (zeros beyond it)."""
    h, w = resized.shape[:2]
    canvas = torch.zeros(1, 3, model.img_size, model.img_size)
    canvas[0, :, :h, :w] = torch.from_numpy(np.array(resized, dtype=np.float32)).permute(2, 0, 1)
    return canvas_input(model, canvas, [(h, w)])


def load_default_fusion(path: str | pathlib.Path | None = None) -> SeamFusion | None:
    """The trained fusion module for MobileSAM (eval mode), or None when the weights file is absent.

    The file holds ``{"config": {...}, "state_dict": {...}}`` and, when the weights were trained on the
    adapted trunk, ``"window_adapter": {name: tensor}`` and, for an adapter with seam padding,
    ``"window_adapter_seam_padding": "replicate"`` (set as `module.window_adapter`). It is loaded with
    ``weights_only=True`` and ``strict=True`` so a stale or foreign file fails loudly instead of silently
    half-loading.
    """
    path = pathlib.Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        return None
    blob = torch.load(path, map_location="cpu", weights_only=True)
    module = SeamFusion(**blob["config"])
    module.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()}, strict=True)
    # Through the adapter cache: the plan, the edge and in-process workers then share one adapter object.
    key = _file_key(path)
    if key not in _ADAPTER_CACHE:
        _ADAPTER_CACHE[key] = _adapter_from_blob(blob)
    module.window_adapter = _ADAPTER_CACHE[key]
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def adapter_blob(adapter: WindowAdapter) -> dict:
    """The entries a weights file stores for a window adapter (read back by `load_window_adapter`)."""
    blob: dict = {"window_adapter": adapter.state_dict()}
    if adapter.seam_padding != "zeros":
        blob["window_adapter_seam_padding"] = adapter.seam_padding
    return blob


def _adapter_from_blob(blob: dict) -> WindowAdapter | None:
    params = blob.get("window_adapter") or {}
    seam_padding = blob.get("window_adapter_seam_padding", "zeros")
    if not params and seam_padding == "zeros":
        return None
    return WindowAdapter({k: v.float() for k, v in params.items()}, seam_padding)


_ADAPTER_CACHE: dict[tuple, WindowAdapter | None] = {}


def _file_key(path: pathlib.Path) -> tuple:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def load_window_adapter(path: str | pathlib.Path | None = None) -> WindowAdapter | None:
    """The window adapter stored in a fusion weights file (default: the shipped one), or None when the file
    is absent or has none. Cached per (path, size, mtime): workers call it for every stage registry."""
    path = pathlib.Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        return None
    key = _file_key(path)
    if key not in _ADAPTER_CACHE:
        _ADAPTER_CACHE[key] = _adapter_from_blob(torch.load(path, map_location="cpu", weights_only=True))
    return _ADAPTER_CACHE[key]


def save_fusion(module: SeamFusion, path: str | pathlib.Path, metadata: dict | None = None) -> None:
    """Write the weights (fp32, about 1 MB; with the module's `window_adapter`, if any) and, optionally, a
    metadata JSON beside them."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().clone() for k, v in module.state_dict().items()}
    blob = {"config": dict(module.config), "state_dict": state}
    adapter = getattr(module, "window_adapter", None)
    if adapter is not None:
        blob.update(adapter_blob(adapter))
    torch.save(blob, path)
    if metadata is not None:
        path.with_suffix(".json").write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
