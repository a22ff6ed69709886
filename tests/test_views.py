"""`pedvit.privacy.views`: the one renderer of what each worker saw (masks, pixels, tiles, the sheet)."""

from __future__ import annotations

import numpy as np
import pytest

from pedvit.partition import WindowGrid, assign
from pedvit.privacy.views import (EDGE_COLOUR, PALETTE, UNSEEN_GREY, masked_view, view_masks, view_pixels, view_sheet,
                                  view_tile)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def grid() -> WindowGrid:
    return WindowGrid((300, 400))


def test_view_masks_cover_each_workers_windows_and_nothing_else(grid: WindowGrid) -> None:
    assignment = assign(grid, 3, "interleaved")
    views = view_masks(grid, assignment.worker_windows, 16)
    assert set(views) == {str(w) for w in assignment.worker_windows}
    for w, ids in assignment.worker_windows.items():
        np.testing.assert_array_equal(views[str(w)], grid.original_mask(ids, 16))
    # Without a halo the views together cover the image, and each is a part of it, smaller than with a halo.
    plain = view_masks(grid, assignment.worker_windows)
    assert np.logical_or.reduce(list(plain.values())).all()
    assert all(plain[w].sum() < views[w].sum() < views[w].size for w in plain)


def test_view_pixels_fill_unseen_pixels_as_asked(image: np.ndarray) -> None:
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[10:50, 20:80] = True
    black = view_pixels(image, mask)
    np.testing.assert_array_equal(black, masked_view(image, mask))
    assert (black[~mask] == 0).all() and (black[mask] == image[mask]).all()
    rgba = view_pixels(image, mask, unseen="transparent")
    assert rgba.shape == (*image.shape[:2], 4) and (rgba[~mask] == 0).all()
    assert (rgba[mask, 3] == 255).all() and (rgba[mask, :3] == image[mask]).all()
    grey = view_pixels(image, mask, unseen="grey", tint=(200, 0, 0))
    assert (grey[~mask] == UNSEEN_GREY).all()
    np.testing.assert_array_equal(grey[mask], (0.75 * image[mask] + 0.25 * np.array([200, 0, 0])).astype(np.uint8))
    with pytest.raises(ValueError, match="unseen must be"):
        view_pixels(image, mask, unseen="white")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="disagree"):
        masked_view(image, mask[:10])


def test_view_tile_shows_only_received_pixels_and_reports_coverage(image: np.ndarray, grid: WindowGrid) -> None:
    windows = [grid.content_ids[0]]
    tile, coverage = view_tile(image, grid, windows, 0, PALETTE[0], marked=[grid.content_ids[-1]], side=200)
    assert tile.shape == (150, 200, 4)  # long side scaled to 200
    assert coverage == pytest.approx(grid.original_mask(windows, 0).mean())
    opaque = tile[..., 3] > 0
    assert 0 < opaque.mean() < 0.5
    # The marked window is outlined in the edge colour although its pixels are not shown.
    assert (tile[..., :3] == EDGE_COLOUR).all(axis=-1).any()


def test_view_sheet_has_one_labelled_tile_per_view(image: np.ndarray, grid: WindowGrid) -> None:
    views = view_masks(grid, assign(grid, 2, "contiguous").worker_windows)
    views["edge"] = np.zeros(image.shape[:2], dtype=bool)
    sheet = view_sheet(image, views, tile_side=100)
    plain = view_sheet(image, views, tile_side=100, caption="a caption")
    assert sheet.dtype == np.uint8 and sheet.shape[2] == 3
    assert sheet.shape[1] == 3 * (100 + 6) + 6  # 3 tiles side by side
    assert plain.shape[0] == sheet.shape[0] + 18  # the caption line
    # The edge's tile saw nothing: all grey.
    x0 = 6 + 2 * 106
    edge_tile = sheet[6 + 18 + 2: 6 + 18 + 70, x0 + 2: x0 + 98]
    assert (edge_tile == UNSEEN_GREY).all()
