"""Privacy evaluation: threat model (``threat_model.md``), exposure, reconstruction and detection attacks,
feature-leakage checks and the report.

Everything works on plain inputs: an ``H x W x 3`` uint8 RGB image and, per worker, an ``H x W`` bool
visibility mask (original pixels the worker received).
"""

from pedvit.privacy.detection import CASCADES, DEFAULT_KINDS, KindResult, detect, detection_attack, match_boxes
from pedvit.privacy.exposure import Exposure, union_mask, view_exposure, worst_case_coalition
from pedvit.privacy.leakage_metrics import LeakageResult, TensorChange, feature_leakage, perturb_outside
from pedvit.privacy.reconstruction import (
    ATTACKS,
    DEFAULT_ATTACKS,
    AttackResult,
    Score,
    grey_baseline,
    reconstruct,
    reconstruction_attack,
    score,
)
from pedvit.privacy.figures import plot_reconstructions, plot_success_vs_colluders, plot_views
from pedvit.privacy.aggregate import aggregate
from pedvit.privacy.report import PrivacyReport, cloud_only_views, evaluate_cloud_only, evaluate_views
from pedvit.privacy.views import masked_view

__all__ = [
    "ATTACKS",
    "CASCADES",
    "DEFAULT_ATTACKS",
    "DEFAULT_KINDS",
    "AttackResult",
    "Exposure",
    "KindResult",
    "LeakageResult",
    "PrivacyReport",
    "Score",
    "TensorChange",
    "aggregate",
    "cloud_only_views",
    "detect",
    "detection_attack",
    "evaluate_cloud_only",
    "evaluate_views",
    "feature_leakage",
    "grey_baseline",
    "masked_view",
    "match_boxes",
    "perturb_outside",
    "plot_reconstructions",
    "plot_success_vs_colluders",
    "plot_views",
    "reconstruct",
    "reconstruction_attack",
    "score",
    "union_mask",
    "view_exposure",
    "worst_case_coalition",
]
