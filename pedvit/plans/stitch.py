"""Stitching: per-window token features written back into the image's token map, the one way every plan
(and the fusion trainer's in-process path) does it.

    tokens = np.zeros((1, 64, 64, C), np.float32)
    stitch_windows(tokens, ((w.token_box, outputs[w.id]) for w in grid.windows))
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import numpy as np
import torch

#: Token box (r0, c0, r1, c1): rows r0..r1 and columns c0..c1 of the token map, ends exclusive.
TokenBox = tuple[int, int, int, int]
TokenMap = TypeVar("TokenMap", np.ndarray, torch.Tensor)


def stitch_windows(tokens: TokenMap, pieces: Iterable[tuple[TokenBox, np.ndarray | torch.Tensor]]) -> TokenMap:
    """Write each piece into `tokens` at its box and return `tokens`.

    Args:
        tokens: B x N x N x C channel-last token map (a numpy array or a torch tensor), usually zeros.
        pieces: (token box, B x h x w x C or h x w x C piece) with h x w the box's size; a piece without a
            batch axis is written into every image of the batch. Numpy casts in place (float16 answers into a
            float32 map) without a per-window temporary.
    """
    for (r0, c0, r1, c1), piece in pieces:
        tokens[:, r0:r1, c0:c1] = piece
    return tokens


def own_tokens(output: np.ndarray, token_box: TokenBox, crop_origin: tuple[int, int]) -> np.ndarray:
    """The tokens of `token_box` out of the h x w x C output of a crop that starts at `crop_origin` (tokens):
    a window's own tokens, its halo dropped."""
    oy, ox = crop_origin
    r0, c0, r1, c1 = token_box
    return output[r0 - oy: r1 - oy, c0 - ox: c1 - ox]
