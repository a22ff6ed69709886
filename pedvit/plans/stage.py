"""What a worker runs: a named stage with a validation spec.

A stage is the only thing a cloud worker knows about the model split. It receives a batch of equally
shaped window tensors and, per window, its origin in the input; it returns one tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class StageSpec:
    """Shape/dtype contract of a stage's input, checked before any compute.

    Attributes:
        name: the stage name on the wire.
        input_dtypes: allowed input dtypes, as numpy dtype names ("uint8", "float16", "float32").
        channels: the last dimension of the input (3 for RGB pixels, C for token features).
        max_side: largest allowed h or w of one window crop (pixels or tokens).
        multiple_of: h and w must be multiples of this (16 for pixel crops, 1 for tokens).
        max_batch: largest allowed number of windows in one request.
        canvas: side of the input the origins index (pixels or tokens): a window must lie inside it
            (None: not checked).
        out_stride, out_channels: an h x w window gives an h/out_stride x w/out_stride x out_channels
            answer, so a worker can refuse an answer too large to send before computing it (out_channels
            None: unknown, checked after compute).
    """

    name: str
    input_dtypes: tuple[str, ...]
    channels: int
    max_side: int
    multiple_of: int = 1
    max_batch: int = 64
    canvas: int | None = None
    out_stride: int = 1
    out_channels: int | None = None

    def output_elements(self, shape: tuple[int, ...]) -> int | None:
        """Elements of the answer to a B x h x w x C batch (None when the spec does not say)."""
        if self.out_channels is None:
            return None
        b, h, w, _ = shape
        return b * (h // self.out_stride) * (w // self.out_stride) * self.out_channels

    def validate(self, dtype: str, shape: tuple[int, ...], meta_shape: tuple[int, ...]) -> None:
        """Raise ValueError with a readable message if a request does not fit this stage.

        Args:
            dtype: numpy dtype name of the batch.
            shape: B x h x w x C.
            meta_shape: must be B x 4.
        """
        if dtype not in self.input_dtypes:
            raise ValueError(f"stage {self.name!r} accepts dtypes {list(self.input_dtypes)}, got {dtype!r}")
        if len(shape) != 4:
            raise ValueError(f"stage {self.name!r} expects a B x h x w x C batch, got shape {list(shape)}")
        b, h, w, c = shape
        if not 1 <= b <= self.max_batch:
            raise ValueError(f"stage {self.name!r}: batch size must be in [1, {self.max_batch}], got {b}")
        if c != self.channels:
            raise ValueError(f"stage {self.name!r} expects {self.channels} channels, got {c}")
        for side_name, side in (("height", h), ("width", w)):
            if not 1 <= side <= self.max_side:
                raise ValueError(f"stage {self.name!r}: window {side_name} must be in [1, {self.max_side}], got {side}")
            if side % self.multiple_of:
                raise ValueError(f"stage {self.name!r}: window {side_name} must be a multiple of {self.multiple_of}, got {side}")
        if tuple(meta_shape) != (b, 4):
            raise ValueError(f"stage {self.name!r}: meta must be {b} x 4 (origin_y, origin_x, valid_h, valid_w), got {list(meta_shape)}")

    def validate_meta(self, meta: np.ndarray, h: int, w: int) -> None:
        """Raise ValueError unless every B x 4 meta row (origin_y, origin_x, valid_h, valid_w) fits an h x w
        window placed inside the canvas."""
        if (meta < 0).any():
            raise ValueError("meta values must be non-negative")
        if (meta[:, 2] > h).any() or (meta[:, 3] > w).any():
            raise ValueError(f"meta valid_h/valid_w must not exceed the window size {h} x {w}")
        if self.canvas is not None and ((meta[:, 0] + h > self.canvas).any() or (meta[:, 1] + w > self.canvas).any()):
            raise ValueError(f"stage {self.name!r}: a {h} x {w} window must lie inside the {self.canvas} x "
                             f"{self.canvas} canvas; origins up to {meta[:, :2].max(0).tolist()} do not")


class Stage(Protocol):
    """A unit of worker compute. Implementations live in `pedvit.plans.stages`."""

    spec: StageSpec

    def run(self, batch: np.ndarray, meta: np.ndarray) -> np.ndarray:
        """Run on B x h x w x C windows with B x 4 int32 meta; return B x h' x w' x C' float32."""
        ...
