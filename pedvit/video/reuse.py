"""Static-window reuse: which windows of a frame changed enough since they were last sent.

With a still camera most windows show the same pixels frame after frame; their features need not be computed
(nor their pixels exposed) again. A window is *changed* when some ``cell_px x cell_px`` cell inside it differs
from the version last sent by more than ``threshold`` grey levels on average: averaging over a cell keeps
sensor noise (about 2 levels per pixel) far below the threshold, while a small object moving into a window
changes whole cells. Comparing with the last *sent* version, not the previous frame, means slow changes add
up until the window is sent again instead of drifting away unnoticed.

Only meaningful when windows cover the same scene pixels in both frames (a static camera); after camera
motion every window is changed.
"""

from __future__ import annotations

import cv2
import numpy as np

from pedvit.partition import WindowGrid

from .coverage import window_frame_boxes
from .motion import to_gray

__all__ = ["WindowReuse"]


class WindowReuse:
    """Per stream: the content windows of each new frame that must be sent again.

    Args:
        grid: the frames' window grid (every frame must have ``grid.original_size``).
        threshold: mean absolute grey-level difference of a cell above which its window changed.
        cell_px: side of the cells the difference is averaged over (frame pixels).
    """

    def __init__(self, grid: WindowGrid, threshold: float = 6.0, cell_px: int = 8) -> None:
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0, got {threshold!r}")
        if isinstance(cell_px, bool) or not isinstance(cell_px, int) or cell_px < 1:
            raise ValueError(f"cell_px must be an int >= 1, got {cell_px!r}")
        self.grid = grid
        self.threshold = float(threshold)
        self.cell_px = cell_px
        self._boxes = window_frame_boxes(grid)
        self._reference: np.ndarray | None = None  # H x W float32: each window's pixels as last sent

    def changed(self, frame: np.ndarray) -> list[int]:
        """Sorted ids of the content windows of ``frame`` (``H x W x 3`` uint8) to send; they become the
        reference for the next frames. The first frame sends every content window."""
        if tuple(frame.shape[:2]) != self.grid.original_size:
            raise ValueError(
                f"frame is {frame.shape[0]} x {frame.shape[1]}, the stream is "
                f"{self.grid.original_size[0]} x {self.grid.original_size[1]}"
            )
        gray = to_gray(frame)
        if self._reference is None:
            self._reference = gray
            return sorted(self._boxes)
        diff = np.abs(gray - self._reference)
        cell_mean = cv2.blur(diff, (self.cell_px, self.cell_px), borderType=cv2.BORDER_REFLECT)
        out = [
            wid
            for wid, (y0, x0, y1, x1) in sorted(self._boxes.items())
            if float(cell_mean[y0:y1, x0:x1].max()) > self.threshold
        ]
        for wid in out:
            y0, x0, y1, x1 = self._boxes[wid]
            self._reference[y0:y1, x0:x1] = gray[y0:y1, x0:x1]
        return out
