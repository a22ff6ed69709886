"""`SamPredictor`: the segment-anything predictor API over a pedvit model.

`set_image` computes the image embedding once; `predict` runs the prompt encoder and mask decoder for any
number of prompts. Subclasses change only how the embedding is computed (`_encode`), e.g. the distributed
predictor in `pedvit.edge.distributed`.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import torch

from pedvit.models import Sam, build_model
from pedvit.models.transforms import ResizeLongestSide


def validate_image(image: Any) -> np.ndarray:
    """Accept an H x W x 3 uint8 RGB array (or H x W x 4, alpha dropped); raise a clear error otherwise."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array (H x W x 3 uint8 RGB), got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"image must be uint8 (0..255), got dtype {image.dtype}; convert with (img * 255).astype(np.uint8) if it is float in [0, 1]")
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image must be H x W x 3 (RGB), got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty: shape {image.shape}")
    return np.ascontiguousarray(image[..., :3])


class SamPredictor:
    """Drop-in replacement for segment-anything's `SamPredictor` (monolithic: the whole model runs here)."""

    def __init__(self, model: Sam | str = "mobile_sam", checkpoint: str | None = None) -> None:
        self.model = build_model(model, checkpoint) if isinstance(model, str) else model
        self.transform = ResizeLongestSide(self.model.img_size)
        self.timings: dict[str, float] = {}
        #: None: the model's prompt encoder + mask decoder in torch; else a callable with `decode_low_res`'s
        #: contract after the embedding, e.g. the ONNX edge runtime (`pedvit.edge.onnx_runtime`)
        self.edge_decoder: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None
        self.reset_image()

    # ----------------------------------------------------------------------------------------- image
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Compute the embedding of an H x W x 3 uint8 image (RGB, or BGR with image_format="BGR")."""
        self._set_image(image, image_format, self._encode)

    def _set_image(self, image: np.ndarray, image_format: str,
                   encode: Callable[[np.ndarray, np.ndarray], torch.Tensor]) -> None:
        """`set_image` with the embedding computed by `encode(resized, original)`."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        image = validate_image(image)
        if image_format == "BGR":
            image = np.ascontiguousarray(image[..., ::-1])
        self.reset_image()
        started = time.perf_counter()
        resized = self.transform.apply_image(image)
        self.original_size = (int(image.shape[0]), int(image.shape[1]))
        self.input_size = (int(resized.shape[0]), int(resized.shape[1]))
        self.timings["preprocess_s"] = time.perf_counter() - started
        started = time.perf_counter()
        with torch.inference_mode():
            self.features = encode(resized, image)
        self.timings["encode_s"] = time.perf_counter() - started
        self.is_image_set = True

    def _encode(self, resized: np.ndarray, original: np.ndarray) -> torch.Tensor:
        """h x w x 3 uint8 resized image -> 1 x 256 x 64 x 64 embedding (monolithic)."""
        x = torch.from_numpy(np.array(resized, dtype=np.float32)).permute(2, 0, 1)[None]
        return self.model.image_encoder(self.model.preprocess(x))

    def get_image_embedding(self) -> torch.Tensor:
        """1 x 256 x 64 x 64 embedding of the current image."""
        self._require_image()
        return self.features

    def reset_image(self) -> None:
        self.is_image_set = False
        self.features: torch.Tensor | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("no image set: call set_image(image) before predict() or get_image_embedding()")

    # --------------------------------------------------------------------------------------- prompts
    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predict masks for one prompt set, in original-image coordinates.

        Args:
            point_coords: N x 2 (x, y) pixels. point_labels: N (1 foreground, 0 background).
            box: 4 (x0, y0, x1, y1) pixels. mask_input: 1 x 256 x 256 low-res logits from a previous call.

        Returns:
            masks C x H x W (bool, or float logits with return_logits), iou_predictions C, low_res_logits C x 256 x 256
            with C = 3 if multimask_output else 1.
        """
        self._require_image()
        assert self.original_size is not None
        coords_t = labels_t = box_t = mask_t = None
        if point_coords is not None or point_labels is not None:
            if point_coords is None or point_labels is None:
                raise ValueError("point_coords and point_labels must be given together")
            coords = np.asarray(point_coords, dtype=np.float64)
            labels = np.asarray(point_labels)
            if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] == 0:
                raise ValueError(f"point_coords must be N x 2 (x, y) with N >= 1, got shape {coords.shape}")
            if labels.shape != (coords.shape[0],):
                raise ValueError(f"point_labels must have shape ({coords.shape[0]},), got {labels.shape}")
            if not np.isin(labels, (0, 1)).all():
                raise ValueError("point_labels must be 1 (foreground) or 0 (background)")
            self._check_inside(coords, "point")
            coords_t = torch.as_tensor(self.transform.apply_coords(coords, self.original_size), dtype=torch.float32)[None]
            labels_t = torch.as_tensor(labels, dtype=torch.int64)[None]
        if box is not None:
            box_arr = np.asarray(box, dtype=np.float64).reshape(-1)
            if box_arr.shape != (4,):
                raise ValueError(f"box must be 4 numbers (x0, y0, x1, y1), got shape {np.asarray(box).shape}")
            if not (box_arr[0] < box_arr[2] and box_arr[1] < box_arr[3]):
                raise ValueError(f"box must satisfy x0 < x1 and y0 < y1, got {box_arr.tolist()}")
            self._check_inside(box_arr.reshape(2, 2), "box corner")
            box_t = torch.as_tensor(self.transform.apply_boxes(box_arr[None], self.original_size), dtype=torch.float32)
        if mask_input is not None:
            mask_arr = np.asarray(mask_input, dtype=np.float32)
            if mask_arr.shape != (1, 256, 256):
                raise ValueError(f"mask_input must be 1 x 256 x 256 low-res logits, got shape {mask_arr.shape}")
            mask_t = torch.as_tensor(mask_arr)[None]
        masks, iou, low_res = self.predict_torch(coords_t, labels_t, box_t, mask_t, multimask_output, return_logits)
        return masks[0].numpy(), iou[0].numpy(), low_res[0].numpy()

    def _check_inside(self, coords: np.ndarray, what: str) -> None:
        assert self.original_size is not None
        h, w = self.original_size
        outside = (coords[:, 0] < 0) | (coords[:, 0] > w) | (coords[:, 1] < 0) | (coords[:, 1] > h) | ~np.isfinite(coords).all(1)
        if outside.any():
            raise ValueError(f"{what} {coords[outside][0].tolist()} lies outside the {w} x {h} (width x height) image")

    @torch.inference_mode()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched prediction with prompts already in the input frame.

        Args:
            point_coords: B x N x 2, point_labels: B x N, boxes: B x 4, mask_input: B x 1 x 256 x 256.

        Returns:
            masks B x C x H x W, iou B x C, low-res logits B x C x 256 x 256.
        """
        self._require_image()
        assert self.original_size is not None and self.input_size is not None and self.features is not None
        started = time.perf_counter()
        low_res, iou = self.decode_low_res(point_coords, point_labels, boxes, mask_input, multimask_output)
        masks = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        self.timings["decode_s"] = time.perf_counter() - started
        return masks, iou, low_res

    @torch.inference_mode()
    def decode_low_res(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt encoder + mask decoder on the current embedding (prompts in the input frame, as for
        `predict_torch`): B x C x 256 x 256 low-res logits and B x C IoU predictions (C = 3 or 1)."""
        self._require_image()
        if self.edge_decoder is not None:
            return self.edge_decoder(self.features, point_coords, point_labels, boxes, mask_input, multimask_output)
        points = (point_coords, point_labels) if point_coords is not None else None
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        return self.model.mask_decoder(
            image_embeddings=self.features,
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )
