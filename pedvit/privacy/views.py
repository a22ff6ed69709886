"""What each worker saw: the original pixels a worker received, as masks and as pictures.

The one renderer of views, for every place that shows them:

* `pedvit segment --views`: `view_sheet`, one labelled tile per worker (seen pixels tinted in the worker's
  colour, everything else grey) plus the edge's own windows;
* the demo page: `view_tile` with transparent unseen pixels and the windows outlined, one PNG per worker;
* the privacy report's figures and the attacks: `masked_view`, unseen pixels black.

    views = view_masks(grid, assignment.worker_windows, halo_px)      # worker -> H x W bool
    sheet = view_sheet(image, views)                                   # H' x W' x 3 uint8 picture
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw

from pedvit.partition import WindowGrid

Colour = tuple[int, int, int]
#: Distinct colours (RGB) for workers, by position in the views.
PALETTE: list[Colour] = [
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40),
    (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128),
]
#: The colour of the view named "edge" (what the edge computed itself) in a sheet.
EDGE_COLOUR: Colour = (40, 40, 40)
#: The grey of unseen pixels in a sheet.
UNSEEN_GREY = 160


def view_masks(grid: WindowGrid, worker_windows: Mapping[Any, Sequence[int]], halo_px: int = 0) -> dict[str, np.ndarray]:
    """Worker (as str) -> H x W bool mask of the original pixels its window crops (with `halo_px`) cover."""
    return {str(w): grid.original_mask(sorted(ids), halo_px) for w, ids in worker_windows.items()}


def masked_view(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``H x W x 3`` uint8 copy of ``image`` with unseen pixels (``mask`` False) set to 0 (black)."""
    img = np.asarray(image)
    m = np.asarray(mask, dtype=bool)
    if img.ndim != 3 or img.shape[:2] != m.shape:
        raise ValueError(f"image {img.shape} and mask {m.shape} disagree")
    return np.where(m[:, :, None], img, 0).astype(np.uint8)


def view_pixels(image: np.ndarray, mask: np.ndarray, *, unseen: Literal["black", "grey", "transparent"] = "black",
                tint: Colour | None = None) -> np.ndarray:
    """The pixels one view holds, from the H x W x 3 uint8 original and its H x W bool mask.

    Returns: H x W x 3 uint8 with unseen pixels black (`masked_view`) or grey, and seen ones mixed 3:1 with
    `tint` when given; or H x W x 4 uint8 RGBA with unseen pixels transparent.
    """
    if unseen == "black":
        return masked_view(image, mask)
    if unseen == "transparent":
        rgba = np.zeros(mask.shape + (4,), dtype=np.uint8)
        rgba[mask, :3] = image[mask]
        rgba[mask, 3] = 255
        return rgba
    if unseen != "grey":
        raise ValueError(f"unseen must be 'black', 'grey' or 'transparent', got {unseen!r}")
    tile = np.full_like(image, UNSEEN_GREY)
    seen = image if tint is None else (0.75 * image + 0.25 * np.array(tint)).astype(np.uint8)
    tile[mask] = seen[mask]
    return tile


def view_tile(
    image: np.ndarray,
    grid: WindowGrid,
    windows: Sequence[int],
    halo_px: int,
    colour: Colour,
    *,
    marked: Sequence[int] = (),
    marked_colour: Colour = EDGE_COLOUR,
    side: int = 320,
) -> tuple[np.ndarray, float]:
    """What one worker received as an RGBA thumbnail (long side at most `side`): the original where
    `grid.original_mask(windows, halo_px)` holds, transparent elsewhere, each window's box outlined in `colour`;
    `marked` windows (computed on the edge: no pixels) outlined and crossed in `marked_colour`.

    Returns: (h x w x 4 uint8 tile, fraction of the original's pixels the worker received).
    """
    received = grid.original_mask(windows, halo_px)
    h, w = received.shape
    scale = min(1.0, side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # nearest: never smear pixels into blank space
    tile = Image.fromarray(view_pixels(image, received, unseen="transparent")).resize(size, Image.NEAREST)
    draw = ImageDraw.Draw(tile)

    def box_of(wid: int) -> tuple[float, float, float, float] | None:
        ob = grid.window(wid).original_box
        if ob is None:
            return None
        y0, x0, y1, x1 = ob
        return (x0 * scale, y0 * scale, max(x0 * scale, x1 * scale - 1), max(y0 * scale, y1 * scale - 1))

    for wid in windows:
        box = box_of(wid)
        if box is not None:
            draw.rectangle(box, outline=(*colour, 255), width=2)
    for wid in marked:
        box = box_of(wid)
        if box is not None:
            draw.rectangle(box, outline=(*marked_colour, 255), width=2)
            draw.line(box, fill=(*marked_colour, 200), width=1)
            draw.line((box[0], box[3], box[2], box[1]), fill=(*marked_colour, 200), width=1)
    return np.asarray(tile), float(received.mean())


def view_sheet(image: np.ndarray, views: Mapping[str, np.ndarray], tile_side: int = 320, caption: str = "") -> np.ndarray:
    """One tile per view, up to 4 per row: the seen pixels tinted in the view's colour (`PALETTE` by position;
    `EDGE_COLOUR` for "edge"), everything else grey; a coloured frame and a label with the seen share, and an
    optional caption line under the tiles. Returns an RGB uint8 picture."""
    h, w = image.shape[:2]
    scale = tile_side / max(h, w)
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    names = list(views)
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    label_h, pad = 18, 6
    canvas = Image.new("RGB", (cols * (tw + pad) + pad, rows * (th + label_h + pad) + pad + (label_h if caption else 0)),
                       (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, name in enumerate(names):
        colour = EDGE_COLOUR if name == "edge" else PALETTE[i % len(PALETTE)]
        mask = views[name]
        tile = view_pixels(image, mask, unseen="grey", tint=colour)
        x0 = pad + (i % cols) * (tw + pad)
        y0 = pad + (i // cols) * (th + label_h + pad)
        canvas.paste(Image.fromarray(tile).resize((tw, th), Image.BILINEAR), (x0, y0 + label_h))
        draw.rectangle([x0 - 1, y0 + label_h - 1, x0 + tw, y0 + label_h + th], outline=colour, width=2)
        draw.text((x0, y0 + 3), f"{name}: {100 * mask.mean():.0f}% of pixels", fill=colour)
    if caption:
        draw.text((pad, rows * (th + label_h + pad) + 3), caption, fill=(60, 60, 60))
    return np.array(canvas)
