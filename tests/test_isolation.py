"""Isolation by perturbation (no mocks): change every original pixel a worker may not depend on and check
that every tensor the worker receives stays bit-identical. vit-exact is shown NOT to be isolated."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from pedvit.edge.build import in_process_workers

from pedvit.edge.distributed import DistributedSamPredictor
from pedvit.edge.engine import RunRecord
from pedvit.edge.executors import InProcessExecutor
from pedvit.models import Sam
from pedvit.partition import SCHEMES, WindowGrid
from pedvit.privacy.leakage_metrics import perturb_outside
from test_split_engine import small_vit

WORKER = 1  # the worker S whose view is checked


def keep_mask(grid: WindowGrid, window_ids: list[int], halo_px: int) -> np.ndarray:
    """H x W bool: original pixels that may influence the crops of `window_ids` (+halo).

    `grid.original_mask` is the pixel-footprint box of each crop. The edge resizes with PIL bilinear, whose
    kernel reaches beyond the footprint: an output pixel at the crop border is a weighted sum over
    +-max(1, scale) input pixels around its centre (scale = original / resized side), i.e. up to
    0.5 * scale + 1 original pixels past the footprint's (ceil-rounded) end. So the mask is dilated by that
    much plus one pixel of slack; only pixels at least that far outside are perturbed. (Perturbing inside
    that band would change the window's pixels legitimately, a false "leak".)
    """
    mask = grid.original_mask(window_ids, halo_px)
    scale = max(grid.original_size) / grid.input_size
    margin = math.ceil(0.5 * max(scale, 1.0)) + 2
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def views(executor: InProcessExecutor, record: RunRecord) -> dict[tuple[str, int], np.ndarray]:
    """(stage, window id) -> the window tensor, for everything the executor received. The rows of each call
    are the edge's `sent_order` of that call (positions may be hidden: then the meta carries no origin)."""
    out = {}
    calls = record.workers[executor.name].sent_order
    assert len(calls) == len(executor.received)
    for (stage, batch, _meta), order in zip(executor.received, calls):
        for array, wid in zip(batch, order, strict=True):
            out[(stage, wid)] = array
    return out


def run(model: Sam, image: np.ndarray, plan: str, scheme: str, halo_px: int = 0,
        window_tokens: int = 14) -> tuple[list[InProcessExecutor], DistributedSamPredictor]:
    workers = in_process_workers(model, 3, record_inputs=True)
    dist = DistributedSamPredictor(model, workers, plan=plan, scheme=scheme, halo_px=halo_px, window_tokens=window_tokens,
                                   fusion="off", seed=0)
    dist.set_image(image)
    dist.close()
    return workers, dist


def check_isolated(model: Sam, image: np.ndarray, plan: str, scheme: str, halo_px: int, window_tokens: int = 14) -> None:
    base_workers, base = run(model, image, plan, scheme, halo_px, window_tokens)
    record, grid = base.last_run, base.engine.last_grid
    assert record is not None and grid is not None
    name = base_workers[WORKER].name
    ids = record.assignment[name]
    assert ids, f"{scheme}: worker {name} got no windows"
    allowed = keep_mask(grid, ids, halo_px)
    assert (~allowed).sum() > 0.3 * allowed.size, "too little left to perturb for a meaningful test"
    perturbed = perturb_outside(image, allowed, rng=np.random.default_rng(1))
    pert_workers, pert = run(model, perturbed, plan, scheme, halo_px, window_tokens)
    assert pert.last_run is not None
    before, after = views(base_workers[WORKER], base.last_run), views(pert_workers[WORKER], pert.last_run)
    if scheme == "semantic":
        # The semantic assignment depends on what is detected in the image; the perturbation may move
        # windows between workers. Isolation is a per-window property: every window S received in both runs
        # must be bit-identical.
        common = before.keys() & after.keys()
        assert common, "semantic: no window in common to compare"
    else:
        assert pert.last_run.assignment == record.assignment
        assert before.keys() == after.keys()
        common = before.keys()
    for key in common:
        assert before[key].dtype == after[key].dtype
        assert np.array_equal(before[key], after[key]), f"{plan} {scheme} halo {halo_px}: worker {name} input {key} changed"
    # Sanity: the perturbation did change what the other workers received (the test is not vacuous).
    others_changed = False
    for b, a in zip(base_workers, pert_workers):
        if b is base_workers[WORKER]:
            continue
        vb, va = views(b, base.last_run), views(a, pert.last_run)
        others_changed |= any(not np.array_equal(vb[k], va[k]) for k in vb.keys() & va.keys())
    assert others_changed


@pytest.fixture(scope="module")
def strip(astronaut: np.ndarray) -> np.ndarray:
    """The top 256 rows of astronaut (2:1, with the face): 15 content windows keeps MobileSAM runs short."""
    return np.ascontiguousarray(astronaut[:256])


@pytest.mark.slow
@pytest.mark.parametrize("halo_px", [0, 32])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_tinyvit_isolated_worker_inputs_depend_only_on_its_windows(mobile_sam: Sam, strip: np.ndarray, scheme: str, halo_px: int) -> None:
    check_isolated(mobile_sam, strip, "tinyvit-isolated", scheme, halo_px)


@pytest.mark.slow
def test_tinyvit_isolated_448px_windows_are_isolated_too(mobile_sam: Sam, strip: np.ndarray) -> None:
    """With 28-token (448 px) windows a worker runs the trunk across its window's inner seams, yet still
    receives nothing that depends on pixels outside its windows."""
    check_isolated(mobile_sam, strip, "tinyvit-isolated", "interleaved", 0, window_tokens=28)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_vit_isolated_worker_inputs_depend_only_on_its_windows(strip: np.ndarray, scheme: str) -> None:
    check_isolated(small_vit(), strip, "vit-isolated", scheme, 0)


def test_vit_exact_is_not_isolated(strip: np.ndarray) -> None:
    """First round (pixels) is isolated; every later round (tokens after a global block) is not."""
    model = small_vit()
    base_workers, base = run(model, strip, "vit-exact", "interleaved")
    grid = base.engine.last_grid
    assert grid is not None and base.last_run is not None
    allowed = keep_mask(grid, base.last_run.assignment[base_workers[WORKER].name], 0)
    pert_workers, pert = run(model, perturb_outside(strip, allowed, rng=np.random.default_rng(1)), "vit-exact", "interleaved")
    before, after = views(base_workers[WORKER], base.last_run), views(pert_workers[WORKER], pert.last_run)
    assert before.keys() == after.keys()
    stages = sorted({stage for stage, _ in before})
    first = [k for k in before if k[0].startswith("vit.embed")]
    later = [k for k in before if k[0].startswith("vit.blocks")]
    assert first and later, stages
    assert all(np.array_equal(before[k], after[k]) for k in first)
    # After a global block, every window's tokens carry context from every window of the image.
    assert all(not np.array_equal(before[k], after[k]) for k in later)
