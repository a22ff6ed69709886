"""Generated clips (ground truth is consistent with the pixels) and camera-motion estimation against it."""

from __future__ import annotations

import numpy as np
import pytest

from pedvit.video.clips import pan_clip, pan_offsets, scene_photo, static_clip
from pedvit.video.motion import estimate_shift, track_offsets

# small and slow enough for a fast test: 240 x 320 frames over a 512 px scene, <= 15 px per frame
SMALL = dict(n_frames=120, frame_size=(240, 320), scale=1.0, radius=30)


@pytest.fixture(scope="module")
def small_pan():
    return pan_clip(**SMALL)


def test_pan_frames_are_scene_crops_at_the_true_offsets_with_the_object_pasted() -> None:
    clip = pan_clip(n_frames=20, frame_size=(240, 320), scale=1.0, radius=30, noise_sigma=0.0)
    scene = scene_photo("astronaut", 1.0)
    assert clip.frames.shape == (20, 240, 320, 3) and clip.frames.dtype == np.uint8
    assert clip.offsets.shape == (20, 2) and clip.scene_size == (512, 512)
    for t in (0, 7, 19):
        dy, dx = clip.offsets[t]
        crop = scene[dy: dy + 240, dx: dx + 320]
        outside = ~clip.object_masks[t]
        assert np.array_equal(clip.frames[t][outside], crop[outside])
        # the object is really pasted: its pixels differ from the scene underneath
        inside = clip.object_masks[t]
        assert inside.sum() > 0.9 * np.pi * 30**2
        assert np.abs(clip.frames[t][inside].astype(int) - crop[inside]).mean() > 10


def test_pan_covers_the_scene_and_the_object_moves_in_the_frame(small_pan) -> None:
    off = small_pan.offsets
    assert off.min(axis=0).tolist() == [0, 0]
    assert off.max(axis=0).tolist() == [512 - 240, 512 - 320]
    centroids = [np.argwhere(m).mean(axis=0) for m in small_pan.object_masks]
    assert np.ptp(np.asarray(centroids), axis=0).min() > 50


def test_static_clip_has_a_still_camera_and_a_moving_object() -> None:
    clip = static_clip(n_frames=10, frame_size=(240, 320), radius=30)
    assert not clip.offsets.any()
    assert not np.array_equal(clip.object_masks[0], clip.object_masks[3])


def test_bad_clip_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="n_frames"):
        pan_clip(n_frames=0)
    with pytest.raises(ValueError, match="fit"):
        pan_clip(n_frames=2, frame_size=(600, 800), scale=1.0)
    with pytest.raises(ValueError, match="unknown photo"):
        scene_photo("nope")
    with pytest.raises(ValueError, match="do not fit"):
        pan_offsets(10, (600, 800), (512, 512))


def test_estimated_steps_match_the_true_motion_within_half_a_pixel(small_pan) -> None:
    errors = []
    for t in range(1, small_pan.n_frames):
        dy, dx, response = estimate_shift(small_pan.frames[t - 1], small_pan.frames[t])
        true = small_pan.offsets[t] - small_pan.offsets[t - 1]
        errors.append(max(abs(dy - true[0]), abs(dx - true[1])))
        assert response > 0.05
    assert max(errors) < 0.5, max(errors)


def test_the_moving_object_fools_whole_frame_correlation_but_not_the_tile_median(small_pan) -> None:
    def worst(tiles: int) -> float:
        return max(
            float(np.abs(np.array(estimate_shift(small_pan.frames[t - 1], small_pan.frames[t], tiles=tiles)[:2])
                         - (small_pan.offsets[t] - small_pan.offsets[t - 1])).max())
            for t in range(1, small_pan.n_frames)
        )

    assert worst(1) > 5.0  # the sharp disc wins the whitened correlation on some frames
    assert worst(3) < 0.5


def test_tracked_offsets_drift_less_than_the_sticky_policy_margin(small_pan) -> None:
    est = track_offsets(small_pan.frames)
    true = small_pan.offsets - small_pan.offsets[0]
    assert est.shape == (small_pan.n_frames, 2)
    # sub-pixel bias accumulates (about 3.4 px here); the coverage ledger books windows 8 px larger
    assert np.abs(est - true).max() < 5.0


def test_motion_input_errors_are_clear() -> None:
    a = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="differ in shape"):
        estimate_shift(a, np.zeros((32, 33, 3), np.uint8))
    with pytest.raises(ValueError, match="tiles"):
        estimate_shift(a, a, tiles=0)
    with pytest.raises(ValueError, match="no frames"):
        track_offsets([])
