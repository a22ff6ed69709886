"""Keep-local memory: where sensitive content was seen in recent frames, in scene coordinates.

A face or text detector runs on every frame and can miss in one of them; a worker that gets the face's windows
in that one frame has seen the face. `SensitiveMemory` keeps the scene boxes of the keep-local windows the
detectors found in the last ``frames`` frames, so a session can keep the windows now over those places on the
edge too (moved with the camera: the boxes are in scene pixels).
"""

from __future__ import annotations

from typing import AbstractSet

import numpy as np

from pedvit.partition import Box, WindowGrid

from .coverage import SceneCoverage, window_frame_boxes

__all__ = ["SensitiveMemory"]


class SensitiveMemory:
    """Scene boxes of sensitive windows over the last `frames` frames (0: remember nothing)."""

    def __init__(self, frames: int) -> None:
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 0:
            raise ValueError(f"keep_local_memory must be an int >= 0, got {frames!r}")
        self.frames = frames
        self._boxes: list[tuple[int, Box]] = []  # (frame index, scene box (y0, x0, y1, x1))

    def windows(self, grid: WindowGrid, offset: tuple[float, float] | np.ndarray, index: int) -> frozenset[int]:
        """Content windows of frame `index` (at scene `offset`) that overlap a remembered box; forgets boxes
        older than `frames` frames."""
        self._boxes = [(t, box) for t, box in self._boxes if index - t <= self.frames]
        found = set()
        for wid, frame_box in window_frame_boxes(grid).items() if self._boxes else ():
            y0, x0, y1, x1 = SceneCoverage.scene_box(frame_box, offset)
            if any(y0 < b[2] and b[0] < y1 and x0 < b[3] and b[1] < x1 for _, b in self._boxes):
                found.add(wid)
        return frozenset(found)

    def remember(self, grid: WindowGrid, offset: tuple[float, float] | np.ndarray, index: int,
                 detected: AbstractSet[int]) -> None:
        """The windows the detectors found sensitive in frame `index` (not those kept from memory: a region
        is remembered for `frames` frames after it was last *found*)."""
        if self.frames == 0:
            return
        boxes = window_frame_boxes(grid)
        self._boxes += [(index, SceneCoverage.scene_box(boxes[wid], offset)) for wid in detected if wid in boxes]
