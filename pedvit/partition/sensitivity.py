"""Sensitive regions and the windows they touch.

Faces, text and (on request) people found by the edge detectors of :mod:`pedvit.partition.detectors` become
``keep_local`` windows (:func:`sensitive_windows`; :func:`pedvit.partition.detectors.constraints_for_image`
builds the constraints): they are computed on the edge and never sent (:func:`detect_sensitive_regions`, the
Haar face cascades, is kept as the ``haar`` fallback detector). Detected objects (people: upper/full body cascades, optionally a saliency blob) become
``spread_groups``: their windows go to different workers so that no worker sees a whole object.

Detectors run on a copy scaled to ``detect_side`` px on its longest side (speed; Haar cascades are scale
robust), and boxes are mapped back to original pixels. Overlapping detections are merged into their union
(a larger box only keeps more windows local, which is the safe side).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np

from .geometry import Box, WindowGrid, boxes_intersect

__all__ = [
    "Region",
    "detect_objects",
    "detect_sensitive_regions",
    "object_groups",
    "sensitive_windows",
]

_CASCADES = {
    "face_default": "haarcascade_frontalface_default.xml",
    "face_alt2": "haarcascade_frontalface_alt2.xml",
    "face_profile": "haarcascade_profileface.xml",
    "upperbody": "haarcascade_upperbody.xml",
    "fullbody": "haarcascade_fullbody.xml",
}


@dataclass(frozen=True)
class Region:
    """A detected region.

    Attributes:
        kind: "face" or "object".
        box: ``(y0, x0, y1, x1)`` in original pixels, exclusive ends.
        score: detector confidence (Haar: neighbour count of the strongest merged detection; saliency: the
            mean saliency of the blob, in [0, 1]).
    """

    kind: str
    box: Box
    score: float


def _cv2():  # imported lazily so that geometry/schemes work without OpenCV
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - opencv is a dependency
        raise RuntimeError("sensitive-region detection needs opencv-python(-headless) >= 4.8") from e
    return cv2


@lru_cache(maxsize=None)
def _cascade(name: str):
    cv2 = _cv2()
    base = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not base:
        raise RuntimeError(
            "this OpenCV build has no bundled Haar cascades (cv2.data.haarcascades); install "
            "opencv-python-headless from PyPI, which ships them"
        )
    path = os.path.join(base, _CASCADES[name])
    clf = cv2.CascadeClassifier(path)
    if not os.path.isfile(path) or clf.empty():
        raise RuntimeError(f"cannot load Haar cascade {path}; reinstall opencv-python-headless")
    return clf


def check_image(image: np.ndarray) -> np.ndarray:
    """The H x W x 3 uint8 RGB image as an array; ValueError for anything else."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or min(img.shape[:2]) < 1:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {img.dtype} {img.shape}")
    return img


def _gray_scaled(image: np.ndarray, detect_side: int) -> tuple[np.ndarray, float]:
    """Equalised grey copy with longest side at most ``detect_side`` (never upscaled), and its scale."""
    cv2 = _cv2()
    h, w = image.shape[:2]
    s = min(1.0, detect_side / max(h, w))
    gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    if s != 1.0:
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        gray = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=interp)
    return cv2.equalizeHist(gray), s


_Det = tuple[Box, float, frozenset[str]]  # box in grey pixels, neighbour count, supporting detectors


def _run(
    name: str,
    gray: np.ndarray,
    min_frac: float,
    min_neighbors: int,
    mirror: bool = False,
    scale_factor: float = 1.1,
) -> list[_Det]:
    """Detections of one cascade as ``(box in gray pixels, neighbour count, {detector})``."""
    gh, gw = gray.shape
    side = max(12, int(min_frac * min(gh, gw)))
    if side > min(gh, gw):
        return []
    img = gray[:, ::-1].copy() if mirror else gray
    rects, counts = _cascade(name).detectMultiScale2(
        img, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(side, side)
    )
    out = []
    for (x, y, w, h), n in zip(np.asarray(rects).reshape(-1, 4), np.asarray(counts).reshape(-1)):
        x = gw - x - w if mirror else x
        out.append(((int(y), int(x), int(y + h), int(x + w)), float(n), frozenset({name + "~" * mirror})))
    return out


def _merge(dets: list[_Det], iou: float = 0.2) -> list[_Det]:
    """Merge overlapping boxes (IoU above ``iou`` or one mostly inside the other) into their union.

    The merged score is the sum of neighbour counts; the support is the union of detectors.
    """
    boxes = sorted(dets, key=lambda d: -d[1])
    changed = True
    while changed:
        changed = False
        merged: list[_Det] = []
        for b, s, src in boxes:
            for k, (m, ms, msrc) in enumerate(merged):
                iy = max(0, min(b[2], m[2]) - max(b[0], m[0]))
                ix = max(0, min(b[3], m[3]) - max(b[1], m[1]))
                inter = iy * ix
                ab = (b[2] - b[0]) * (b[3] - b[1])
                am = (m[2] - m[0]) * (m[3] - m[1])
                if inter and (inter / (ab + am - inter) > iou or inter / min(ab, am) > 0.6):
                    union = (min(b[0], m[0]), min(b[1], m[1]), max(b[2], m[2]), max(b[3], m[3]))
                    merged[k] = (union, s + ms, src | msrc)
                    changed = True
                    break
            else:
                merged.append((b, s, src))
        boxes = merged
    return boxes


def _to_original(dets: Iterable[_Det], s: float, shape: tuple[int, int], grow: float,
                 kind: str) -> list[Region]:
    h, w = shape
    out = []
    for (y0, x0, y1, x1), score, _ in dets:
        gy, gx = grow * (y1 - y0), grow * (x1 - x0)
        box = (
            max(0, int(np.floor((y0 - gy) / s))),
            max(0, int(np.floor((x0 - gx) / s))),
            min(h, int(np.ceil((y1 + gy) / s))),
            min(w, int(np.ceil((x1 + gx) / s))),
        )
        if box[0] < box[2] and box[1] < box[3]:
            out.append(Region(kind, box, score))
    return out


def detect_sensitive_regions(
    image_rgb_uint8: np.ndarray,
    kinds: Sequence[str] = ("face",),
    *,
    detect_side: int = 480,
    min_face_frac: float = 0.05,
    min_neighbors: int = 5,
    strong: float = 12.0,
    grow: float = 0.2,
) -> list[Region]:
    """Faces in an ``H x W x 3`` uint8 RGB image, as ``Region("face", box, score)`` in original pixels.

    Runs the frontal (default + alt2) and profile cascades (profile also on the mirrored image, for the
    other side) on an equalised grey copy scaled down to ``detect_side``; faces smaller than
    ``min_face_frac`` of the short side are ignored. Overlapping detections are merged; a merged face is
    kept when two detectors agree or its neighbour count reaches ``strong`` (single weak Haar hits are the
    usual false positives). Kept boxes grow by ``grow`` of their size per side to cover hair, ears and chin.
    """
    img = check_image(image_rgb_uint8)
    unknown = set(kinds) - {"face"}
    if unknown:
        raise ValueError(f"unsupported sensitive kinds {sorted(unknown)}; supported: ('face',)")
    if "face" not in kinds:
        return []
    gray, s = _gray_scaled(img, detect_side)
    dets = (
        _run("face_default", gray, min_face_frac, min_neighbors)
        + _run("face_alt2", gray, min_face_frac, min_neighbors - 1)
        # the profile cascade is the slowest; a coarser pyramid keeps it affordable
        + _run("face_profile", gray, min_face_frac, min_neighbors, scale_factor=1.15)
        + _run("face_profile", gray, min_face_frac, min_neighbors, mirror=True, scale_factor=1.15)
    )
    kept = [d for d in _merge(dets) if len(d[2]) >= 2 or d[1] >= strong]
    return _to_original(kept, s, img.shape[:2], grow, "face")


def _saliency_box(gray: np.ndarray) -> tuple[Box, float] | None:
    """Largest blob of spectral-residual saliency (Hou & Zhang 2007) on a 64 px thumbnail, in gray pixels."""
    cv2 = _cv2()
    gh, gw = gray.shape
    small = cv2.resize(gray, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
    f = np.fft.fft2(small)
    log_amp = np.log(np.abs(f) + 1e-6)
    residual = log_amp - cv2.blur(log_amp, (3, 3))
    sal = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(f)))) ** 2
    sal = cv2.GaussianBlur(sal.astype(np.float32), (0, 0), 2.5)
    sal = (sal - sal.min()) / (np.ptp(sal) + 1e-12)
    mask = (sal > 3 * sal.mean()).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    if n <= 1:
        return None
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = stats[k, :4]
    sy, sx = gh / 64, gw / 64
    box = (int(y * sy), int(x * sx), int(np.ceil((y + h) * sy)), int(np.ceil((x + w) * sx)))
    return box, float(sal[labels == k].mean())


def detect_objects(
    image: np.ndarray,
    *,
    detect_side: int = 480,
    min_frac: float = 0.1,
    min_neighbors: int = 4,
    saliency_fallback: bool = False,
) -> list[Region]:
    """People-like objects (upper-body and full-body cascades) as ``Region("object", box, score)``.

    With ``saliency_fallback`` and no cascade hit, the largest spectral-residual saliency blob is returned
    instead (a cheap "main object" guess for spread groups).
    """
    img = check_image(image)
    gray, s = _gray_scaled(img, detect_side)
    dets = _run("upperbody", gray, min_frac, min_neighbors) + _run("fullbody", gray, min_frac, min_neighbors)
    if not dets and saliency_fallback:
        sb = _saliency_box(gray)
        dets = [(sb[0], sb[1], frozenset({"saliency"}))] if sb is not None else []
    return _to_original(_merge(dets), s, img.shape[:2], 0.0, "object")


def _expand(box: Box, margin: int) -> Box:
    return (box[0] - margin, box[1] - margin, box[2] + margin, box[3] + margin)


def _hits(grid: WindowGrid, box: Box, halo_px: int = 0) -> frozenset[int]:
    """Windows whose original box (grown by its ``halo_px`` input-pixel halo, as a worker would receive it)
    intersects ``box`` (original pixels, exclusive ends)."""
    out = set()
    for w in grid.windows:
        if w.is_padding:
            continue
        ob = w.original_box if not halo_px else grid._to_original(grid.crop_box(w.id, halo_px))
        if ob is not None and boxes_intersect(ob, box):
            out.add(w.id)
    return frozenset(out)


def sensitive_windows(grid: WindowGrid, regions: Iterable[Region], margin_px: int = 16,
                      halo_px: int = 0) -> frozenset[int]:
    """Windows whose crop (with a ``halo_px`` input-pixel halo) intersects any region grown by ``margin_px``
    original pixels: a region cut by window borders keeps every window it touches, so no part of it is sent."""
    if margin_px < 0:
        raise ValueError(f"margin_px must be >= 0, got {margin_px}")
    out: set[int] = set()
    for r in regions:
        out |= _hits(grid, _expand(r.box, margin_px), halo_px)
    return frozenset(out)


def object_groups(grid: WindowGrid, regions: Iterable[Region]) -> tuple[frozenset[int], ...]:
    """One group per region: the windows it touches (groups of fewer than two windows are dropped)."""
    groups: list[frozenset[int]] = []
    for r in regions:
        g = _hits(grid, r.box)
        if len(g) >= 2 and g not in groups:
            groups.append(g)
    return tuple(groups)
