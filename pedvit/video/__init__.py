"""Video: generated clips with ground truth, camera motion, per-worker scene coverage, temporal policies.

No model here: these modules decide and account for what each worker sees across frames (docs/video.md).
"""

from .assign import FrameAssignment, NaivePolicy, ReplayResult, StickyPolicy, TemporalPolicy, replay
from .clips import Clip, pan_clip, pan_offsets, scene_photo, static_clip
from .coverage import SceneCoverage, coverage_violations, window_frame_boxes
from .motion import estimate_shift, to_gray, track_offsets
from .reuse import WindowReuse

__all__ = [
    "Clip",
    "FrameAssignment",
    "NaivePolicy",
    "ReplayResult",
    "SceneCoverage",
    "StickyPolicy",
    "TemporalPolicy",
    "WindowReuse",
    "coverage_violations",
    "estimate_shift",
    "pan_clip",
    "pan_offsets",
    "replay",
    "scene_photo",
    "static_clip",
    "to_gray",
    "track_offsets",
    "window_frame_boxes",
]
