"""SAM's ViT image encoder (ViT-B/L/H), exposed block by block.

Checkpoint-compatible with the original `image_encoder.*` state-dict keys. Besides `forward`, the encoder
offers the pieces a split plan needs: `embed` (patch embedding plus the matching slice of the absolute
position embedding, for the whole input or for one window crop), `run_blocks` (any block range on a batch of
token grids or windows) and `neck`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d, MLPBlock, add_into, linear, pad_to_windows, window_partition, window_unpartition


def relative_position_table(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Gather relative-position embeddings for every (query, key) pair along one axis.

    Args:
        q_size: number of query positions, k_size: number of key positions.
        rel_pos: L x C learned table (L = 2 * max(q_size, k_size) - 1 when trained at this size).

    Returns:
        q_size x k_size x C.
    """
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        # Trained at another resolution: resample the table linearly, as the original model does.
        rel_pos = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=max_rel_dist, mode="linear"
        ).reshape(-1, max_rel_dist).permute(1, 0)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative.long()]


#: Queries are attended in chunks of whole token rows holding about this many bias elements (B x heads x
#: rows x W x N): a global block's full 12 x 4096 x 4096 bias (800 MB) is never built, and each chunk's bias
#: is still in cache when SDPA reads it (about 1.9x faster per global block on CPU, identical outputs).
ATTENTION_CHUNK_ELEMENTS = 1 << 25


class Attention(nn.Module):
    """Multi-head self-attention with decomposed relative positions, computed by SDPA.

    The relative-position term is passed to `scaled_dot_product_attention` as an additive mask, built for one
    chunk of query rows at a time (`ATTENTION_CHUNK_ELEMENTS`).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, input_size: tuple[int, int] = (14, 14)) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x H x W x C -> B x H x W x C."""
        b, h, w, c = x.shape
        n = h * w
        heads = self.num_heads
        # 3 x B x heads x N x head_dim
        qkv = linear(self.qkv, x).reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        head_dim = q.shape[-1]
        table_h = relative_position_table(h, h, self.rel_pos_h)  # H x H x d
        table_w = relative_position_table(w, w, self.rel_pos_w)  # W x W x d
        q_grid = q.reshape(b, heads, h, w, head_dim)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", q_grid, table_h)  # B x heads x H x W x H
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", q_grid, table_w)  # B x heads x H x W x W
        rows = min(h, max(1, ATTENTION_CHUNK_ELEMENTS // (b * heads * w * n)))
        # The bias is written into one contiguous buffer: a plain broadcast add follows the einsum's permuted
        # strides, and SDPA then copies the whole mask again (about a third of a global block's attention time).
        # (Under autograd each chunk gets its own tensor: `out=` is not differentiable.)
        training = torch.is_grad_enabled() and q.requires_grad
        bias = None if training else torch.empty(b, heads, rows, w, h, w, dtype=q.dtype, device=q.device)
        out = torch.empty_like(q)
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            queries = slice(r0 * w, r1 * w)
            pair = (rel_h[:, :, r0:r1, :, :, None], rel_w[:, :, r0:r1, :, None, :])
            chunk = torch.add(*pair) if bias is None else torch.add(*pair, out=bias[:, :, : r1 - r0])
            out[:, :, queries] = F.scaled_dot_product_attention(q[:, :, queries], k, v,
                                                                attn_mask=chunk.reshape(b, heads, -1, n))
        out = out.transpose(1, 2).reshape(b, h, w, c)
        return linear(self.proj, out)


class Block(nn.Module):
    """Transformer block with window (window_size > 0) or global (window_size == 0) attention."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        window_size: int = 0,
        input_size: tuple[int, int] = (64, 64),
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, input_size=input_size if window_size == 0 else (window_size, window_size))
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))
        self.window_size = window_size

    @property
    def is_global(self) -> bool:
        return self.window_size == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x H x W x C -> B x H x W x C.

        A window block pads the grid with zeros (after `norm1`, as the original model does) up to a multiple
        of the window size, so a single border window of 14 x 8 tokens computes exactly what it computes
        inside the full 64 x 64 grid.
        """
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1], x.shape[2]
            x, (_, bottom, _, right) = pad_to_windows(x, self.window_size)
            padded_hw = (x.shape[1], x.shape[2])
            x = window_partition(x, self.window_size)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, padded_hw)[:, :h, :w, :]
        else:
            x = self.attn(x)
        x = shortcut + x
        # The MLP's layers through `linear` (oneDNN); MLPBlock.forward itself stays plain: the mask decoder's
        # few-token MLP has nothing to gain from it.
        mlp = self.mlp
        return add_into(linear(mlp.lin2, linear(mlp.lin1, self.norm2(x), mlp.act)), x)


class PatchEmbed(nn.Module):
    """16 x 16 non-overlapping patches -> B x H/16 x W/16 x C (key `proj`)."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ImageEncoderViT(nn.Module):
    """SAM ViT image encoder: 1024 x 1024 input -> 256 x 64 x 64 embedding."""

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        window_size: int = 14,
        global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11),
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        self.window_size = window_size
        self.global_attn_indexes = tuple(global_attn_indexes)
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio,
                window_size=0 if i in self.global_attn_indexes else window_size,
                input_size=(grid, grid),
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def embed(self, x: torch.Tensor, token_origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """Patch embedding plus absolute positions.

        Args:
            x: B x 3 x H x W normalised pixels (H, W multiples of 16), the crop of the input that starts at
                token `token_origin` (row, col).

        Returns:
            B x H/16 x W/16 x C tokens.
        """
        tokens = self.patch_embed(x)
        oy, ox = token_origin
        h, w = tokens.shape[1], tokens.shape[2]
        if oy < 0 or ox < 0 or oy + h > self.pos_embed.shape[1] or ox + w > self.pos_embed.shape[2]:
            raise ValueError(f"crop at token {token_origin} of size {h}x{w} lies outside the {self.pos_embed.shape[1]}x{self.pos_embed.shape[2]} grid")
        return tokens + self.pos_embed[:, oy : oy + h, ox : ox + w, :]

    def run_blocks(self, x: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """Run blocks[start:end] on B x H x W x C tokens."""
        for block in self.blocks[start:end]:
            x = block(x)
        return x

    def run_neck(self, x: torch.Tensor) -> torch.Tensor:
        """B x H x W x C tokens -> B x 256 x H x W embedding."""
        return self.neck(x.permute(0, 3, 1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x 1024 x 1024 normalised input -> B x 256 x 64 x 64."""
        return self.run_neck(self.run_blocks(self.embed(x), 0, self.depth))
