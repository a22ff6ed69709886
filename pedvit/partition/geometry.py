"""Window geometry: how the preprocessed SAM input is cut into windows, and how windows map back.

Coordinates (see docs/architecture.md):

* original image: ``H x W`` pixels;
* input: the image resized so that its longest side is ``input_size`` (default 1024) px, then zero-padded
  at the bottom/right to ``input_size x input_size``;
* tokens: the input is a ``(input_size // patch_size)``-square grid of ``patch_size`` px tokens (64 x 64);
* windows: ``window_tokens x window_tokens`` token blocks (14 x 14 = 224 px), row-major, the last row/column
  shorter when the token grid is not a multiple of ``window_tokens`` (64 = 4 * 14 + 8, so 5 x 5 windows with
  the last row/column 8 tokens = 128 px). ``window id = row * cols + col``.

All boxes are ``(y0, x0, y1, x1)`` with exclusive ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

Box = tuple[int, int, int, int]

__all__ = ["Box", "Window", "WindowGrid", "boxes_intersect", "resized_shape"]


def boxes_intersect(a: Box, b: Box) -> bool:
    """Do two ``(y0, x0, y1, x1)`` boxes (exclusive ends) share a pixel?"""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def resized_shape(original_size: tuple[int, int], long_side: int = 1024) -> tuple[int, int]:
    """Size ``(h, w)`` of the image content after resizing its longest side to ``long_side``.

    Same float arithmetic and rounding as SAM's ``ResizeLongestSide.get_preprocess_shape``
    (``int(side * scale + 0.5)``), except that a side is never rounded down to 0: a 1 x 5000 image becomes
    1 x 1024, not 0 x 1024 (a zero-sized resize would fail downstream).
    """
    h = _positive_int("original height", original_size[0])
    w = _positive_int("original width", original_size[1])
    long_side = _positive_int("long_side", long_side)
    scale = long_side * 1.0 / max(h, w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


@dataclass(frozen=True)
class Window:
    """One window of the input.

    Attributes:
        id: ``row * cols + col``.
        row, col: position in the window grid.
        token_box: ``(y0, x0, y1, x1)`` in tokens.
        input_box: ``(y0, x0, y1, x1)`` in input pixels (``token_box * patch_size``).
        original_box: the part of ``input_box`` that holds resized image content, mapped back to original
            pixels (floor of the start, ceil of the end), or None when the window is pure padding.
        is_padding: True when the window holds no image pixel.
    """

    id: int
    row: int
    col: int
    token_box: Box
    input_box: Box
    original_box: Box | None
    is_padding: bool


class WindowGrid:
    """The windows of one image's SAM input, and conversions between input and original coordinates.

    Args:
        original_size: ``(H, W)`` of the original image.
        input_size: side of the square input (1024 for SAM); must be a multiple of ``patch_size``.
        patch_size: token size in pixels (16).
        window_tokens: window side in tokens (14).

    Mapping back to original pixels uses the pixel footprint model: resized pixel ``i`` covers original
    ``[i * H / h, (i + 1) * H / h)``. A window's original box takes the floor of its start and the ceil of
    its end, so the union of all windows' original boxes is exactly the image; when the scale is not an
    integer, two neighbouring windows may share one boundary row/column of original pixels. (Interpolation
    kernels reach about one pixel further; privacy code that needs a strict bound should use a halo.)
    """

    def __init__(
        self,
        original_size: tuple[int, int],
        input_size: int = 1024,
        patch_size: int = 16,
        window_tokens: int = 14,
    ) -> None:
        if len(tuple(original_size)) != 2:
            raise ValueError(f"original_size must be (H, W), got {original_size!r}")
        h = _positive_int("original height", original_size[0])
        w = _positive_int("original width", original_size[1])
        self.input_size = _positive_int("input_size", input_size)
        self.patch_size = _positive_int("patch_size", patch_size)
        self.window_tokens = _positive_int("window_tokens", window_tokens)
        if self.input_size % self.patch_size:
            raise ValueError(
                f"input_size ({self.input_size}) must be a multiple of patch_size ({self.patch_size})"
            )
        self.original_size: tuple[int, int] = (h, w)
        self.resized_size: tuple[int, int] = resized_shape((h, w), self.input_size)
        self.grid_tokens = self.input_size // self.patch_size
        self.rows = self.cols = math.ceil(self.grid_tokens / self.window_tokens)

        windows: list[Window] = []
        for r in range(self.rows):
            for c in range(self.cols):
                tb = (
                    r * self.window_tokens,
                    c * self.window_tokens,
                    min((r + 1) * self.window_tokens, self.grid_tokens),
                    min((c + 1) * self.window_tokens, self.grid_tokens),
                )
                ib = tuple(v * self.patch_size for v in tb)
                ob = self._to_original(ib)  # type: ignore[arg-type]
                windows.append(Window(r * self.cols + c, r, c, tb, ib, ob, ob is None))  # type: ignore[arg-type]
        self._windows: tuple[Window, ...] = tuple(windows)
        self._content: tuple[int, ...] = tuple(wi.id for wi in windows if not wi.is_padding)
        self._padding: tuple[int, ...] = tuple(wi.id for wi in windows if wi.is_padding)

    # ------------------------------------------------------------------ basic views
    @property
    def windows(self) -> list[Window]:
        """All windows, indexed by id."""
        return list(self._windows)

    @property
    def n_windows(self) -> int:
        return len(self._windows)

    @property
    def content_ids(self) -> list[int]:
        """Ids of windows that hold at least one image pixel (sorted)."""
        return list(self._content)

    @property
    def padding_ids(self) -> list[int]:
        """Ids of pure-padding windows (sorted)."""
        return list(self._padding)

    def window(self, window_id: int) -> Window:
        """The window with this id (ValueError when out of range)."""
        return self._windows[self._check_id(window_id)]

    def __repr__(self) -> str:
        return (
            f"WindowGrid(original_size={self.original_size}, resized={self.resized_size}, "
            f"{self.rows}x{self.cols} windows, {len(self._content)} content)"
        )

    def _check_id(self, window_id: int) -> int:
        if isinstance(window_id, bool) or not isinstance(window_id, (int, np.integer)):
            raise ValueError(f"window id must be an int, got {window_id!r}")
        if not 0 <= int(window_id) < len(self._windows):
            raise ValueError(f"window id {window_id} out of range [0, {len(self._windows)})")
        return int(window_id)

    # ------------------------------------------------------------------ geometry
    def neighbours(self, window_id: int) -> list[int]:
        """Ids of the (up to 8) windows 8-adjacent to ``window_id`` (sorted; padding windows included)."""
        wi = self.window(window_id)
        out = []
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                r, c = wi.row + dr, wi.col + dc
                if (dr or dc) and 0 <= r < self.rows and 0 <= c < self.cols:
                    out.append(r * self.cols + c)
        return sorted(out)

    def crop_box(self, window_id: int, halo_px: int = 0) -> Box:
        """Input-pixel box of the window grown by ``halo_px`` on every side, clipped to the input.

        ``halo_px`` must be a non-negative multiple of ``patch_size`` so that crops stay token aligned.
        """
        halo = self._check_halo(halo_px)
        y0, x0, y1, x1 = self.window(window_id).input_box
        n = self.input_size
        return (max(0, y0 - halo), max(0, x0 - halo), min(n, y1 + halo), min(n, x1 + halo))

    def content_extent(self, box: Box) -> tuple[int, int]:
        """``(valid_h, valid_w)``: how much of an input box, counted from its origin, holds image content."""
        y0, x0, y1, x1 = (int(v) for v in box)
        if not (0 <= y0 <= y1 <= self.input_size and 0 <= x0 <= x1 <= self.input_size):
            raise ValueError(f"box {box} is not inside the {self.input_size} px input")
        rh, rw = self.resized_size
        return (max(0, min(y1, rh) - y0), max(0, min(x1, rw) - x0))

    def original_mask(self, window_ids: Iterable[int], halo_px: int = 0) -> np.ndarray:
        """``H x W`` bool mask of the original pixels covered by those windows' (halo-grown) crops."""
        h, w = self.original_size
        mask = np.zeros((h, w), dtype=bool)
        for wid in window_ids:
            ob = self._to_original(self.crop_box(wid, halo_px))
            if ob is not None:
                mask[ob[0] : ob[2], ob[1] : ob[3]] = True
        return mask

    def input_mask(self, window_ids: Iterable[int], halo_px: int = 0) -> np.ndarray:
        """``input_size x input_size`` bool mask of the input pixels covered by those windows' crops."""
        mask = np.zeros((self.input_size, self.input_size), dtype=bool)
        for wid in window_ids:
            y0, x0, y1, x1 = self.crop_box(wid, halo_px)
            mask[y0:y1, x0:x1] = True
        return mask

    def window_at_point(self, x: float, y: float) -> int:
        """Id of the window holding original-image point ``(x, y)`` (pixel coordinates, x = column).

        The point is mapped like SAM's ``apply_coords`` (``x * w / W``); for integer pixel coordinates the
        result's ``original_box`` always contains the pixel.
        """
        h, w = self.original_size
        if not (0 <= x < w and 0 <= y < h):
            raise ValueError(f"point (x={x}, y={y}) outside the {h} x {w} image")
        rh, rw = self.resized_size
        yi = min(rh - 1, self._scale_floor(y, rh, h))
        xi = min(rw - 1, self._scale_floor(x, rw, w))
        span = self.patch_size * self.window_tokens
        return (yi // span) * self.cols + xi // span

    # ------------------------------------------------------------------ helpers
    def _check_halo(self, halo_px: int) -> int:
        if isinstance(halo_px, bool) or not isinstance(halo_px, (int, np.integer)) or halo_px < 0:
            raise ValueError(f"halo_px must be a non-negative int, got {halo_px!r}")
        if halo_px % self.patch_size:
            raise ValueError(
                f"halo_px ({halo_px}) must be a multiple of patch_size ({self.patch_size}) "
                "so that crops stay aligned to the token grid"
            )
        return int(halo_px)

    @staticmethod
    def _scale_floor(v: float, num: int, den: int) -> int:
        # exact integer arithmetic for integer coordinates (no float rounding at boundaries)
        if float(v).is_integer():
            return (int(v) * num) // den
        return int(math.floor(v * num / den))

    def _to_original(self, box: Box) -> Box | None:
        """Original-pixel box of the content part of an input box (None when it holds no content)."""
        y0, x0, y1, x1 = box
        rh, rw = self.resized_size
        h, w = self.original_size
        y1, x1 = min(y1, rh), min(x1, rw)
        if y0 >= y1 or x0 >= x1:
            return None
        # floor of starts, ceil of ends (integer arithmetic): the union over windows is exactly the image
        return (
            (y0 * h) // rh,
            (x0 * w) // rw,
            min(h, -((-y1 * h) // rh)),
            min(w, -((-x1 * w) // rw)),
        )
