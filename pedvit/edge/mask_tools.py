"""The building blocks of automatic masks (`pedvit.edge.automatic_masks`): point grids and crops, boxes and
box NMS, stability scores, mask IoU, run-length encodings and small-region clean-up.

Boxes are ``(x0, y0, x1, y1)`` pixels with exclusive ends; ``uncompressed_rle`` is COCO's uncompressed RLE
(``{"size": [H, W], "counts": [...]}``, column-major runs starting with zeros), ``coco_rle`` the same
compressed to pycocotools' string form.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

# ------------------------------------------------------------------------------------------ point grids
def point_grid(points_per_side: int) -> np.ndarray:
    """n^2 x 2 points (x, y) in [0, 1]: the centres of an n x n grid of cells, row by row."""
    if points_per_side < 1:
        raise ValueError(f"points_per_side must be >= 1, got {points_per_side}")
    centres = (np.arange(points_per_side, dtype=np.float64) + 0.5) / points_per_side
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def layer_point_grids(points_per_side: int, crop_n_layers: int, downscale_factor: int) -> list[np.ndarray]:
    """One grid per crop layer: layer i has int(points_per_side / downscale_factor^i) points per side."""
    return [point_grid(int(points_per_side / downscale_factor**layer)) for layer in range(crop_n_layers + 1)]


def crop_boxes(image_size: tuple[int, int], crop_n_layers: int, overlap_ratio: float) -> list[tuple[tuple[int, int, int, int], int]]:
    """The whole image (layer 0), then for layer i = 1..n a 2^i x 2^i grid of overlapping crops.

    Args:
        image_size: (H, W).
        overlap_ratio: neighbouring crops of layer 1 overlap by this fraction of the image's short side;
            layer i's overlap shrinks with its crop count.

    Returns:
        ((x0, y0, x1, y1) exclusive ends, layer) per crop, column of crops by column of crops within a layer.
    """
    height, width = image_size
    out: list[tuple[tuple[int, int, int, int], int]] = [((0, 0, width, height), 0)]
    short_side = min(height, width)
    for layer in range(1, crop_n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / per_side))
        crop_w = math.ceil((overlap * (per_side - 1) + width) / per_side)
        crop_h = math.ceil((overlap * (per_side - 1) + height) / per_side)
        for i in range(per_side):
            for j in range(per_side):
                x0, y0 = int((crop_w - overlap) * i), int((crop_h - overlap) * j)
                out.append(((x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)), layer))
    return out


# ------------------------------------------------------------------------------------------ masks, boxes
def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """B x H x W bool -> B x 4 int64 tight boxes (x0, y0, x1, y1), exclusive ends; (0, 0, 0, 0) when empty."""
    if masks.ndim != 3:
        raise ValueError(f"masks must be B x H x W, got shape {tuple(masks.shape)}")
    height, width = masks.shape[1:]
    rows = masks.any(dim=2).to(torch.uint8)  # B x H
    cols = masks.any(dim=1).to(torch.uint8)  # B x W
    # argmax returns the first maximal index: the first row/column holding a pixel, from either end.
    y0, y1 = rows.argmax(1), height - rows.flip(1).argmax(1)
    x0, x1 = cols.argmax(1), width - cols.flip(1).argmax(1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    return boxes * rows.any(1, keepdim=True)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """N x 4, M x 4 (x0, y0, x1, y1) -> N x M intersection over union (0 where both boxes are empty)."""
    a, b = a.double(), b.double()
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: visit boxes by descending score (ties: in the given order) and drop
    every later box whose IoU with a kept one exceeds `iou_threshold`.

    Args:
        boxes: N x 4 (x0, y0, x1, y1). scores: N.

    Returns:
        the kept indices (int64), highest score first.
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != (boxes.shape[0],):
        raise ValueError(f"nms needs N x 4 boxes and N scores, got {tuple(boxes.shape)} and {tuple(scores.shape)}")
    order = torch.argsort(scores, descending=True, stable=True)
    overlaps = (box_iou(boxes[order], boxes[order]) > iou_threshold).numpy()
    suppressed = np.zeros(len(order), dtype=bool)
    kept: list[int] = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed |= overlaps[i]
    return order[torch.as_tensor(kept, dtype=torch.int64)]


def stability_scores(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """B x H x W logits -> B stability scores: IoU of the masks cut at threshold + offset and threshold -
    offset (the first lies inside the second, so it is a ratio of areas); 0 when both are empty."""
    high = (logits > threshold + offset).flatten(1).sum(1, dtype=torch.int64)
    low = (logits > threshold - offset).flatten(1).sum(1, dtype=torch.int64)
    return torch.where(low > 0, high.double() / low.clamp(min=1).double(), torch.zeros_like(low, dtype=torch.float64)).float()


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two H x W bool masks; 1.0 when both are empty (they agree)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def mask_iou_matrix(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> np.ndarray:
    """IoU of every pair of H x W bool masks: len(a) x len(b) (0 where both are empty)."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    fa = np.stack([m.ravel() for m in a]).astype(np.float32)
    fb = np.stack([m.ravel() for m in b]).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


# ------------------------------------------------------------------------------------------------ RLE
def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """H x W bool -> uncompressed COCO RLE {"size": [H, W], "counts": [zeros, ones, zeros, ...]} (column-major)."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be H x W, got shape {mask.shape}")
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts  # runs start with zeros
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Uncompressed or compressed (pycocotools string) COCO RLE -> H x W bool."""
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        from pycocotools import mask as coco_mask

        encoded = {"size": [height, width], "counts": counts.encode() if isinstance(counts, str) else counts}
        return coco_mask.decode(encoded).astype(bool)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != height * width or (counts < 0).any():
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected {height * width} for size {height} x {width}")
    values = (np.arange(len(counts)) % 2).astype(bool)
    return np.repeat(values, counts).reshape(width, height).T


def rle_area(rle: dict[str, Any]) -> int:
    """Foreground pixels of an uncompressed RLE (the odd runs)."""
    return int(sum(rle["counts"][1::2]))


def coco_rle(mask: np.ndarray) -> dict[str, Any]:
    """H x W bool -> pycocotools' compressed RLE, counts as a JSON-ready str."""
    from pycocotools import mask as coco_mask

    encoded = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def remove_small_regions(mask: np.ndarray, min_area: int, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes ("holes") or drop islands ("islands") smaller than `min_area` pixels (8-connectivity) in an
    H x W bool mask. Dropping islands never empties a mask: when every island is small, the largest stays.

    Returns:
        (the new mask, whether it changed).
    """
    import cv2

    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    target = ~mask if mode == "holes" else mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(target.astype(np.uint8), connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]  # label 0: the pixels outside `target`
    small = np.flatnonzero(sizes < min_area) + 1
    if small.size == 0:
        return mask, False
    if mode == "holes":
        return mask | np.isin(labels, small), True
    large = np.setdiff1d(np.arange(1, count), small)
    if large.size == 0:
        large = np.array([int(np.argmax(sizes)) + 1])
    return np.isin(labels, large), True


# ---------------------------------------------------------------------------------------- candidates
