"""`pedvit eval privacy`: the command's outputs, the semantic scheme hiding a real face, the cloud-only
baseline, and the feature-leakage check of the split plans."""

from __future__ import annotations

import json
import pathlib

import cv2
import numpy as np
import pytest

from pedvit.eval.leakage import leakage_check, resize_boundary_leak, resize_margin_px, small_random_vit
from pedvit.eval.privacy_eval import evaluate_photos, summarize
from pedvit.partition import WindowGrid, assign

FAST = dict(methods=("mean_fill", "pullpush"), detect_kinds=("frontal_face",), progress=False)


def _write(path: pathlib.Path, rgb: np.ndarray, side: int) -> pathlib.Path:
    s = side / max(rgb.shape[:2])
    small = cv2.resize(rgb, (round(rgb.shape[1] * s), round(rgb.shape[0] * s)), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), small[..., ::-1])
    return path


def test_command_writes_json_and_report(tmp_path: pathlib.Path, astronaut: np.ndarray, coffee: np.ndarray) -> None:
    from pedvit.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    _write(photos / "astro.png", astronaut, 256)
    _write(photos / "coffee.jpg", coffee, 240)
    out_json, report = tmp_path / "res.json", tmp_path / "report"
    rc = main(["eval", "privacy", str(photos), "--local", "2", "--scheme", "interleaved", "--colluders", "2",
               "--methods", "mean_fill,pullpush", "--detect", "frontal_face", "--no-progress",
               "--json", str(out_json), "--report", str(report)])
    assert rc == 0
    data = json.loads(out_json.read_text())
    assert data["photos"] == ["astro", "coffee"]
    assert set(data["table"]) == {"interleaved", "cloud-only"}
    entry = data["table"]["interleaved"]["2"]
    for key in ("reconstruction_success_rate", "mean_ssim", "max_ssim", "faces_in_full_image",
                "faces_found_by_one_worker", "mean_exposure", "max_exposure", "mean_ssim_unseen"):
        assert key in entry, key
    assert set(entry["colluders"]) == {"1", "2"}
    # two workers together (worst-case coalition) see more than either alone
    assert entry["colluders"]["2"]["mean_exposure"] > entry["mean_exposure"]
    assert 0.0 < entry["mean_exposure"] < 1.0 and entry["max_exposure"] < 1.0
    assert "interleaved" in data["faces"] and "known_face_photos" in data["faces"]["interleaved"]["2"]
    for name in ("privacy.md", "privacy.json", "summary.json", "success_vs_colluders.png"):
        assert (report / name).is_file(), name
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert any(p.startswith("views_astro_interleaved_n2") for p in pngs), pngs
    assert any(p.startswith("reconstructions_astro_interleaved_n2") for p in pngs), pngs
    assert "| interleaved | 2 |" in (report / "privacy.md").read_text()


def test_semantic_hides_the_astronaut_face(astronaut: np.ndarray) -> None:
    rep = evaluate_photos([("astronaut", astronaut)], workers_list=(2,), schemes=("interleaved", "semantic"),
                          colluders=1, cloud_only=False, **FAST)
    faces = summarize(rep)["table"]
    assert faces["semantic"]["2"]["faces_in_full_image"] >= 1
    assert faces["semantic"]["2"]["faces_found_by_one_worker"] == 0
    # without the face constraint one of two workers holds the face and the detector re-finds it
    assert faces["interleaved"]["2"]["faces_found_by_one_worker"] >= 1
    sem = next(r for r in rep.results if r["scheme"] == "semantic")
    assert sem["local_windows"], "the face windows must stay on the edge"


def test_cloud_only_row_is_full_disclosure(coffee: np.ndarray) -> None:
    rep = evaluate_photos([("coffee", coffee)], workers_list=(2,), schemes=("contiguous",), colluders=2, **FAST)
    rows = {(r["scheme"], r["n_workers"], r["colluders"]): r for r in rep.rows()}
    cloud = rows[("cloud-only", 1, 1)]
    assert cloud["reconstruction_success_rate"] == 1.0
    assert cloud["mean_ssim"] == pytest.approx(1.0, abs=1e-6)
    assert cloud["mean_exposure"] == 1.0
    split = rows[("contiguous", 2, 1)]
    assert split["mean_ssim"] < cloud["mean_ssim"] and split["max_exposure"] < 1.0


def test_resize_margin_explains_the_boundary_blend(astronaut: np.ndarray) -> None:
    """The edge's bilinear resize blends original pixels just outside a window's floor/ceil mask into the
    window's pixels; the strict mask shows it, a mask grown by `resize_margin_px` does not."""
    img = astronaut[:300, :400].copy()
    grid = WindowGrid(img.shape[:2])
    a = assign(grid, 2, "interleaved")
    windows = {str(w): list(ids) for w, ids in a.worker_windows.items()}
    strict = {w: grid.original_mask(ids) for w, ids in windows.items()}
    assert resize_boundary_leak(img, strict, grid, windows)["changed_pixels"] > 0
    px = resize_margin_px(img.shape[:2])
    grown = {w: cv2.dilate(m.astype(np.uint8), np.ones((2 * px + 1,) * 2, np.uint8)).astype(bool)
             for w, m in strict.items()}
    assert resize_boundary_leak(img, grown, grid, windows)["changed_pixels"] == 0


@pytest.mark.slow
def test_feature_leakage_vit_exact_vs_isolated(astronaut: np.ndarray) -> None:
    """Round 1 of vit-exact (pixels) is isolated; tokens after a global block depend on other windows."""
    img = astronaut[:256, :256].copy()
    model = small_random_vit(0)
    exact = leakage_check(img, "vit-exact", n_workers=2, model=model)
    stages = list(exact["per_stage"])
    assert len(stages) == 2  # pixels -> blocks 0-1, then tokens after global block 2 -> blocks 3-4
    first, later = exact["per_stage"][stages[0]], exact["per_stage"][stages[1]]
    assert first["max_abs_diff"] == 0.0
    assert later["max_rel_change"] > 1e-3 and not exact["isolated"]


@pytest.mark.slow
def test_feature_leakage_tinyvit_isolated_is_zero(mobile_sam: object, coffee: np.ndarray) -> None:
    """MobileSAM (real weights), tinyvit-isolated: nothing a worker receives changes when other pixels do."""
    res = leakage_check(coffee[::2, ::2].copy(), "tinyvit-isolated", n_workers=2, model=mobile_sam)
    assert res["isolated"] and res["max_abs_diff"] == 0.0
    assert res["resize_boundary_leak_strict_mask"]["changed_pixels"] > 0  # why the 1 px margin is needed
