"""Scene coverage ledger and the temporal assignment policies (offsets only: no pixels, no model)."""

from __future__ import annotations

import numpy as np
import pytest

from pedvit.partition import WindowGrid
from pedvit.partition.constraints import max_share
from pedvit.partition import Constraints
from pedvit.video.assign import NaivePolicy, StickyPolicy, replay
from pedvit.video.clips import pan_offsets
from pedvit.video.coverage import SceneCoverage, coverage_violations, window_frame_boxes

FRAME = (480, 640)


@pytest.fixture(scope="module")
def pan() -> tuple[np.ndarray, np.ndarray]:
    """(estimated, true) offsets of the 300-frame evaluation pan; the estimate drifts like the tracker's."""
    true = pan_offsets(300, FRAME, (1536, 1536)).astype(float)
    rng = np.random.default_rng(0)
    drift = np.cumsum(rng.normal(0.0, 0.2, true.shape), axis=0)
    drift = 5.0 * drift / np.abs(drift).max()  # at most 5 px off, like the measured tracker drift
    return true + drift, true


def test_window_boxes_tile_the_frame_exactly() -> None:
    grid = WindowGrid(FRAME)
    boxes = window_frame_boxes(grid)
    assert len(boxes) == 20  # 1024 x 768 input: 5 x 4 content windows of 224 px
    count = np.zeros(FRAME, int)
    for y0, x0, y1, x1 in boxes.values():
        count[y0:y1, x0:x1] += 1
    assert count.min() == 1 and count.max() <= 2  # boundary rows may be shared, nothing left out


def test_coverage_counts_scene_pixels_once_and_survives_mosaic_growth() -> None:
    led = SceneCoverage(2)
    led.add_frame((100, 100), (0, 0))
    assert led.mark(0, (0, 0, 50, 100)) == 5000
    assert led.mark(0, (0, 0, 50, 100)) == 0
    assert led.coverage(0) == pytest.approx(0.5) and led.coverage(1) == 0.0
    # the camera moves up-left, beyond the mosaic: earlier marks stay where they were
    led.add_frame((100, 100), (-300.4, -500.2))
    assert led.scene_pixels == 20000
    assert led.coverage(0) == pytest.approx(0.25)
    assert led.new_pixels(0, (0, 0, 50, 100)) == 0
    # pixels outside every frame are not scene: they cost nothing and are not booked
    assert led.new_pixels(1, (-10, -10, 10, 10)) == 100
    assert led.mark(1, (-10, -10, 10, 10)) == 100
    assert led.max_worker_scene_coverage() == pytest.approx(0.25)
    seen, origin = led.seen_map(0)
    oy, ox = origin
    assert seen.sum() == 5000 and seen[-oy: -oy + 50, -ox: -ox + 100].all()


def test_coverage_input_errors() -> None:
    with pytest.raises(ValueError, match="n_workers"):
        SceneCoverage(0)
    led = SceneCoverage(2)
    led.add_frame((10, 10), (0, 0))
    with pytest.raises(ValueError, match="worker"):
        led.mark(2, (0, 0, 5, 5))
    with pytest.raises(ValueError, match="empty"):
        led.mark(0, (5, 5, 5, 9))


def test_naive_per_frame_assignment_exposes_almost_the_whole_scene(pan) -> None:
    est, true = pan
    result = replay(NaivePolicy(4, "random"), FRAME, est, true)
    assert result.coverage.shape == (300, 4)
    assert result.coverage[-1].max() > 0.9
    assert not result.local_per_frame.any() and (result.sent_per_frame == 20).all()


def test_sticky_with_cap_keeps_every_worker_under_the_cap_in_true_scene_coordinates(pan) -> None:
    est, true = pan
    capped = replay(StickyPolicy(4, coverage_cap=0.30), FRAME, est, true)
    assert capped.coverage.max() <= 0.30
    assert capped.policy_coverage.max() <= 0.30
    assert capped.ledger.max_worker_scene_coverage() == pytest.approx(capped.coverage[-1].max())
    # the cap is what does it: sticky alone exposes more, and the cap costs edge compute
    free = replay(StickyPolicy(4), FRAME, est, true)
    assert free.coverage.max() > 0.35
    assert capped.local_per_frame.sum() > free.local_per_frame.sum()


def test_confined_sticky_keeps_every_window_near_its_owners_region_and_under_the_cap(pan) -> None:
    est, true = pan
    policy = StickyPolicy(4, region_px=420, coverage_cap=0.30, spill_px=48)
    result = replay(policy, FRAME, est, true)
    assert result.coverage.max() <= 0.30
    boxes = window_frame_boxes(WindowGrid(FRAME))
    reach = policy.spill_px + policy.margin_px + 6  # + the estimate's drift (at most 5 px) and rounding
    for t, a in enumerate(result.assignments):
        for w, ids in a.worker_windows.items():
            for wid in ids:
                y0, x0, y1, x1 = boxes[wid]
                cy, cx = true[t, 0] + (y0 + y1) / 2, true[t, 1] + (x0 + x1) / 2
                assert policy.owner(cy, cx) == w or policy.owner(est[t, 0] + (y0 + y1) / 2,
                                                                  est[t, 1] + (x0 + x1) / 2) == w
                # every corner lies within `reach` of the owner's region
                ry, rx = (np.floor(np.array([est[t, 0] + (y0 + y1) / 2, est[t, 1] + (x0 + x1) / 2]) / 420)
                          * 420)
                assert true[t, 0] + y0 >= ry - reach and true[t, 0] + y1 <= ry + 420 + reach
                assert true[t, 1] + x0 >= rx - reach and true[t, 1] + x1 <= rx + 420 + reach
    # confining spends the cap on whole regions: fewer windows held back than the unconfined cap here
    loose = replay(StickyPolicy(4, region_px=420, coverage_cap=0.30), FRAME, est, true)
    assert result.local_per_frame.mean() < loose.local_per_frame.mean()


def test_without_the_registration_margin_drift_breaks_the_cap(pan) -> None:
    est, true = pan
    result = replay(StickyPolicy(4, coverage_cap=0.30, margin_px=0), FRAME, est, true)
    assert result.policy_coverage.max() <= 0.30
    assert result.coverage.max() > 0.30  # the policy believed the cap held; the true scene says otherwise


def test_sticky_sends_a_scene_region_to_its_owner_and_respects_the_per_frame_share(pan) -> None:
    est, true = pan
    policy = StickyPolicy(4)
    result = replay(policy, FRAME, true, true)
    grid = WindowGrid(FRAME)
    boxes = window_frame_boxes(grid)
    limit = max_share(grid, 4, Constraints())
    owned = total = 0
    for t, a in enumerate(result.assignments):
        for w, ids in a.worker_windows.items():
            assert len(ids) <= limit
            for wid in ids:
                y0, x0, y1, x1 = boxes[wid]
                owned += policy.owner(true[t, 0] + (y0 + y1) / 2, true[t, 1] + (x0 + x1) / 2) == w
                total += 1
    assert total == 300 * 20
    assert owned / total > 0.7  # the rest overflowed a worker's per-frame share


@pytest.mark.parametrize("n_workers", [2, 3, 4, 5, 8])
def test_touching_scene_regions_have_different_owners(n_workers: int) -> None:
    policy = StickyPolicy(n_workers, region_px=10)
    for row in range(-3, 4):
        for col in range(-3, 4):
            me = policy.owner(row * 10 + 5, col * 10 + 5)
            sides = [policy.owner((row + dr) * 10 + 5, (col + dc) * 10 + 5) for dr, dc in
                     ((0, 1), (1, 0), (0, -1), (-1, 0))]
            corners = [policy.owner((row + dr) * 10 + 5, (col + dc) * 10 + 5) for dr in (-1, 1) for dc in (-1, 1)]
            assert me not in sides
            if n_workers >= 4:
                assert me not in corners
    assert {policy.owner(5, c * 10 + 5) for c in range(n_workers)} == set(range(n_workers))


def test_a_lower_per_frame_share_sends_fewer_windows_per_worker(pan) -> None:
    est, true = pan
    result = replay(StickyPolicy(4, max_windows_per_worker=3), FRAME, est[:50], true[:50])
    assert max(len(ids) for a in result.assignments for ids in a.worker_windows.values()) == 3
    assert (result.local_per_frame >= 20 - 12).all()


def test_static_camera_sticky_assignment_is_the_same_every_frame() -> None:
    zeros = np.zeros((5, 2))
    result = replay(StickyPolicy(4), FRAME, zeros, zeros)
    assert all(a == result.assignments[0] for a in result.assignments)


@pytest.mark.parametrize("policy", [NaivePolicy(4, "random"), NaivePolicy(4, "interleaved"),
                                    StickyPolicy(4), StickyPolicy(4, coverage_cap=0.3)])
def test_keep_local_windows_never_leave_the_edge(pan, policy) -> None:
    est, true = pan
    n = 40
    keep = [frozenset({(t % 20), ((t * 7) % 20)}) for t in range(n)]
    result = replay(policy, FRAME, est[:n], true[:n], keep)
    for k, a in zip(keep, result.assignments):
        sent = {wid for ids in a.worker_windows.values() for wid in ids}
        assert not sent & k and k <= set(a.local)
        assert sent | set(a.local) == set(range(20))


def test_policy_and_replay_errors() -> None:
    with pytest.raises(ValueError, match="naive scheme"):
        NaivePolicy(4, "contiguous")
    with pytest.raises(ValueError, match="coverage_cap"):
        StickyPolicy(4, coverage_cap=0.0)
    with pytest.raises(ValueError, match="max_windows_per_worker"):
        StickyPolicy(4, max_windows_per_worker=0)
    with pytest.raises(ValueError, match="margin_px"):
        StickyPolicy(4, margin_px=-1)
    with pytest.raises(ValueError, match="spill_px"):
        StickyPolicy(4, spill_px=-1)
    with pytest.raises(ValueError, match="region_px"):
        StickyPolicy(4, region_px=0)
    with pytest.raises(ValueError, match="n_workers"):
        StickyPolicy(0)
    with pytest.raises(ValueError, match="T x 2"):
        replay(StickyPolicy(4), FRAME, np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="keep_local has"):
        replay(StickyPolicy(4), FRAME, np.zeros((3, 2)), np.zeros((3, 2)), [frozenset()])


def test_an_independent_check_of_a_recorded_video_finds_cap_breaches_and_bad_records(pan) -> None:
    est, true = pan
    capped = replay(StickyPolicy(4, coverage_cap=0.30), FRAME, est, true)
    record = [a.worker_windows for a in capped.assignments]
    assert coverage_violations(FRAME, true, record, 4, 0.30) == []
    naive = replay(NaivePolicy(4, "random"), FRAME, est, true)
    problems = coverage_violations(FRAME, true, [a.worker_windows for a in naive.assignments], 4, 0.30)
    assert len(problems) == 4 and all("above the cap 0.3" in p for p in problems)  # once per worker
    bad = [{0: (0, 1), 1: (1, 99), 7: (2,)}]
    msgs = coverage_violations(FRAME, np.zeros((1, 2)), bad, 4, 1.0, keep_local=[frozenset({0})])
    assert any("window 1 sent to workers 0 and 1" in m for m in msgs)
    assert any("window 99" in m for m in msgs) and any("unknown worker 7" in m for m in msgs)
    assert any("keep-local window 0" in m for m in msgs)
    with pytest.raises(ValueError, match="T x 2"):
        coverage_violations(FRAME, np.zeros((2, 2)), bad, 4, 0.3)
