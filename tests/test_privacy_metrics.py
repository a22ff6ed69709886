"""Privacy metrics on synthetic cases with known answers."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pedvit.data import photo
from pedvit.privacy import (
    ATTACKS,
    PrivacyReport,
    aggregate,
    cloud_only_views,
    detect,
    detection_attack,
    evaluate_views,
    feature_leakage,
    grey_baseline,
    match_boxes,
    perturb_outside,
    reconstruct,
    reconstruction_attack,
    score,
    union_mask,
    view_exposure,
    worst_case_coalition,
)
from pedvit.privacy.reconstruction import PSNR_CAP


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return photo("astronaut").image


@pytest.fixture(scope="module")
def gravel() -> np.ndarray:
    return photo("gravel").image


def _small(img: np.ndarray, side: int = 160) -> np.ndarray:
    return cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)


# --- exposure ----------------------------------------------------------------------------------------


def test_rectangle_exposure_exact() -> None:
    m = np.zeros((100, 200), bool)
    m[10:30, 40:70] = True  # 20 x 30 = 600 px
    e = view_exposure(m)
    assert e.seen_px == 600 and e.total_px == 20_000
    assert e.fraction == pytest.approx(0.03)
    assert e.content_fraction == pytest.approx(0.03)
    assert e.largest_region_px == 600 and e.n_regions == 1
    assert e.largest_region_fraction == pytest.approx(0.03)
    assert e.bbox_coverage == pytest.approx(0.03)
    m[50:60, 100:110] = True  # second, separate region of 100 px
    e = view_exposure(m)
    assert e.n_regions == 2 and e.largest_region_px == 600 and e.seen_px == 700
    assert e.bbox_coverage == pytest.approx(50 * 70 / 20_000)


def test_exposure_8_connectivity_and_content() -> None:
    m = np.zeros((10, 10), bool)
    m[0:2, 0:2] = True
    m[2:4, 2:4] = True  # touches the first block only diagonally
    e = view_exposure(m)
    assert e.n_regions == 1 and e.largest_region_px == 8
    content = np.zeros((10, 10), bool)
    content[:5, :] = True  # bottom half is padding
    assert view_exposure(m, content).content_fraction == pytest.approx(8 / 50)


def test_empty_and_full_exposure() -> None:
    assert view_exposure(np.zeros((8, 9), bool)).fraction == 0.0
    assert view_exposure(np.zeros((8, 9), bool)).largest_region_px == 0
    full = view_exposure(np.ones((8, 9), bool))
    assert full.fraction == 1.0 and full.largest_region_fraction == 1.0 and full.bbox_coverage == 1.0


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 39), st.integers(0, 39))
def test_random_rectangle_fraction(h: int, w: int, y: int, x: int) -> None:
    m = np.zeros((40, 40), bool)
    m[y:y + h, x:x + w] = True
    area = min(h, 40 - y) * min(w, 40 - x)
    e = view_exposure(m)
    assert e.seen_px == area == e.largest_region_px
    assert e.fraction == pytest.approx(area / 1600) == e.bbox_coverage


def test_colluder_union_worst_case() -> None:
    views = {}
    for name, (y0, y1) in {"a": (0, 10), "b": (5, 15), "c": (15, 18), "d": (18, 20)}.items():
        m = np.zeros((20, 10), bool)
        m[y0:y1] = True
        views[name] = m
    u = union_mask(views, ["a", "c"])
    assert u.sum() == 130
    members, union, how = worst_case_coalition(views, 2)
    assert how == "exact" and set(members) == {"a", "b"} and union.sum() == 150
    members, union, how = worst_case_coalition(views, 3)
    assert set(members) == {"a", "b", "c"} and union.sum() == 180
    g_members, g_union, how = worst_case_coalition(views, 3, exact_limit=0)
    assert how == "greedy" and g_union.sum() == 180
    _, union, _ = worst_case_coalition(views, 4)
    assert union.all()
    with pytest.raises(ValueError):
        worst_case_coalition(views, 5)


# --- reconstruction ----------------------------------------------------------------------------------


def test_attacks_never_read_unseen_pixels(astronaut: np.ndarray) -> None:
    img = _small(astronaut)
    mask = np.zeros(img.shape[:2], bool)
    mask[20:90, 30:120] = True
    other = perturb_outside(img, mask, rng=np.random.default_rng(1))
    for method in ATTACKS:
        a = reconstruct(img, mask, method)
        assert a.shape == img.shape and a.dtype == np.uint8
        assert np.array_equal(a[mask], img[mask])  # seen pixels exact
        assert np.array_equal(a, reconstruct(other, mask, method)), method


def test_score_identity() -> None:
    img = np.random.default_rng(0).integers(0, 256, (50, 60, 3), dtype=np.uint8)
    s = score(img, img.copy(), np.ones((50, 60), bool))
    assert s.ssim == pytest.approx(1.0) and s.psnr == PSNR_CAP and np.isnan(s.ssim_unseen)


def test_partial_view_between_nothing_and_everything(astronaut: np.ndarray) -> None:
    img = _small(astronaut)
    mask = np.zeros(img.shape[:2], bool)
    mask[:, :80] = True
    r = reconstruction_attack(img, mask, threshold=0.99)
    assert r.baseline.ssim < r.best.ssim < 1.0
    assert not r.success
    assert set(r.per_method) == set(ATTACKS)
    assert r.best.ssim == max(s.ssim for s in r.per_method.values())


# --- detection ---------------------------------------------------------------------------------------


def test_match_boxes_rules() -> None:
    ref = [(0, 0, 100, 100), (200, 200, 240, 240)]
    assert match_boxes(ref, [(10, 10, 110, 110)]) == [0]  # IoU ~0.68
    assert match_boxes(ref, [(40, 40, 60, 60)]) == [0]  # small box, centre inside
    assert match_boxes(ref, [(150, 150, 300, 300)]) == [1]  # ref centre inside the found box
    assert match_boxes(ref, [(300, 300, 320, 320)]) == []


def test_detection_attack_all_none_and_black_fill(astronaut: np.ndarray) -> None:
    h, w = astronaut.shape[:2]
    full = detect(astronaut, ["frontal_face"])
    assert len(full["frontal_face"]) >= 1
    x0, y0, x1, y1 = full["frontal_face"][0]
    no_face = np.ones((h, w), bool)
    no_face[y0:y1, x0:x1] = False  # a worker that received everything except the face box
    res = detection_attack(astronaut, {"all": np.ones((h, w), bool), "none": np.zeros((h, w), bool),
                                       "no_face": no_face}, kinds=["frontal_face"])
    r = res["frontal_face"]
    assert r.found_in_full == len(full["frontal_face"])
    assert len(r.found_by_view["all"]) == r.found_in_full
    assert r.found_by_view["none"] == [] and r.found_by_view["no_face"] == []


# --- end-to-end: everything / nothing ----------------------------------------------------------------


def test_worker_that_saw_everything(astronaut: np.ndarray) -> None:
    res = evaluate_views(astronaut, cloud_only_views(astronaut), scheme="cloud-only", name="astronaut",
                         colluders=(1,), detect_kinds=("frontal_face",))
    w = res["workers"]["cloud"]
    assert w["exposure"]["fraction"] == 1.0
    assert w["reconstruction"]["best"]["ssim"] == pytest.approx(1.0)
    assert w["success"]
    (row,) = aggregate([res])
    assert row["mean_exposure"] == 1.0 and row["max_ssim"] == pytest.approx(1.0)
    assert row["reconstruction_success_rate"] == 1.0
    assert row["faces_in_full_image"] >= 1
    assert row["faces_found"] == row["faces_found_by_one_worker"] == row["faces_in_full_image"]


@pytest.mark.parametrize("name", ["astronaut", "gravel"])
def test_worker_that_saw_nothing(name: str, astronaut: np.ndarray, gravel: np.ndarray) -> None:
    img = astronaut if name == "astronaut" else gravel
    blind = np.zeros(img.shape[:2], bool)
    res = evaluate_views(img, {"blind": blind}, colluders=(1,), detect_kinds=("frontal_face",), name=name)
    w = res["workers"]["blind"]
    assert w["exposure"]["fraction"] == 0.0
    assert not w["success"]
    assert w["detection"]["frontal_face"] == 0
    (row,) = aggregate([res])
    assert row["reconstruction_success_rate"] == 0.0 and row["faces_found"] == 0
    if name == "gravel":  # textured: knowing nothing scores low SSIM
        assert res["baseline_grey"]["ssim"] < 0.2
        assert w["reconstruction"]["best"]["ssim"] < 0.2
        assert grey_baseline(img).ssim == pytest.approx(res["baseline_grey"]["ssim"])
    else:
        assert row["faces_in_full_image"] >= 1


def test_halves_and_colluders(gravel: np.ndarray) -> None:
    img = _small(gravel, 128)
    left = np.zeros((128, 128), bool)
    left[:, :64] = True
    res = evaluate_views(img, {"0": left, "1": ~left}, colluders=(1, 2, 3), detect_kinds=(), scheme="halves")
    assert set(res["coalitions"]) == {"1", "2"}  # k=3 > 2 workers skipped
    assert res["coalitions"]["2"]["exposure"]["fraction"] == 1.0
    assert res["coalitions"]["2"]["reconstruction"]["best"]["ssim"] == pytest.approx(1.0)
    rows = aggregate([res])
    assert [r["colluders"] for r in rows] == [1, 2]
    assert rows[0]["mean_exposure"] == pytest.approx(0.5) and rows[1]["mean_exposure"] == 1.0
    assert rows[1]["reconstruction_success_rate"] == 1.0


# --- leakage -----------------------------------------------------------------------------------------


def test_feature_leakage_isolated_and_leaky(astronaut: np.ndarray) -> None:
    img = _small(astronaut, 96)
    masks = {0: np.zeros((96, 96), bool), 1: np.zeros((96, 96), bool)}
    masks[0][:48] = True
    masks[1][48:] = True

    def isolated(x: np.ndarray) -> dict[int, list[np.ndarray]]:
        # each worker gets only its own crop and a statistic of it
        return {0: [x[:48], x[:48].astype(np.float32).mean(axis=(0, 1))],
                1: [x[48:], x[48:].astype(np.float32).std(axis=(0, 1))]}

    def leaky(x: np.ndarray) -> dict[int, list[np.ndarray]]:
        # normalising with the global mean mixes every pixel into every worker's input
        g = x.astype(np.float32).mean()
        return {0: [x[:48] - g], 1: [x[48:] - g]}

    iso = feature_leakage(isolated, img, masks)
    assert all(r.isolated and r.max_abs_diff == 0.0 and r.max_rel_change == 0.0 for r in iso.values())
    leak = feature_leakage(leaky, img, masks)
    assert all(not r.isolated and r.max_abs_diff > 0 and r.max_rel_change > 0 for r in leak.values())
    leak_photo = feature_leakage(leaky, img, masks, mode="photo", other=photo("coffee").image)
    assert all(r.max_abs_diff > 0 for r in leak_photo.values())
    json.dumps(leak[0].as_dict())


def test_perturb_outside_keeps_inside() -> None:
    img = np.full((20, 30, 3), 7, np.uint8)
    m = np.zeros((20, 30), bool)
    m[5:10, 5:10] = True
    p = perturb_outside(img, m, rng=np.random.default_rng(0))
    assert np.array_equal(p[m], img[m]) and (p[~m] != 7).any()
    with pytest.raises(ValueError):
        perturb_outside(img, m, mode="photo")


# --- report ------------------------------------------------------------------------------------------


def test_report_writes_markdown_json_figures(tmp_path, astronaut: np.ndarray) -> None:
    img = _small(astronaut, 192)
    h, w = img.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    tile = (yy // 64) * 3 + xx // 64
    views = {str(k): tile % 3 == k for k in range(3)}
    rep = PrivacyReport(colluders=(1, 2, 3))
    rep.evaluate(img, views, scheme="mod3", name="astronaut", figures=True, detect_kinds=("frontal_face",))
    rep.add_cloud_only(img, name="astronaut", detect_kinds=("frontal_face",))
    paths = rep.write(tmp_path)
    md = paths["markdown"].read_text()
    assert "| mod3 | 3 | known | 2 |" in md and "cloud-only" in md
    data = json.loads(paths["json"].read_text())
    assert len(data["rows"]) == 4  # cloud-only k=1, mod3 k=1..3
    assert all("_arrays" not in r for r in data["results"])
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert "success_vs_colluders.png" in pngs
    assert any(n.startswith("views_astronaut_mod3") for n in pngs)
    assert any(n.startswith("reconstructions_astronaut_mod3") for n in pngs)
    mod3 = [r for r in data["rows"] if r["scheme"] == "mod3"]
    exposures = [r["mean_exposure"] for r in mod3]
    assert exposures == sorted(exposures) and mod3[-1]["mean_exposure"] == pytest.approx(1.0)
