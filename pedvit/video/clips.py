"""Generated clips with ground truth: a camera panning across a large real photo, and a static camera.

A clip is rendered from a *scene* (a real photo from scikit-image, upscaled so that it is several frames
wide). The camera is a ``frame_size`` crop whose top-left corner sits at an integer scene offset per frame
(the ground-truth motion), and a textured disc (cut from another real photo) moves across the scene with its
known per-frame mask. Small sensor noise is added to every frame so that "unchanged" pixels are not bit-exact,
as with a real camera.

Coordinates: frame pixels ``(y, x)``; scene pixel = frame pixel + the frame's ``offsets[t]`` ``(dy, dx)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Clip", "pan_clip", "pan_offsets", "static_clip", "scene_photo"]

_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


@dataclass(frozen=True)
class Clip:
    """A generated clip and its ground truth.

    Attributes:
        frames: ``T x H x W x 3`` uint8 RGB frames.
        offsets: ``T x 2`` int, scene position ``(dy, dx)`` of each frame's top-left pixel.
        object_masks: ``T x H x W`` bool, the pasted object's pixels in each frame.
        scene_size: ``(h, w)`` of the scene the frames are cut from.
    """

    frames: np.ndarray
    offsets: np.ndarray
    object_masks: np.ndarray
    scene_size: tuple[int, int]

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def frame_size(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])


def scene_photo(name: str = "astronaut", scale: float = 3.0) -> np.ndarray:
    """``h x w x 3`` uint8: a scikit-image data photo upscaled ``scale`` times (bicubic)."""
    if name not in _PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose one of {_PHOTOS}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    import skimage.data

    photo = np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])
    h, w = photo.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(photo, size, interpolation=cv2.INTER_CUBIC)


def _disc_object(radius: int, texture_photo: str) -> tuple[np.ndarray, np.ndarray]:
    """``(patch, mask)``: a ``2r x 2r x 3`` patch cut from the centre of a photo and its disc mask."""
    import skimage.data

    tex = getattr(skimage.data, texture_photo)()[..., :3]
    side = 2 * radius
    cy, cx = tex.shape[0] // 2, tex.shape[1] // 2
    crop = tex[max(0, cy - radius): cy + radius, max(0, cx - radius): cx + radius]
    patch = cv2.resize(np.ascontiguousarray(crop), (side, side), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:side, 0:side]
    mask = (yy - radius + 0.5) ** 2 + (xx - radius + 0.5) ** 2 <= radius**2
    return patch, mask


def _render(
    scene: np.ndarray,
    offsets: np.ndarray,
    object_centres: np.ndarray,
    frame_size: tuple[int, int],
    radius: int,
    noise_sigma: float,
    seed: int,
) -> Clip:
    """Cut the frames out of the scene, paste the disc at its scene position, add sensor noise."""
    fh, fw = frame_size
    patch, disc = _disc_object(radius, "coffee")
    rng = np.random.default_rng(seed)
    n = len(offsets)
    frames = np.empty((n, fh, fw, 3), dtype=np.uint8)
    masks = np.zeros((n, fh, fw), dtype=bool)
    for t in range(n):
        dy, dx = (int(v) for v in offsets[t])
        frame = scene[dy: dy + fh, dx: dx + fw].copy()
        # disc top-left in frame pixels, clipped to the frame
        oy = int(round(object_centres[t, 0])) - radius - dy
        ox = int(round(object_centres[t, 1])) - radius - dx
        y0, x0 = max(0, oy), max(0, ox)
        y1, x1 = min(fh, oy + 2 * radius), min(fw, ox + 2 * radius)
        if y0 < y1 and x0 < x1:
            sub = disc[y0 - oy: y1 - oy, x0 - ox: x1 - ox]
            frame[y0:y1, x0:x1][sub] = patch[y0 - oy: y1 - oy, x0 - ox: x1 - ox][sub]
            masks[t, y0:y1, x0:x1] = sub
        if noise_sigma > 0:
            noisy = frame.astype(np.float32) + rng.normal(0.0, noise_sigma, frame.shape).astype(np.float32)
            frame = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        frames[t] = frame
    return Clip(frames, offsets.astype(np.int64), masks, (int(scene.shape[0]), int(scene.shape[1])))


def _check(n_frames: int, frame_size: tuple[int, int], scene: np.ndarray) -> None:
    if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 1:
        raise ValueError(f"n_frames must be an int >= 1, got {n_frames!r}")
    fh, fw = frame_size
    if fh < 16 or fw < 16 or fh > scene.shape[0] or fw > scene.shape[1]:
        raise ValueError(f"frame size {frame_size} must be >= 16 px and fit in the {scene.shape[:2]} scene")


def pan_offsets(n_frames: int, frame_size: tuple[int, int], scene_size: tuple[int, int]) -> np.ndarray:
    """``T x 2`` int scene offsets ``(dy, dx)`` of the pan: once across and back, twice down and up."""
    span_y, span_x = scene_size[0] - frame_size[0], scene_size[1] - frame_size[1]
    if n_frames < 1 or span_y < 0 or span_x < 0:
        raise ValueError(f"{n_frames} frames of {frame_size} do not fit a pan over a {scene_size} scene")
    phase = 2 * math.pi * np.arange(n_frames) / n_frames
    return np.stack(
        [np.rint(span_y * (0.5 - 0.5 * np.cos(2 * phase))), np.rint(span_x * (0.5 - 0.5 * np.cos(phase)))],
        axis=1,
    ).astype(np.int64)


def pan_clip(
    n_frames: int = 300,
    frame_size: tuple[int, int] = (480, 640),
    photo: str = "astronaut",
    scale: float = 3.0,
    radius: int = 60,
    noise_sigma: float = 2.0,
    seed: int = 0,
) -> Clip:
    """A camera sweeping the whole scene (a Lissajous path) while a disc drifts across it.

    The path goes once right-and-back and twice down-and-up over the ``n_frames`` (peak speed about
    ``2 * pi * range / n_frames`` px per frame vertically: 22 px for the default 300 frames of the 1536 px
    scene, whose ``range`` is 1056 px down and 896 px across).
    """
    scene = scene_photo(photo, scale)
    _check(n_frames, frame_size, scene)
    fh, fw = frame_size
    offsets = pan_offsets(n_frames, frame_size, (scene.shape[0], scene.shape[1]))
    phase = 2 * math.pi * np.arange(n_frames) / n_frames
    # the object keeps to the frame's centre region but drifts relative to it (so it moves in the frame too)
    centres = offsets + np.array([fh / 2, fw / 2]) + np.stack(
        [0.25 * fh * np.sin(3 * phase), 0.3 * fw * np.sin(2 * phase + 0.5)], axis=1
    )
    return _render(scene, offsets, centres, frame_size, radius, noise_sigma, seed)


def static_clip(
    n_frames: int = 60,
    frame_size: tuple[int, int] = (480, 640),
    photo: str = "astronaut",
    radius: int = 60,
    noise_sigma: float = 2.0,
    seed: int = 0,
) -> Clip:
    """A static camera on the photo (scaled to cover the frame) with the disc moving across and back."""
    scene = scene_photo(photo, max(frame_size[0] / 512, frame_size[1] / 512, 1.0))
    _check(n_frames, frame_size, scene)
    fh, fw = frame_size
    offsets = np.zeros((n_frames, 2), dtype=np.int64)
    phase = 2 * math.pi * np.arange(n_frames) / max(1, n_frames)
    centres = np.stack(
        [np.full(n_frames, 0.65 * fh), fw / 2 - 0.35 * fw * np.cos(phase)], axis=1
    )
    return _render(scene, offsets, centres, frame_size, radius, noise_sigma, seed)
