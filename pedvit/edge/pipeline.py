"""Pipelining many images: the workers encode image k+1 while the edge decodes image k.

`PipelinedEmbeddings` runs a split predictor's encoder (its `SplitEngine`: the workers plus the edge's
stitching, fusion and neck) one image ahead in a background thread; the caller decodes each image's
embedding with a `PrecomputedPredictor` (prompts, or the automatic mask generator's point grid) meanwhile.
Only one encode is in flight at a time, so each image's run record is the engine's record of that encode.

    encoder = PipelinedEmbeddings(distributed_predictor)
    for item in encoder.run(paths, load_image):
        if item.error: ...                      # loading or encoding failed: reported, the batch goes on
        decoder.use(item)                       # a PrecomputedPredictor sharing the model
        decoder.set_image(item.image); decoder.predict(...)

Not pipelined: crops of the automatic mask generator (``crop_n_layers > 0``) need further encodes of the
same image, which the decoding side would run while the next image is in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from .predictor import SamPredictor, validate_image

__all__ = ["EncodedImage", "PipelinedEmbeddings", "PrecomputedPredictor"]

Key = TypeVar("Key")


@dataclass
class EncodedImage(Generic[Key]):
    """One image of the stream: its key (e.g. its path), the H x W x 3 uint8 image, the 1 x 256 x 64 x 64
    embedding and the engine's run record and grid; or the first line of the error that stopped it."""

    key: Key
    image: np.ndarray | None = None
    features: torch.Tensor | None = None
    record: Any = None
    grid: Any = None
    error: str | None = None


class PipelinedEmbeddings:
    """Encodes a stream of images one ahead of the caller with a split predictor's engine.

    Args:
        predictor: a `DistributedSamPredictor` (its engine, transform and model are used; its own image state
            is left alone).
        pipelined: False encodes each image only when the caller asks for it (the comparison baseline).
    """

    def __init__(self, predictor: Any, *, pipelined: bool = True) -> None:
        if getattr(predictor, "engine", None) is None:
            raise ValueError("pipelining needs a split predictor (DistributedSamPredictor): the monolithic encoder runs on the edge")
        self.predictor = predictor
        self.pipelined = pipelined

    def _encode(self, key: Any, load: Callable[[Any], np.ndarray]) -> EncodedImage:
        try:
            image = validate_image(load(key))
            resized = self.predictor.transform.apply_image(image)
            with torch.inference_mode():
                features = self.predictor.engine.encode(resized, image)
            engine = self.predictor.engine
            return EncodedImage(key, image, features, engine.last_run, engine.last_grid)
        except Exception as error:  # noqa: BLE001 - reported per image, the stream goes on
            text = str(error).splitlines()[0] if str(error) else type(error).__name__
            return EncodedImage(key, error=text)

    def run(self, keys: Iterable[Key], load: Callable[[Key], np.ndarray]) -> Iterator[EncodedImage[Key]]:
        """Yield every key's `EncodedImage`, in order; while the caller handles one, the next is encoded."""
        items = list(keys)
        if not self.pipelined:
            for key in items:
                yield self._encode(key, load)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pedvit-pipeline") as pool:
            ahead: Future[EncodedImage] | None = pool.submit(self._encode, items[0], load) if items else None
            for index in range(len(items)):
                assert ahead is not None
                current = ahead.result()
                # Started before the caller decodes `current`: the workers compute while the edge decodes.
                ahead = pool.submit(self._encode, items[index + 1], load) if index + 1 < len(items) else None
                yield current


class PrecomputedPredictor(SamPredictor):
    """A `SamPredictor` whose `set_image` takes the embedding of an `EncodedImage` (computed elsewhere, e.g. by
    `PipelinedEmbeddings`) instead of running an encoder. It shares the source predictor's model and edge
    decoder, and exposes the image's run record as `last_run` and its grid as `engine.last_grid`, as a
    `DistributedSamPredictor` does.
    """

    def __init__(self, source: SamPredictor) -> None:
        super().__init__(source.model)
        self.edge_decoder = source.edge_decoder
        self._next: EncodedImage | None = None
        self.last_run: Any = None
        self.engine = _GridHolder()

    def use(self, item: EncodedImage) -> None:
        """The embedding the next `set_image(item.image)` takes."""
        if item.features is None:
            raise ValueError(f"{item.key}: no embedding ({item.error})")
        self._next = item

    def _encode(self, resized: np.ndarray, original: np.ndarray) -> torch.Tensor:
        item = self._next
        if item is None or item.image is None or item.image.shape != original.shape or not np.array_equal(item.image, original):
            raise RuntimeError("PrecomputedPredictor.set_image: no precomputed embedding for this image (call use(item) first)")
        self._next = None
        self.last_run, self.engine.last_grid = item.record, item.grid
        return item.features


class _GridHolder:
    """Stands in for the engine attribute that callers read the last request's window grid from."""

    def __init__(self) -> None:
        self.last_grid: Any = None
