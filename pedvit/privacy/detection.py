"""Detection attack: can a worker find people, faces or licence plates in what it received?

We run OpenCV's bundled Haar cascades (``cv2.data.haarcascades``) on the full image, then on each view
(unseen pixels **black** by default — the literal pixels a worker holds; ``fill="inpaint"`` uses the
Telea reconstruction instead) and count how many of the full-image objects the view still finds. A view
detection matches a full-image object when their IoU >= ``iou`` (0.3) or the centre of either box lies
inside the other (a partial face found in a window is smaller than the full-image box). For speed, a
view is searched only within the bounding box of its seen pixels, and only for kinds with a full-image
object of which it holds at least one pixel (a view holding no pixel of an object cannot re-find it).

Kinds ``face`` (MTCNN down to 12 px + the Haar face cascades) and ``text`` (lines RapidOCR reads) use the
strongest detectors here (:class:`Attacker`, below). Haar kinds (cascade files): ``frontal_face`` (frontalface_default + frontalface_alt2, detections merged),
``profile_face`` (profileface, run on the image and its mirror because the cascade sees one side only),
``upper_body``, ``full_body``, ``plate`` (russian_plate_number).

Parameters: grayscale + histogram equalisation, ``scaleFactor=1.1``, ``minNeighbors=5``, ``minSize`` 24 px
(faces/plates) or 48 px (bodies); images whose longest side exceeds ``max_side`` (1024) are downscaled
first and boxes mapped back. Haar cascades also fire falsely (e.g. on product packaging); the attack
measures whether a worker can reproduce what the full image reveals to this detector, false positives
included. Boxes are ``(x0, y0, x1, y1)``, exclusive ends, original pixels.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

__all__ = [
    "MODERN_KINDS",
    "Attacker",
    "attacker",
    "CASCADES",
    "DEFAULT_KINDS",
    "Box",
    "KindResult",
    "detect",
    "match_boxes",
    "detection_attack",
]

Box = tuple[int, int, int, int]

#: kind -> (cascade file names, min size px, also run on the mirrored image)
CASCADES: dict[str, tuple[tuple[str, ...], int, bool]] = {
    "frontal_face": (("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt2.xml"), 24, False),
    "profile_face": (("haarcascade_profileface.xml",), 24, True),
    "upper_body": (("haarcascade_upperbody.xml",), 48, False),
    "full_body": (("haarcascade_fullbody.xml",), 48, False),
    "plate": (("haarcascade_russian_plate_number.xml",), 24, False),
}
#: the Haar kinds, then ``face`` (MTCNN + Haar) and ``text`` (RapidOCR, readable lines): see :class:`Attacker`
DEFAULT_KINDS: tuple[str, ...] = tuple(CASCADES) + ("face", "text")
ALL_KINDS: tuple[str, ...] = DEFAULT_KINDS
#: the kinds the attacker's own detectors serve (beside the Haar cascades)
MODERN_KINDS: tuple[str, ...] = ("face", "text")
_FULL_CACHE: dict[tuple[Any, ...], dict[str, list[Box]]] = {}


@functools.lru_cache(maxsize=None)
def _cascade(filename: str) -> cv2.CascadeClassifier:
    c = cv2.CascadeClassifier(cv2.data.haarcascades + filename)
    if c.empty():
        raise RuntimeError(f"cannot load Haar cascade {filename}")
    return c


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two xyxy boxes."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _centre_inside(a: Box, b: Box) -> bool:
    cx, cy = (a[0] + a[2]) / 2, (a[1] + a[3]) / 2
    return b[0] <= cx < b[2] and b[1] <= cy < b[3]


def _same(a: Box, b: Box, thr: float) -> bool:
    return iou(a, b) >= thr or _centre_inside(a, b) or _centre_inside(b, a)


def _merge(boxes: list[Box], thr: float = 0.3) -> list[Box]:
    """Greedy de-duplication (keep the larger box) of detections from several cascades / the mirror."""
    kept: list[Box] = []
    for b in sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1])):
        if not any(_same(b, k, thr) for k in kept):
            kept.append(b)
    return sorted(kept)


def _gray(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    img = np.asarray(image)
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img.astype(np.uint8)
    s = min(1.0, max_side / max(g.shape))
    if s < 1.0:
        g = cv2.resize(g, (max(1, round(g.shape[1] * s)), max(1, round(g.shape[0] * s))),
                       interpolation=cv2.INTER_AREA)
    return g, s


def _detect_gray(g: np.ndarray, kind: str) -> list[Box]:
    files, min_size, mirror = CASCADES[kind]
    if min(g.shape) < min_size:
        return []
    eq = cv2.equalizeHist(g)
    out: list[Box] = []
    w = eq.shape[1]
    for f in files:
        for img, flipped in ((eq, False), (eq[:, ::-1].copy(), True)) if mirror else ((eq, False),):
            dets = _cascade(f).detectMultiScale(img, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size))
            for x, y, bw, bh in np.asarray(dets).reshape(-1, 4).tolist():
                x0 = w - (x + bw) if flipped else x
                out.append((x0, y, x0 + bw, y + bh))
    return _merge(out)


def _detect_modern(img: np.ndarray, kind: str, s: float) -> list[Box]:
    """``face`` / ``text`` boxes (:class:`Attacker`) in ``img`` scaled by ``s``, at scale ``s``."""
    rgb = np.repeat(img[..., None], 3, 2) if img.ndim == 2 else np.asarray(img)
    if s < 1.0:
        rgb = cv2.resize(rgb, (max(1, round(rgb.shape[1] * s)), max(1, round(rgb.shape[0] * s))),
                         interpolation=cv2.INTER_AREA)
    return _merge(attacker().detect(np.ascontiguousarray(rgb, dtype=np.uint8), kind))


def detect(image: np.ndarray, kinds: Sequence[str] = DEFAULT_KINDS, *, max_side: int = 1024,
           region: np.ndarray | None = None) -> dict[str, list[Box]]:
    """Haar detections per kind.

    Args:
        image: ``H x W x 3`` uint8 RGB (or ``H x W`` uint8 gray).
        kinds: subset of :data:`CASCADES`.
        max_side: downscale larger images to this longest side for speed.
        region: optional ``H x W`` bool; detection runs only on the bounding box of its True pixels (plus a
            16 px margin) — a speed-up for views, whose black area cannot produce detections anyway.

    Returns:
        kind -> sorted list of ``(x0, y0, x1, y1)`` boxes in ``image`` pixels.
    """
    unknown = [k for k in kinds if k not in ALL_KINDS]
    if region is None:
        # full images are detected once per (image, settings) even when several schemes are evaluated
        img = np.ascontiguousarray(image)
        key = (hashlib.blake2b(img.tobytes(), digest_size=16).hexdigest(), img.shape, tuple(kinds), max_side)
        if key in _FULL_CACHE:
            return {k: list(v) for k, v in _FULL_CACHE[key].items()}
    else:
        key = None
    if unknown:
        raise ValueError(f"unknown detector kinds {unknown}; choose from {sorted(ALL_KINDS)}")
    img = np.asarray(image)
    oy = ox = 0
    if region is not None:
        r = np.asarray(region, dtype=bool)
        if not r.any():
            return {k: [] for k in kinds}
        ys = np.flatnonzero(r.any(axis=1))
        xs = np.flatnonzero(r.any(axis=0))
        oy, ox = max(0, ys[0] - 16), max(0, xs[0] - 16)
        img = img[oy:min(r.shape[0], ys[-1] + 17), ox:min(r.shape[1], xs[-1] + 17)]
    g, s = _gray(img, max_side)
    out: dict[str, list[Box]] = {}
    for k in kinds:
        boxes = _detect_gray(g, k) if k in CASCADES else _detect_modern(img, k, s)
        out[k] = [(ox + round(b[0] / s), oy + round(b[1] / s), ox + round(b[2] / s), oy + round(b[3] / s))
                  for b in boxes]
    if key is not None:
        if len(_FULL_CACHE) >= 64:
            _FULL_CACHE.pop(next(iter(_FULL_CACHE)))
        _FULL_CACHE[key] = {k: list(v) for k, v in out.items()}
    return out


def match_boxes(reference: Sequence[Box], found: Sequence[Box], *, iou_thr: float = 0.3) -> list[int]:
    """Indices of ``reference`` boxes matched by some box in ``found`` (IoU >= thr or centre inside)."""
    return [i for i, r in enumerate(reference) if any(_same(r, f, iou_thr) for f in found)]


# --- the strongest face and text detectors here, as an attacker runs them on what it received --------
class Attacker:
    """Face and text detectors of the attack (lazily loaded).

    * faces: MTCNN (the edge's network, :mod:`pedvit.partition.mtcnn`) searched down to 12 px with the usual
      thresholds (0.6, 0.7, 0.7), united with OpenCV's Haar frontal and profile cascades (profile also mirrored);
    * text: RapidOCR (PP-OCRv4 DBNet detection + angle classifier + recogniser, ``rapidocr-onnxruntime``); a line
      counts as *readable* when at least ``min_chars`` letters or digits are recognised in it.
    """

    def __init__(self, min_face: int = 12, min_chars: int = 2) -> None:
        self.min_face, self.min_chars = min_face, min_chars
        self._mtcnn: Any = None
        self._ocr: Any = None

    def faces(self, view: np.ndarray) -> list[Box]:
        """Face boxes in an ``H x W x 3`` uint8 RGB view (MTCNN and Haar, not merged)."""
        if self._mtcnn is None:
            from pedvit.partition.mtcnn import MTCNN

            self._mtcnn = MTCNN(min_face=self.min_face, thresholds=(0.6, 0.7, 0.7))
        boxes: list[Box] = [(int(r[0]), int(r[1]), int(np.ceil(r[2])), int(np.ceil(r[3])))
                            for r in self._mtcnn.detect(np.ascontiguousarray(view))]
        seen = view.any(-1)
        if seen.any():
            haar = detect(view, ("frontal_face", "profile_face"), region=seen)
            boxes += haar["frontal_face"] + haar["profile_face"]
        return boxes

    def text(self, view: np.ndarray) -> list[tuple[Box, str]]:
        """(box, recognised string) of every line RapidOCR finds in an ``H x W x 3`` uint8 RGB view."""
        if self._ocr is None:
            from rapidocr_onnxruntime import RapidOCR

            self._ocr = RapidOCR()
        result, _ = self._ocr(np.ascontiguousarray(view[..., ::-1]))
        out = []
        for quad, txt, _score in result or []:
            q = np.asarray(quad, float)
            out.append(((int(q[:, 0].min()), int(q[:, 1].min()), int(np.ceil(q[:, 0].max())) + 1,
                         int(np.ceil(q[:, 1].max())) + 1), str(txt)))
        return out

    def readable_text(self, view: np.ndarray) -> list[Box]:
        """Boxes of the lines with at least ``min_chars`` recognised letters or digits."""
        return [b for b, s in self.text(view) if sum(c.isalnum() for c in s) >= self.min_chars]

    def detect(self, view: np.ndarray, kind: str) -> list[Box]:
        """Boxes of ``kind`` (``"face"`` or ``"text"``: readable lines) in a view."""
        if kind == "face":
            return self.faces(view)
        if kind == "text":
            return self.readable_text(view)
        raise ValueError(f"unknown attack kind {kind!r}; choose from {MODERN_KINDS}")


@functools.lru_cache(maxsize=1)
def attacker() -> Attacker:
    """The shared :class:`Attacker`."""
    return Attacker()


@dataclass
class KindResult:
    """Detection attack outcome for one object kind on one image.

    Attributes:
        full: boxes found in the full image.
        found_by_view: view name -> indices into ``full`` that the view re-detected.
    """

    full: list[Box]
    found_by_view: dict[str, list[int]] = field(default_factory=dict)

    @property
    def found_in_full(self) -> int:
        """Number of objects in the full image."""
        return len(self.full)

    def found_by_any_view(self) -> list[int]:
        """Indices of full-image objects that at least one single view re-detected."""
        return self.found_by_any_view_of(list(self.found_by_view))

    def found_by_any_view_of(self, names: Sequence[str]) -> list[int]:
        """Indices of full-image objects re-detected by at least one of the views ``names``."""
        return sorted({i for n in names for i in self.found_by_view.get(n, [])})

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "found_in_full": self.found_in_full,
            "full_boxes": [list(b) for b in self.full],
            "found_by_view": {k: len(v) for k, v in self.found_by_view.items()},
            "matched_by_view": {k: list(v) for k, v in self.found_by_view.items()},
            "found_by_any_view": len(self.found_by_any_view()),
        }


def detection_attack(
    image: np.ndarray,
    views: Mapping[str, np.ndarray],
    *,
    kinds: Sequence[str] = DEFAULT_KINDS,
    fill: str = "black",
    iou_thr: float = 0.3,
    max_side: int = 1024,
    full_detections: Mapping[str, list[Box]] | None = None,
) -> dict[str, KindResult]:
    """Run the detectors on the full image and on every view.

    Args:
        image: ``H x W x 3`` uint8 RGB.
        views: view name (worker id or coalition label) -> ``H x W`` bool visibility mask.
        kinds: detector kinds (see :data:`CASCADES`).
        fill: ``"black"`` (unseen = 0) or ``"inpaint"`` (unseen = Telea reconstruction).
        iou_thr: matching threshold.
        max_side: see :func:`detect`.
        full_detections: precomputed ``detect(image, kinds)`` to reuse.

    Returns:
        kind -> :class:`KindResult` (the objects of the full image and which each view re-found).
    """
    from pedvit.privacy.reconstruction import reconstruct
    from pedvit.privacy.views import masked_view

    full = dict(full_detections) if full_detections is not None else detect(image, kinds, max_side=max_side)
    results = {k: KindResult(full=list(full[k])) for k in kinds}
    for name, mask in views.items():
        m = np.asarray(mask, dtype=bool)
        # A view holding no pixel of an object cannot re-find *it*: run only the kinds with such an object.
        todo = [k for k in kinds if any(m[b[1]:b[3], b[0]:b[2]].any() for b in results[k].full)]
        found: dict[str, list[Box]] = {}
        if todo and m.all():
            found = {k: results[k].full for k in todo}  # the view is the full image
        elif todo:
            if fill == "black":
                # the black area cannot hold detections: search only the bounding box of the seen pixels
                found = detect(masked_view(image, m), todo, max_side=max_side, region=m)
            elif fill == "inpaint":
                found = detect(reconstruct(image, m, "telea"), todo, max_side=max_side)
            else:
                raise ValueError(f"fill must be 'black' or 'inpaint', got {fill!r}")
        for k in kinds:
            results[k].found_by_view[name] = match_boxes(results[k].full, found.get(k, []), iou_thr=iou_thr)
    return results
