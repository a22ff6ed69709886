"""The video session on the real MobileSAM: the engine takes a caller's assignment and reuses cached window
features; a session follows the pasted disc of a generated pan under sticky + cap, writes each frame to the
ledger, and `ledger check` replays the coverage cap (a tampered video ledger fails); lost objects, motion
on featureless frames and frames of another size are handled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pedvit.cli import main as cli_main
from pedvit.edge.build import in_process_workers
from pedvit.edge.distributed import DistributedSamPredictor
from pedvit.edge.engine import CallerRequest
from pedvit.edge.executors import InProcessExecutor
from pedvit.edge.ledger import Ledger, check_ledger, read_ledger
from pedvit.edge.predictor import SamPredictor
from pedvit.edge.video_session import FrameSizeError, VideoSession, interior_point
from pedvit.partition import Assignment, ConstraintError, Constraints, WindowGrid, assign
from pedvit.video import pan_clip

FRAMES = 6


@pytest.fixture(scope="module")
def clip():
    return pan_clip(300)  # the slow pan (at most 22 px per frame); the tests use its first frames


def _box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_interior_point_is_the_deepest_pixel() -> None:
    mask = np.zeros((40, 60), bool)
    mask[5:35, 10:20] = True  # a thin bar
    mask[10:30, 30:55] = True  # a wider block: its centre is deepest
    x, y = interior_point(mask)
    assert 38 <= x <= 47 and 15 <= y <= 25


@pytest.mark.slow
def test_engine_uses_the_callers_assignment_and_reuses_cached_windows(mobile_sam, clip) -> None:
    frame = clip.frames[0]
    workers = in_process_workers(mobile_sam, 3, record_inputs=True)
    predictor = DistributedSamPredictor(mobile_sam, workers)
    grid = WindowGrid(frame.shape[:2])
    wanted = assign(grid, 3, "contiguous")

    def caller_assign(g: WindowGrid, constraints: Constraints, members: list[str]) -> Assignment:
        assert g.original_size == grid.original_size and members == ["inproc0", "inproc1", "inproc2"]
        return wanted

    cache: dict = {}
    predictor.set_frame(frame, CallerRequest(assign=caller_assign, feature_cache=cache, extra={"note": 7}))
    first = predictor.get_image_embedding().clone()
    run = predictor.last_run
    assert {n: sorted(w.windows) for n, w in run.workers.items()} == {
        f"inproc{i}": sorted(ids) for i, ids in wanted.worker_windows.items()}
    assert run.extra["note"] == 7 and run.extra["reused_windows"] == []
    assert {wid for _, wid in cache} == set(grid.content_ids)

    # the same frame again with every window reusable: nothing is sent or computed, the embedding is the same
    for w in workers:
        w.received.clear()
    everything_local = Assignment({0: (), 1: (), 2: ()}, tuple(grid.content_ids), tuple(grid.padding_ids))
    predictor.set_frame(frame, CallerRequest(assign=lambda *_: everything_local,
                                             reuse=frozenset(grid.content_ids), feature_cache=cache))
    assert all(not w.received for w in workers)
    assert predictor.last_run.extra["reused_windows"] == sorted(grid.content_ids)
    assert predictor.last_run.edge_compute_s == 0.0
    assert torch.equal(predictor.get_image_embedding(), first)

    # a reusable window may not be assigned to a worker
    with pytest.raises(ValueError, match="to be reused but are assigned"):
        predictor.set_frame(frame, CallerRequest(assign=caller_assign, reuse=frozenset({wanted.worker_windows[0][0]}),
                                                 feature_cache=cache))


@pytest.mark.slow
def test_a_callers_assignment_that_sends_a_keep_local_window_is_refused_before_sending(mobile_sam, clip) -> None:
    workers = in_process_workers(mobile_sam, 2, record_inputs=True)
    predictor = DistributedSamPredictor(mobile_sam, workers, constraints=Constraints(keep_local=frozenset({0})))
    grid = WindowGrid(clip.frames[0].shape[:2])
    leaky = assign(grid, 2, "interleaved")  # ignores the keep-local window 0
    with pytest.raises(ConstraintError, match="caller's assignment.*keep-local"):
        predictor.set_frame(clip.frames[0], CallerRequest(assign=lambda *_: leaky))
    assert all(not w.received for w in workers)


@pytest.mark.slow
def test_sticky_capped_session_tracks_and_its_ledger_replays_the_cap(mobile_sam, clip, tmp_path: Path) -> None:
    ledger = tmp_path / "video.jsonl"
    predictor = DistributedSamPredictor(mobile_sam, in_process_workers(mobile_sam, 4), ledger=str(ledger))
    session = VideoSession(predictor, box=_box(clip.object_masks[0]), temporal="sticky", coverage_cap=0.3,
                           video_id="pan")
    for t in range(FRAMES):
        mask, record = session.add_frame(clip.frames[t])
        assert _iou(mask, clip.object_masks[t]) > 0.9, t
        assert not record.lost and record.index == t
        true_step = clip.offsets[t] - clip.offsets[max(0, t - 1)]
        assert np.abs(np.subtract(record.shift, true_step)).max() < 0.5
        assert record.max_worker_scene_coverage <= 0.3
        assert set(record.timings_ms) == {"motion", "encode", "decode", "total"}
    sent = [sum(map(len, r.windows_per_worker.values())) for r in session.records]
    assert sent[0] >= 12  # the first frame spreads over the workers
    assert any(r.reused for r in session.records[1:])  # the pan starts slowly: some windows do not change

    records = list(read_ledger(ledger))
    assert [r["extra"]["video"]["frame"] for r in records] == list(range(FRAMES))
    assert all(r["extra"]["video"]["id"] == "pan" and r["extra"]["video"]["coverage_cap"] == 0.3 for r in records)
    assert check_ledger(ledger) == (FRAMES, [])
    assert cli_main(["ledger", "check", str(ledger), "--max-scene-coverage", "0.3"]) == 0

    # a tampered ledger, re-chained so that only the coverage replay can tell: in frames 1.. worker 0 gets
    # worker 1's windows and the other way round (per-frame counts unchanged), so worker 0 sweeps both regions
    names = records[0]["extra"]["video"]["workers"]
    tampered = tmp_path / "tampered.jsonl"
    rewritten = Ledger(tampered)
    for record in records:
        record = {k: v for k, v in record.items() if k not in ("chain", "adjacent_pairs")}
        if record["extra"]["video"]["frame"] >= 1:
            w = record["workers"]
            w[names[0]], w[names[1]] = w[names[1]], w[names[0]]
        rewritten.append(record)
    count, problems = check_ledger(tampered)
    assert count == FRAMES and problems and all("above the cap 0.3" in p for p in problems)
    assert cli_main(["ledger", "check", str(tampered)]) == 1


@pytest.mark.slow
def test_lost_object_featureless_frames_and_a_frame_of_another_size(mobile_sam, clip) -> None:
    session = VideoSession(SamPredictor(mobile_sam), box=_box(clip.object_masks[0]))
    black, grey = np.zeros_like(clip.frames[0]), np.full_like(clip.frames[0], 128)
    mask, first = session.add_frame(clip.frames[0])
    assert _iou(mask, clip.object_masks[0]) > 0.9 and first.windows_per_worker == {}
    with pytest.raises(FrameSizeError, match="frame 1 is 240 x 320, the stream is 480 x 640: frame skipped"):
        session.add_frame(clip.frames[1][::2, ::2].copy())
    assert len(session.records) == 1
    records = [session.add_frame(frame)[1] for frame in (clip.frames[1], black, grey)]
    assert [r.index for r in records] == [1, 2, 3]
    assert not records[0].lost and records[1].lost and records[2].lost
    assert records[1].shift == (0.0, 0.0) and records[1].motion_response < 0.05  # no motion from a black frame
    assert "points" not in records[2].prompt  # re-prompted from the last good box alone
    assert json.dumps([r.prompt for r in records])  # the records serialise


class _DiesAfter(InProcessExecutor):
    """TEST ONLY: an honest worker that fails every call after its first `calls` (a crash mid-video)."""

    def __init__(self, honest: InProcessExecutor, calls: int) -> None:
        super().__init__(honest.stages, honest.name)
        self.calls_left = calls

    def compute(self, stage, batch, meta, out_dtype):
        self.calls_left -= 1
        if self.calls_left < 0:
            raise RuntimeError("worker crashed")
        return super().compute(stage, batch, meta, out_dtype)


@pytest.mark.slow
def test_failover_keeps_the_coverage_cap(mobile_sam, clip, tmp_path: Path) -> None:
    # a fast pan (every 8th frame of the 300): a worker dies in frame 2; its windows are failed over within the
    # single-image constraints, and the session's cap rule keeps each other worker within 0.3 of the scene
    workers = in_process_workers(mobile_sam, 4)
    workers[0] = _DiesAfter(workers[0], calls=2)
    ledger = tmp_path / "video.jsonl"
    failovers: list[dict] = []
    with DistributedSamPredictor(mobile_sam, workers, ledger=ledger) as predictor:
        session = VideoSession(predictor, box=_box(clip.object_masks[0]), temporal="sticky", coverage_cap=0.3,
                               reuse=False)
        for frame in clip.frames[:40:8]:
            session.add_frame(frame)
            failovers += predictor.last_run.failovers
    assert failovers, "the dying worker should have caused failovers"
    assert session.max_worker_scene_coverage <= 0.3
    assert check_ledger(ledger) == (5, [])
    assert cli_main(["ledger", "check", str(ledger), "--max-scene-coverage", "0.3"]) == 0


@pytest.mark.slow
def test_a_face_missed_in_one_frame_stays_on_the_edge(mobile_sam) -> None:
    # three frames of the astronaut; in the middle one her face is painted over, so the detector finds nothing
    # there. The windows where the face was one frame earlier stay local all the same (keep-local memory).
    from skimage import data

    photo = np.ascontiguousarray(data.astronaut()[:448, :448])
    hidden = photo.copy()
    hidden[20:230, 120:330] = 128
    with DistributedSamPredictor(mobile_sam, in_process_workers(mobile_sam, 4), scheme="semantic") as predictor:
        records = []
        for memory in (10, 0):
            session = VideoSession(predictor, box=[100, 0, 448, 448], temporal="sticky", keep_local_memory=memory,
                                   reuse=False)
            records.append([session.add_frame(frame)[1] for frame in (photo, hidden, photo)])
    with_memory, without = records
    face_windows = set(with_memory[0].kept_local)
    assert face_windows and not with_memory[1].kept_local  # the detector missed the painted-over face
    assert face_windows <= set(with_memory[1].remembered_local)
    assert not face_windows & {w for ids in with_memory[1].windows_per_worker.values() for w in ids}
    # without the memory the same windows go to workers in the middle frame
    assert face_windows & {w for ids in without[1].windows_per_worker.values() for w in ids}
    with pytest.raises(ValueError, match="keep_local_memory must be an int >= 0"):
        VideoSession(predictor, box=[0, 0, 10, 10], keep_local_memory=-1)
