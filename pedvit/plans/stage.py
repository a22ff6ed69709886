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
    """

    name: str
    input_dtypes: tuple[str, ...]
    channels: int
    max_side: int
    multiple_of: int = 1
    max_batch: int = 64

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


class Stage(Protocol):
    """A unit of worker compute. Implementations live in `pedvit.plans.stages`."""

    spec: StageSpec

    def run(self, batch: np.ndarray, meta: np.ndarray) -> np.ndarray:
        """Run on B x h x w x C windows with B x 4 int32 meta; return B x h' x w' x C' float32."""
        ...
