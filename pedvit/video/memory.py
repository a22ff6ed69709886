"""Keep-local memory: where sensitive content was seen in recent frames, in scene coordinates.

A face or text detector runs on every frame and can miss in one of them; a worker that gets the face's windows
in that one frame has seen the face. `SensitiveMemory` keeps the scene boxes of the keep-local windows the
detectors found in the last ``frames`` frames, so a session can keep the windows now over those places on the
edge too (moved with the camera: the boxes are in scene pixels).
"""

from __future__ import annotations

from typing import AbstractSet, Mapping

import numpy as np

from pedvit.partition import Box, boxes_intersect

from .coverage import SceneCoverage

__all__ = ["SensitiveMemory"]


class SensitiveMemory:
    """Scene boxes of sensitive windows over the last `frames` frames (0: remember nothing)."""

    def __init__(self, frames: int) -> None:
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 0:
            raise ValueError(f"keep_local_memory must be an int >= 0, got {frames!r}")
        self.frames = frames
        self._boxes: list[tuple[int, Box]] = []  # (frame index, scene box (y0, x0, y1, x1))

    def windows(self, window_boxes: Mapping[int, Box], offset: tuple[float, float] | np.ndarray,
                index: int) -> frozenset[int]:
        """Windows (id -> frame box, `coverage.window_frame_boxes`) of frame `index` at scene `offset` that
        overlap a remembered box; forgets boxes older than `frames` frames."""
        self._boxes = [(t, box) for t, box in self._boxes if index - t <= self.frames]
        return frozenset(
            wid for wid, frame_box in window_boxes.items()
            if any(boxes_intersect(SceneCoverage.scene_box(frame_box, offset), box) for _, box in self._boxes)
        )

    def remember(self, window_boxes: Mapping[int, Box], offset: tuple[float, float] | np.ndarray, index: int,
                 detected: AbstractSet[int]) -> None:
        """The windows the detectors found sensitive in frame `index` (not those kept from memory: a region
        is remembered for `frames` frames after it was last *found*)."""
        if self.frames:
            self._boxes += [(index, SceneCoverage.scene_box(window_boxes[wid], offset))
                            for wid in detected if wid in window_boxes]
