"""Metrics: detection over a population, target/trigger and attribution per subject."""

from samecurve.metrics.attribution import attribution_correlation, pointing_game
from samecurve.metrics.detection import aupr, auroc, brier, fpr_at_tpr
from samecurve.metrics.trigger import attack_success, mask_correlation, mask_iou, target_top1

__all__ = [
    "attack_success",
    "attribution_correlation",
    "aupr",
    "auroc",
    "brier",
    "fpr_at_tpr",
    "mask_correlation",
    "mask_iou",
    "pointing_game",
    "target_top1",
]
