"""Tracking accuracy of the video session on generated clips, against the known mask of the pasted object.

* ``tracking``: a camera pan (``pan_clip``; frames taken every ``stride`` frames of the 300-frame pan) is
  followed from a box around the object on the first frame, with the whole encoder on the edge
  (monolithic) and distributed over in-process workers (``sticky`` + coverage cap, static-window reuse on).
  Per frame: mask IoU vs the known mask, and the distributed mask's IoU vs the monolithic one.
* ``reuse``: a static camera (``static_clip``), distributed, with and without static-window reuse: windows
  sent to workers and windows computed per frame, and the IoU each reaches (and the monolithic IoU).

Run with ``pedvit eval video`` (the model runs on every frame: about 1 s per frame and configuration on a quiet
2-core machine).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from pedvit.data import mask_box_xyxy
from pedvit.edge.build import in_process_workers
from pedvit.edge.distributed import DistributedSamPredictor
from pedvit.edge.mask_tools import mask_iou
from pedvit.edge.predictor import SamPredictor
from pedvit.edge.video_session import VideoSession
from pedvit.models import Sam
from pedvit.video.clips import Clip, pan_clip, static_clip

__all__ = ["run_session", "tracking_experiment"]


def run_session(clip: Clip, predictor: SamPredictor, **session_options: Any) -> dict[str, Any]:
    """Follow the clip's object from a box on its first frame: masks (T x H x W bool), per-frame IoU vs the
    known mask, windows sent to workers and computed (sent + edge, reused ones excluded) per frame, lost
    frames, the final max worker scene coverage and the seconds per frame."""
    session = VideoSession(predictor, box=list(mask_box_xyxy(clip.object_masks[0])), **session_options)
    masks, ious = [], []
    started = time.perf_counter()
    for frame, truth in zip(clip.frames, clip.object_masks):
        mask, _ = session.add_frame(frame)
        masks.append(mask)
        ious.append(mask_iou(mask, truth))
    seconds = time.perf_counter() - started
    n_content = None
    if session.distributed and predictor.last_run is not None:
        n_content = len(predictor.last_run.content_windows)
    sent = [sum(len(v) for v in r.windows_per_worker.values()) for r in session.records]
    computed = [n_content - len(r.reused) for r in session.records] if n_content is not None else []
    return {
        "masks": np.stack(masks), "iou": ious, "mean_iou": float(np.mean(ious)),
        "sent_per_frame": sent, "computed_per_frame": computed,
        "lost_frames": [r.index for r in session.records if r.lost],
        "max_worker_scene_coverage": session.max_worker_scene_coverage,
        "seconds_per_frame": seconds / clip.n_frames,
    }


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able part of a `run_session` result, rounded."""
    out = {k: v for k, v in run.items() if k != "masks"}
    out["iou"] = [round(v, 4) for v in run["iou"]]
    for key in ("mean_iou", "max_worker_scene_coverage", "seconds_per_frame"):
        out[key] = round(float(out[key]), 4)
    for key in ("sent_per_frame", "computed_per_frame"):
        out[key + "_mean"] = round(float(np.mean(run[key])), 2) if run[key] else None
    return out


def tracking_experiment(model: Sam, *, n_frames: int = 40, stride: int = 2, workers: int = 4, cap: float = 0.30,
                        static_frames: int = 40, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The tracking and reuse numbers (see the module docstring) with ``model`` (MobileSAM)."""
    pan_full = pan_clip(max(300, n_frames * stride))
    keep = slice(0, n_frames * stride, stride)
    pan = Clip(pan_full.frames[keep], pan_full.offsets[keep], pan_full.object_masks[keep], pan_full.scene_size)

    def distributed(reuse: bool, clip: Clip) -> dict[str, Any]:
        with DistributedSamPredictor(model, in_process_workers(model, workers)) as predictor:
            return run_session(clip, predictor, temporal="sticky", coverage_cap=cap, reuse=reuse)

    progress("pan, monolithic")
    mono = run_session(pan, SamPredictor(model))
    progress(f"pan, {workers} workers, sticky + cap {cap}")
    dist = distributed(True, pan)
    vs_mono = [mask_iou(a, b) for a, b in zip(dist["masks"], mono["masks"])]
    still = static_clip(static_frames)
    progress("static camera, monolithic")
    still_mono = run_session(still, SamPredictor(model))
    progress("static camera, reuse")
    with_reuse = distributed(True, still)
    progress("static camera, no reuse")
    without_reuse = distributed(False, still)
    sent_with, sent_without = np.mean(with_reuse["sent_per_frame"]), np.mean(without_reuse["sent_per_frame"])
    computed_with, computed_without = (np.mean(with_reuse["computed_per_frame"]),
                                       np.mean(without_reuse["computed_per_frame"]))
    return {
        "pan": {
            "frames": n_frames, "stride": stride, "frame_size": list(pan.frame_size),
            "max_true_step_px": float(np.abs(np.diff(pan.offsets, axis=0)).max()) if n_frames > 1 else 0.0,
            "monolithic": _summary(mono), "distributed": _summary(dist),
            "distributed_vs_monolithic_iou_mean": round(float(np.mean(vs_mono)), 4),
            "mean_iou_gap": round(mono["mean_iou"] - dist["mean_iou"], 4),
        },
        "static_reuse": {
            "frames": static_frames, "monolithic": _summary(still_mono), "with_reuse": _summary(with_reuse),
            "without_reuse": _summary(without_reuse),
            "fewer_windows_sent": round(float(1 - sent_with / sent_without), 4) if sent_without else None,
            "fewer_windows_computed": round(float(1 - computed_with / computed_without), 4),
            "mean_iou_gap": round(without_reuse["mean_iou"] - with_reuse["mean_iou"], 4),
        },
        "settings": {"workers": workers, "temporal": "sticky", "coverage_cap": cap, "prompt": "box of frame 0"},
    }
