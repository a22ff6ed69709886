"""Window geometry: content/padding windows, box mapping, masks, halos, points."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pedvit.partition import WindowGrid, resized_shape


def test_square_image_has_25_content_windows() -> None:
    g = WindowGrid((1024, 1024))
    assert (g.rows, g.cols) == (5, 5)
    assert g.content_ids == list(range(25)) and g.padding_ids == []
    assert g.resized_size == (1024, 1024)
    w = g.window(24)
    assert w.token_box == (56, 56, 64, 64) and w.input_box == (896, 896, 1024, 1024)  # 8-token tail
    assert g.window(0).input_box == (0, 0, 224, 224)
    assert all(w.id == w.row * 5 + w.col for w in g.windows)


def test_landscape_4_3_has_20_content_and_5_padding() -> None:
    g = WindowGrid((480, 640))
    assert g.resized_size == (768, 1024)
    assert g.content_ids == list(range(20)) and g.padding_ids == [20, 21, 22, 23, 24]
    assert all(g.window(i).original_box is None and g.window(i).is_padding for i in g.padding_ids)
    assert g.window(15).original_box == (420, 0, 480, 140)  # resized rows 672..768 -> 420..480


def test_portrait() -> None:
    g = WindowGrid((640, 480))
    assert g.resized_size == (1024, 768)
    assert g.padding_ids == [4, 9, 14, 19, 24]
    assert len(g.content_ids) == 20


@pytest.mark.parametrize(
    "size, content",
    [
        ((1, 1), list(range(25))),
        ((1, 5000), [0, 1, 2, 3, 4]),
        ((5000, 1), [0, 5, 10, 15, 20]),
        ((2, 3), list(range(20))),  # 683 x 1024 content: 4 window rows
    ],
)
def test_tiny_and_extreme_images(size: tuple[int, int], content: list[int]) -> None:
    g = WindowGrid(size)
    assert g.content_ids == content
    assert g.original_mask(g.content_ids).all()
    assert g.original_mask(g.content_ids).shape == size


def test_resize_matches_sam_rounding() -> None:
    # SAM: int(side * 1024 / long + 0.5)
    assert resized_shape((480, 640)) == (768, 1024)
    assert resized_shape((333, 1000)) == (int(333 * (1024 / 1000) + 0.5), 1024)
    assert resized_shape((1, 5000)) == (1, 1024)  # never 0 (documented deviation)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4000), st.integers(1, 4000))
def test_union_of_windows_is_the_image_and_boxes_are_consistent(h: int, w: int) -> None:
    g = WindowGrid((h, w))
    assert g.original_mask(g.content_ids).all()
    assert not g.original_mask([]).any()
    rh, rw = g.resized_size
    assert max(rh, rw) == 1024
    im = g.input_mask(g.content_ids)
    assert im[:rh, :rw].all()  # every content pixel lies in a content window
    for win in g.windows:
        assert all(v % 16 == 0 for v in win.input_box)
        assert win.is_padding == (win.input_box[0] >= rh or win.input_box[1] >= rw)
        if win.original_box is not None:
            y0, x0, y1, x1 = win.original_box
            assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
    # a pixel lies in the window window_at_point names
    for y, x in [(0, 0), (h - 1, w - 1), (h // 2, w // 3)]:
        ob = g.window(g.window_at_point(x, y)).original_box
        assert ob is not None and ob[0] <= y < ob[2] and ob[1] <= x < ob[3]


def test_crop_box_halo_and_alignment() -> None:
    g = WindowGrid((1024, 1024))
    assert g.crop_box(0, 0) == (0, 0, 224, 224)
    assert g.crop_box(0, 32) == (0, 0, 256, 256)
    assert g.crop_box(12, 32) == (416, 416, 704, 704)
    assert g.crop_box(24, 64) == (832, 832, 1024, 1024)
    for wid in range(25):
        assert all(v % 16 == 0 for v in g.crop_box(wid, 48))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        g.crop_box(0, 8)
    with pytest.raises(ValueError):
        g.crop_box(0, -16)
    with pytest.raises(ValueError):
        g.crop_box(25, 0)


def test_content_extent_and_masks() -> None:
    g = WindowGrid((480, 640))  # content 768 x 1024
    assert g.content_extent((672, 0, 896, 224)) == (96, 224)
    assert g.content_extent((896, 0, 1024, 224)) == (0, 224)
    assert g.content_extent(g.crop_box(16, 16)) == (768 - 656, 224 + 32)
    m = g.input_mask([0], halo_px=16)
    assert m.shape == (1024, 1024) and m.sum() == 240 * 240
    om = g.original_mask([0], halo_px=16)
    assert om.shape == (480, 640) and om.sum() > g.original_mask([0]).sum()


def test_neighbours() -> None:
    g = WindowGrid((1024, 1024))
    assert g.neighbours(0) == [1, 5, 6]
    assert g.neighbours(12) == [6, 7, 8, 11, 13, 16, 17, 18]
    assert g.neighbours(24) == [18, 19, 23]


def test_validation_errors() -> None:
    for bad in [(0, 10), (10, -1), (1.5, 10)]:
        with pytest.raises(ValueError):
            WindowGrid(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="multiple of patch_size"):
        WindowGrid((10, 10), input_size=1000)
    with pytest.raises(ValueError):
        WindowGrid((10, 10), window_tokens=0)
    with pytest.raises(ValueError):
        WindowGrid((10, 10)).window_at_point(10, 0)


def test_other_geometry_parameters() -> None:
    g = WindowGrid((512, 512), input_size=512, patch_size=16, window_tokens=8)  # 32 tokens -> 4x4 windows
    assert (g.rows, g.cols) == (4, 4) and len(g.content_ids) == 16
    assert np.array_equal(g.input_mask(g.content_ids), np.ones((512, 512), bool))
