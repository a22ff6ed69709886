"""Static-window reuse: unchanged windows are not sent again, changed ones always are."""

from __future__ import annotations

import numpy as np
import pytest

from pedvit.partition import WindowGrid
from pedvit.video.clips import static_clip
from pedvit.video.coverage import window_frame_boxes
from pedvit.video.reuse import WindowReuse


@pytest.fixture(scope="module")
def clip():
    return static_clip(n_frames=30)


def test_static_camera_sends_at_least_half_fewer_windows_and_never_misses_the_object(clip) -> None:
    grid = WindowGrid(clip.frame_size)
    boxes = window_frame_boxes(grid)
    reuse = WindowReuse(grid)
    sent_total = 0
    for t, frame in enumerate(clip.frames):
        sent = reuse.changed(frame)
        sent_total += len(sent)
        if t == 0:
            assert sent == sorted(boxes)
            continue
        moved = clip.object_masks[t] ^ clip.object_masks[t - 1]
        for wid, (y0, x0, y1, x1) in boxes.items():
            if moved[y0:y1, x0:x1].sum() >= 128:  # the object entered or left a real part of the window
                assert wid in sent, (t, wid)
    share = sent_total / (clip.n_frames * len(boxes))
    assert share <= 0.5, share


def test_sensor_noise_alone_sends_nothing_and_slow_drift_is_caught_once_it_adds_up() -> None:
    rng = np.random.default_rng(1)
    base = rng.integers(40, 200, (240, 320, 3)).astype(np.float32)
    reuse = WindowReuse(WindowGrid((240, 320)), threshold=6.0)
    noisy = lambda img: np.clip(np.rint(img + rng.normal(0, 2.0, img.shape)), 0, 255).astype(np.uint8)  # noqa: E731
    assert len(reuse.changed(noisy(base))) == 20
    for _ in range(5):
        assert reuse.changed(noisy(base)) == []
    # a brightening of 1 grey level per frame: no single step passes the threshold, the sum does
    sent_at = [t for t in range(1, 12) if reuse.changed(noisy(base + t))]
    assert sent_at and 5 <= sent_at[0] <= 9


def test_reuse_errors() -> None:
    grid = WindowGrid((240, 320))
    with pytest.raises(ValueError, match="threshold"):
        WindowReuse(grid, threshold=0)
    with pytest.raises(ValueError, match="cell_px"):
        WindowReuse(grid, cell_px=0)
    with pytest.raises(ValueError, match="the stream is 240 x 320"):
        WindowReuse(grid).changed(np.zeros((240, 321, 3), np.uint8))
