"""Position hiding: a tinyvit-isolated worker gets its windows in a random order and without their origins,
and the result is bit-identical to sending the positions. ViT plans, whose stages need absolute positions,
keep sending them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pedvit.edge.build import in_process_workers

from pedvit.edge.distributed import DistributedSamPredictor
from pedvit.models import Sam
from pedvit.models.transforms import ResizeLongestSide
from pedvit.plans.plans import SplitPlan, TinyViTIsolated, make_plan
from pedvit.plans.stages import TINYVIT_TRUNK, WINDOW_PX
from pedvit.plans.window_adapter import WindowAdapter
from test_split_engine import small_vit


@pytest.fixture(scope="module")
def strip(astronaut: np.ndarray) -> np.ndarray:
    """The top 256 rows of astronaut: 15 content windows."""
    return np.ascontiguousarray(astronaut[:256])


def segment(model: Sam, image: np.ndarray, hide: bool, plan: str = "tinyvit-isolated", n: int = 3):
    workers = in_process_workers(model, n, record_inputs=True)
    dist = DistributedSamPredictor(model, workers, plan=plan, scheme="interleaved", fusion="off", seed=0,
                                   hide_positions=hide)
    dist.set_image(image)
    masks, scores, _ = dist.predict(point_coords=np.array([[220.0, 90.0]]), point_labels=np.array([1]))
    embedding = dist.features.clone()
    dist.close()
    return workers, dist, embedding, masks, scores


@pytest.mark.slow
def test_hidden_positions_give_bit_identical_results(mobile_sam: Sam, strip: np.ndarray) -> None:
    _, shown, emb_shown, masks_shown, scores_shown = segment(mobile_sam, strip, hide=False)
    workers, hidden, emb_hidden, masks_hidden, scores_hidden = segment(mobile_sam, strip, hide=True)
    assert hidden.last_run.assignment == shown.last_run.assignment
    assert hidden.last_run.positions_hidden == {TINYVIT_TRUNK: True}
    assert shown.last_run.positions_hidden == {TINYVIT_TRUNK: False}
    assert emb_hidden.equal(emb_shown)
    assert np.array_equal(masks_hidden, masks_shown) and np.array_equal(scores_hidden, scores_shown)


@pytest.mark.slow
def test_worker_receives_no_origins_and_the_edge_map_is_right(mobile_sam: Sam, strip: np.ndarray) -> None:
    workers, dist, *_ = segment(mobile_sam, strip, hide=True)
    record, grid = dist.last_run, dist.engine.last_grid
    # What each window's crop looks like on the edge, to check the edge's map against the worker's bytes.
    resized = ResizeLongestSide(mobile_sam.img_size).apply_image(strip)
    canvas = SplitPlan.canvas(resized, grid.input_size)
    expected = SplitPlan.pixel_jobs(canvas, grid, grid.content_ids, 0)
    orders = []
    for worker in workers:
        calls = record.workers[worker.name].sent_order
        assert len(calls) == len(worker.received) >= 1
        for (stage, batch, meta), order in zip(worker.received, calls):
            assert stage == TINYVIT_TRUNK
            assert not meta[:, :2].any(), "a worker received window origins"
            for array, wid in zip(batch, order, strict=True):
                assert np.array_equal(array, expected[wid][0]), f"the edge's map is wrong for window {wid}"
            orders.append(order)
        assert sorted(w for call in calls for w in call) == record.assignment[worker.name]
    # The order is shuffled by the OS's randomness: over a few requests, some call is not in id order.
    for _ in range(4):
        if any(order != sorted(order) for order in orders if len(order) > 2):
            break
        dist_workers, again, *_ = segment(mobile_sam, strip, hide=True)
        orders = [o for w in dist_workers for o in again.last_run.workers[w.name].sent_order]
    else:
        pytest.fail("five requests sent every worker its windows in id order: not shuffled")
    # The ledger line keeps the map.
    line = json.loads(json.dumps(record.to_dict(grid)))
    assert line["positions_hidden"] == {TINYVIT_TRUNK: True}
    assert all("sent_order" in w for w in line["workers"].values())


def test_vit_plans_keep_positions() -> None:
    """ViT stages add an absolute position embedding: their workers need the origins, and get them."""
    model = small_vit()
    photo = np.random.default_rng(0).integers(0, 255, (256, 512, 3), dtype=np.uint8)
    workers = in_process_workers(model, 3, record_inputs=True)
    with DistributedSamPredictor(model, workers, plan="vit-isolated", seed=0) as dist:
        dist.set_image(photo)
    assert set(dist.last_run.positions_hidden.values()) == {False}
    assert any(meta[:, :2].any() for w in workers for _, _, meta in w.received)


def test_position_period_of_plans() -> None:
    plan = make_plan("tinyvit-isolated")
    assert plan.position_period(TINYVIT_TRUNK) == WINDOW_PX
    assert plan.position_period("vit.blocks:0-1") is None
    assert make_plan("vit-isolated").position_period("vit.embed+blocks:0-1") is None
    # Seam padding reads which crop sides are seams from the origin: positions stay.
    padded = WindowAdapter({}, "replicate")
    fusion = type("F", (), {"window_adapter": padded})()
    assert TinyViTIsolated(fusion=fusion).position_period(padded.stage_name) is None
