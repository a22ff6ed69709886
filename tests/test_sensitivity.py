"""Sensitive-region detection (Haar cascades) and the constraints it builds."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from pedvit.partition import (
    Constraints,
    Region,
    WindowGrid,
    assign,
    check_assignment,
    constraints_for_image,
    detect_objects,
    detect_sensitive_regions,
    object_groups,
    sensitive_windows,
)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


def test_face_found_on_astronaut_and_kept_local(astronaut: np.ndarray) -> None:
    faces = detect_sensitive_regions(astronaut)
    assert len(faces) >= 1 and all(f.kind == "face" for f in faces)
    y0, x0, y1, x1 = faces[0].box
    # the face of the astronaut is near the top centre of the 512 x 512 photo
    assert y0 < 120 < y1 and x0 < 220 < x1
    g = WindowGrid(astronaut.shape[:2])
    c = constraints_for_image(astronaut, g)
    assert sensitive_windows(g, faces) <= c.keep_local and c.keep_local
    for n in (2, 4, 8):
        a = assign(g, n, "semantic", constraints=c)
        assert check_assignment(a, g, c) == []
        sent = {i for ids in a.worker_windows.values() for i in ids}
        assert not sent & c.keep_local
        assert set(a.local) >= c.keep_local
        # no original face pixel reaches a worker
        fy0, fx0, fy1, fx1 = faces[0].box
        assert not g.original_mask(sent)[fy0:fy1, fx0:fx1].any()


def test_no_face_on_coffee() -> None:
    assert detect_sensitive_regions(data.coffee()) == []


def test_window_selection_from_regions() -> None:
    g = WindowGrid((1024, 1024))
    r = Region("face", (230, 230, 240, 240), 1.0)  # inside window 6 (224..448)
    assert sensitive_windows(g, [r], margin_px=0) == frozenset({6})
    assert sensitive_windows(g, [r], margin_px=16) == frozenset({0, 1, 5, 6})
    obj = Region("object", (100, 100, 300, 500), 1.0)
    assert object_groups(g, [obj]) == (frozenset({0, 1, 2, 5, 6, 7}),)
    assert object_groups(g, [Region("object", (0, 0, 10, 10), 1.0)]) == ()  # single-window objects dropped


def test_constraints_for_image_merges_base_and_validates(astronaut: np.ndarray) -> None:
    g = WindowGrid(astronaut.shape[:2])
    base = Constraints(keep_local=frozenset({24}), spread_groups=(frozenset({20, 21, 22}),), adjacency="require")
    c = constraints_for_image(astronaut, g, base, objects=False)
    assert 24 in c.keep_local and frozenset({20, 21, 22}) in c.spread_groups and c.adjacency == "require"
    with pytest.raises(ValueError, match="grid was built"):
        constraints_for_image(astronaut, WindowGrid((100, 100)))
    with pytest.raises(ValueError, match="uint8"):
        detect_sensitive_regions(astronaut.astype(np.float32))
    with pytest.raises(ValueError, match="unsupported"):
        detect_sensitive_regions(astronaut, kinds=("plate",))


def test_detect_objects_returns_object_regions() -> None:
    img = data.coffee()
    regions = detect_objects(img, saliency_fallback=True)
    assert all(r.kind == "object" for r in regions)
    for r in regions:
        y0, x0, y1, x1 = r.box
        assert 0 <= y0 < y1 <= img.shape[0] and 0 <= x0 < x1 <= img.shape[1]
