"""MobileSAM's TinyViT image encoder (`vit_t`), for any input size that is a multiple of 16 px.

Checkpoint-compatible with MobileSAM's `image_encoder.*` keys. Unlike the original, nothing is tied to a
64 x 64 token grid: the trunk runs on a crop of the input, and its attention-window grids can be given the
crop's origin in the full input so that windows line up with the ones the full image would use.

Resolution per stage for a crop of H x W px: patch embed -> H/4; layer 0 (MBConv) at H/4, merged to H/8;
layer 1 (window 7) at H/8, merged to H/16; layer 2 (window 14) at H/16, merged with stride 1; layer 3
(window 7) at H/16. A 224 px window is therefore 4 x 4 attention windows in layer 1, one in layer 2 and
2 x 2 in layer 3: all grids align with 224 px windows.

Seam padding (for crops run alone, `TinyViT.seam_padding`): a 3x3 convolution at a crop's edge reads zero
padding where the full image has the neighbouring content. With ``seam_padding = "replicate"`` and the
crop's seam sides given to `run_trunk`, every padded convolution of the trunk repeats the crop's edge row /
column there instead (a better guess of the unseen neighbour than zero); sides on the input's own border keep
zero padding, as in the full image. Nothing beyond the crop is read.
"""

from __future__ import annotations

from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d, activate_, add_into, linear, pad_to_windows, window_partition, window_unpartition


#: Padding modes for a crop's seam sides (`TinyViT.seam_padding`).
SEAM_PADDINGS: tuple[str, ...] = ("zeros", "replicate")

# (B x 4 bool seam sides (top, bottom, left, right), whether all of them are seams) of the crops in the trunk
# forward running in this context; None: plain zero padding. A context variable, so concurrent forwards in
# other threads are unaffected.
_SEAMS: ContextVar[tuple[torch.Tensor, bool] | None] = ContextVar("tinyvit_seams", default=None)


def seam_pad(x: torch.Tensor, pad: int, seams: torch.Tensor, all_seams: bool | None = None) -> torch.Tensor:
    """B x C x H x W -> B x C x (H + 2 pad) x (W + 2 pad): edge-replicate padding on the seam sides, zeros
    on the others (`seams`: B x 4 bool, top / bottom / left / right; corners need both of their sides).
    `all_seams`: whether every side is a seam, when the caller knows (None: computed here)."""
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    if bool(seams.all()) if all_seams is None else all_seams:
        return padded
    b, _, h, w = x.shape
    s = seams.to(x.dtype)
    rows = torch.cat([s[:, 0:1].expand(b, pad), x.new_ones(b, h), s[:, 1:2].expand(b, pad)], dim=1)
    cols = torch.cat([s[:, 2:3].expand(b, pad), x.new_ones(b, w), s[:, 3:4].expand(b, pad)], dim=1)
    return padded * (rows[:, None, :, None] * cols[:, None, None, :])


def _cache_key(*tensors: torch.Tensor) -> tuple[int, ...]:
    """Identity of some tensors' current values: storage, in-place version (``load_state_dict``, ``copy_``,
    ``.to`` all change one of them), dtype."""
    return tuple(v for t in tensors for v in (t.data_ptr(), t._version, hash(t.dtype)))


def _folding_allowed(module: nn.Module, weight: torch.Tensor) -> bool:
    """Inference-only shortcuts (folded weights, cached biases) apply in eval mode when no gradient is wanted."""
    return not module.training and not (torch.is_grad_enabled() and weight.requires_grad)


class Conv2dBN(nn.Sequential):
    """Convolution without bias followed by BatchNorm (keys `c`, `bn`). Inside `TinyViT.run_trunk` with seam
    sides, a padded convolution pads its input with `seam_pad` instead of zeros.

    In eval mode without gradients the BatchNorm is folded into the convolution (one op instead of two; the
    folded weight is cached until a parameter or running statistic changes): same outputs up to float
    rounding (~1e-6)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, pad: int = 0, groups: int = 1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(in_ch, out_ch, kernel, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_ch))
        self._folded: tuple[tuple[int, ...], torch.Tensor, torch.Tensor] | None = None

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(out x in/groups x k x k weight, out bias) of the convolution with the eval-mode BatchNorm folded in."""
        c, bn = self.c, self.bn
        key = _cache_key(c.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        if self._folded is None or self._folded[0] != key:
            with torch.no_grad():
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                weight = (c.weight * scale[:, None, None, None]).contiguous(memory_format=torch.channels_last)
                self._folded = (key, weight, bn.bias - bn.running_mean * scale)
        return self._folded[1], self._folded[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seams, conv = _SEAMS.get(), self.c
        pad = conv.padding[0]
        if seams is not None and pad:
            x, pad = seam_pad(x, pad, *seams), 0
        if _folding_allowed(self, conv.weight):
            weight, bias = self.folded()
            return F.conv2d(x, weight, bias, conv.stride, pad, conv.dilation, conv.groups)
        return self.bn(F.conv2d(x, conv.weight, None, conv.stride, pad, conv.dilation, conv.groups))


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convolutions: B x 3 x H x W -> B x C x H/4 x W/4."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            Conv2dBN(in_chans, embed_dim // 2, 3, 2, 1),
            nn.GELU(),
            Conv2dBN(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv1, act, conv2 = self.seq
        return conv2(activate_(act, conv1(x)))


class MBConv(nn.Module):
    """Inverted residual block on B x C x H x W."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2dBN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = Conv2dBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2dBN(hidden, dim)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = activate_(self.act1, self.conv1(x))
        y = activate_(self.act2, self.conv2(y))
        return activate_(self.act3, add_into(self.conv3(y), x))


class PatchMerging(nn.Module):
    """B x C x H x W -> B x C' x H/s x W/s (s = stride, 1 for MobileSAM's last merge)."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = Conv2dBN(dim, out_dim)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = activate_(self.act, self.conv1(x))
        x = activate_(self.act, self.conv2(x))
        return self.conv3(x)


class WindowAttention(nn.Module):
    """Attention inside one window with a learned bias per (|dy|, |dx|) offset and head."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        offsets = (ys[:, None] - ys[None, :]).abs() * window + (xs[:, None] - xs[None, :]).abs()
        self.register_buffer("attention_bias_idxs", offsets, persistent=False)
        self._bias: tuple[tuple[int, ...], torch.Tensor] | None = None

    def bias(self) -> torch.Tensor:
        """heads x N x N attention bias (N = window^2), gathered from the learned table (cached in inference)."""
        if not _folding_allowed(self, self.attention_biases):
            return self.attention_biases[:, self.attention_bias_idxs]
        key = _cache_key(self.attention_biases)
        if self._bias is None or self._bias[0] != key:
            with torch.no_grad():
                self._bias = (key, self.attention_biases[:, self.attention_bias_idxs].contiguous())
        return self._bias[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x N x C (N = window^2) -> B x N x C."""
        b, n, c = x.shape
        x = self.norm(x)
        # The checkpoint packs q, k and v per head: heads x (q | k | v).
        q, k, v = linear(self.qkv, x).view(b, n, self.num_heads, -1).permute(0, 2, 1, 3).chunk(3, dim=-1)
        # The bias goes in as a B x heads x N x N stride-0 view: SDPA's fused CPU kernel then takes it as is
        # (4-6x faster than the written-out softmax(q k^T + bias) v); a 3-D heads x N x N mask is not taken
        # by that kernel and runs slower than the written-out form.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias().expand(b, -1, -1, -1))
        return linear(self.proj, out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """LayerNorm + two linear layers (keys `norm`, `fc1`, `fc2`)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(self.fc2, linear(self.fc1, self.norm(x), self.act))


class TinyViTBlock(nn.Module):
    """Window attention + depthwise conv + MLP on B x H x W x C."""

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.local_conv = Conv2dBN(dim, dim, 3, 1, 1, groups=dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, offset: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """B x H x W x C -> B x H x W x C; `offset` is the crop's token origin at this resolution."""
        b, h, w, c = x.shape
        # Zero padding goes in before the attention's own LayerNorm, exactly as in the original model.
        padded, (top, _, left, _) = pad_to_windows(x, self.window, offset)
        ph, pw = padded.shape[1], padded.shape[2]
        windows = window_partition(padded, self.window).reshape(-1, self.window * self.window, c)
        attended = self.attn(windows).view(-1, self.window, self.window, c)
        attended = window_unpartition(attended, self.window, (ph, pw))[:, top : top + h, left : left + w, :]
        x = x + attended
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return add_into(self.mlp(x), x)


class ConvLayer(nn.Module):
    """Stage 0: MBConv blocks, then a patch merge."""

    def __init__(self, dim: int, depth: int, out_dim: int, expand_ratio: float, merge_stride: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, merge_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x C x H x W -> B x C' x H' x W'."""
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class BasicLayer(nn.Module):
    """Attention stage: TinyViT blocks, then an optional patch merge."""

    def __init__(
        self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float, out_dim: int | None, merge_stride: int
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TinyViTBlock(dim, num_heads, window, mlp_ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, merge_stride) if out_dim is not None else None

    def forward(self, x: torch.Tensor, offset: tuple[int, int]) -> torch.Tensor:
        """B x C x H x W -> B x C' x H' x W'."""
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x, offset)
        x = x.permute(0, 3, 1, 2)
        return self.downsample(x) if self.downsample is not None else x


class TinyViT(nn.Module):
    """MobileSAM image encoder. `forward`: B x 3 x H x W -> B x 256 x H/16 x W/16."""

    def __init__(
        self,
        in_chans: int = 3,
        embed_dims: tuple[int, ...] = (64, 128, 160, 320),
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (2, 4, 5, 10),
        window_sizes: tuple[int, ...] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        merge_strides: tuple[int, ...] = (2, 2, 1),
        out_chans: int = 256,
        num_classes: int = 1000,
        img_size: int = 1024,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self._trunk_channels = embed_dims[-1]  # kept apart from the neck, which workers strip
        #: how padded convolutions treat a crop's seam sides (`SEAM_PADDINGS`); set on adapted copies.
        self.seam_padding = "zeros"
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        layers: list[nn.Module] = [
            ConvLayer(embed_dims[0], depths[0], embed_dims[1], mbconv_expand_ratio, merge_strides[0])
        ]
        for i in range(1, len(depths)):
            last = i == len(depths) - 1
            layers.append(
                BasicLayer(
                    embed_dims[i],
                    depths[i],
                    num_heads[i],
                    window_sizes[i],
                    mlp_ratio,
                    None if last else embed_dims[i + 1],
                    1 if last else merge_strides[i],
                )
            )
        self.layers = nn.ModuleList(layers)
        # Stride (in input pixels) of each attention layer's token grid: patch embed /4, then the merges.
        strides, stride = [], 4
        for i in range(len(depths)):
            strides.append(stride)
            if i < len(merge_strides):
                stride *= merge_strides[i]
        self.layer_strides = tuple(strides)
        self.out_stride = stride
        # Classification head of the TinyViT backbone: unused by SAM, kept so the checkpoint loads strictly.
        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    @property
    def trunk_channels(self) -> int:
        return self._trunk_channels

    def run_trunk(self, x: torch.Tensor, origin_px: tuple[int, int] = (0, 0), seams: torch.Tensor | None = None) -> torch.Tensor:
        """Everything before the neck.

        Args:
            x: B x 3 x H x W normalised pixels, H and W multiples of 16: a crop of the input whose top-left
                corner is at `origin_px` (y, x) in the full input (multiples of 16).
            seams: B x 4 bool, per crop whether its top / bottom / left / right side borders more of the
                input (`crop_seams`); used when `seam_padding` is not "zeros", ignored otherwise.

        Returns:
            B x 320 x H/16 x W/16 token features.
        """
        if x.shape[-2] % self.out_stride or x.shape[-1] % self.out_stride:
            raise ValueError(f"TinyViT input sides must be multiples of {self.out_stride} px, got {tuple(x.shape[-2:])}")
        if origin_px[0] % self.out_stride or origin_px[1] % self.out_stride:
            raise ValueError(f"crop origin must be a multiple of {self.out_stride} px, got {origin_px}")
        if self.seam_padding not in SEAM_PADDINGS:
            raise ValueError(f"seam_padding must be one of {SEAM_PADDINGS}, got {self.seam_padding!r}")
        use_seams = self.seam_padding != "zeros" and seams is not None and bool(seams.any())
        if use_seams and tuple(seams.shape) != (x.shape[0], 4):
            raise ValueError(f"seams must be B x 4 bool for {x.shape[0]} crops, got {tuple(seams.shape)}")
        # Reduced once here, not in each of the padded convolutions (on a GPU each would be a sync).
        token = _SEAMS.set((seams.to(x.device, torch.bool), bool(seams.all())) if use_seams else None)
        try:
            # Channels-last all the way: oneDNN's convolutions run faster on it, and the attention stages'
            # B x H x W x C view of a channels-last tensor is free instead of a copy per stage and block.
            x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))
            x = self.layers[0](x)
            for layer, stride in zip(self.layers[1:], self.layer_strides[1:]):
                x = layer(x, (origin_px[0] // stride, origin_px[1] // stride))
        finally:
            _SEAMS.reset(token)
        return x.contiguous()

    @staticmethod
    def crop_seams(boxes: list[tuple[int, int, int, int]], side: int) -> torch.Tensor:
        """Seam sides of crops `(y0, x0, h, w)` of a `side` x `side` input: N x 4 bool, True where the
        crop's top / bottom / left / right side lies inside the input (not on its border)."""
        return torch.tensor([[y0 > 0, y0 + h < side, x0 > 0, x0 + w < side] for y0, x0, h, w in boxes],
                            dtype=torch.bool).reshape(-1, 4)

    def run_neck(self, x: torch.Tensor) -> torch.Tensor:
        """B x 320 x h x w trunk features -> B x 256 x h x w embedding."""
        return self.neck(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_neck(self.run_trunk(x))
