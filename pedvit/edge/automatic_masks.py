"""Automatic masks ("segment everything") with the interface and options of segment-anything's
`SamAutomaticMaskGenerator`, over pedvit's predictors.

A grid of single foreground points is prompted over the image (and, with ``crop_n_layers > 0``, over
overlapping crops of it). Each point gives 3 masks; they are filtered by the decoder's predicted IoU and by a
stability score (how little the mask changes when the logit cut-off moves by ``stability_score_offset``),
deduplicated by box non-maximum suppression, optionally cleaned of small holes and islands, and returned as
one record per mask.

The image encoder runs once per image (once per crop): with `DistributedSamAutomaticMaskGenerator` that is
the split encoder over workers, exactly as for a prompted request, and the workers see nothing but their
windows. Every point prompt then runs on the edge's prompt encoder + mask decoder, ``points_per_batch`` at a
time (in onnxruntime when the predictor uses the ONNX edge runtime, `pedvit.edge.onnx_runtime`).

Conventions:
    * boxes inside this module are ``(x0, y0, x1, y1)`` pixels with exclusive ends; the records' ``bbox`` and
      ``crop_box`` are ``[x, y, width, height]`` (COCO), width and height counting pixels (segment-anything
      reports one less: it subtracts the last pixel's index);
    * ``uncompressed_rle`` is COCO's uncompressed RLE: ``{"size": [H, W], "counts": [...]}``, runs over the
      mask in column-major order, starting with a (possibly empty) run of zeros; ``coco_rle`` is the same
      compressed to pycocotools' string form.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pedvit.models import Sam

from .mask_tools import (
    box_iou, coco_rle, crop_boxes, layer_point_grids, mask_boxes, mask_iou_matrix, mask_to_rle, nms, point_grid,
    remove_small_regions, rle_area, rle_to_mask, stability_scores,
)
from .predictor import SamPredictor, validate_image

__all__ = [
    "OUTPUT_MODES", "SamAutomaticMaskGenerator", "DistributedSamAutomaticMaskGenerator", "point_grid",
    "layer_point_grids", "crop_boxes", "mask_boxes", "box_iou", "nms", "stability_scores", "mask_to_rle",
    "rle_to_mask", "rle_area", "coco_rle", "remove_small_regions", "mask_iou_matrix",
]

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")

#: Masks upsampled to full resolution at once (bounds the memory of a batch: 16 x H x W float32 logits).
UPSAMPLE_CHUNK = 16

#: A box side within this many pixels of a crop's side (that is not the image's side) marks a mask cut by the
#: crop; such masks are dropped (a larger crop or the whole image sees the object whole).
CROP_EDGE_TOLERANCE_PX = 20.0


@dataclass
class _Candidates:
    """Masks kept so far, one row each: RLE in the full image, box (x0, y0, x1, y1) in the full image,
    predicted IoU, stability score, prompt point (x, y) in the full image, crop box."""

    rles: list[dict[str, Any]] = field(default_factory=list)
    boxes: torch.Tensor = field(default_factory=lambda: torch.zeros((0, 4), dtype=torch.int64))
    iou: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    stability: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    points: torch.Tensor = field(default_factory=lambda: torch.zeros((0, 2), dtype=torch.float64))
    crops: torch.Tensor = field(default_factory=lambda: torch.zeros((0, 4), dtype=torch.int64))

    def __len__(self) -> int:
        return len(self.rles)

    def extend(self, other: "_Candidates") -> None:
        self.rles = self.rles + other.rles
        self.boxes = torch.cat([self.boxes, other.boxes])
        self.iou = torch.cat([self.iou, other.iou])
        self.stability = torch.cat([self.stability, other.stability])
        self.points = torch.cat([self.points, other.points])
        self.crops = torch.cat([self.crops, other.crops])

    def take(self, index: torch.Tensor) -> "_Candidates":
        rows = index.tolist()
        return _Candidates([self.rles[i] for i in rows], self.boxes[index], self.iou[index], self.stability[index],
                           self.points[index], self.crops[index])


def _batches(array: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(array), size):
        yield array[start : start + size]


def _xywh(box: Sequence[float]) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


# ----------------------------------------------------------------------------------------- generator
class SamAutomaticMaskGenerator:
    """Masks for everything in an image, prompted by a grid of points (segment-anything's generator).

    Args:
        model: a `Sam`, a model name ("mobile_sam", ...) or a ready predictor (a `SamPredictor` or
            `DistributedSamPredictor`: its encoder computes each image's embedding, its decoder the masks).
        points_per_side: points along each side of the image (points_per_side^2 prompts); None when
            `point_grids` gives them.
        points_per_batch: prompts the decoder runs at once.
        pred_iou_thresh: keep masks whose predicted IoU is above this (0: no filter).
        stability_score_thresh: keep masks whose stability score is at least this (0: no filter).
        stability_score_offset: how far the logit cut-off moves for the stability score.
        box_nms_thresh: box IoU above which the lower-scored of two masks of one crop is dropped.
        crop_n_layers: extra layers of crops (layer i: 2^i x 2^i crops), each with its own embedding.
        crop_nms_thresh: box IoU for removing duplicates between crops (masks from smaller crops win).
        crop_overlap_ratio: overlap of neighbouring layer-1 crops, as a fraction of the short side.
        crop_n_points_downscale_factor: layer i uses points_per_side / factor^i points per side.
        point_grids: explicit N x 2 grids in [0, 1], one per layer (instead of points_per_side).
        min_mask_region_area: > 0: fill holes and drop islands smaller than this (pixels), then rerun NMS.
        output_mode: "binary_mask" (H x W bool), "uncompressed_rle" or "coco_rle" (pycocotools strings).
        checkpoint: weights path when `model` is a name.
    """

    def __init__(
        self,
        model: Sam | str | SamPredictor = "mobile_sam",
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Sequence[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        checkpoint: str | None = None,
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if crop_n_layers < 0:
            raise ValueError(f"crop_n_layers must be >= 0, got {crop_n_layers}")
        if crop_n_points_downscale_factor < 1:
            raise ValueError(f"crop_n_points_downscale_factor must be >= 1, got {crop_n_points_downscale_factor}")
        if points_per_side is not None:
            grids = layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
        else:
            grids = [np.asarray(g, dtype=np.float64) for g in point_grids or ()]
            if len(grids) != crop_n_layers + 1:
                raise ValueError(f"point_grids needs one grid per crop layer ({crop_n_layers + 1}), got {len(grids)}")
        for grid in grids:
            if grid.ndim != 2 or grid.shape[1] != 2 or not len(grid) or grid.min() < 0 or grid.max() > 1:
                raise ValueError(f"each point grid must be N x 2 (x, y) in [0, 1] with N >= 1, got shape {grid.shape}")
        if points_per_batch < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {points_per_batch}")
        for name, value in (("pred_iou_thresh", pred_iou_thresh), ("stability_score_thresh", stability_score_thresh),
                            ("box_nms_thresh", box_nms_thresh), ("crop_nms_thresh", crop_nms_thresh)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if stability_score_offset <= 0:
            raise ValueError(f"stability_score_offset must be > 0, got {stability_score_offset}")
        if not 0.0 <= crop_overlap_ratio < 1.0:
            raise ValueError(f"crop_overlap_ratio must be in [0, 1), got {crop_overlap_ratio}")
        if min_mask_region_area < 0:
            raise ValueError(f"min_mask_region_area must be >= 0, got {min_mask_region_area}")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}, got {output_mode!r}")
        self.predictor = model if isinstance(model, SamPredictor) else SamPredictor(model, checkpoint)
        self.points_per_side = points_per_side
        self.point_grids = grids
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        #: seconds of the last `generate`: "encode_s" (all crops), "decode_s" (prompt encoder + mask decoder),
        #: "postprocess_s" (upsampling, filters, RLE, NMS)
        self.timings: dict[str, float] = {}
        #: mask counts of the last `generate`: decoded (3 per point), after each filter, returned
        self.counts: dict[str, int] = {}
        #: the predictor's run record of every encode of the last `generate` (one per crop; split predictors
        #: only: which windows each worker received)
        self.runs: list[Any] = []

    @property
    def model(self) -> Sam:
        return self.predictor.model

    # --------------------------------------------------------------------------------------- public
    @torch.inference_mode()
    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Masks for an H x W x 3 uint8 RGB image.

        Returns:
            one record per mask, largest predicted IoU first within each crop: ``segmentation`` (per
            `output_mode`), ``area`` (pixels), ``bbox`` [x, y, w, h], ``predicted_iou``, ``point_coords``
            [[x, y]] (the prompt), ``stability_score``, ``crop_box`` [x, y, w, h].
        """
        image = validate_image(image)
        self.runs = []
        self.timings = {"encode_s": 0.0, "decode_s": 0.0, "postprocess_s": 0.0}
        self.counts = {"decoded": 0, "after_iou": 0, "after_stability": 0, "after_crop_edge": 0, "after_nms": 0}
        height, width = image.shape[:2]
        crops = crop_boxes((height, width), self.crop_n_layers, self.crop_overlap_ratio)
        kept = _Candidates()
        for box, layer in crops:
            kept.extend(self._process_crop(image, box, layer))
        started = time.perf_counter()
        if len(crops) > 1 and len(kept):
            # Between crops, a mask from a smaller crop saw its object at a higher resolution: it wins.
            crop_area = ((kept.crops[:, 2] - kept.crops[:, 0]) * (kept.crops[:, 3] - kept.crops[:, 1])).double()
            kept = kept.take(nms(kept.boxes, 1.0 / crop_area, self.crop_nms_thresh))
        if self.min_mask_region_area > 0 and len(kept):
            kept = self._clean_small_regions(kept)
        records = [self._record(kept, i) for i in range(len(kept))]
        self.timings["postprocess_s"] += time.perf_counter() - started
        self.counts["returned"] = len(records)
        return records

    # ------------------------------------------------------------------------------------ per crop
    def _process_crop(self, image: np.ndarray, box: tuple[int, int, int, int], layer: int) -> _Candidates:
        x0, y0, x1, y1 = box
        crop = image[y0:y1, x0:x1]
        started = time.perf_counter()
        self.predictor.set_image(crop)
        record = getattr(self.predictor, "last_run", None)
        if record is not None:
            self.runs.append(record)
        self.timings["encode_s"] += time.perf_counter() - started
        crop_size = (y1 - y0, x1 - x0)
        points = self.point_grids[layer] * np.array([[crop_size[1], crop_size[0]]], dtype=np.float64)
        kept = _Candidates()
        for batch in _batches(points, self.points_per_batch):
            kept.extend(self._process_batch(batch, box, (image.shape[0], image.shape[1])))
        self.predictor.reset_image()
        started = time.perf_counter()
        if len(kept):
            kept = kept.take(nms(kept.boxes, kept.iou, self.box_nms_thresh))
        self.counts["after_nms"] += len(kept)
        self.timings["postprocess_s"] += time.perf_counter() - started
        return kept

    def _process_batch(self, points: np.ndarray, box: tuple[int, int, int, int], image_size: tuple[int, int]) -> _Candidates:
        """points: B x 2 (x, y) in crop pixels -> the masks that pass the filters, in the full image's frame."""
        predictor = self.predictor
        assert predictor.original_size is not None and predictor.input_size is not None
        crop_size = predictor.original_size
        started = time.perf_counter()
        coords = torch.as_tensor(predictor.transform.apply_coords(points, crop_size), dtype=torch.float32)
        labels = torch.ones((len(points), 1), dtype=torch.int64)
        low_res, iou = predictor.decode_low_res(coords[:, None, :], labels, multimask_output=True)
        self.timings["decode_s"] += time.perf_counter() - started
        started = time.perf_counter()
        masks_per_point = low_res.shape[1]
        # Row r of the flattened outputs is mask r % masks_per_point of point r // masks_per_point.
        low_res, iou = low_res.flatten(0, 1), iou.flatten(0, 1).float()
        point_rows = torch.as_tensor(points, dtype=torch.float64).repeat_interleave(masks_per_point, dim=0)
        self.counts["decoded"] += len(iou)
        keep = torch.arange(len(iou))
        if self.pred_iou_thresh > 0.0:
            # Filtered on the low-resolution outputs: only survivors are upsampled.
            keep = keep[iou > self.pred_iou_thresh]
        self.counts["after_iou"] += len(keep)
        out = _Candidates()
        crop_xyxy = torch.tensor([box], dtype=torch.float64)
        image_xyxy = torch.tensor([[0, 0, image_size[1], image_size[0]]], dtype=torch.float64)
        offset = torch.tensor([[box[0], box[1], box[0], box[1]]], dtype=torch.int64)
        threshold = self.model.mask_threshold
        for chunk in keep.split(UPSAMPLE_CHUNK):
            logits = self.model.postprocess_masks(low_res[chunk][:, None], predictor.input_size, crop_size)[:, 0]
            stability = stability_scores(logits, threshold, self.stability_score_offset)
            passed = stability >= self.stability_score_thresh if self.stability_score_thresh > 0.0 else torch.ones_like(stability, dtype=torch.bool)
            self.counts["after_stability"] += int(passed.sum())
            masks = logits[passed] > threshold
            boxes = mask_boxes(masks) + offset
            # A mask cut by a crop's side (not the image's) is incomplete: drop it.
            near_crop = (boxes.double() - crop_xyxy).abs() <= CROP_EDGE_TOLERANCE_PX
            near_image = (boxes.double() - image_xyxy).abs() <= CROP_EDGE_TOLERANCE_PX
            inside = ~(near_crop & ~near_image).any(dim=1)
            self.counts["after_crop_edge"] += int(inside.sum())
            rows = chunk[passed][inside]
            masks = masks[inside].numpy()
            out.extend(_Candidates(
                [mask_to_rle(self._uncrop(m, box, image_size)) for m in masks], boxes[inside], iou[rows],
                stability[passed][inside], point_rows[rows] + torch.tensor([[box[0], box[1]]], dtype=torch.float64),
                torch.tensor([box] * len(rows), dtype=torch.int64).reshape(-1, 4),
            ))
        self.timings["postprocess_s"] += time.perf_counter() - started
        return out

    @staticmethod
    def _uncrop(mask: np.ndarray, box: tuple[int, int, int, int], image_size: tuple[int, int]) -> np.ndarray:
        """h x w crop mask -> H x W image mask (zero outside the crop)."""
        if mask.shape == image_size:
            return mask
        full = np.zeros(image_size, dtype=bool)
        full[box[1] : box[3], box[0] : box[2]] = mask
        return full

    # ---------------------------------------------------------------------------------- clean-up
    def _clean_small_regions(self, kept: _Candidates) -> _Candidates:
        """Fill small holes and drop small islands of every mask; rerun NMS, preferring masks that needed no
        change; kept changed masks get their new RLE and box."""
        masks, unchanged = [], []
        for rle in kept.rles:
            mask, holes_changed = remove_small_regions(rle_to_mask(rle), self.min_mask_region_area, "holes")
            mask, islands_changed = remove_small_regions(mask, self.min_mask_region_area, "islands")
            masks.append(mask)
            unchanged.append(not (holes_changed or islands_changed))
        boxes = mask_boxes(torch.from_numpy(np.stack(masks)))
        index = nms(boxes, torch.tensor(unchanged, dtype=torch.float64), max(self.box_nms_thresh, self.crop_nms_thresh))
        for i in index.tolist():
            if not unchanged[i]:
                kept.rles[i] = mask_to_rle(masks[i])
                kept.boxes[i] = boxes[i]
        return kept.take(index)

    def _record(self, kept: _Candidates, i: int) -> dict[str, Any]:
        rle = kept.rles[i]
        if self.output_mode == "binary_mask":
            segmentation: Any = rle_to_mask(rle)
        elif self.output_mode == "coco_rle":
            segmentation = coco_rle(rle_to_mask(rle))
        else:
            segmentation = rle
        return {
            "segmentation": segmentation,
            "area": rle_area(rle),
            "bbox": _xywh(kept.boxes[i].tolist()),
            "predicted_iou": float(kept.iou[i]),
            "point_coords": [[float(v) for v in kept.points[i].tolist()]],
            "stability_score": float(kept.stability[i]),
            "crop_box": _xywh(kept.crops[i].tolist()),
        }


_GENERATOR_OPTIONS = frozenset(inspect.signature(SamAutomaticMaskGenerator.__init__).parameters) - {"self", "model", "checkpoint"}


class DistributedSamAutomaticMaskGenerator(SamAutomaticMaskGenerator):
    """`SamAutomaticMaskGenerator` whose image embeddings are computed by a split plan over workers.

    Each image (each crop) is encoded once, split as for any request: workers receive only their windows.
    The point prompts then run on the edge's decoder.

    Args:
        model: a `Sam` or a model name.
        workers: as for `DistributedSamPredictor` (executors, "host:port" strings or a cluster file); or pass
            a ready `DistributedSamPredictor` as `model` and leave workers empty.
        **options: the generator's options (points_per_side, pred_iou_thresh, ...; see
            `SamAutomaticMaskGenerator`) and `DistributedSamPredictor`'s (plan, scheme, halo_px, fusion,
            ledger, ...), told apart by name.

    Attribute `runs`: the `RunRecord` of every encode of the last `generate` (one per crop).
    """

    def __init__(self, model: Any = "mobile_sam", workers: Sequence[Any] | str = (), **options: Any) -> None:
        from .distributed import DistributedSamPredictor

        generator_options = {k: v for k, v in options.items() if k in _GENERATOR_OPTIONS}
        predictor_options = {k: v for k, v in options.items() if k not in _GENERATOR_OPTIONS}
        if isinstance(model, DistributedSamPredictor):
            if workers or predictor_options:
                raise ValueError("pass either a DistributedSamPredictor or the workers and predictor options, not both")
            predictor = model
        else:
            if not workers:
                raise ValueError("DistributedSamAutomaticMaskGenerator needs workers (or a DistributedSamPredictor)")
            predictor = DistributedSamPredictor(model, workers, **predictor_options)
        super().__init__(predictor, **generator_options)

    def close(self) -> None:
        self.predictor.close()  # type: ignore[attr-defined]

    def __enter__(self) -> "DistributedSamAutomaticMaskGenerator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
