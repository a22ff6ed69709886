"""The jigsaw attacker (hidden positions), the learned inpainter and the unseen-pixel success metric."""

from __future__ import annotations

import numpy as np
import pytest

from pedvit.partition import Constraints, WindowGrid, assign
from pedvit.privacy.inpainter import load_inpainter, unet_inpaint
from pedvit.privacy.jigsaw import cut_pieces, place, placed_view, slots_for
from pedvit.privacy.reconstruction import UNSEEN_MARGIN, reconstruction_attack
from pedvit.privacy.report import evaluate_views


def smooth_image(h: int = 192, w: int = 256, seed: int = 0) -> np.ndarray:
    """Smooth, non-repeating colour fields: every seam is unambiguous."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    channels = [sum(rng.uniform(20, 60) * np.sin(rng.uniform(1, 6) * x + rng.uniform(1, 6) * y + rng.uniform(0, 6))
                    for _ in range(3)) + 128 for _ in range(3)]
    return np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)


def grid_for(image: np.ndarray) -> WindowGrid:
    h, w = image.shape[:2]
    return WindowGrid((h * 4, w * 4))  # a 4x larger "original": the attacked copy is a downscale, as in the eval


def test_jigsaw_reassembles_a_smooth_image_from_all_its_pieces() -> None:
    img = smooth_image()
    grid = grid_for(img)
    slots = slots_for(grid, img.shape[:2])
    pieces = cut_pieces(img, slots, {"all": grid.content_ids})
    placement = place(pieces, slots, img.shape[:2], non_adjacent=False)
    assert placement.accuracy == 1.0
    view, mask = placed_view(img.shape[:2], pieces, slots, placement)
    assert mask.all() and np.array_equal(view, img)


def test_jigsaw_respects_sizes_and_the_schemes_adjacency_rule() -> None:
    img = smooth_image(seed=1)
    grid = grid_for(img)
    slots = slots_for(grid, img.shape[:2])
    by_id = {s.id: s for s in slots}
    a = assign(grid, 4, "interleaved", constraints=Constraints(), seed=0)
    for ids in a.worker_windows.values():
        pieces = cut_pieces(img, slots, {"w": ids})
        placement = place(pieces, slots, img.shape[:2], non_adjacent=True)
        for piece, sid in zip(pieces, placement.slots):
            assert abs(piece.pixels.shape[0] - by_id[sid].shape[0]) <= 1
            assert abs(piece.pixels.shape[1] - by_id[sid].shape[1]) <= 1
        placed = set(placement.slots)
        assert len(placed) == len(pieces)
        assert not any(n in placed for sid in placed for n in grid.neighbours(sid)), "touching pieces of one worker"
        assert 0.0 <= placement.accuracy <= 1.0


def test_unseen_metric_credits_inference_not_what_was_received() -> None:
    img = smooth_image(seed=2)
    everything = np.ones(img.shape[:2], bool)
    full = reconstruction_attack(img, everything, methods=("mean_fill", "telea"))
    assert full.success and full.unseen_success  # the whole image is disclosed
    flat = np.full_like(img, 90)
    half = np.zeros(img.shape[:2], bool)
    half[:, : img.shape[1] // 2] = True
    none_to_infer = reconstruction_attack(flat, half, methods=("mean_fill", "telea", "pullpush"))
    # A flat image: half of it already scores high full-image SSIM, but nothing beyond the view is learned.
    assert none_to_infer.success and not none_to_infer.unseen_success
    assert abs(none_to_infer.unseen_gain) < UNSEEN_MARGIN
    # 3 px gaps in a real photo: inpainting infers their edges and texture, which the no-knowledge baselines
    # (grey, the mean colour) cannot. (SSIM scores structure: on a smooth colour field any flat guess is close.)
    from skimage import data

    photo = np.ascontiguousarray(data.astronaut()[::2, ::2])
    stripes = np.ones(photo.shape[:2], bool)
    for x0 in range(4, photo.shape[1], 12):
        stripes[:, x0:x0 + 3] = False
    inferred = reconstruction_attack(photo, stripes, methods=("mean_fill", "telea", "pullpush"))
    assert inferred.unseen_success and inferred.unseen_gain > 2 * UNSEEN_MARGIN


def test_learned_inpainter_keeps_seen_pixels_and_beats_mean_colour() -> None:
    from skimage import data

    img = np.ascontiguousarray(data.astronaut()[::2, ::2])
    grid = WindowGrid(data.astronaut().shape[:2])
    ids = assign(grid, 4, "interleaved", constraints=Constraints(), seed=0).worker_windows[0]
    big = grid.original_mask(ids, 0)
    mask = np.ascontiguousarray(big[::2, ::2])
    view = np.where(mask[..., None], img, 0).astype(np.uint8)
    out = unet_inpaint(view, mask)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(out[mask], img[mask])
    res = reconstruction_attack(img, mask, methods=("mean_fill", "unet"))
    assert res.per_method["unet"].ssim_unseen > res.per_method["mean_fill"].ssim_unseen
    assert load_inpainter()[1].get("photos"), "the shipped weights say what they were trained on"


def test_hidden_positions_rows_report_placement_accuracy() -> None:
    img = smooth_image(seed=3)
    grid = grid_for(img)
    a = assign(grid, 2, "interleaved", constraints=Constraints(), seed=0)
    big = {str(w): grid.original_mask(ids, 0) for w, ids in a.worker_windows.items()}
    views = {w: m[::4, ::4] for w, m in big.items()}
    windows = {str(w): ids for w, ids in a.worker_windows.items()}
    res = evaluate_views(img, views, colluders=(1, 2), methods=("mean_fill", "telea"), detect_kinds=(),
                         positions="hidden", windows=windows, grid=grid)
    assert res["positions"] == "hidden"
    for w in res["workers"].values():
        assert 0.0 <= w["placement_accuracy"] <= 1.0
    # Both workers together hold every window of a smooth image: the jigsaw puts every piece back.
    assert res["coalitions"]["2"]["placement_accuracy"] == 1.0
    with pytest.raises(ValueError, match="hidden"):
        evaluate_views(img, views, positions="hidden", detect_kinds=())


def test_attacker_training_commands_run_and_record_how(tmp_path) -> None:
    """The commands that made the shipped attacker weights run end to end (a few steps, three photos)."""
    import json

    from PIL import Image
    from skimage import data

    from pedvit.privacy.inpainter import InpaintUNet
    from pedvit.training import inpainter, jigsaw_prior

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut", "coffee", "chelsea"):
        Image.fromarray(getattr(data, name)()).save(photos / f"{name}.png")
    out = tmp_path / "unet.pt"
    assert inpainter.main(["--photos", str(photos), "--minutes", "0.05", "--width", "8", "--batch", "2",
                           "--out", str(out)]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["steps"] >= 1 and sorted(meta["photos"]) == ["astronaut", "chelsea", "coffee"]
    assert set(meta["validation_unseen_ssim"]) == {"unet", "pullpush"}
    model, loaded = load_inpainter.__wrapped__(str(out))
    assert isinstance(model, InpaintUNet) and loaded["sha256"] == meta["sha256"]
    prior = tmp_path / "prior.json"
    assert jigsaw_prior.main(["--photos", str(photos), "--out", str(prior)]) == 0
    fitted = json.loads(prior.read_text())
    assert np.asarray(fitted["weights"]).shape == (17, 2) and fitted["residual_var"] > 0
