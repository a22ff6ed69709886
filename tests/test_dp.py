"""Differential-privacy window noise (`pedvit.privacy.dp`) and its wiring into the distributed predictor."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pedvit.privacy.dp import GaussianWindowNoise, analytic_sigma, classic_sigma, gaussian_sigma


def test_classic_sigma_formula() -> None:
    got = classic_sigma(3.0, 0.5, 1e-5)
    assert got == pytest.approx(3.0 * math.sqrt(2 * math.log(1.25 / 1e-5)) / 0.5, rel=1e-12)


def test_analytic_sigma_meets_delta_and_is_tighter() -> None:
    from pedvit.privacy.dp import _analytic_delta

    for eps in (0.5, 1.0, 4.0, 8.0):
        sigma = analytic_sigma(1.0, eps, 1e-5)
        assert _analytic_delta(sigma, 1.0, eps) <= 1e-5 * (1 + 1e-6)
        assert _analytic_delta(sigma * 0.99, 1.0, eps) > 1e-5  # smallest such sigma
        if eps < 1:
            assert sigma < classic_sigma(1.0, eps, 1e-5)
    assert analytic_sigma(1.0, 8.0, 1e-5) < analytic_sigma(1.0, 1.0, 1e-5)


def test_mechanism_choice_and_validation() -> None:
    assert gaussian_sigma(1.0, 0.5, 1e-5) == classic_sigma(1.0, 0.5, 1e-5)
    assert gaussian_sigma(1.0, 2.0, 1e-5) == analytic_sigma(1.0, 2.0, 1e-5)
    with pytest.raises(ValueError):
        gaussian_sigma(1.0, 2.0, 1e-5, "classic")
    with pytest.raises(ValueError):
        GaussianWindowNoise(0.0, 1e-5)
    with pytest.raises(ValueError):
        GaussianWindowNoise(1.0, 1.5)


@pytest.mark.parametrize("epsilon", [None, math.inf])
def test_no_noise_when_epsilon_off(epsilon: float | None) -> None:
    noise = GaussianWindowNoise(epsilon, seed=0)
    window = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    assert noise("trunk", 3, window) is window
    assert not noise.enabled


def test_uint8_output_and_natural_clip() -> None:
    rng = np.random.default_rng(1)
    window = rng.integers(0, 256, (224, 128, 3), dtype=np.uint8)
    noise = GaussianWindowNoise(8.0, 1e-5, seed=0)
    out = noise("trunk", 0, window)
    assert out.dtype == np.uint8 and out.shape == window.shape
    assert noise.clip_for(window) == pytest.approx(0.5 * math.sqrt(window.size))
    # Any uint8 window lies inside the natural ball, so its norm is never above the bound.
    extreme = np.zeros_like(window)
    extreme[::2] = 255
    assert np.linalg.norm(extreme / 255.0 - 0.5) <= noise.clip_for(window) + 1e-9


def test_clipping_bound_respected_for_floats() -> None:
    noise = GaussianWindowNoise(1.0, 1e-5, clip_norm=2.0, seed=0)
    noise.sigma_for = lambda array: 0.0  # type: ignore[method-assign]  # isolate the clipping step
    tokens = np.random.default_rng(2).normal(0, 5, (14, 14, 64)).astype(np.float32)
    out = noise("blocks", 1, tokens)
    assert np.linalg.norm(out) == pytest.approx(2.0, rel=1e-5)
    small = tokens / np.linalg.norm(tokens)  # norm 1 < clip: untouched
    np.testing.assert_allclose(noise("blocks", 1, small), small, rtol=1e-6)
    with pytest.raises(ValueError, match="clip_norm"):
        GaussianWindowNoise(1.0, 1e-5)("blocks", 1, tokens)


def test_noise_scale_matches_sigma() -> None:
    clip, eps, delta = 1.0, 0.5, 1e-5
    noise = GaussianWindowNoise(eps, delta, clip_norm=clip, seed=3)
    zeros = np.zeros((64, 64, 32), dtype=np.float32)
    out = noise("blocks", 0, zeros).astype(np.float64)
    expected = classic_sigma(2 * clip, eps, delta)
    # 131072 samples: the std estimate is within ~0.4 % (1 sigma); 2 % is ~5 sigma.
    assert out.std() == pytest.approx(expected, rel=0.02)
    assert abs(out.mean()) < 5 * expected / math.sqrt(out.size)


def test_pixel_noise_scale_in_grey_levels() -> None:
    # A mid-grey window with a small clip so the noise is not saturated by the [0, 255] range.
    noise = GaussianWindowNoise(4.0, 1e-5, clip_norm=0.02, seed=4)
    window = np.full((224, 224, 3), 128, dtype=np.uint8)
    sigma_levels = noise.sigma_for(window) * 255.0
    assert 1.0 < sigma_levels < 40.0
    out = noise("trunk", 0, window).astype(np.float64)
    # Mid-grey is shrunk towards 127.5 by the clip; rounding adds ~1/12 variance.
    assert out.std() == pytest.approx(math.sqrt(sigma_levels**2 + 1 / 12), rel=0.03)


def test_seed_reproducible() -> None:
    window = np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    a = GaussianWindowNoise(1.0, 1e-5, seed=7)("trunk", 0, window)
    b = GaussianWindowNoise(1.0, 1e-5, seed=7)("trunk", 0, window)
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_predictor_records_dp_in_run_record_and_ledger(mobile_sam, coffee, tmp_path) -> None:
    from pedvit.edge.build import in_process_workers
    from pedvit.edge.distributed import DistributedSamPredictor

    workers = in_process_workers(mobile_sam, 3, record_inputs=True)
    ledger = tmp_path / "ledger.jsonl"
    predictor = DistributedSamPredictor(mobile_sam, workers, fusion="off", ledger=ledger, dp_epsilon=2.0,
                                        dp_delta=1e-6, dp_seed=0, allow_local=False)
    small = coffee[::4, ::4]
    predictor.set_image(small)
    record = predictor.last_run
    dp = record.extra["dp"]
    assert set(dp) == {n for n, w in record.workers.items() if w.windows}
    for name, entry in dp.items():
        assert entry["epsilon"] == 2.0 and entry["delta"] == 1e-6 and entry["mechanism"] == "analytic"
        assert entry["windows"] == sorted(record.workers[name].windows)
    line = json.loads(ledger.read_text().splitlines()[-1])
    assert line["extra"]["dp"] == json.loads(json.dumps(dp))
    # The workers really received noised pixels, not the image's windows.
    from pedvit.models.transforms import ResizeLongestSide

    resized = ResizeLongestSide(mobile_sam.img_size).apply_image(small)
    canvas = np.zeros((mobile_sam.img_size, mobile_sam.img_size, 3), dtype=np.uint8)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    diffs = []
    for worker in workers:
        for _, batch, meta in worker.received:
            for window, (y0, x0, _, _) in zip(batch, meta.tolist()):
                clean = canvas[y0 : y0 + window.shape[0], x0 : x0 + window.shape[1]]
                diffs.append(np.abs(window.astype(float) - clean).mean())
    assert diffs and min(diffs) > 30.0
