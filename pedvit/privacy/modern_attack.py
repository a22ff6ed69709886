"""The strongest face and text detectors available here, as the attacker runs them on what it received.

* faces: MTCNN (the edge's network, :mod:`pedvit.partition.mtcnn`) searched down to 12 px with the usual
  thresholds (0.6, 0.7, 0.7), united with OpenCV's Haar frontal and profile cascades (profile also mirrored);
* text: RapidOCR (PP-OCRv4 DBNet detection + angle classifier + recogniser, ``rapidocr-onnxruntime``); a line
  counts as *readable* when at least ``min_chars`` letters or digits are recognised in it.

Boxes are ``(x0, y0, x1, y1)``, exclusive ends, in the pixels of the image given.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

__all__ = ["MODERN_KINDS", "Attacker", "attacker"]

Box = tuple[int, int, int, int]
#: detection-attack kinds served here (beside the Haar cascades of :mod:`pedvit.privacy.detection`)
MODERN_KINDS: tuple[str, ...] = ("face", "text")


class Attacker:
    """Face and text detectors of the attack (lazily loaded)."""

    def __init__(self, min_face: int = 12, min_chars: int = 2) -> None:
        self.min_face, self.min_chars = min_face, min_chars
        self._mtcnn: Any = None
        self._ocr: Any = None

    def faces(self, view: np.ndarray) -> list[Box]:
        """Face boxes in an ``H x W x 3`` uint8 RGB view (MTCNN and Haar, not merged)."""
        from pedvit.privacy.detection import detect

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


@lru_cache(maxsize=1)
def attacker() -> Attacker:
    """The shared :class:`Attacker`."""
    return Attacker()
